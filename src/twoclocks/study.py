"""One xarray Dataset for a whole study: every cell's trajectory along a ``cell`` dimension."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from twoclocks.train.store import open_trajectory

__all__ = ["grid_axes", "load_study"]

IDENTITY_KEYS = {"study", "cell_id", "cell_hash", "dataset_id", "grid"}


def _hashable(v):
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def grid_axes(cells: list[dict]) -> list[str]:
    """Keys of the resolved cell params whose values differ across cells (the grid axes)."""
    keys = sorted(set().union(*cells) - IDENTITY_KEYS) if cells else []
    return [k for k in keys if len({repr(_hashable(c.get(k))) for c in cells}) > 1]


def _axis_values(values: list) -> np.ndarray:
    vals = [_hashable(v) for v in values]
    if all(isinstance(v, bool) for v in vals):
        return np.asarray(vals, dtype=bool)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return np.asarray(vals)
    return np.asarray(vals, dtype=object)


def load_study(study_dir: str | os.PathLike, *, snapshots: bool = False) -> xr.Dataset:
    """Open every ``runs/**/trajectory.zarr`` under ``study_dir`` and combine them.

    The result has a ``cell`` dimension (coordinate: ``cell_id``) with ``cell_hash``, ``grid``
    and every grid axis (cell params that differ across cells) as coordinates along it. Runs of
    different lengths or seeds are outer-joined on ``step``/``seed`` (missing entries are NaN).
    Weight snapshots are dropped unless ``snapshots=True``.
    """
    runs = sorted(Path(study_dir).glob("runs/**/trajectory.zarr"))
    if not runs:
        raise FileNotFoundError(f"no runs/**/trajectory.zarr under {study_dir}")
    datasets, cells = [], []
    for path in runs:
        ds = open_trajectory(path).load()
        cell = json.loads(ds.attrs["cell"])
        if not snapshots:
            ds = ds.drop_vars([v for v in ds.data_vars if v.startswith("snap_")])
            ds = ds.drop_vars(["checkpoint", "checkpoint_step"], errors="ignore")
        else:  # index the weight axes so that outer joins across shapes are well defined
            ds = ds.assign_coords(
                {d: np.arange(ds.sizes[d]) for d in ds.dims if d.endswith(("_row", "_col"))}
            )
        cells.append(cell)
        datasets.append(ds)
    axes = grid_axes(cells)
    ids = [c.get("cell_id", str(p.parent)) for c, p in zip(cells, runs, strict=True)]
    labelled = []
    for ds, cell, cid in zip(datasets, cells, ids, strict=True):
        ds = ds.expand_dims(cell=[cid])
        extra = {"cell_hash": cell.get("cell_hash", ""), "grid": cell.get("grid", "")}
        ds = ds.assign_coords({k: ("cell", _axis_values([v])) for k, v in extra.items()})
        ds = ds.assign_coords({k: ("cell", _axis_values([cell.get(k)])) for k in axes})
        ds.attrs = {"cell": ds.attrs["cell"]}
        labelled.append(ds)
    out = xr.concat(
        labelled,
        dim="cell",
        join="outer",
        data_vars="all",
        coords="different",
        compat="equals",
        combine_attrs="drop",
        fill_value={"diverged_step": -1},
    )
    for k in axes:
        out.coords[k] = ("cell", _axis_values([c.get(k) for c in cells]))
    out.attrs = {
        "study": str(cells[0].get("study", Path(study_dir).name)),
        "grid_axes": json.dumps(axes),
        "cells": json.dumps({cid: c for cid, c in zip(ids, cells, strict=True)}, sort_keys=True),
    }
    return out
