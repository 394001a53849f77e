"""Snakemake entry point: the frozen-gate reduction of one ReLU cell (train.frozen_gates)."""

from twoclocks import logs
from twoclocks.train.frozen_gates import run_stage
from twoclocks.verify import verify_store

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
verify_store(sm.input.store, sm.input.manifest)  # a deleted/damaged chunk stops here, named
out = run_stage(
    sm.input.store, sm.input.clocks, sm.output[0], dict(sm.params.analysis), dict(sm.params.claims)
)
log.info(
    "reduction of %s: t0 %s; %s",
    out.attrs["cell_id"],
    out["t0"].values.tolist(),
    out.attrs.get("note", "both branches written"),
)
