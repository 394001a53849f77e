"""Machine-checked verdicts on the paper's claims (arXiv 2606.05863), from trajectories and clocks.

Every claim gets PASS, FAIL or INCONCLUSIVE (with the reason) and the measured numbers behind it.
Thresholds come from the config's `claims:` section (schema defaults = DEFAULTS below, so the
report states exactly what was checked); `evaluate_claims` uses the settings it is given and
rejects unknown keys. Law claims read fits.json (`fits.fit_law` records) and never fit: a cell
whose fit is `insufficient` adds its reason, and no `ok` fit at all makes the claim INCONCLUSIVE.

Clock levels follow design.md "Clocks table": `cls` levels are train-CE thresholds eps (eq. 2.1),
`rep_*` levels are structural-gap thresholds eta (eq. 2.2), `gen_acc` levels are test accuracies,
`gen_loss` levels test CEs (separation and wd_earlier judge both; design.md "ReLU claims").
Censored clocks (never fired) are counted and reported, never silently dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from twoclocks.analyze.clocks import CLOCK_COLUMNS, IDENTITY_COLUMNS, model_kind
from twoclocks.analyze.gates import gate_drift, snapshot_gates
from twoclocks.config import ABBREVIATIONS
from twoclocks.provenance import json_safe
from twoclocks.train.store import end_to_end_matrix

# --- thresholds: defaults of the config's `claims:` section (workflow/schemas, same values) ------
DEFAULTS: dict[str, Any] = {
    "cls_eps": 1e-6,  # train CE level of the paper's "train loss ~1e-6" (Fig. 1)
    "gen_acc_level": 0.99,  # test accuracy that marks "test loss has dropped"
    "gen_loss_level": 1e-2,  # test CE that marks "test loss has dropped" (the paper plots loss)
    "separation_min_ratio": 2.0,  # T_gen / T_cls above this = "long before"
    "min_runs": 2,  # fewer usable runs than this -> INCONCLUSIVE
    "wd_rho_max": -0.6,  # Spearman rho(weight decay, T_gen) at or below -> PASS; > 0 -> FAIL
    "wd_min_cells": 3,  # distinct weight decays needed for a rank correlation
    # Fig. 3's reading "~36 -> ~10-12" is a 67-72 % fall; 60 % allows for the reading's slack
    "srank_min_drop": 0.6,
    # the matrix srank_drop judges, fixed in advance: the map the theory is about acts on the
    # embeddings (eq. 2.3, Sec. 5); for a ReLU net that is the gated map, here its training-set
    # mean mean_a U D(a) W (d logits / d z); UW ignores the gates (docs/science.md 8)
    "srank_claim_matrix": "gated",
    "rep_exponent_range": [0.0, 1.0],  # k = 2 theta - 1 in (0, 1) (Thm 4.8/4.9)
    # grad_hierarchy's window: steps [1, T_cls(0.1)] per run, while the train CE is above 0.1
    # (a window in steps, independent of the log cadence)
    "grad_window_eps": 0.1,
    # cumulative gate drift on [T_cls, T_gen] at or below this (plain and logit-weighted): the
    # gates count as frozen. 5% of gates changed bounds the part of the network that the
    # frozen-gate linear model misdescribes (science.md 3)
    "gate_drift_max": 0.05,
    "fourier_gap_max": 0.5,  # final Fourier gap at or below this (and halved) -> concentrated
    "fourier_keep": 6,  # key frequencies kept when the gap is computed from snapshots
    "rep_clock": "rep_srank",  # representation clock of the separation and law claims
    # deep linear, lazy regime (issue 13, docs/science.md 6)
    "dln_eta": 0.1,  # normalised spurious-energy level of T_rep in the dln claims
    "dln_min_ratio": 5.0,  # median T_rep(dln_eta) / T_cls(eps_star) at or above -> slow clock
    "dln_sv_min_rho": 0.8,  # Spearman rho(sv rank, late shrink rate) at or above -> ordered
    "late_fraction": 0.25,  # small_sv_shrink_faster: "late" = the last 25 % of logged steps
    # relu_reduction (issue 14, docs/science.md 3): over [t0, T_gen] the frozen-gate run's
    # weights stay within 10 % of how far the real run moved them since t0
    # (||theta_b - theta_a|| / ||theta_a - theta(t0)||) and its test CE (its parameters in the
    # real network) within 10 % of the real one: the linear model then describes the plateau
    # to one significant figure, the precision of every other reading of the paper here
    "reduction_tol": 0.1,
}
# module names the figures use
CLS_EPS = DEFAULTS["cls_eps"]
GEN_ACC_LEVEL = DEFAULTS["gen_acc_level"]
SEPARATION_MIN_RATIO = DEFAULTS["separation_min_ratio"]
FOURIER_KEEP = DEFAULTS["fourier_keep"]
REP_CLOCK = DEFAULTS["rep_clock"]

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
_IDENTITY = {"study", "grid", "group_id", "cell_id", "cell_hash", "dataset_id", "seeds"}


def resolve_claim_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULTS overlaid with `settings` (the config's `claims:` section); unknown keys raise."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown claims settings {unknown}; allowed: {sorted(DEFAULTS)} "
            "(analysis settings belong in the config's analysis: section)"
        )
    return {**DEFAULTS, **settings}


# --- study normalisation -------------------------------------------------------------------------
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
            cells_attr = _json(study.attrs.get("cells"), {})
            e2e = _json(study.attrs.get("end_to_end_matrices"), {})
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
                    params = _json(ds["cell"].values.item(), None)
                ds.attrs = dict(ds.attrs, cell=json.dumps(params or {"cell_id": cid}))
                if cid in e2e:  # the union matrix axis of a stacked study does not say
                    ds.attrs["end_to_end_matrix"] = e2e[cid]
                items.append(ds)
    elif isinstance(study, Mapping):
        items = []
        for cid, ds in study.items():
            params = _json(ds.attrs.get("cell"), {}) or {}
            params.setdefault("cell_id", str(cid))
            ds = ds.copy()
            ds.attrs["cell"] = json.dumps(params)
            items.append(ds)
    else:
        items = list(study)
    out = []
    for i, ds in enumerate(items):
        params = _json(ds.attrs.get("cell"), {}) or {}
        cid = str(params.get("cell_id", f"cell{i}"))
        out.append((cid, params, ds))
    return sorted(out, key=lambda t: t[0])


def _json(value: Any, default: Any) -> Any:
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
    rows = {}
    for cid, params, ds in cell_datasets(study):
        rows[cid] = {
            "cell_id": cid,
            "model": None,  # first column; the store's model, not a guess from params
            **{k: v for k, v in params.items() if k not in _IDENTITY and _scalar(v)},
        }
        rows[cid]["model"] = model_kind(ds)
    if clocks is not None and len(clocks):
        axes = [c for c in clocks.columns if c not in _CLOCK_COLS]
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
    varying = [
        c
        for c in table.columns
        if c not in {"cell_id", "model"} and table[c].astype(str).nunique() > 1
    ]
    short = ABBREVIATIONS  # the cell ids' abbreviations (config)

    def label(r: pd.Series) -> str:
        parts = [f"{short.get(c, c)}={r[c]}" for c in varying if pd.notna(r[c])]
        return ", ".join(parts) if parts else r["cell_id"]

    table["label"] = table.apply(label, axis=1)
    return table.sort_values([*(c for c in varying if c != "model"), "cell_id"]).reset_index(
        drop=True
    )


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


_CLOCK_COLS = {*IDENTITY_COLUMNS, *CLOCK_COLUMNS}


# --- clock helpers ----------------------------------------------------------------------------
def usable(clocks: pd.DataFrame, clock: str) -> pd.DataFrame:
    """Rows of one clock that are post-fit, resolved, above the dtype floor, not diverged."""
    if clocks is None or clocks.empty or "clock" not in clocks:
        return pd.DataFrame(columns=sorted(_CLOCK_COLS))
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
    """Per (cell_id, seed): `step` of `clock` at `level` (NaN if censored) and `censored`."""
    df = usable(clocks, clock)
    if level is None or df.empty:
        return pd.DataFrame(columns=["cell_id", "seed", "step", "censored"])
    df = df[np.isclose(df["level"].to_numpy(float), level, rtol=1e-9, atol=0)]
    out = df[["cell_id", "seed", "step", "censored"]].copy()
    out["censored"] = out["censored"].astype(bool)
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

    Columns cell_id, seed, t_cls, t_slow, ratio (NaN where either clock is censored),
    cls_level, slow_clock, slow_level.
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
        columns={"step": "t_cls", "censored": "cls_censored"}
    )
    b = clock_times(clocks, slow_clock, slow_level).rename(
        columns={"step": "t_slow", "censored": "slow_censored"}
    )
    df = a.merge(b, on=["cell_id", "seed"], how="outer")
    t_cls = df["t_cls"].to_numpy(float)
    df["ratio"] = df["t_slow"].to_numpy(float) / np.where(t_cls > 0, t_cls, np.nan)
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


def _p(rec: Mapping[str, Any], name: str, key: str = "estimate") -> float:
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
                "delta_aic": _p(r, "delta_aic"),
                "source": "fits",
            }
            if r.get("status") == "ok" and r.get("preferred") == "log":
                e.update(slope=_p(r, "b"), intercept=_p(r, "a"))
            if r.get("status") == "ok" and r.get("preferred") == "power":
                c = _p(r, "C")
                e.update(exponent=_p(r, "k"), t_kl=_p(r, "T0"),
                         log_prefactor=math.log(c) if c > 0 else math.nan)  # fmt: skip
            out[clock][cid] = e
    return out


# --- trajectory helpers -----------------------------------------------------------------------
def _window(ds: xr.Dataset, lo: float, hi: float) -> xr.Dataset:
    steps = ds["step"].to_numpy()
    return ds.isel(step=np.flatnonzero((steps >= lo) & (steps <= hi)))


def _nanmedian(x: Any) -> float:
    arr = np.asarray(x, float)
    arr = arr[np.isfinite(arr)]
    return float(np.median(arr)) if arr.size else math.nan


def srank_matrix(ds: xr.Dataset) -> str | None:
    """Matrix whose stable rank tracks the representation: the store's end-to-end map."""
    if "srank" not in ds or "matrix" not in ds["srank"].dims or not ds.sizes["matrix"]:
        return None
    return end_to_end_matrix(ds)


