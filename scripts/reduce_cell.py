"""Snakemake entry point: the frozen-gate reduction of one ReLU cell (replay.frozen_gates)."""

from twoclocks import logs
from twoclocks.replay.frozen_gates import run_stage
from twoclocks.verify import verify_store

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
verify_store(sm.input.store, sm.input.manifest)  # a deleted/damaged chunk stops here, named
out = run_stage(
    sm.input.store,
    sm.input.clocks,
    sm.output[0],
    eps_star=float(sm.params.eps_star),
    gen_acc_level=float(sm.params.gen_acc_level),
    margin=float(sm.params.margin),
    dataset_path=sm.input.dataset,
)
log.info(
    "reduction of %s: t0 %s; %s",
    out.attrs["cell_id"],
    out["t0"].values.tolist(),
    out.attrs.get("note", "both branches written"),
)
