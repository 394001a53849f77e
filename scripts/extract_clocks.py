"""Snakemake entry point: clocks of every seed of one cell."""

from twoclocks import logs
from twoclocks.analyze.clocks import extract_clocks
from twoclocks.train.store import open_trajectory
from twoclocks.verify import verify_store

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
verify_store(sm.input.store, sm.input.manifest)  # a deleted/damaged chunk stops here, named
table = extract_clocks(
    open_trajectory(sm.input.store), dict(sm.params.analysis), dict(sm.params.axes)
)
table.to_parquet(sm.output[0], index=False)
log.info("%d clock rows, %d censored", len(table), int(table["censored"].sum()))
