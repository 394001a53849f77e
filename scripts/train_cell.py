"""Snakemake entry point: train every seed of one grid cell as one stacked tensor program."""

import time

from twoclocks import logs
from twoclocks.data.io import load_dataset
from twoclocks.train.engine import train_cell
from twoclocks.train.manifest import write_manifest

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
params = dict(sm.params.cell)
log.info("cell %s (%s): seeds %s", params["cell_id"], params["cell_hash"], params["seeds"])
start = time.perf_counter()
store = train_cell(
    params, load_dataset(sm.input.dataset), sm.output.store, state_dir=sm.params.state_dir
)
write_manifest(store, sm.output.manifest, wall_seconds=round(time.perf_counter() - start, 2))
