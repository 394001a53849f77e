"""Snakemake entry point: the replay stage's measures of one cell (replay.stage.run_measure)."""

from twoclocks import logs
from twoclocks.replay.stage import run_measure
from twoclocks.verify import verify_store

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
verify_store(sm.input.store, sm.input.manifest)  # a deleted/damaged chunk stops here, named
table = run_measure(
    sm.input.store,
    sm.output[0],
    cell_id=sm.wildcards.cell,
    fourier_keep=int(sm.params.fourier_keep),
    dataset_path=sm.input.dataset,
    reduce_path=sm.input.reduction[0] if sm.input.reduction else None,
)
log.info("%d measure rows: %s", len(table), sorted(table["measure"].unique()))