def fourier_concentration(snap: np.ndarray, modulus: int, keep: int = FOURIER_KEEP) -> float:
    """Fraction of embedding energy outside the top `keep` frequencies (rows = residues 0..p-1)."""
    rows = np.asarray(snap, float)[:modulus]
    coef = np.fft.rfft(rows - rows.mean(axis=0), axis=0)
    energy = np.sum(np.abs(coef[1:]) ** 2, axis=1)
    total = energy.sum()
    if total <= 0:
        return math.nan
    return float(1.0 - np.sort(energy)[::-1][:keep].sum() / total)


# --- the claims -------------------------------------------------------------------------------
def _claim(cid: str, claim: str, verdict: str, evidence: str, **details: Any) -> dict:
    return {"id": cid, "claim": claim, "verdict": verdict, "evidence": evidence, "details": details}


def _fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _gen_levels(s: dict) -> list[tuple[str, float]]:
    """The generalisation clocks every T_gen claim checks: test accuracy and test loss."""
    return [("gen_acc", s["gen_acc_level"]), ("gen_loss", s["gen_loss_level"])]


def _combine(parts: list[tuple[str, str, str]]) -> tuple[str, str]:
    """One verdict from per-clock (clock, verdict, evidence): PASS (FAIL) when every clock that
    could be judged passes (fails), INCONCLUSIVE when they disagree or none could be judged."""
    judged = {v for _c, v, _e in parts if v != INCONCLUSIVE}
    ev = "; ".join(f"[{c}: {v}] {e}" for c, v, e in parts)
    if len(judged) > 1:
        return INCONCLUSIVE, "the accuracy and loss clocks disagree: " + ev
    return (judged.pop() if judged else INCONCLUSIVE), ev


def _claim_separation(clocks, cells, s) -> dict:
    text = "Train CE reaches ~1e-6 long before the test loss drops (T_gen / T_cls > 2)."
    relu = set(cells.loc[cells["model"] == "relu_embed", "cell_id"])
    parts, details = [], {}
    for gclock, glevel in _gen_levels(s):
        df = separation_ratios(clocks, gclock, s["cls_eps"], glevel)
        df = df[df["cell_id"].isin(relu)] if relu else df
        if df.empty or df["cls_level"].isna().all() or df["slow_level"].isna().all():
            parts.append((gclock, INCONCLUSIVE, "no cls/gen clocks for ReLU cells"))
            continue
        ok = df["ratio"].notna()
        n_cls_cens = int(df["cls_censored"].fillna(True).astype(bool).sum())
        n_gen_cens = int(df["slow_censored"].fillna(True).astype(bool).sum())
        head = f"eps={df['cls_level'].iloc[0]:.0e}, {gclock}@{df['slow_level'].iloc[0]:g}: "
        cens = f"censored: {n_cls_cens} cls, {n_gen_cens} gen"
        if ok.sum() < s["min_runs"]:
            why = f"{int(ok.sum())} runs with both clocks ({cens})"
            parts.append((gclock, INCONCLUSIVE, head + why))
            continue
        per_cell = df[ok].groupby("cell_id")["ratio"].median()
        med = float(np.median(per_cell))
        verdict = PASS if med > s["separation_min_ratio"] else FAIL
        ev = (
            f"{head}median over cells of median T_gen/T_cls = {med:.3g} (range "
            f"{per_cell.min():.3g}-{per_cell.max():.3g}, {int(ok.sum())} runs; {cens})"
        )
        parts.append((gclock, verdict, ev))
        details[gclock] = {k: float(v) for k, v in per_cell.items()}
    verdict, ev = _combine(parts)
    per_cell = details.get("gen_acc", details.get("gen_loss", {}))
    return _claim("separation", text, verdict, ev, per_cell=per_cell, per_clock=details)


