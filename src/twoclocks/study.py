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
import logging
import os
from pathlib import Path

import numpy as np
import xarray as xr

from twoclocks.cells_on_disk import CellsOnDisk, planned_cells, sort_cells
from twoclocks.config import ABBREVIATIONS
from twoclocks.verify import MANIFEST, IntegrityError

__all__ = ["current_cell_ids", "grid_axes", "load_study"]

log = logging.getLogger("twoclocks.study")


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


def _index_weight_axes(datasets: list[xr.Dataset]) -> list[xr.Dataset]:
    """Give every dataset every weight axis (``<block>_row``/``_col``) of the study as an integer
    index, sized to the largest: cells with other models or widths then outer-join on them
    (NaN where a cell has no such block or a smaller one) instead of failing with
    "'W2_row' not present in all datasets"."""
    sizes: dict[str, int] = {}
    for ds in datasets:
        for d, n in ds.sizes.items():
            if str(d).endswith(("_row", "_col")):
                sizes[str(d)] = max(sizes.get(str(d), 0), int(n))
    out = []
    for ds in datasets:
        ds = ds.assign_coords({d: np.arange(ds.sizes.get(d, n)) for d, n in sizes.items()})
        out.append(ds.reindex({d: np.arange(n) for d, n in sizes.items()}, fill_value=np.nan))
    return out


def current_cell_ids(study_dir: Path, config=None) -> tuple[dict[str, str] | None, str]:
    """The cells of the study's current config (cell id -> cell hash) and where they came from
    (`twoclocks.cells_on_disk.planned_cells`); None when there is no config: then every store
    on disk that is not stray counts."""
    study, where = planned_cells(Path(study_dir), config)
    return (None if study is None else {c.id: c.hash for c in study.cells}), where


def _select(study_dir: Path, config) -> tuple[CellsOnDisk, dict[str, str] | None, str]:
    """The stores to read, warning about every store left out and every planned cell missing."""
    study, source = planned_cells(study_dir, config)
    wanted = None if study is None else {c.id: c.hash for c in study.cells}
    cells = sort_cells(study_dir, None if wanted is None else list(wanted), study and study.name)
    if cells.stray:
        log.warning("%s: left out stray store(s): %s", study_dir, "; ".join(cells.notes()))
    if cells.other:
        log.warning(
            "%s: left out %d store(s) not in the current config (%s): %s",
            study_dir,
            len(cells.other),
            source,
            ", ".join(cells.other),
        )
    if cells.missing:
        log.warning("%s: no store yet for current cell(s) %s", study_dir, ", ".join(cells.missing))
    if wanted is None:
        log.info("%s: reading every store (%s)", study_dir, source)
    if not cells.stores:
        raise FileNotFoundError(
            f"no runs/**/trajectory.zarr under {study_dir}"
            + (f" for the cells of {source}" if wanted is not None else "")
            + (f" (left out: {'; '.join(cells.notes())})" if cells.stray else "")
        )
    return cells, wanted, source


def _read_cell(path: Path, *, snapshots: bool, verify: bool) -> xr.Dataset:
    """One cell's store, checked against its manifest first (`verify`): a store without one is
    refused, naming the fix (this pipeline writes one for every store it publishes)."""
    from twoclocks.verify import fix_for, load_store, verify_store

    manifest = path.parent / MANIFEST
    if verify and not manifest.exists():
        raise IntegrityError(
            f"{manifest}: missing, so {path} cannot be checked (an interrupted job, or a store "
            f"not written by this pipeline). {fix_for(path.parent)} Stores written by other "
            "code: python -m twoclocks.analyze, or load_study(..., verify=False)."
        )
    if verify:
        verify_store(path, manifest)
    ds = load_store(path)  # a read error names the store and the array
    if not snapshots:
        ds = ds.drop_vars([v for v in ds.data_vars if v.startswith("snap_")])
        ds = ds.drop_vars(["checkpoint", "checkpoint_step"], errors="ignore")
    return ds


