"""Snakemake entry point: train every seed of one grid cell as one stacked tensor program."""

import time

import torch

from twoclocks import logs
from twoclocks.data.io import load_dataset
from twoclocks.train.cache import train_or_fetch
from twoclocks.train.manifest import write_manifest

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
params = dict(sm.params.cell)
torch.set_num_threads(sm.threads)  # fixed per study: local and cluster runs stay bitwise equal
log.info("cell %s (%s): seeds %s", params["cell_id"], params["cell_hash"], params["seeds"])
start = time.perf_counter()
store = train_or_fetch(
    params, load_dataset(sm.input.dataset), sm.output.store, state_dir=sm.params.state_dir
)
write_manifest(store, sm.output.manifest, wall_seconds=round(time.perf_counter() - start, 2))