def _median_ratio_claim(cid: str, text: str, runs: pd.DataFrame, s: dict, describe) -> dict:
    """PASS when the median over cells of each cell's median ratio exceeds the threshold."""
    per_cell = runs.groupby("cell_id")["ratio"].median()
    med = float(np.median(per_cell))
    verdict = PASS if med > s["separation_min_ratio"] else FAIL
    ev = describe(med, per_cell.min(), per_cell.max())
    return _claim(cid, text, verdict, ev, per_cell={k: float(v) for k, v in per_cell.items()})


def _claim_weight_decay(clocks, cells, s) -> dict:
    text = "Larger weight decay groks earlier (T_gen decreases with weight decay)."
    if "weight_decay" not in cells:
        return _claim("wd_earlier", text, INCONCLUSIVE, "weight decay is not a grid axis")
    parts, rho_by, t_by = [], {}, {}
    for gclock, target in _gen_levels(s):
        glevel = pick_level(clocks, gclock, target, log=gclock != "gen_acc")
        verdict, ev, rhos, pairs = _wd_rank(clocks, cells, s, gclock, glevel)
        parts.append((gclock, verdict, ev))
        if rhos:
            rho_by[gclock], t_by[gclock] = rhos, pairs
    verdict, ev = _combine(parts)
    first = next(iter(rho_by), None)
    return _claim(
        "wd_earlier",
        text,
        verdict,
        ev,
        rho=rho_by.get(first, []),
        t_gen=t_by.get(first, {}),
        per_clock={c: {"rho": rho_by[c], "t_gen": t_by[c]} for c in rho_by},
    )


def _wd_rank(clocks, cells, s, gclock: str, glevel: float | None):
    """Spearman rho(weight decay, median T_gen) per group of cells that differ only in weight
    decay, for one generalisation clock: (verdict, evidence, rhos, cell -> T_gen)."""
    relu = cells[cells["model"] == "relu_embed"]
    t = clock_times(clocks, gclock, glevel)
    if t.empty:
        return INCONCLUSIVE, f"no {gclock} clock", [], {}
    t["step"] = t["step"].fillna(np.inf)  # never grokked = latest
    med = t.groupby("cell_id")["step"].median().rename("t_gen").reset_index()
    df = relu.merge(med, on="cell_id")
    other = [
        c
        for c in df.columns
        if c not in {"cell_id", "label", "weight_decay", "t_gen", "model"}
        and df[c].astype(str).nunique() > 1
    ]
    rhos, n_used, pairs = [], 0, {}
    for _, g in df.groupby(other, sort=True) if other else [(None, df)]:
        g = g[np.isfinite(g["t_gen"]) | (g["t_gen"] == np.inf)]
        if g["weight_decay"].nunique() < s["wd_min_cells"] or not np.isfinite(g["t_gen"]).any():
            continue
        if g["t_gen"].nunique() < 2:
            rho = 0.0  # T_gen does not depend on weight decay at all
        else:
            rho = stats.spearmanr(g["weight_decay"], g["t_gen"]).statistic
        if np.isfinite(rho):
            rhos.append(float(rho))
            n_used += len(g)
            pairs.update({str(r.cell_id): float(r.t_gen) for r in g.itertuples()})
    if not rhos:
        why = f"fewer than {s['wd_min_cells']} weight decays with a grokked cell"
        return INCONCLUSIVE, why, [], {}
    rho = float(np.mean(rhos))
    verdict = PASS if rho <= s["wd_rho_max"] else FAIL if rho > 0 else INCONCLUSIVE
    ev = (
        f"Spearman rho(weight decay, median {gclock}@{glevel:g}) = {rho:.3g} over {n_used} "
        f"cells ({len(rhos)} group(s)); PASS if <= {s['wd_rho_max']}, FAIL if > 0"
    )
    return verdict, ev, rhos, pairs


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


def _drops(sr: xr.DataArray, a: float, b: float) -> tuple[float, float, float, float]:
    """(srank(T_cls), srank(T_gen), drop on [T_cls, T_gen], drop from the post-fit peak (max
    after T_cls) to the end); drops relative to the start value."""
    sr = sr.dropna("step")
    if sr.size == 0:
        return (np.nan,) * 4
    lo = float(sr.sel(step=a, method="nearest"))
    hi = float(sr.sel(step=b, method="nearest"))
    after = sr.where(sr["step"] >= a, drop=True)
    peak = float(after.max()) if after.size else np.nan
    end = float(sr.isel(step=-1))
    win = 1.0 - hi / lo if lo > 0 else np.nan
    late = 1.0 - end / peak if peak > 0 else np.nan
    return lo, hi, win, late


def _claim_srank(study, clocks, cells, s) -> dict:
    text = "The stable rank falls substantially inside the generalisation window."
    mat = s["srank_claim_matrix"]
    cls_level = pick_level(clocks, "cls", s["cls_eps"])
    gclock, glevel = gen_clock(clocks, s["gen_acc_level"])
    t_cls = clock_times(clocks, "cls", cls_level).set_index(["cell_id", "seed"])["step"]
    t_gen = clock_times(clocks, gclock, glevel).set_index(["cell_id", "seed"])["step"]
    drops, n_missing, cand = {}, 0, {}
    for cid, _params, ds in cell_datasets(study):
        if model_kind(ds) != "relu_embed":
            continue
        series = srank_candidates(ds)
        for seed in ds["seed"].to_numpy():
            a, b = t_cls.get((cid, int(seed)), np.nan), t_gen.get((cid, int(seed)), np.nan)
            if not (np.isfinite(a) and np.isfinite(b)):
                n_missing += 1
                continue
            a, b = min(a, b), max(a, b)
            for name, sr in series.items():
                d = _drops(sr.sel(seed=seed), a, b)
                cand.setdefault(name, []).append(d)
                if name == mat and np.isfinite(d[2]):
                    drops[f"{cid}/seed={int(seed)}"] = d[:3]
    summary = {
        name: {
            "start": float(np.nanmedian([d[0] for d in ds_])),
            "at_t_gen": float(np.nanmedian([d[1] for d in ds_])),
            "window_drop": float(np.nanmedian([d[2] for d in ds_])),
            "peak_to_end_drop": float(np.nanmedian([d[3] for d in ds_])),
        }
        for name, ds_ in cand.items()
    }
    others = ", ".join(
        f"{n} {v['start']:.3g}->{v['at_t_gen']:.3g} ({v['window_drop']:.0%}; peak-end "
        f"{v['peak_to_end_drop']:.0%})"
        for n, v in summary.items()
    )
    if len(drops) < s["min_runs"]:
        why = (
            f"{len(drops)} runs with the stable rank of {mat!r} and both clocks "
            f"({n_missing} censored/missing)"
        )
        return _claim("srank_drop", text, INCONCLUSIVE, why, candidates=summary)
    rel = np.array([d[2] for d in drops.values()])
    starts = np.array([d[0] for d in drops.values()])
    ends = np.array([d[1] for d in drops.values()])
    verdict = PASS if np.median(rel) >= s["srank_min_drop"] else FAIL
    ev = (
        f"pre-registered matrix {mat!r}: srank from T_cls(eps={cls_level:.0e}) to T_gen "
        f"({gclock}@{glevel}): median {np.median(starts):.3g} -> {np.median(ends):.3g}, median "
        f"relative drop {np.median(rel):.0%} over {len(rel)} runs (PASS if >= "
        f"{s['srank_min_drop']:.0%}). Every candidate, median [T_cls, T_gen] and post-fit "
        f"peak to end: {others}"
    )
    return _claim(
        "srank_drop",
        text,
        verdict,
        ev,
        runs={k: list(v) for k, v in drops.items()},
        candidates=summary,
    )