def _combine(datasets: list[xr.Dataset], ids: list[str]) -> xr.Dataset:
    """The cells' Datasets along a new ``cell`` dimension, outer-joined on the rest."""
    labelled = []
    for ds, cid in zip(datasets, ids, strict=True):
        ds = ds.expand_dims(cell=np.asarray([cid], dtype=object))
        ds.attrs = {"cell": ds.attrs["cell"]}
        labelled.append(ds)
    return xr.concat(
        labelled,
        dim="cell",
        join="outer",
        data_vars="all",
        coords="different",
        compat="equals",
        combine_attrs="drop",
        fill_value={"diverged_step": -1},
    )


def load_study(
    study_dir: str | os.PathLike, *, snapshots: bool = False, config=None, verify: bool = True
) -> xr.Dataset:
    """Open the trajectory stores of the study's current cells and combine them.

    The current cells are those of `config` (a file, dict or `Study`; default: the config the
    report stage recorded in ``claims.json``, see `current_cell_ids`); stores of other cells
    found under ``runs/`` (an earlier config of the same study) are left out and named in a
    warning and in ``attrs["other_cells_on_disk"]``; current cells without a store are named in
    ``attrs["missing_cells"]``, and stores trained with other settings than the config's (cell
    hash differs) in ``attrs["stale_cells"]``. Without any config every
    ``runs/**/trajectory.zarr`` is read. Stray stores (a copy under another cell's path, or a
    store of another study: `twoclocks.cells_on_disk`) are always left out, named in a warning
    and in ``attrs["stray_cells"]``. With ``verify`` each store is first checked against its
    ``manifest.json`` (`twoclocks.verify.verify_store`); a store without one is refused.

    The result has a ``cell`` dimension indexed by cell id, with ``cell_hash``, ``grid`` (str)
    and every grid axis that differs across cells (`grid_axes`, typed by `_axis_values`) as
    coordinates along it; the module docstring shows how to select. Runs of different lengths
    or seeds are outer-joined on ``step``/``seed`` (missing entries are NaN); variables of
    cells trained in different dtypes are promoted to the wider one. Weight snapshots are
    dropped unless ``snapshots=True``; then every weight axis is an integer index, NaN where a
    cell's block is smaller or absent (cells of different models combine).
    """
    from twoclocks.train.store import end_to_end_matrix

    study_dir = Path(study_dir)
    found, wanted, source = _select(study_dir, config)
    datasets, cells, recorded, e2e, stale = [], [], [], {}, []
    for key, path in found.stores.items():
        ds = _read_cell(path, snapshots=snapshots, verify=verify)
        cell = json.loads(ds.attrs["cell"])
        if wanted is not None and cell.get("cell_hash") != wanted[key]:
            stale.append(key)
        cells.append(cell)
        recorded.append(ds.attrs.get("axes"))
        if "matrix" in ds.dims:
            e2e[cell.get("cell_id", key)] = end_to_end_matrix(ds)
        datasets.append(ds)
    if stale:
        log.warning(
            "%s: store(s) of %s were trained with other settings than %s (cell hash differs; "
            "rerun snakemake to update them)",
            study_dir,
            ", ".join(stale),
            source,
        )
    ids = [c.get("cell_id", key) for c, key in zip(cells, found.stores, strict=True)]
    out = _combine(_index_weight_axes(datasets) if snapshots else datasets, ids)
    axes = grid_axes(cells, recorded)
    for k in ("cell_hash", "grid"):
        out.coords[k] = ("cell", _axis_values([str(c.get(k, "")) for c in cells]))
    for k in axes:
        out.coords[k] = ("cell", _axis_values([c.get(k) for c in cells]))
    out.attrs = {
        "study": str(cells[0].get("study", study_dir.name)),
        "grid_axes": json.dumps(axes),
        "cells": json.dumps({cid: c for cid, c in zip(ids, cells, strict=True)}, sort_keys=True),
        "cells_from": source,
        # The end-to-end matrix of each cell (the matrix axis is the union over cells).
        "end_to_end_matrices": json.dumps(e2e, sort_keys=True),
        "other_cells_on_disk": json.dumps(found.other),
        "missing_cells": json.dumps(found.missing),
        "stale_cells": json.dumps(stale),
        "stray_cells": json.dumps(found.stray, sort_keys=True),
    }
    return out
