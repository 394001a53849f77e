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

from twoclocks.config import ABBREVIATIONS

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
    """The cells of the study's current config (cell id -> cell hash) and where they came from.

    `config`: a config file, a config dict or a `twoclocks.config.Study`; by default the config
    the report stage last wrote into ``claims.json`` (it reruns whenever the config changes).
    None when neither is there: then every store on disk counts.
    """
    from twoclocks.config import ConfigError, Study, load_config

    if config is None:
        claims = study_dir / "claims.json"
        if not claims.exists():
            return None, f"no config given and no {claims}"
        from twoclocks.verify import read_json

        config, where = read_json(claims).get("config"), str(claims)
        if not isinstance(config, dict):
            return None, f"{claims} records no config"
    else:
        where = str(config) if isinstance(config, (str, os.PathLike)) else "the given config"
    if not isinstance(config, Study):
        try:
            config = load_config(config, where=where)
        except ConfigError as err:
            if where.endswith("claims.json"):  # an old report: say so, keep every store
                return None, f"the config in {where} no longer validates ({err})"
            raise
    return {c.id: c.hash for c in config.cells}, where


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
    ``runs/**/trajectory.zarr`` is read. With ``verify`` each store with a ``manifest.json`` is
    first checked against its checksums (`twoclocks.verify.verify_store`).

    The result has a ``cell`` dimension indexed by cell id, with ``cell_hash``, ``grid`` (str)
    and every grid axis that differs across cells (`grid_axes`, typed by `_axis_values`) as
    coordinates along it; the module docstring shows how to select. Runs of different lengths
    or seeds are outer-joined on ``step``/``seed`` (missing entries are NaN). Weight snapshots
    are dropped unless ``snapshots=True``; then every weight axis is an integer index, NaN where
    a cell's block is smaller or absent (cells of different models combine).
    """
    from twoclocks.train.store import end_to_end_matrix
    from twoclocks.verify import load_store, verify_store

    study_dir = Path(study_dir)
    found = {
        str(p.parent.relative_to(study_dir / "runs")): p
        for p in sorted(study_dir.glob("runs/**/trajectory.zarr"))
    }
    wanted, source = current_cell_ids(study_dir, config)
    other, missing, stale = [], [], []
    if wanted is not None:
        other = sorted(set(found) - set(wanted))
        missing = [c for c in wanted if c not in found]
        found = {c: p for c, p in found.items() if c in wanted}
        if other:
            log.warning(
                "%s: left out %d store(s) not in the current config (%s): %s",
                study_dir,
                len(other),
                source,
                ", ".join(other),
            )
        if missing:
            log.warning("%s: no store yet for current cell(s) %s", study_dir, ", ".join(missing))
    else:
        log.info("%s: reading every store (%s)", study_dir, source)
    runs = list(found.values())
    keys = list(found)
    if not runs:
        raise FileNotFoundError(
            f"no runs/**/trajectory.zarr under {study_dir}"
            + (f" for the cells of {source}" if wanted is not None else "")
        )
    datasets, cells, recorded, e2e = [], [], [], {}
    for key, path in zip(keys, runs, strict=True):
        if verify and (path.parent / "manifest.json").exists():
            verify_store(path, path.parent / "manifest.json")
        ds = load_store(path)  # a read error names the store and the array
        cell = json.loads(ds.attrs["cell"])
        if not snapshots:
            ds = ds.drop_vars([v for v in ds.data_vars if v.startswith("snap_")])
            ds = ds.drop_vars(["checkpoint", "checkpoint_step"], errors="ignore")
        if wanted is not None and cell.get("cell_hash") != wanted[key]:
            stale.append(key)
        cells.append(cell)
        recorded.append(ds.attrs.get("axes"))
        if "matrix" in ds.dims:
            e2e[cell.get("cell_id", str(path.parent))] = end_to_end_matrix(ds)
        datasets.append(ds)
    if snapshots:
        datasets = _index_weight_axes(datasets)
    if stale:
        log.warning(
            "%s: store(s) of %s were trained with other settings than %s (cell hash differs; "
            "rerun snakemake to update them)",
            study_dir,
            ", ".join(stale),
            source,
        )
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
        "cells_from": source,
        # The end-to-end matrix of each cell (the matrix axis is the union over cells).
        "end_to_end_matrices": json.dumps(e2e, sort_keys=True),
        "other_cells_on_disk": json.dumps(other),
        "missing_cells": json.dumps(missing),
        "stale_cells": json.dumps(stale),
    }
    return out