def _not_ok(recs: Mapping[str, Mapping], clock: str) -> str:
    """Why no cell has an `ok` law fit of `clock` (the fits' own reasons)."""
    if not recs:
        return f"no {clock} law fit in fits.json"
    why = "; ".join(f"{cid}: {r.get('reason') or r.get('status')}" for cid, r in recs.items())
    return f"no cell with an ok {clock} law fit ({why})"


def _interval(rec: Mapping[str, Any], name: str) -> str:
    est, lo, hi = (_p(rec, name, k) for k in ("estimate", "ci_low", "ci_high"))
    return f"{_fmt(est)} [{_fmt(lo)}, {_fmt(hi)}]"


def _claim_cls_law(fits, s) -> dict:
    text = "The classifier clock is logarithmic in 1/eps (log law preferred over a power law)."
    recs = law_records(fits, "cls")
    ok = {k: r for k, r in recs.items() if r.get("status") == "ok"}
    if not ok:
        return _claim("cls_log_law", text, INCONCLUSIVE, _not_ok(recs, "cls"))
    logs = [k for k, r in ok.items() if r.get("preferred") == "log"]
    verdict = PASS if len(logs) > len(ok) / 2 else FAIL
    slopes = [_p(r, "b") for r in ok.values()]
    ev = (
        f"log law chosen by AIC in {len(logs)}/{len(ok)} cells with an ok fit "
        f"({len(recs) - len(ok)} insufficient); median delta-AIC power-log = "
        f"{_fmt(_nanmedian([_p(r, 'delta_aic') for r in ok.values()]))}; median slope "
        f"b = dT/dlog(1/eps) = {_fmt(_nanmedian(slopes))} steps (1/nu); per cell b: "
        + ", ".join(f"{k}: {_interval(r, 'b')}" for k, r in ok.items())
    )
    details = {k: {"law": r.get("preferred"), "b": _p(r, "b"), "delta_aic": _p(r, "delta_aic")}
               for k, r in recs.items()}  # fmt: skip
    return _claim("cls_log_law", text, verdict, ev, fits=details)


def _claim_rep_law(fits, s) -> dict:
    text = "The representation clock is polynomial in 1/eta with exponent 2 theta - 1 in (0, 1)."
    clock = s["rep_clock"]
    recs = law_records(fits, clock)
    ok = {k: r for k, r in recs.items() if r.get("status") == "ok"}
    if not ok:
        return _claim("rep_power_law", text, INCONCLUSIVE, _not_ok(recs, clock))
    lo, hi = (float(v) for v in s["rep_exponent_range"])
    kinds = {}
    for k, r in ok.items():
        if r.get("preferred") == "log":
            kinds[k] = "logarithmic"
        elif lo < _p(r, "k", "ci_low") and _p(r, "k", "ci_high") < hi:
            kinds[k] = "power, k in range"
        else:
            kinds[k] = "power, k out of range"
    n_in = sum(v == "power, k in range" for v in kinds.values())
    n_log = sum(v == "logarithmic" for v in kinds.values())
    verdict = PASS if n_in > len(ok) / 2 else FAIL
    per_cell = ", ".join(
        f"{k}: {kinds[k]} (" + (f"b = {_interval(r, 'b')}" if kinds[k] == "logarithmic"
                                else f"k = {_interval(r, 'k')}") + ")"
        for k, r in ok.items()
    )  # fmt: skip
    ev = (
        f"{clock}: power law with k (whole interval) in ({lo}, {hi}) in {n_in}/{len(ok)} cells "
        f"with an ok fit, logarithmic (exponential tail, theta = 1/2) in {n_log}, "
        f"{len(recs) - len(ok)} insufficient; {per_cell}"
    )
    details = {k: {"law": r.get("preferred"), "status": r.get("status"), "k": _p(r, "k"),
                   "b": _p(r, "b"), "finding": kinds.get(k, r.get("reason"))}
               for k, r in recs.items()}  # fmt: skip
    return _claim("rep_power_law", text, verdict, ev, fits=details)


def _relu_runs(study):
    for cid, _params, ds in cell_datasets(study):
        if model_kind(ds) == "relu_embed":
            yield cid, ds


def relative_displacement(ds: xr.Dataset, block: str, hi: np.ndarray) -> np.ndarray:
    """Per member: ||X(b) - X(0)||_F / ||X(0)||_F of weight block X between step 0 and the last
    weight snapshot b <= hi (NaN if there is none after 0): how far AdamW moved the block,
    relative to its size, by the end of the window (snapshots are log-spaced, dense early)."""
    snap = ds[f"snap_{block}"]
    steps = ds["checkpoint_step"].to_numpy()
    out = np.full(ds.sizes["seed"], np.nan)
    for i in range(out.size):
        k = np.flatnonzero((steps > 0) & (steps <= hi[i]))
        if not np.isfinite(hi[i]) or k.size == 0:
            continue
        x0 = snap.isel(seed=i, checkpoint=0).to_numpy().astype(np.float64)
        x1 = snap.isel(seed=i, checkpoint=int(k[-1])).to_numpy().astype(np.float64)
        n0 = np.linalg.norm(x0)
        out[i] = np.linalg.norm(x1 - x0) / n0 if n0 > 0 else np.nan
    return out


