"""One xarray Dataset for a whole study: every cell's trajectory along a ``cell`` dimension.

Selecting cells: the grid axes are plain coordinates along ``cell`` (the index stays the cell
id), so select with a boolean mask or give one axis an index::

    ds.sel(cell="relu/wd=1.0")                                   # one cell by id
    ds.sel(cell=ds.weight_decay == 1.0)                          # every cell with wd = 1
    ds.sel(cell=(ds.grid == "linear") & (ds.depth >= 3))         # combine masks
    ds.set_xindex("weight_decay").sel(weight_decay=[0.5, 1.0])   # label lookup on one axis
    ds.swap_dims(cell="weight_decay")                            # a one-axis sweep, if unique

(``ds.where(mask, drop=True)`` works too but turns integer variables such as
``diverged_step`` into floats.) Cells of a grid without an axis hold NaN (numeric axes) or None
(string axes) there; every other parameter is in ``ds.attrs["cells"]`` (JSON per cell id).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from twoclocks.config import ABBREVIATIONS
from twoclocks.train.store import open_trajectory

__all__ = ["grid_axes", "load_study"]


def _label_axes(cell: dict, recorded: str | None) -> list[str]:
    """The grid axes that label a cell: the `axes` attr its store was trained with.

    Stores without that attr (written before it was recorded, or by hand) fall back to the
    keys named in the readable id ``grid/abbr=value/...``; an abbreviation may stand for
    several keys (``width``: relu ``hidden_width``, deep-linear ``width``), the one among the
    cell's params is meant.
    """
    if recorded is not None:
        return [k for k in json.loads(recorded) if k in cell]
    axes = []
    for part in str(cell.get("cell_id", "")).split("/")[1:]:
        label, sep, _ = part.partition("=")
        candidates = [k for k, abbr in ABBREVIATIONS.items() if abbr == label] + [label]
        axes += [next(k for k in candidates if k in cell)] if sep and label else []
    return [k for k in axes if k in cell]


def _key(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def grid_axes(cells: list[dict], recorded: list[str | None] | None = None) -> list[str]:
    """The grid axes (keys that label some cell) whose values differ across ``cells``.

    `recorded`: per cell, its store's `axes` attr (JSON) or None (`_label_axes`). In first-seen
    order. Parameters that differ only as a consequence of the grid (a relu grid next to a
    deep-linear grid differs in ``model``, ``width``, ...) are not axes.
    """
    names: dict[str, None] = {}
    for c, rec in zip(cells, recorded or [None] * len(cells), strict=True):
        names.update(dict.fromkeys(_label_axes(c, rec)))
    return [k for k in names if len({_key(c.get(k)) for c in cells}) > 1]


def _axis_values(values: list) -> np.ndarray:
    """A clean 1-D coordinate: bool, int64 or float64 (NaN where a cell lacks the axis) for
    numbers, else object (str; lists as JSON; None where missing)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present) and len(present) == len(values):
        return np.asarray(values, dtype=bool)
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if len(present) == len(values) and all(isinstance(v, int) for v in values):
            return np.asarray(values, dtype=np.int64)
        return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    out[:] = [v if v is None or isinstance(v, str) else _key(v) for v in values]
    return out


def load_study(study_dir: str | os.PathLike, *, snapshots: bool = False) -> xr.Dataset:
    """Open every ``runs/**/trajectory.zarr`` under ``study_dir`` and combine them.

    The result has a ``cell`` dimension indexed by cell id, with ``cell_hash``, ``grid`` (str)
    and every grid axis that differs across cells (`grid_axes`, typed by `_axis_values`) as
    coordinates along it; the module docstring shows how to select. Runs of different lengths
    or seeds are outer-joined on ``step``/``seed`` (missing entries are NaN). Weight snapshots
    are dropped unless ``snapshots=True``.
    """
    runs = sorted(Path(study_dir).glob("runs/**/trajectory.zarr"))
    if not runs:
        raise FileNotFoundError(f"no runs/**/trajectory.zarr under {study_dir}")
    datasets, cells, recorded = [], [], []
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
        recorded.append(ds.attrs.get("axes"))
        datasets.append(ds)
    axes = grid_axes(cells, recorded)
    ids = [c.get("cell_id", str(p.parent)) for c, p in zip(cells, runs, strict=True)]
    labelled = []
    for ds, cid in zip(datasets, ids, strict=True):
        ds = ds.expand_dims(cell=np.asarray([cid], dtype=object))
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
    for k in ("cell_hash", "grid"):
        out.coords[k] = ("cell", _axis_values([str(c.get(k, "")) for c in cells]))
    for k in axes:
        out.coords[k] = ("cell", _axis_values([c.get(k) for c in cells]))
    out.attrs = {
        "study": str(cells[0].get("study", Path(study_dir).name)),
        "grid_axes": json.dumps(axes),
        "cells": json.dumps({cid: c for cid, c in zip(ids, cells, strict=True)}, sort_keys=True),
    }
    return out
