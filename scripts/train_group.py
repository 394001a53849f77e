"""Snakemake entry point: train one group (a cell, or a stacked sweep of cells) as one program."""

import json
import time
from pathlib import Path

import torch

from twoclocks import logs
from twoclocks.data.io import load_dataset
from twoclocks.fsutil import prune_empty_dirs
from twoclocks.train.group import train_group
from twoclocks.train.manifest import store_checksums
from twoclocks.verify import IntegrityError

sm = snakemake  # noqa: F821
log = logs.to_file(sm.log[0])
logs.keep_attempts(sm.log[0])  # the declared log holds this attempt only; this file every one
cells = [dict(c) for c in sm.params.cells]
torch.set_num_threads(sm.threads)  # fixed per study: local and cluster runs stay bitwise equal
log.info(
    "group %s: cells %s, seeds %s",
    sm.wildcards.group,
    [c["cell_id"] for c in cells],
    cells[0]["seeds"],
)
try:
    dataset = load_dataset(sm.input.dataset)
except Exception as err:  # zarr/codec errors name no file
    raise IntegrityError(
        f"{sm.input.dataset}: cannot read the dataset ({type(err).__name__}: {err}). "
        "Fix: delete it and rerun snakemake."
    ) from err
start = time.perf_counter()
stores = train_group(
    cells,
    dataset,
    sm.output[0],
    state_dir=sm.params.state_dir,
    axes={cid: dict(a) for cid, a in dict(sm.params.axes).items()},
)
# train_group removed state/<group>/work; drop the then empty state/<group> dirs too
state_of_group = Path(sm.params.state_dir).parent
prune_empty_dirs(state_of_group, stop=state_of_group.parents[len(Path(sm.wildcards.group).parts)])
record = {
    "cells": [c["cell_id"] for c in cells],
    "wall_seconds": time.perf_counter() - start,
    # what training wrote, so that unstack can tell later damage to these files (twoclocks.verify)
    "checksums": {cid: store_checksums(path) for cid, path in stores.items()},
}
with open(f"{sm.output[0]}/group.json", "w") as fh:
    json.dump(record, fh, indent=2)
log.info("group trained in %.1f s", record["wall_seconds"])