def _claim_grad_hierarchy(study, clocks, s) -> dict:
    text = "Early in training the head receives larger gradients than the embedding (Prop. 4.2)."
    level = pick_level(clocks, "cls", s["grad_window_eps"])
    t_win = clock_times(clocks, "cls", level).set_index(["cell_id", "seed"])["step"]
    ratios, moves, updates = {}, {}, {}
    for cid, ds in _relu_runs(study):
        if "grad_norm" not in ds or not {"U", "E"} <= {str(b) for b in ds["block"].values}:
            continue
        seeds = [int(x) for x in ds["seed"].to_numpy()]
        hi = np.array([t_win.get((cid, x), np.nan) for x in seeds], dtype=float)
        steps = ds["step"].to_numpy()
        g = ds["grad_norm"]
        r = (g.sel(block="U") / g.sel(block="E")).transpose("seed", "step").to_numpy()
        ur = None
        if "update_ratio" in ds:  # per-step relative update sizes, as the optimiser moves them
            u = ds["update_ratio"]
            ur = (u.sel(block="U") / u.sel(block="E")).transpose("seed", "step").to_numpy()
        for i, seed in enumerate(seeds):
            inside = (steps >= 1) & (steps <= hi[i])
            v = np.nanmedian(r[i, inside]) if inside.any() else np.nan
            if np.isfinite(v):
                ratios[f"{cid}/seed={seed}"] = float(v)
            w = np.nanmedian(ur[i, inside]) if ur is not None and inside.any() else np.nan
            if np.isfinite(w):
                updates[f"{cid}/seed={seed}"] = float(w)
        if {"snap_U", "snap_E", "checkpoint_step"} <= set(ds.variables):
            du, de = relative_displacement(ds, "U", hi), relative_displacement(ds, "E", hi)
            for seed, a, b in zip(seeds, du, de, strict=True):
                if np.isfinite(a) and np.isfinite(b) and b > 0:
                    moves[f"{cid}/seed={seed}"] = float(a / b)
    if len(ratios) < s["min_runs"]:
        why = f"{len(ratios)} runs with grad norms and T_cls(eps={s['grad_window_eps']:g})"
        return _claim("grad_hierarchy", text, INCONCLUSIVE, why)
    vals = np.array(list(ratios.values()))
    frac = float(np.mean(vals > 1))
    verdict = (
        PASS
        if np.median(vals) > 1 and frac >= 2 / 3
        else FAIL
        if np.median(vals) < 1
        else INCONCLUSIVE
    )
    ev = (
        f"median of ||grad_U||/||grad_E|| over steps [1, T_cls(eps={level:g})] per run: "
        f"median {np.median(vals):.3g} over {vals.size} runs, > 1 in {frac:.0%}"
    )
    for what, per_run in (
        (
            "As the optimiser moves them: relative displacement ||dU||/||U(0)|| over "
            "||dE||/||E(0)|| from step 0 to the last snapshot in the window",
            moves,
        ),
        (
            "Per-step relative update size ||dU||/||U|| over ||dE||/||E|| in the same window "
            "(`update_ratio`)",
            updates,
        ),
    ):
        if per_run:
            v = np.array(list(per_run.values()))
            share = f"> 1 in {np.mean(v > 1):.0%} of {v.size} runs"
            ev += f". {what}, median {np.median(v):.3g} ({share})"
    return _claim(
        "grad_hierarchy",
        text,
        verdict,
        ev,
        ratios=ratios,
        relative_displacement=moves,
        update_ratio=updates,
    )


def _claim_gates(study, clocks, s) -> dict:
    text = (
        "Precondition (an assumption of the paper's ReLU corollary, not a claim of it): the "
        "training-set gate pattern stays fixed on [T_cls, T_gen], where the frozen-gate "
        "reduction is used (Prop. 4.1)."
    )
    cls_level = pick_level(clocks, "cls", s["cls_eps"])
    gclock, glevel = gen_clock(clocks, s["gen_acc_level"])
    t_cls = clock_times(clocks, "cls", cls_level).set_index(["cell_id", "seed"])["step"]
    t_gen = clock_times(clocks, gclock, glevel).set_index(["cell_id", "seed"])["step"]
    runs, skipped = {}, []
    for cid, ds in _relu_runs(study):
        if "checkpoint_step" not in ds:
            skipped.append(f"{cid}: no weight snapshots")
            continue
        seeds = [int(x) for x in ds["seed"].to_numpy()]
        a = np.array([t_cls.get((cid, x), np.nan) for x in seeds], dtype=float)
        b = np.array([t_gen.get((cid, x), np.nan) for x in seeds], dtype=float)
        try:
            recs = gate_drift(*snapshot_gates(ds), a, b)
        except (ValueError, RuntimeError) as err:  # a store this cell's params cannot rebuild
            skipped.append(f"{cid}: {err}")
            continue
        for seed, rec in zip(seeds, recs, strict=True):
            if rec["n_snapshots"] >= 2:
                runs[f"{cid}/seed={seed}"] = rec
    why_short = f"; skipped {skipped}" if skipped else ""
    if len(runs) < s["min_runs"]:
        why = (
            f"{len(runs)} runs with both clocks and >= 2 weight snapshots in [T_cls, T_gen] "
            f"(raise logging.snapshot_count for a finer grid){why_short}"
        )
        return _claim("gates_stable", text, INCONCLUSIVE, why)
    drift = np.array([r["max_drift"] for r in runs.values()])
    weighted = np.array([r["max_weighted"] for r in runs.values()])
    n_snap = np.array([r["n_snapshots"] for r in runs.values()])
    held = (drift <= s["gate_drift_max"]) & (weighted <= s["gate_drift_max"])
    verdict = PASS if held.mean() > 0.5 else FAIL
    ev = (
        f"cumulative gate drift from the snapshot at T_cls(eps={cls_level:.0e}) to the last "
        f"one before T_gen ({gclock}@{glevel:g}): max fraction of (train sample, unit) gates "
        f"changed, median {np.median(drift):.3g} (range {drift.min():.3g}-{drift.max():.3g}); "
        f"weighted by each unit's share of the logits, median {np.median(weighted):.3g}; "
        f"held (both <= {s['gate_drift_max']:g}) in {int(held.sum())}/{held.size} runs "
        f"({int(np.median(n_snap))} snapshots per window, median){why_short}"
    )
    return _claim("gates_stable", text, verdict, ev, runs=runs)


def _claim_fourier(study, s) -> dict:
    text = "After grokking the embedding energy concentrates in few Fourier frequencies."
    gaps, source = {}, None
    for cid, ds in _relu_runs(study):
        params = _json(ds.attrs.get("cell"), {}) or {}
        for seed_i, seed in enumerate(ds["seed"].to_numpy()):
            first = last = np.nan
            if "fourier_gap" in ds:
                fg = ds["fourier_gap"].isel(seed=seed_i).dropna("step")
                if fg.size:
                    first, last, source = float(fg[0]), float(fg[-1]), "fourier_gap"
            elif "snap_E" in ds and params.get("modulus"):
                snap = ds["snap_E"].isel(seed=seed_i).to_numpy()
                p = int(params["modulus"])
                first = fourier_concentration(snap[0], p, s["fourier_keep"])
                last = fourier_concentration(snap[-1], p, s["fourier_keep"])
                source = f"snap_E (top {s['fourier_keep']} frequencies)"
            if np.isfinite(first) and np.isfinite(last):
                gaps[f"{cid}/seed={int(seed)}"] = (first, last)
    if len(gaps) < s["min_runs"]:
        return _claim("fourier", text, INCONCLUSIVE, f"{len(gaps)} runs with Fourier data")
    first = np.array([g[0] for g in gaps.values()])
    last = np.array([g[1] for g in gaps.values()])
    ok = (last <= s["fourier_gap_max"]) & (last <= 0.5 * first)
    verdict = PASS if ok.mean() > 0.5 else FAIL
    ev = (
        f"energy outside the key frequencies ({source}): median {np.median(first):.3g} at init "
        f"-> {np.median(last):.3g} at the end; concentrated in {int(ok.sum())}/{ok.size} runs "
        f"(final <= {s['fourier_gap_max']} and halved)"
    )
    return _claim("fourier", text, verdict, ev, gaps={k: list(v) for k, v in gaps.items()})


