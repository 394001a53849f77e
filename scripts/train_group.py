"""Snakemake entry point: train one group (a cell, or a stacked sweep of cells) as one program."""

import json
import time

import torch

from twoclocks import logs
from twoclocks.data.io import load_dataset
from twoclocks.train.group import train_group

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
cells = [dict(c) for c in sm.params.cells]
torch.set_num_threads(sm.threads)  # fixed per study: local and cluster runs stay bitwise equal
log.info(
    "group %s: cells %s, seeds %s",
    sm.wildcards.group,
    [c["cell_id"] for c in cells],
    cells[0]["seeds"],
)
start = time.perf_counter()
train_group(
    cells,
    load_dataset(sm.input.dataset),
    sm.output[0],
    state_dir=sm.params.state_dir,
    axes={cid: dict(a) for cid, a in dict(sm.params.axes).items()},
)
record = {"cells": [c["cell_id"] for c in cells], "wall_seconds": time.perf_counter() - start}
with open(f"{sm.output[0]}/group.json", "w") as fh:
    json.dump(record, fh, indent=2)
log.info("group trained in %.1f s", record["wall_seconds"])
