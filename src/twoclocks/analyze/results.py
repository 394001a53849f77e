"""The read model of a study: its tables and the readers every later stage shares (torch-free).

Figures, the HTML page, the claims, the study-directory runner and the reduce/replay stages read
a study's results through this module, never through the claims: clocks (clocks.parquet),
fits (fits.json), measures (runs/<cell>/measures.parquet, the replay stage), claims
(claims.json), manifests (runs/<cell>/manifest.json), the trajectories (opened lazily) and the
cell table (one row per cell: model, grid axes, label). Nothing here imports torch: a test
checks it (tests/test_results.py).

Clock levels follow design.md "Clocks table": `cls` levels are train-CE thresholds eps (eq. 2.1),
`rep_*` levels structural-gap thresholds eta (eq. 2.2), `gen_acc` test accuracies, `gen_loss`
test CEs. Censored clocks (never fired) are kept (step NaN), never silently dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from twoclocks.analyze.clocks import CLOCK_COLUMNS, IDENTITY_COLUMNS, model_kind
from twoclocks.config import ABBREVIATIONS, section_default
from twoclocks.train.store import end_to_end_matrix

# the claims' default levels (schema `claims:` section), for figures that mark them
CLS_EPS = section_default("claims", "cls_eps")
GEN_ACC_LEVEL = section_default("claims", "gen_acc_level")
SEPARATION_MIN_RATIO = section_default("claims", "separation_min_ratio")
# the name of the one separation ratio (`separation_ratios`), as the report and claim print it
SEPARATION_RATIO = "R = T_gen / T_cls(cls_eps), per run; per cell the median over runs"
FOURIER_KEEP = section_default("claims", "fourier_keep")
REP_CLOCK = section_default("claims", "rep_clock")

_IDENTITY = {"study", "grid", "group_id", "cell_id", "cell_hash", "dataset_id", "seeds"}


def cell_datasets(study: Any) -> list[tuple[str, dict, xr.Dataset]]:
    """Normalise a study to a sorted list of (cell_id, cell params, trajectory Dataset).

    Accepts None, one trajectory Dataset, a mapping cell_id -> Dataset, a list of Datasets, or a
    study Dataset stacked along a `cell`/`cell_id` dimension (padding steps that are NaN in every
    metric are dropped per cell). Params come from the `cell` attr (JSON, design.md).
    """
    if study is None:
        return []
    if isinstance(study, xr.Dataset):
        dim = next((d for d in ("cell", "cell_id") if d in study.dims), None)
        if dim is None:
            items = [study]
        else:
            cells_attr = parse_json(study.attrs.get("cells"), {})
            e2e = parse_json(study.attrs.get("end_to_end_matrices"), {})
            items = []
            for i in range(study.sizes[dim]):
                ds = study.isel({dim: i})
                cid = str(ds[dim].values.item()) if dim in ds.coords else str(i)
                if "train_loss" in ds and "step" in ds.dims:
                    keep = ds["train_loss"].notnull().any("seed") if "seed" in ds.dims else None
                    if keep is not None:
                        ds = ds.isel(step=np.flatnonzero(keep.values))
                params = cells_attr.get(cid) if isinstance(cells_attr, dict) else None
                if params is None and "cell" in ds.coords:
                    params = parse_json(ds["cell"].values.item(), None)
                ds.attrs = dict(ds.attrs, cell=json.dumps(params or {"cell_id": cid}))
                if cid in e2e:  # the union matrix axis of a stacked study does not say
                    ds.attrs["end_to_end_matrix"] = e2e[cid]
                items.append(ds)
    elif isinstance(study, Mapping):
        items = []
        for cid, ds in study.items():
            params = parse_json(ds.attrs.get("cell"), {}) or {}
            params.setdefault("cell_id", str(cid))
            ds = ds.copy()
            ds.attrs["cell"] = json.dumps(params)
            items.append(ds)
    else:
        items = list(study)
    out = []
    for i, ds in enumerate(items):
        params = parse_json(ds.attrs.get("cell"), {}) or {}
        cid = str(params.get("cell_id", f"cell{i}"))
        out.append((cid, params, ds))
    return sorted(out, key=lambda t: t[0])


def parse_json(value: Any, default: Any) -> Any:
    """`value` parsed as JSON if it is a string (else as is); `default` when None or bad."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value