# --- deep linear networks in the lazy regime (issue 13, docs/science.md 6) ---------------------
DLN_CLOCK = "rep_spurious"


def _dln_groups(clocks: pd.DataFrame, cells: pd.DataFrame) -> dict[str, list[str]]:
    """Deep linear cells with a `rep_spurious` clock: `lazy` (orthogonal init, weight decay > 0),
    `wd0` (orthogonal init, no weight decay) and `rich` (any other init, e.g. small uniform)."""
    if clocks is None or clocks.empty or "clock" not in clocks:
        return {"lazy": [], "wd0": [], "rich": []}
    have = set(clocks.loc[clocks["clock"] == DLN_CLOCK, "cell_id"].astype(str))
    dl = cells[(cells["model"] == "deep_linear") & cells["cell_id"].astype(str).isin(have)]
    scheme = dl["init_scheme"] if "init_scheme" in dl else pd.Series("", index=dl.index)
    ortho = scheme.fillna("").astype(str) == "orthogonal"
    wd = pd.to_numeric(dl["weight_decay"], errors="coerce") if "weight_decay" in dl else 0 * ortho
    wd = wd.fillna(0.0)
    ids = dl["cell_id"].astype(str)
    return {
        "lazy": sorted(ids[ortho & (wd > 0)]),
        "wd0": sorted(ids[ortho & (wd <= 0)]),
        "rich": sorted(ids[~ortho]),
    }


def spurious_ratios(clocks: pd.DataFrame, cell_ids: list[str], eta: float) -> pd.DataFrame:
    """Per run T_rep(eta) / T_cls(eps_star) on `rep_spurious` (level nearest `eta`); `ratio` NaN
    where the clock never fired (censored) or the level is unresolved. Columns cell_id, seed,
    level, t_rep, t_cls, ratio, g_ref (raw spurious energy at T_cls)."""
    df = clocks[
        (clocks["clock"] == DLN_CLOCK)
        & clocks["cell_id"].astype(str).isin(cell_ids)
        & ~clocks["pre_fit"].fillna(False).astype(bool)
        & ~clocks["diverged"].fillna(False).astype(bool)
    ]
    if df.empty:
        return pd.DataFrame(
            columns=["cell_id", "seed", "level", "t_rep", "t_cls", "ratio", "g_ref"]
        )
    levels = np.unique(df["level"].to_numpy(float))
    level = float(levels[np.argmin(np.abs(np.log(levels / eta)))])
    df = df[np.isclose(df["level"].to_numpy(float), level, rtol=1e-9, atol=0)]
    fired = ~df["censored"].astype(bool) & ~df["unresolved"].fillna(True).astype(bool)
    t_cls = df["t_cls_ref"].to_numpy(float)
    t_rep = np.where(fired, df["step"].to_numpy(float), np.nan)
    with np.errstate(all="ignore"):
        ratio = t_rep / np.where(t_cls > 0, t_cls, np.nan)
    out = pd.DataFrame({"cell_id": df["cell_id"].astype(str).to_numpy(),
                        "seed": df["seed"].to_numpy(), "level": level, "t_rep": t_rep,
                        "t_cls": t_cls, "ratio": ratio,
                        "g_ref": df["g_ref"].to_numpy(float)})  # fmt: skip
    return out.sort_values(["cell_id", "seed"]).reset_index(drop=True)


def _per_cell_ratio(runs: pd.DataFrame) -> pd.Series:
    """Median ratio per cell over its fired runs; a cell where no run fired gets 0 (no clock)."""
    med = runs.groupby("cell_id")["ratio"].median()
    return med.fillna(0.0)


def _claim_deep_linear(clocks, cells, s) -> dict:
    text = (
        "In deep linear networks in the lazy regime (orthogonal init, n < d, weight decay > 0) the "
        "representation clock on the spurious energy fires well after the classifier clock."
    )
    lazy = _dln_groups(clocks, cells)["lazy"]
    if not lazy:
        return _claim("deep_linear", text, INCONCLUSIVE, "no deep linear cells with the "
                      "spurious-energy clock (orthogonal init, teacher with train_size < "
                      "input_dim, weight decay > 0) in this study")  # fmt: skip
    runs = spurious_ratios(clocks, lazy, float(s["dln_eta"]))
    if runs["ratio"].notna().sum() < s["min_runs"]:
        return _claim(
            "deep_linear",
            text,
            INCONCLUSIVE,
            f"{int(runs['ratio'].notna().sum())} lazy runs where {DLN_CLOCK} fired",
        )
    per_cell = _per_cell_ratio(runs)
    med = float(np.median(per_cell))
    verdict = PASS if med >= s["dln_min_ratio"] else FAIL
    n_cens = int(runs["ratio"].isna().sum())
    ev = (
        f"{DLN_CLOCK} at eta={runs['level'].iloc[0]:g}: median over {len(per_cell)} lazy cells of "
        f"the per-cell median T_rep/T_cls(eps_star) = {med:.3g} (range {per_cell.min():.3g}-"
        f"{per_cell.max():.3g}; {n_cens} of {len(runs)} runs did not fire); per cell: "
        + ", ".join(f"{k}: {v:.3g}" for k, v in per_cell.items())
    )
    return _claim("deep_linear", text, verdict, ev,
                  per_cell={k: float(v) for k, v in per_cell.items()})  # fmt: skip


def _claim_dln_rate_scaling(fits, clocks, cells, s) -> dict:
    text = (
        "In the lazy regime T_rep scales as 1/(weight decay * lr): the exponent of T_rep against "
        "weight decay (lr fixed per sweep) is -1."
    )
    lazy = set(_dln_groups(clocks, cells)["lazy"])
    recs = [
        r
        for r in (fits or {}).get("scaling") or []
        if r.get("clock") == DLN_CLOCK
        and r.get("axis") == "weight_decay"
        and _json(r.get("group"), {}).get("init_scheme", "orthogonal") == "orthogonal"
    ]
    if not lazy or not recs:
        return _claim("dln_rate_scaling", text, INCONCLUSIVE,
                      f"no {DLN_CLOCK} scaling fit against weight_decay over lazy cells "
                      "(needs >= 3 positive weight decays per sweep)")  # fmt: skip
    ok = [r for r in recs if r.get("status") == "ok"]
    if not ok:
        why = "; ".join(f"{r.get('group')}: {r.get('reason')}" for r in recs)
        return _claim("dln_rate_scaling", text, INCONCLUSIVE, f"no ok scaling fit ({why})")
    holds = [_p(r, "exponent", "ci_low") <= -1.0 <= _p(r, "exponent", "ci_high") for r in ok]
    verdict = PASS if all(holds) else FAIL
    ev = (
        f"{DLN_CLOCK} at eta={_fmt(ok[0].get('level'))}: exponent of T_rep against weight decay "
        f"holds -1 in {sum(holds)}/{len(ok)} lazy sweeps with an ok fit; per sweep: "
        + ", ".join(f"{r.get('group')}: {_interval(r, 'exponent')}" for r in ok)
    )
    details = {
        str(r.get("group")): {k: _p(r, "exponent", k) for k in ("estimate", "ci_low", "ci_high")}
        for r in ok
    }
    return _claim("dln_rate_scaling", text, verdict, ev, sweeps=details)


