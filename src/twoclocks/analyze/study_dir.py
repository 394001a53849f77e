"""Analysis of any study directory: clocks, fits, claims and the report, without Snakemake.

`python -m twoclocks.analyze STUDY_DIR` reads every `runs/<cell_id>/trajectory.zarr` under
STUDY_DIR (written by this pipeline or by any training code that follows docs/design.md
"Trajectory store", minimum: `MINIMUM`) and writes `clocks.parquet`/`.csv`, `fits.parquet`,
`fits.json`, `measures.parquet` (the replay stage, from weight snapshots where the store has
them), `laws/<cell>/laws.json` and `calibration.json` (the laws stages),
`claims.json` and `report/index.html` to `STUDY_DIR/analysis/` (or `--out`), calling the
same stage functions as the Snakemake rules.
Every store is checked before any clock is computed: a missing required variable, dimension or
attribute stops the run with the store and the name. A clock whose inputs a store lacks is
skipped, with a note in the report. A store with a `manifest.json` beside it (written by this
pipeline) is first checked against the manifest's checksums (`twoclocks.verify`); a store without
one is unverified: named at the top of the report and in `fits.json`/`claims.json`
(`unverified_stores`), and a variable that is NaN throughout stops the run. Stray stores (a copy
under another cell's path, another study's store) are left out and named (`stray_stores`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from twoclocks import provenance
from twoclocks.analyze.claims import claims_stage, resolve_claim_settings
from twoclocks.analyze.clock_specs import clock_inputs
from twoclocks.analyze.clocks import extract_clocks, is_deep_linear, resolve_settings
from twoclocks.analyze.fits import fit_clocks
from twoclocks.analyze.law_stage import study_laws
from twoclocks.cells_on_disk import CellsOnDisk, sort_cells
from twoclocks.verify import MANIFEST, load_store, verify_store

log = logging.getLogger("twoclocks.analyze")

# what every store must have (docs/design.md "Analysis of your own trajectories")
MINIMUM = {
    "dims": ("seed", "step"),
    "variables": ("train_loss",),
}
# clock -> (variables it needs, what the note says), from the clock declarations; deep-linear
# energy is checked per cell
CLOCK_INPUTS = clock_inputs()


class StudyError(ValueError):
    """A store that cannot be analysed, named with the missing piece."""


def find_stores(study_dir: Path) -> dict[str, Path]:
    """cell_id (path under runs/) -> store path, sorted; stray stores (a copy under another
    cell's path, another study's store: `twoclocks.cells_on_disk`) are left out and logged."""
    return _sort(study_dir).stores


def _sort(study_dir: Path) -> CellsOnDisk:
    runs = study_dir / "runs"
    if not runs.is_dir():
        raise StudyError(f"{study_dir}: no runs/ directory (expected runs/<cell>/trajectory.zarr)")
    cells = sort_cells(study_dir)
    for note in cells.notes():
        log.warning("%s", note)
    if not cells.stores:
        found = f" (left out: {'; '.join(cells.notes())})" if cells.stray else ""
        raise StudyError(f"{runs}: no */trajectory.zarr stores found{found}")
    return cells


def all_nan_variables(ds: xr.Dataset) -> list[str]:
    """Float variables of `ds` whose every value is NaN: what zarr reads back for an array whose
    chunks are missing."""
    return [
        str(name)
        for name, var in ds.variables.items()
        if var.dtype.kind in "fc" and var.size and bool(np.isnan(var.values).all())
    ]


def _read(study_dir: Path):
    """Every store to analyse, checked: (stores, trajectories, params, notes, unverified, stray).

    A store with a ``manifest.json`` (this pipeline's) is verified against it first; one without
    is foreign and unverified: a variable that is NaN throughout (a missing chunk reads as NaN)
    stops the analysis, naming the store and the variable.
    """
    cells = _sort(study_dir)
    trajectories, notes, params, unverified = {}, [], {}, []
    for cid, path in cells.stores.items():
        if (path.parent / MANIFEST).exists():  # written by this pipeline: check first
            verify_store(path, path.parent / MANIFEST)
        else:
            unverified.append(cid)
        ds = load_store(path)  # a read error names the store and the array
        notes += [f"{cid}: {n}" for n in check_store(path, ds)]
        if cid in unverified and (empty := all_nan_variables(ds)):
            raise StudyError(
                f"{path}: variable(s) {', '.join(empty)} are NaN throughout (missing chunks?): "
                "this store has no manifest.json to check it against. Fix: rewrite the store, "
                "or drop the variable if it was never recorded."
            )
        params[cid] = _params(ds, cid)
        ds.attrs["cell"] = json.dumps(params[cid])
        trajectories[cid] = ds
    return cells.stores, trajectories, params, notes, unverified, cells.stray


def check_store(path: Path, ds: xr.Dataset) -> list[str]:
    """Raise StudyError naming the store and the first missing required piece; return notes
    on the clocks this store cannot give (their inputs are absent)."""
    for dim in MINIMUM["dims"]:
        if dim not in ds.dims:
            raise StudyError(f"{path}: missing dimension {dim!r} (docs/design.md minimum)")
    for var in MINIMUM["variables"]:
        if var not in ds:
            raise StudyError(f"{path}: missing variable {var!r} (docs/design.md minimum)")
        if set(ds[var].dims) != {"seed", "step"}:
            raise StudyError(f"{path}: variable {var!r} must have dims (seed, step)")
    cell = ds.attrs.get("cell")
    if cell is not None:
        try:
            json.loads(cell) if isinstance(cell, str) else dict(cell)
        except (ValueError, TypeError) as err:
            raise StudyError(f"{path}: attribute 'cell' is not JSON ({err})") from err
    notes = []
    for clock, (needs, what) in CLOCK_INPUTS.items():
        if not all(v in ds for v in needs):
            notes.append(f"{clock} skipped: the store has no {what}")
    params = _params(ds, "")
    energy_var = "schatten_energy" if is_deep_linear(ds) else "sqnorm_total"
    if energy_var not in ds:
        notes.append(f"rep_energy skipped: the store has no `{energy_var}`")
    if "tau" not in ds.coords and "tau" not in ds and "lr" not in params:
        notes.append("tau = step (no `tau` coordinate and no lr in the `cell` attribute)")
    return notes


def _params(ds: xr.Dataset, cell_id: str) -> dict:
    cell = ds.attrs.get("cell")
    params = (json.loads(cell) if isinstance(cell, str) else dict(cell)) if cell else {}
    if cell_id:
        params.setdefault("cell_id", cell_id)
    return params


def _axes(params: dict[str, dict]) -> dict[str, dict]:
    """Per cell, the scalar params that vary across cells (the grid axes)."""
    skip = {"study", "grid", "cell_id", "cell_hash", "group_id", "dataset_id", "seeds"}
    keys = set().union(*(p.keys() for p in params.values())) - skip
    varying = sorted(
        k
        for k in keys
        if all(isinstance(p.get(k), int | float | str | bool) for p in params.values())
        and len({json.dumps(p.get(k)) for p in params.values()}) > 1
    )
    return {cid: {k: p[k] for k in varying} for cid, p in params.items()}


def analyse(study_dir: str | Path, out_dir: str | Path | None = None, config: dict | None = None):
    """Clocks, fits, claims and the report of every store under `study_dir`; returns out_dir."""
    from twoclocks.replay.stage import measure_study
    from twoclocks.report.build import render_report  # the same stages as the Snakemake rules

    study_dir = Path(study_dir)
    out = Path(out_dir) if out_dir else study_dir / "analysis"
    config = dict(config or {})
    analysis = resolve_settings(config.get("analysis"))  # bad settings fail before any work
    claim_settings = resolve_claim_settings(config.get("claims"))
    stores, trajectories, params, notes, unverified, stray = _read(study_dir)
    warnings = []
    if unverified:
        warnings.append(
            f"{len(unverified)} of {len(stores)} store(s) have no manifest.json, so nothing "
            "checks that they are complete (foreign stores, or a deleted manifest): "
            + ", ".join(unverified)
        )
    if stray:
        warnings.append(
            "stray stores left out: " + "; ".join(f"{k}: {v}" for k, v in stray.items())
        )
    axes = _axes(params)
    frames = []
    for cid, ds in trajectories.items():
        log.info("clocks %s", cid)
        frames.append(extract_clocks(ds, config.get("analysis") or {}, axes[cid]))
    clocks = pd.concat(frames, ignore_index=True)
    fits_table, fits = fit_clocks(clocks, config.get("analysis") or {})
    measures = measure_study(trajectories, fourier_keep=claim_settings["fourier_keep"])
    out.mkdir(parents=True, exist_ok=True)
    clocks.to_parquet(out / "clocks.parquet", index=False)
    clocks.to_csv(out / "clocks.csv", index=False)
    fits_table.to_parquet(out / "fits.parquet", index=False)
    measures.to_parquet(out / "measures.parquet", index=False)
    record = {
        "provenance": provenance.collect(),
        "analysis": analysis,
        "study_dir": str(study_dir),
        "unverified_stores": unverified,  # no manifest: nothing checked them
        "stray_stores": stray,
    }
    (out / "fits.json").write_text(
        json.dumps({**fits, **record}, indent=2, sort_keys=True, default=str)
    )
    laws = study_laws(trajectories, clocks, config.get("analysis"), params, out)
    claims = claims_stage(
        out / "claims.json", trajectories, clocks, fits, claim_settings, measures=measures,
        record=record, laws=laws,
    )  # fmt: skip
    render_report(
        out / "report" / "index.html",
        None,
        config={
            "study": study_dir.name,
            "analysis": analysis,
            "claims": claim_settings,
            "warnings": warnings,
        },
        runtime={"n_cells": len(trajectories), "stores": {c: str(p) for c, p in stores.items()}},
        trajectories=trajectories,
        clocks=clocks,
        fits=fits,
        claims=claims,
        notes=notes,
        measures=measures,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twoclocks.analyze",
        description="Clocks, fits, claims and the report of STUDY_DIR/runs/<cell>/trajectory.zarr",
    )
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default STUDY_DIR/analysis")
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML with optional analysis: and claims:"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    config: dict[str, Any] = {}
    try:
        if args.config:
            config = yaml.safe_load(args.config.read_text()) or {}
            extra = sorted(set(config) - {"analysis", "claims"})
            if extra:
                raise StudyError(f"{args.config}: only analysis: and claims: are read, got {extra}")
        out = analyse(args.study_dir, args.out, config)
    except ValueError as err:  # StudyError, and bad analysis/claims settings
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {out / 'report' / 'index.html'}")
    return 0
