"""Train a group of cells as one stacked program, then split it back into per-cell stores.

With `stack_axes` (config) the cells of a grid that differ only in lr, weight decay or init
scale share one job (with `stack_grids`, such cells of different grids too): their members
(cells x seeds) are stacked with per-member hyperparameters, so a whole weight-decay sweep is
one tensor program. Every reduction stays per member, so each cell's trajectory is the one it
would have alone (tests/test_group.py). The split stores are ordinary per-cell trajectories:
every later stage reads them unchanged.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from twoclocks import numerics
from twoclocks.config import STACKABLE, cell_hash
from twoclocks.liveness import job_marker
from twoclocks.publish import write_zarr
from twoclocks.train.cache import train_or_fetch
from twoclocks.train.engine import resolve_device
from twoclocks.train.manifest import seed_status
from twoclocks.train.store import open_trajectory

log = logging.getLogger("twoclocks.group")
_IDENTITY = ("grid", "cell_id", "cell_hash")  # a group may span grids (config `stack_grids`)


def stacked_params(cells: list[dict]) -> dict:
    """One cell dict whose members are every (cell, seed), with per-member stacked values."""
    first = cells[0]
    differing = {k for k in STACKABLE for c in cells if c.get(k) != first.get(k)}
    for c in cells:
        core = {k: v for k, v in c.items() if k not in {*STACKABLE, *_IDENTITY}}
        ref = {k: v for k, v in first.items() if k not in {*STACKABLE, *_IDENTITY}}
        if core != ref:
            diff = sorted(k for k in set(core) | set(ref) if core.get(k) != ref.get(k))
            raise ValueError(f"cells {first['cell_id']} and {c['cell_id']} differ in {diff}")
    seeds = [int(s) for c in cells for s in c["seeds"]]
    params = dict(first, seeds=seeds, cell_id="+".join(c["cell_id"] for c in cells))
    for key in differing:
        params[key] = [float(c[key]) for c in cells for _ in c["seeds"]]
    params["cell_hash"] = cell_hash(params)
    return params


def split_store(
    stacked: Path, cells: list[dict], out_dir: Path, axes: dict[str, dict] | None = None
) -> dict[str, Path]:
    """Write each cell's slice of a stacked store to `out_dir/<cell_id>/trajectory.zarr`.

    Each store records its cell (`cell`), per-seed status, the cells it was trained with and
    `axes`: the grid-axis values that label the cell (`axes[cell_id]`, from the expanded config),
    so that readers such as `load_study` never parse them back out of the cell id.
    """
    ds = open_trajectory(stacked).load()
    paths, start = {}, 0
    for cell in cells:
        n = len(cell["seeds"])
        sub = ds.isel(seed=slice(start, start + n))
        start += n
        sub.attrs.update(
            cell=json.dumps(cell, sort_keys=True),
            seed_status=json.dumps(seed_status(cell["seeds"], sub["diverged_step"].values)),
            stacked_with=json.dumps([c["cell_id"] for c in cells]),
            axes=json.dumps((axes or {}).get(cell["cell_id"], {}), sort_keys=True),
        )
        for var in sub.variables.values():
            var.encoding = {}
        paths[cell["cell_id"]] = write_zarr(out_dir / cell["cell_id"] / "trajectory.zarr", sub)
    return paths


def train_group(
    cells: list[dict], dataset, out_dir, *, state_dir=None, axes: dict[str, dict] | None = None
) -> dict[str, Path]:
    """Train `cells` stacked (or fetch them from the cache) and write one store per cell.

    The stacked store and the resume state live in `state_dir` (default: a sibling of
    `out_dir`), outside the declared output, which Snakemake deletes before a retry. `axes`:
    cell id -> its grid-axis values, recorded in its store (`split_store`).
    """
    out_dir = Path(out_dir)
    work = Path(state_dir) if state_dir else out_dir.with_name(out_dir.name + ".work")
    params = stacked_params(cells)
    log.info(
        "training %d cell(s) x %d seed(s) = %d members as one program",
        len(cells),
        len(cells[0]["seeds"]),
        len(params["seeds"]),
    )
    stacked = work / "stacked.zarr"
    if not stacked.exists():  # else: trained before a crash during the split
        numerics.guard_resume(work / "engine", resolve_device(str(params.get("device", "auto"))))
        with job_marker(work):  # lets `twoclocks.watch` tell a killed job from a running one
            train_or_fetch(params, dataset, stacked, state_dir=work / "engine")
    paths = split_store(stacked, cells, out_dir / "cells", axes)
    shutil.rmtree(work, ignore_errors=True)
    if not all(p.exists() for p in paths.values()):
        raise RuntimeError(f"split of {out_dir} is incomplete")
    return paths