def _claim_dln_controls(clocks, cells, s) -> dict:
    text = (
        "Controls: without weight decay, or from a small (rich-regime) init, the spurious-energy "
        "clock shows no slow clock (the instrument does not invent one)."
    )
    groups = _dln_groups(clocks, cells)
    controls = groups["wd0"] + groups["rich"]
    if not controls:
        return _claim("dln_controls", text, INCONCLUSIVE,
                      "no weight-decay-0 or small-init deep linear cells with the "
                      "spurious-energy clock")  # fmt: skip
    runs = spurious_ratios(clocks, controls, float(s["dln_eta"]))
    per_cell = _per_cell_ratio(runs)
    g_ref = runs.groupby("cell_id")["g_ref"].median()
    slow = [k for k, v in per_cell.items() if v >= s["dln_min_ratio"]]
    verdict = FAIL if slow else PASS
    kind = {c: ("wd=0" if c in groups["wd0"] else "small init") for c in controls}
    ev = (
        f"{len(slow)}/{len(per_cell)} control cells show a slow clock (median T_rep/T_cls >= "
        f"{s['dln_min_ratio']:g} at eta={runs['level'].iloc[0]:g}); per cell (ratio 0 = never "
        "fired; spurious energy at T_cls): "
        + ", ".join(
            f"{k} [{kind.get(k, '?')}]: {v:.3g} (G={_fmt(g_ref.get(k, math.nan))})"
            for k, v in per_cell.items()
        )
    )
    return _claim("dln_controls", text, verdict, ev,
                  per_cell={k: float(v) for k, v in per_cell.items()})  # fmt: skip


def _late_shrink_rates(ds: xr.Dataset, late_fraction: float) -> np.ndarray:
    """(seeds, sv) relative shrink rates -d log s_i / dt over the last `late_fraction` of the
    logged steps (two-point difference, per step); NaN where s_i is below 1e-10 s_1 at either
    end (numerically zero)."""
    sv = ds["singular_values"].transpose("seed", "step", "sv").values.astype(np.float64)
    steps = ds["step"].values.astype(np.float64)
    n = len(steps)
    i0 = min(n - 2, int(np.floor((1.0 - late_fraction) * (n - 1))))
    a, b = sv[:, i0, :], sv[:, -1, :]
    ok = (a > 1e-10 * a[:, :1]) & (b > 1e-10 * b[:, :1])
    with np.errstate(all="ignore"):
        rate = (np.log(a) - np.log(b)) / (steps[-1] - steps[i0])
    return np.where(ok, rate, np.nan)


def _claim_small_sv_shrink_faster(study, clocks, cells, s) -> dict:
    text = (
        "Prop. 4.3: late in training the singular values of the end-to-end map shrink at "
        "relative rates ordered smallest-fastest."
    )
    lazy = set(_dln_groups(clocks, cells)["lazy"])
    rhos, ordered = {}, 0
    for cid, _params, ds in cell_datasets(study):
        if cid not in lazy or "singular_values" not in ds or ds.sizes.get("step", 0) < 4:
            continue
        rates = _late_shrink_rates(ds, float(s["late_fraction"]))
        for i, seed in enumerate(ds["seed"].values):
            r = rates[i]
            keep = np.isfinite(r)
            if keep.sum() < 3:
                continue
            rank = np.arange(len(r))[keep]  # 0 = largest singular value
            rhos[f"{cid}#{int(seed)}"] = float(stats.spearmanr(rank, r[keep])[0])
            ordered += bool(np.all(np.diff(r[keep]) >= 0))
    if len(rhos) < s["min_runs"]:
        why = f"{len(rhos)} lazy deep linear runs with >= 3 resolved singular values"
        return _claim("small_sv_shrink_faster", text, INCONCLUSIVE, why)
    med = float(np.median(list(rhos.values())))
    verdict = PASS if med >= s["dln_sv_min_rho"] else FAIL
    ev = (
        f"last {s['late_fraction']:.0%} of logged steps: median over {len(rhos)} lazy runs of "
        f"Spearman rho(rank from the largest, relative shrink rate) = {med:.3g} (min "
        f"{min(rhos.values()):.3g}); rates exactly ordered in {ordered}/{len(rhos)} runs"
    )
    return _claim("small_sv_shrink_faster", text, verdict, ev, rho=rhos)


def _claim_dln_rep_law(fits, clocks, cells, s) -> dict:
    text = (
        "Lazy deep linear networks: T_rep on the spurious energy is logarithmic in 1/eta (an "
        "exponential tail, theta = 1/2; docs/science.md 6), as chosen by the law selection."
    )
    lazy = set(_dln_groups(clocks, cells)["lazy"])
    recs = {k: r for k, r in law_records(fits, DLN_CLOCK).items() if k in lazy}
    ok = {k: r for k, r in recs.items() if r.get("status") == "ok"}
    if not ok:
        return _claim("dln_rep_law", text, INCONCLUSIVE, _not_ok(recs, DLN_CLOCK))
    logs = sorted(k for k, r in ok.items() if r.get("preferred") == "log")
    verdict = PASS if len(logs) > len(ok) / 2 else FAIL
    ev = (
        f"{DLN_CLOCK}: law selection chose logarithmic in {len(logs)}/{len(ok)} lazy cells with "
        f"an ok fit, power in {len(ok) - len(logs)} ({len(recs) - len(ok)} insufficient); per "
        "cell: "
        + ", ".join(
            f"{k}: "
            + (f"log, b = {_interval(r, 'b')}" if r.get("preferred") == "log"
               else f"power, k = {_interval(r, 'k')}")
            for k, r in ok.items()
        )
    )  # fmt: skip
    details = {k: {"law": r.get("preferred"), "b": _p(r, "b"), "k": _p(r, "k"),
                   "delta_aic": _p(r, "delta_aic")} for k, r in recs.items()}  # fmt: skip
    return _claim("dln_rep_law", text, verdict, ev, fits=details)