def cell_table(study: Any, clocks: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell: cell_id, model, weight_decay, depth, label (varying params, short)."""
    rows: dict = {}
    listed: set = set()  # list-valued params (frozen_blocks, betas): one label, "" where absent
    for cid, params, ds in cell_datasets(study):
        rows[cid] = {
            "cell_id": cid,
            "model": None,  # first column; the store's model, not a guess from params
            **{k: v for k, v in params.items() if k not in _IDENTITY and _scalar(v)},
        }
        lists = {k: v for k, v in params.items() if k not in _IDENTITY and _scalar_list(v)}
        rows[cid].update({k: _list_label(v) for k, v in lists.items()})
        listed.update(lists)
        rows[cid]["model"] = model_kind(ds)
    if clocks is not None and len(clocks):
        axes = [c for c in clocks.columns if c not in CLOCK_TABLE_COLUMNS]
        for cid, g in clocks.groupby("cell_id", sort=True):
            row = rows.setdefault(str(cid), {"cell_id": str(cid)})
            for c in axes:
                if c not in row and g[c].notna().any():
                    row[c] = g[c].dropna().iloc[0]
            if "model" not in row:
                row["model"] = model_kind(row)
    table = pd.DataFrame(list(rows.values()))
    if table.empty:
        return pd.DataFrame(columns=["cell_id", "model", "label"])
    for c in sorted(listed):  # a cell without the list (no frozen blocks) is its own value
        table[c] = table[c].fillna("")
    varying = [
        c
        for c in table.columns
        if c not in {"cell_id", "model"} and table[c].astype(str).nunique() > 1
    ]
    short = ABBREVIATIONS  # the cell ids' abbreviations (config)

    def label(r: pd.Series) -> str:
        parts = [f"{short.get(c, c)}={r[c]}" for c in varying if pd.notna(r[c]) and r[c] != ""]
        return ", ".join(parts) if parts else r["cell_id"]

    table["label"] = table.apply(label, axis=1)
    return table.sort_values([*(c for c in varying if c != "model"), "cell_id"]).reset_index(
        drop=True
    )


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _scalar_list(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(_scalar(x) for x in v)


def _list_label(v: list | tuple) -> str:
    """A list-valued param as one label, written as in cell ids and the clocks table."""
    return "-".join(map(str, v))


CLOCK_TABLE_COLUMNS = {*IDENTITY_COLUMNS, *CLOCK_COLUMNS}


# --- clock helpers ----------------------------------------------------------------------------
def usable(clocks: pd.DataFrame, clock: str) -> pd.DataFrame:
    """Rows of one clock that are post-fit, resolved, above the dtype floor, not diverged."""
    if clocks is None or clocks.empty or "clock" not in clocks:
        return pd.DataFrame(columns=sorted(CLOCK_TABLE_COLUMNS))
    df = clocks[clocks["clock"] == clock]
    for flag in ("pre_fit", "unresolved"):
        if flag in df:
            df = df[~df[flag].fillna(False).astype(bool)]
    if "below_floor" in df:
        df = df[~df["below_floor"].fillna(False).astype(bool)]
    if "diverged" in df:
        df = df[~df["diverged"].fillna(False).astype(bool)]
    return df


def pick_level(clocks: pd.DataFrame, clock: str, target: float, log: bool = True) -> float | None:
    """The level of `clock` nearest to `target` (in log distance if `log`) among usable rows."""
    levels = np.unique(usable(clocks, clock)["level"].dropna().to_numpy(float))
    if log:
        levels = levels[levels > 0]
    if levels.size == 0:
        return None
    dist = np.abs(np.log(levels / target)) if log else np.abs(levels - target)
    return float(levels[int(np.argmin(dist))])


def strictest_level(clocks: pd.DataFrame, clock: str) -> float | None:
    """The smallest level of `clock` at which at least half of the runs fired."""
    df = usable(clocks, clock)
    best = None
    for level, g in df.groupby("level", sort=True):
        if (~g["censored"].astype(bool)).mean() >= 0.5:
            best = float(level) if best is None else min(best, float(level))
    return best


def clock_times(clocks: pd.DataFrame, clock: str, level: float | None) -> pd.DataFrame:
    """Per (cell_id, seed): `step` of `clock` at `level` (NaN if censored), `censored` and
    `relapse` (the clock fired, then the quantity left its level; False in older tables)."""
    df = usable(clocks, clock)
    if level is None or df.empty:
        return pd.DataFrame(columns=["cell_id", "seed", "step", "censored", "relapse"])
    df = df[np.isclose(df["level"].to_numpy(float), level, rtol=1e-9, atol=0)]
    out = df[["cell_id", "seed", "step", "censored"]].copy()
    out["censored"] = out["censored"].astype(bool)
    rel = df["relapse"] if "relapse" in df else pd.Series(False, index=df.index)
    out["relapse"] = rel.fillna(False).astype(bool).to_numpy() & ~out["censored"].to_numpy()
    out.loc[out["censored"], "step"] = np.nan
    return out.reset_index(drop=True)


def gen_clock(clocks: pd.DataFrame, acc_level: float = GEN_ACC_LEVEL) -> tuple[str, float | None]:
    """The generalisation clock and level: `gen_acc` nearest `acc_level`, else `gen_loss`."""
    level = pick_level(clocks, "gen_acc", acc_level, log=False)
    if level is not None:
        return "gen_acc", level
    return "gen_loss", strictest_level(clocks, "gen_loss")


def separation_ratios(
    clocks: pd.DataFrame,
    slow: str = "gen",
    cls_eps: float = CLS_EPS,
    acc_level: float = GEN_ACC_LEVEL,
) -> pd.DataFrame:
    """Per run R = T_slow / T_cls(eps) (docs/science.md 7); `slow` is "gen" (accuracy, else
    loss), "gen_acc" (level nearest `acc_level`), "gen_loss" (test-CE level nearest `acc_level`)
    or a rep clock name.

    This is the study's one separation ratio (SEPARATION_RATIO): the `separation` claim
    judges the median over cells of its per-cell medians, Fig. separation_ratio plots those
    per-cell medians. (fits.json's `ratio` records are another quantity, T_clock / T_cls at
    the analysis reference levels, reported as "clock ratio".)

    Columns cell_id, seed, t_cls, t_slow, ratio (NaN where either clock is censored or the run
    relapsed), cls_relapse, slow_relapse, relapsed, cls_level, slow_clock, slow_level.
    """
    cls_level = pick_level(clocks, "cls", cls_eps)
    if slow == "gen":
        slow_clock, slow_level = gen_clock(clocks, acc_level)
    elif slow == "gen_acc":
        slow_clock, slow_level = slow, pick_level(clocks, "gen_acc", acc_level, log=False)
    elif slow == "gen_loss":  # `acc_level` is then the test-CE level
        slow_clock, slow_level = slow, pick_level(clocks, "gen_loss", acc_level)
    else:
        slow_clock, slow_level = slow, strictest_level(clocks, slow)
    a = clock_times(clocks, "cls", cls_level).rename(
        columns={"step": "t_cls", "censored": "cls_censored", "relapse": "cls_relapse"}
    )
    b = clock_times(clocks, slow_clock, slow_level).rename(
        columns={"step": "t_slow", "censored": "slow_censored", "relapse": "slow_relapse"}
    )
    df = a.merge(b, on=["cell_id", "seed"], how="outer")
    df["relapsed"] = df["cls_relapse"].fillna(False).astype(bool) | df["slow_relapse"].fillna(
        False
    ).astype(bool)
    t_cls = df["t_cls"].to_numpy(float)
    df["ratio"] = df["t_slow"].to_numpy(float) / np.where(t_cls > 0, t_cls, np.nan)
    df.loc[df["relapsed"], "ratio"] = np.nan  # a relapsed run has no separation (issue 26)
    df["cls_level"], df["slow_clock"], df["slow_level"] = cls_level, slow_clock, slow_level
    return df.sort_values(["cell_id", "seed"]).reset_index(drop=True)


# --- law fits: read from fits.json, never fitted here ---------------------------------------
def law_records(fits: Mapping[str, Any] | None, clock: str) -> dict[str, dict]:
    """cell_id -> the `law` record of `clock` in fits.json (design.md "Fits output")."""
    out = {}
    for cid, cell in ((fits or {}).get("cells") or {}).items():
        for r in (cell or {}).get("fits") or []:
            if r.get("fit") == "law" and r.get("clock") == clock:
                out[str(cid)] = r
    return out


def fit_param(rec: Mapping[str, Any], name: str, key: str = "estimate") -> float:
    """A fits.json record's parameter `name` (`key`: estimate, ci_low, ci_high); NaN if absent."""
    v = ((rec.get("params") or {}).get(name) or {}).get(key)
    return math.nan if v is None else float(v)


def law_fits(
    clocks: pd.DataFrame | None, fits: Mapping[str, Any] | None = None, rep_clock: str = REP_CLOCK
) -> dict[str, dict[str, dict]]:
    """Per clock and cell, the chosen law of fits.json with its parameters (for figures/claims).

    Keys: `law` ("log" | "power"), `status`, `reason`, `delta_aic`; log law `slope` (b) and
    `intercept` (a); power law (chosen and ok) `exponent` (k), `log_prefactor` (log C), `t_kl`
    (T0). `clocks` is unused (kept for callers): nothing is fitted here.
    """
    out: dict[str, dict[str, dict]] = {}
    for clock in ("cls", rep_clock):
        out[clock] = {}
        for cid, r in law_records(fits, clock).items():
            e = {
                "law": r.get("preferred", ""),
                "status": r.get("status", ""),
                "reason": r.get("reason", ""),
                "delta_aic": fit_param(r, "delta_aic"),
                "source": "fits",
            }
            if r.get("status") == "ok" and r.get("preferred") == "log":
                e.update(slope=fit_param(r, "b"), intercept=fit_param(r, "a"))
            if r.get("status") == "ok" and r.get("preferred") == "power":
                c = fit_param(r, "C")
                e.update(exponent=fit_param(r, "k"), t_kl=fit_param(r, "T0"),
                         log_prefactor=math.log(c) if c > 0 else math.nan)  # fmt: skip
            out[clock][cid] = e
    return out


# --- trajectory readers -------------------------------------------------------------------------
def nanmedian(x: Any) -> float:
    """Median of the finite values of `x`; NaN when there are none."""
    arr = np.asarray(x, float)
    arr = arr[np.isfinite(arr)]
    return float(np.median(arr)) if arr.size else math.nan


def srank_matrix(ds: xr.Dataset) -> str | None:
    """Matrix whose stable rank tracks the representation: the store's end-to-end map."""
    if "srank" not in ds or "matrix" not in ds["srank"].dims or not ds.sizes["matrix"]:
        return None
    return end_to_end_matrix(ds)


# Fig. 3 candidates beyond the logged weight matrices (variables of relu_embed stores)
SRANK_VARIABLES = {"gated": "srank_gated", "hidden": "srank_hidden", "logits": "srank_logits"}


def srank_candidates(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """Every stable-rank trajectory of a relu store, (seed, step) each: the logged matrices (E,
    W1, U, UW) and the Fig. 3 candidates of `SRANK_VARIABLES` that the store has."""
    out = {}
    if "srank" in ds and "matrix" in ds["srank"].dims:
        for m in ds["matrix"].to_numpy():
            out[str(m)] = ds["srank"].sel(matrix=m)
    for name, var in SRANK_VARIABLES.items():
        if var in ds:
            out[name] = ds[var]
    return out


def relu_runs(study):
    """(cell_id, trajectory) of every relu_embed cell of a study, sorted."""
    for cid, _params, ds in cell_datasets(study):
        if model_kind(ds) == "relu_embed":
            yield cid, ds


_json = parse_json  # the old private name (report/figures.py)


# --- law decisions (the laws stage) and their calibration (the calibrate stage) ---------------
def read_laws(
    paths: Mapping[str, str | Path] | None, calibration: str | Path | None = None
) -> dict:
    """{"cells": cell_id -> runs/<cell>/laws.json, "calibration": calibration.json or None}."""
    cells = {str(c): json.loads(Path(p).read_text()) for c, p in sorted((paths or {}).items())}
    cal = Path(calibration) if calibration else None
    return {
        "cells": cells,
        "calibration": json.loads(cal.read_text()) if cal and cal.exists() else None,
    }


def law_decisions(laws: Mapping[str, Any] | None, clock: str) -> dict[str, dict]:
    """cell_id -> the laws stage's record of `clock` (decision, drift interval, reason, ...);
    cells whose store lacks the clock's quantity are left out."""
    out = {}
    for cid, rec in ((laws or {}).get("cells") or {}).items():
        r = (rec.get("clocks") or {}).get(clock)
        if r is not None and r.get("decision") != "absent":
            out[str(cid)] = r
    return out


# --- loading a study's tables ------------------------------------------------------------------
def read_measures(paths: Mapping[str, str | Path] | None) -> pd.DataFrame:
    """cell_id -> runs/<cell>/measures.parquet, concatenated (the replay stage's table)."""
    from twoclocks.replay.table import empty_measures

    frames = [pd.read_parquet(p) for _cid, p in sorted((paths or {}).items())]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_measures()


@dataclass
class StudyResults:
    """A study's tables as its stages wrote them; a table that is absent is empty (or None)."""

    clocks: pd.DataFrame
    fits: dict = field(default_factory=dict)
    measures: pd.DataFrame | None = None
    claims: dict | None = None
    manifests: dict[str, dict] = field(default_factory=dict)
    trajectories: dict[str, xr.Dataset] = field(default_factory=dict)
    laws: dict | None = None  # {"cells": runs/<cell>/laws.json by cell, "calibration": ...}

    @property
    def cells(self) -> pd.DataFrame:
        """The cell table (one row per cell: model, grid axes, label)."""
        return cell_table(self.trajectories, self.clocks)


def load_results(root: str | Path, trajectories: bool = True) -> StudyResults:
    """Every table under a study's results folder (results/<study> or STUDY_DIR/analysis with
    its runs/): clocks.parquet, fits.json, claims.json, runs/<cell>/{measures.parquet,
    manifest.json, trajectory.zarr}. Stores are opened lazily (zarr), never loaded whole."""
    root = Path(root)
    runs = root / "runs"
    clocks_path = root / "clocks.parquet"
    clocks = pd.read_parquet(clocks_path) if clocks_path.exists() else pd.DataFrame()

    def read(name: str) -> dict | None:
        path = root / name
        return json.loads(path.read_text()) if path.exists() else None

    def per_cell(name: str) -> dict[str, Path]:
        found = sorted(runs.glob(f"**/{name}")) if runs.is_dir() else []
        return {str(p.parent.relative_to(runs)): p for p in found}

    stores = {}
    if trajectories:
        for cid, path in per_cell("trajectory.zarr").items():
            stores[cid] = xr.open_zarr(path, consolidated=False)
    return StudyResults(
        clocks=clocks,
        fits=read("fits.json") or {},
        measures=read_measures(per_cell("measures.parquet")),
        claims=read("claims.json"),
        manifests={c: json.loads(p.read_text()) for c, p in per_cell("manifest.json").items()},
        trajectories=stores,
        laws=read_laws(per_cell("laws.json") or _under(root / "laws"), root / "calibration.json"),
    )


def _under(folder: Path) -> dict[str, Path]:
    """cell_id -> laws.json under `folder` (`python -m twoclocks.analyze` writes analysis/laws/)."""
    found = sorted(folder.glob("**/laws.json")) if folder.is_dir() else []
    return {str(p.parent.relative_to(folder)): p for p in found}


# --- the replay stage's measures (replay/table.py) -----------------------------------------------
def measure_rows(measures: pd.DataFrame | None, cell_id: str, measure: str) -> pd.DataFrame:
    """Rows of one measure of one cell (empty when the table or the measure is absent)."""
    if measures is None or measures.empty:
        return pd.DataFrame(columns=["seed", "anchor", "ref_step", "step", "value"])
    m = measures[(measures["cell_id"] == cell_id) & (measures["measure"] == measure)]
    return m.sort_values(["seed", "anchor", "ref_step", "step"], kind="stable")


def unmeasured_reason(measures: pd.DataFrame | None, cell_id: str, what: str) -> str | None:
    """Why the replay stage could not measure `what` on this cell, or None."""
    rows = measure_rows(measures, cell_id, "unmeasured")
    rows = rows[rows["anchor"] == what] if len(rows) else rows
    return str(rows["note"].iloc[0]) if len(rows) else None


def gate_window(pairs: pd.DataFrame, t_start: float, t_end: float) -> dict:
    """Cumulative gate drift of one member on the snapshots in [t_start, t_end], read from its
    ``gate_drift``/``gate_drift_weighted`` rows (columns measure, ref_step, step, value): the
    reference is the first snapshot in the window. Keys as `replay.gates.gate_drift`:
    ref_step, end_step, steps, drift, weighted, n_snapshots, max_drift, max_weighted."""
    rec = {"ref_step": np.nan, "end_step": np.nan, "steps": [], "drift": [], "weighted": []}
    rec.update(n_snapshots=0, max_drift=np.nan, max_weighted=np.nan)
    a, b = float(t_start), float(t_end)
    if not (np.isfinite(a) and np.isfinite(b)) or pairs.empty:
        return rec
    steps = np.unique(pairs["step"].to_numpy(np.int64))
    inside = steps[(steps >= a) & (steps <= b)]
    rec["n_snapshots"] = int(inside.size)
    if inside.size < 2:
        return rec
    win = pairs[(pairs["ref_step"] == inside[0]) & pairs["step"].isin(inside)]
    drift = win[win["measure"] == "gate_drift"].sort_values("step")["value"].to_numpy()
    weighted = win[win["measure"] == "gate_drift_weighted"].sort_values("step")["value"].to_numpy()
    rec.update(
        ref_step=int(inside[0]),
        end_step=int(inside[-1]),
        steps=[int(s) for s in inside],
        drift=[float(v) for v in drift],
        weighted=[float(v) for v in weighted],
        max_drift=float(drift.max()),
        max_weighted=float(weighted.max()),
    )
    return rec


def gate_pairs(measures: pd.DataFrame | None, cell_id: str) -> dict[int, pd.DataFrame]:
    """seed -> the gate-drift rows of one cell (both measures)."""
    if measures is None or measures.empty:
        return {}
    m = measures[
        (measures["cell_id"] == cell_id)
        & measures["measure"].isin(["gate_drift", "gate_drift_weighted"])
    ]
    return {int(s): g for s, g in m.groupby("seed")}