def reduction_runs(reductions: Mapping[str, xr.Dataset], study, s: dict) -> dict[str, dict]:
    """Per (cell, seed, anchor) of the frozen-gate stage (`train.frozen_gates.reduce_cell`):
    the maxima over the plateau (t0, T_gen] of the relative divergence and of the relative
    test- and train-CE gaps |CE_frozen - CE_real| / CE_real, and whether the gate
    precondition held there (`gate_drift` on the weight snapshots of [T_cls, T_gen], both
    drifts <= ``gate_drift_max``; ``precondition`` None when it cannot be measured)."""
    trajectories = {cid: ds for cid, ds in _relu_runs(study)} if study is not None else {}
    out: dict[str, dict] = {}
    for cid, red in sorted(reductions.items()):
        if "divergence" not in red:  # no member had both clocks (the store's note says why)
            continue
        seeds = [int(x) for x in red["seed"].to_numpy()]
        t_cls, t_gen = red["t_cls"].to_numpy(), red["t_gen"].to_numpy()
        held: list[bool | None] = [None] * len(seeds)
        ds = trajectories.get(cid)
        if ds is not None and "checkpoint_step" in ds:
            try:
                recs = gate_drift(*snapshot_gates(ds), t_cls, t_gen)
                for i, rec in enumerate(recs):
                    if rec["n_snapshots"] >= 2:
                        held[i] = bool(
                            max(rec["max_drift"], rec["max_weighted"]) <= s["gate_drift_max"]
                        )
            except (ValueError, RuntimeError):
                pass
        steps = red["step"].to_numpy()
        real_test = red["real_test_loss"].to_numpy()
        real_train = red["real_train_loss"].to_numpy()
        for k, anchor in enumerate(red["anchor"].to_numpy()):
            for i, seed in enumerate(seeds):
                t0 = int(red["t0"].to_numpy()[k, i])
                if t0 < 0:
                    continue
                win = (steps > t0) & (steps <= t_gen[i])
                if not win.any():
                    continue
                out[f"{cid}/seed={seed}/{anchor}"] = {
                    "t0": t0,
                    "t_gen": float(t_gen[i]),
                    "max_divergence": float(np.nanmax(red["divergence"].to_numpy()[k, i, win])),
                    "max_test_ce_gap": _max_rel_gap(
                        red["frozen_test_loss"].to_numpy()[k, i, win], real_test[i, win]
                    ),
                    "max_train_ce_gap": _max_rel_gap(
                        red["frozen_train_loss"].to_numpy()[k, i, win], real_train[i, win]
                    ),
                    "precondition": held[i],
                }
    return out


def _max_rel_gap(frozen: np.ndarray, real: np.ndarray) -> float:
    return float(np.nanmax(np.abs(frozen - real) / real))


def _claim_reduction(reductions, study, s) -> dict:
    text = (
        "Where the training-set gates stay fixed, the ReLU network reduces to a linear model in "
        "the active coordinates (Prop. 4.1): trained from the same state at t0 in {T_cls, "
        "mid-plateau} with its gates frozen, it tracks the real network through the plateau."
    )
    runs = reduction_runs(reductions, study, s)
    tol = s["reduction_tol"]
    for r in runs.values():
        r["tracks"] = bool(r["max_divergence"] <= tol and r["max_test_ce_gap"] <= tol)
    scored = {k: r for k, r in runs.items() if r["precondition"]}
    unscored = len(runs) - len(scored)
    if len(scored) < s["min_runs"]:
        why = (
            f"{len(scored)} (run, t0) pairs where the gate precondition held on [T_cls, T_gen] "
            f"(gate drift <= {s['gate_drift_max']:g} with >= 2 weight snapshots); {unscored} "
            "reported but not scored"
        )
        if runs:
            why += "; " + _reduction_summary(runs, "all pairs")
        return _claim("relu_reduction", text, INCONCLUSIVE, why, runs=runs)
    tracked = np.array([r["tracks"] for r in scored.values()])
    verdict = PASS if tracked.mean() > 0.5 else FAIL
    ev = (
        f"tracked (divergence and test-CE gap <= {tol:g} up to T_gen) in "
        f"{int(tracked.sum())}/{tracked.size} scored (run, t0) pairs; "
        + _reduction_summary(scored, "scored")
        + f"; {unscored} pairs without the gate precondition not scored"
    )
    return _claim("relu_reduction", text, verdict, ev, runs=runs)


def _reduction_summary(runs: Mapping[str, dict], what: str) -> str:
    div = np.array([r["max_divergence"] for r in runs.values()])
    te = np.array([r["max_test_ce_gap"] for r in runs.values()])
    tr = np.array([r["max_train_ce_gap"] for r in runs.values()])
    return (
        f"{what}: max relative divergence ||theta_frozen - theta_real|| / ||theta_real - "
        f"theta(t0)|| median {np.median(div):.3g} (range {div.min():.3g}-{div.max():.3g}), max "
        f"relative test-CE gap median {np.median(te):.3g}, train-CE gap median {np.median(tr):.3g}"
    )


def evaluate_claims(
    study_ds_or_trajectories: Any,
    clocks: pd.DataFrame,
    fits: dict | None,
    settings: dict | None = None,
    reductions: Mapping[str, xr.Dataset] | None = None,
) -> list[dict]:
    """Evaluate the paper's checkable claims; each {id, claim, verdict, evidence, details}.

    `study_ds_or_trajectories`: anything `cell_datasets` accepts. `fits`: fits.json content
    (the only source of law fits). `settings`: the config's `claims:` section (DEFAULTS fill
    missing keys; unknown keys raise). `reductions`: cell_id -> the frozen-gate stage's
    output (`analysis.reduction` on); given, the `relu_reduction` claim is added.
    """
    s = resolve_claim_settings(settings)
    study = study_ds_or_trajectories
    clocks = clocks if clocks is not None else pd.DataFrame(columns=sorted(_CLOCK_COLS))
    cells = cell_table(study, clocks)
    if "model" not in cells:
        cells["model"] = "relu_embed"
    out = [
        _claim_separation(clocks, cells, s),
        _claim_weight_decay(clocks, cells, s),
        _claim_srank(study, clocks, cells, s),
        _claim_cls_law(fits, s),
        _claim_rep_law(fits, s),
        _claim_grad_hierarchy(study, clocks, s),
        _claim_gates(study, clocks, s),
        _claim_fourier(study, s),
        _claim_deep_linear(clocks, cells, s),
        _claim_dln_rate_scaling(fits, clocks, cells, s),
        _claim_dln_controls(clocks, cells, s),
        _claim_small_sv_shrink_faster(study, clocks, cells, s),
        _claim_dln_rep_law(fits, clocks, cells, s),
    ]
    if reductions is not None:
        out.append(_claim_reduction(reductions, study, s))
    return out


def claims_to_json(claims: list[dict] | dict) -> str:
    """Deterministic JSON for claims.json (NaN/inf written as null); a list or a record."""
    return json.dumps(json_safe(claims), indent=2, sort_keys=False, allow_nan=False) + "\n"
