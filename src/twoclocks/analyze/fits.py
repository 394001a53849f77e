"""Statistical fits of the clocks (docs/science.md 7): the laws the paper states but never fitted.

Per cell: classifier clock vs log(1/eps) (log law, slope ~ 1/nu, Thm 3.5 / Prop 3.6) against a
power law, compared by AIC/BIC on the same response scale; each representation clock as a power
law in 1/eta with a T_KL offset, exponent 2 theta - 1 (Thm 4.8/4.9); the late-time slope of
log Delta vs log(t - T_KL) (-1 / (2 theta - 1)) as a cross-check; the separation ratio
T_rep / T_cls. Across cells: power-law scaling of every clock with each grid axis that varies.
Seeds are pooled in each OLS (statsmodels); bootstrap CIs resample seeds (stratified by cell),
which respects the correlation of one seed's levels. Censored, diverged and below-floor counts
travel with every fit; a fit with fewer than `min_points` uncensored levels (or axis values)
says "insufficient" and why, never a number. Output format: docs/design.md "Fits output".
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
import xarray as xr
from scipy import optimize, stats

from twoclocks.analyze.clocks import (
    CLOCK_COLUMNS,
    CLOCKS,
    IDENTITY_COLUMNS,
    REP_CLOCKS,
    resolve_settings,
    structural_gaps,
)

FIT_COLUMNS = (
    "study",
    "cell_id",
    "fit",
    "clock",
    "level",
    "cls_level",
    "axis",
    "group",
    "param",
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "boot_low",
    "boot_high",
    "r2",
    "aic",
    "bic",
    "preferred",
    "n_points",
    "n_levels",
    "n_seeds",
    "n_rows",
    "n_censored",
    "censored_fraction",
    "n_diverged",
    "n_below_floor",
    "status",
    "reason",
)
_PROFILE_GRID = 64


# ---------------------------------------------------------------- regression primitives


def _gauss_llf(ssr: float, n: int) -> float:
    """Gaussian log-likelihood at the MLE of sigma (floored so exact fits stay finite)."""
    sigma2 = max(ssr / n, 1e-300)
    return -0.5 * n * (math.log(2 * math.pi * sigma2) + 1.0)


def _ols(x: np.ndarray, y: np.ndarray, ci_level: float) -> dict:
    """OLS y = a + b x (statsmodels): estimates, SEs, CIs, R^2, SSR; warnings silenced."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()
        ci = np.asarray(res.conf_int(alpha=1 - ci_level))
        bse = np.asarray(res.bse)
        r2 = float(res.rsquared)
    a, b = (float(v) for v in res.params)
    return {
        "intercept": (a, float(bse[0]), float(ci[0, 0]), float(ci[0, 1])),
        "slope": (b, float(bse[1]), float(ci[1, 0]), float(ci[1, 1])),
        "r2": r2,
        "ssr": float(res.ssr),
        "n": len(y),
    }


def _boot_weights(groups: np.ndarray, strata: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Bootstrap weights (B, n_points): each stratum's groups (seeds) resampled with replacement.

    Resampling groups with replacement equals weighting each point by its group's draw count,
    so every bootstrap refit is one vectorised weighted least squares.
    """
    rng = np.random.default_rng(seed)
    codes, first, gidx = np.unique(groups, return_index=True, return_inverse=True)
    counts = np.zeros((samples, len(codes)))
    gstrat = np.asarray(strata)[first]
    for st in np.unique(gstrat):
        members = np.flatnonzero(gstrat == st)
        draws = rng.integers(0, len(members), size=(samples, len(members)))
        np.add.at(counts, (np.arange(samples)[:, None], members[draws]), 1.0)
    return counts[:, gidx]


def _wls_batch(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted simple regressions for weights w (..., n): intercepts and slopes (...)."""
    with np.errstate(all="ignore"):
        sw = w.sum(-1)
        mx = (w * x).sum(-1) / sw
        my = (w * y).sum(-1) / sw
        dx = x - mx[..., None]
        sxx = (w * dx * dx).sum(-1)
        slope = (w * dx * (y - my[..., None])).sum(-1) / sxx
        slope = np.where(sxx > 1e-12 * np.maximum(sw, 1.0), slope, np.nan)
        return my - slope * mx, slope


def _pct(samples: np.ndarray, ci_level: float) -> tuple[float, float]:
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) < 2:
        return (math.nan, math.nan)
    q = 100 * (1 - ci_level) / 2
    return (float(np.percentile(s, q)), float(np.percentile(s, 100 - q)))


def _param(est, se=math.nan, ci=(math.nan, math.nan), boot=(math.nan, math.nan)) -> dict:
    return {
        "estimate": float(est),
        "se": float(se),
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        "boot_low": float(boot[0]),
        "boot_high": float(boot[1]),
    }


# ---------------------------------------------------------------- bookkeeping


def _counts(rows: pd.DataFrame) -> dict:
    """Seed and row counts of one (cell, clock[, level]) slice; fractions over usable rows."""
    usable = rows[~rows["diverged"] & ~rows["below_floor"]]
    n_rows = len(usable)
    n_cens = int(usable["censored"].sum())
    key = ["cell_id", "seed"] if "cell_id" in rows.columns else ["seed"]
    return {
        "n_seeds": int(rows[key].drop_duplicates().shape[0]),
        "n_diverged": int(rows.loc[rows["diverged"], key].drop_duplicates().shape[0]),
        "n_rows": n_rows,
        "n_censored": n_cens,
        "censored_fraction": n_cens / n_rows if n_rows else math.nan,
        "n_below_floor": int(rows["below_floor"].sum()),
    }


def _record(fit: str, clock: str, counts: dict, **kw) -> dict:
    rec = {
        "fit": fit,
        "clock": clock,
        "level": kw.pop("level", math.nan),
        "axis": kw.pop("axis", ""),
        "group": kw.pop("group", ""),
        "status": kw.pop("status", "ok"),
        "reason": kw.pop("reason", ""),
        "preferred": kw.pop("preferred", ""),
        "counts": counts,
        "stats": {"n_points": 0, "n_levels": 0, "r2": math.nan, "aic": math.nan, "bic": math.nan},
        "params": {},
    }
    rec["stats"].update(kw.pop("stats", {}))
    rec["params"].update(kw.pop("params", {}))
    assert not kw, kw
    return rec


def _insufficient(fit: str, clock: str, counts: dict, reason: str, **kw) -> dict:
    return _record(fit, clock, counts, status="insufficient", reason=reason, **kw)


def _uncensored(rows: pd.DataFrame, time_col: str) -> pd.DataFrame:
    ok = ~rows["diverged"] & ~rows["below_floor"] & ~rows["censored"] & rows[time_col].notna()
    return rows[ok]


def _level_match(rows: pd.DataFrame, level: float) -> pd.DataFrame:
    return rows[np.isclose(rows["level"].to_numpy(float), level, rtol=1e-9, atol=0.0)]


def _nearest_level(rows: pd.DataFrame, ref: float) -> float:
    """The level of `rows` nearest to the reference in log space (the reference if present)."""
    levels = np.unique(rows["level"].to_numpy(float))
    levels = levels[levels > 0]
    if len(levels) == 0 or ref <= 0:
        return math.nan
    return float(levels[np.argmin(np.abs(np.log(levels) - math.log(ref)))])


# ---------------------------------------------------------------- classifier clock


def fit_classifier_clock(rows: pd.DataFrame, s: dict) -> list[dict]:
    """T_cls = a + (1/nu) log(1/eps) (Prop 3.6) vs T_cls = a eps^-b, compared by AIC/BIC.

    Both laws use the regressor x = log(1/eps); the power law is fitted as log T = log a + b x
    and its likelihood is moved to the T scale with the Jacobian (- sum log T), so AICs compare
    like with like. Points with T <= 0 are dropped from both (the log needs T > 0).
    """
    tc = s["fit_time"]
    counts = _counts(rows)
    pts = _uncensored(rows, tc)
    pts = pts[pts[tc] > 0]
    n_levels = int(pts["level"].nunique())
    common = {"stats": {"n_points": len(pts), "n_levels": n_levels}}
    if n_levels < int(s["min_points"]):
        reason = f"{n_levels} uncensored eps levels < min_points={s['min_points']}"
        return [
            _insufficient(f, "cls", counts, reason, **common)
            for f in ("cls_log", "cls_power", "cls_compare")
        ]
    x = np.log(1.0 / pts["level"].to_numpy(float))
    t = pts[tc].to_numpy(float)
    y_log = np.log(t)
    n, ci = len(t), float(s["ci_level"])
    lin = _ols(x, t, ci)
    pw = _ols(x, y_log, ci)
    llf_lin = _gauss_llf(lin["ssr"], n)
    llf_pow = _gauss_llf(pw["ssr"], n) - float(y_log.sum())
    k = 3  # intercept, slope, sigma
    aic_lin, aic_pow = -2 * llf_lin + 2 * k, -2 * llf_pow + 2 * k
    bic_lin, bic_pow = -2 * llf_lin + k * math.log(n), -2 * llf_pow + k * math.log(n)
    w = _boot_weights(
        pts["seed"].to_numpy(), np.zeros(n), int(s["bootstrap_samples"]), int(s["bootstrap_seed"])
    )
    multi = pts["seed"].nunique() > 1
    b_a, b_b = _wls_batch(x, t, w)
    p_a, p_b = _wls_batch(x, y_log, w)
    bt = (lambda v: _pct(v, ci)) if multi else (lambda v: (math.nan, math.nan))
    slope = lin["slope"]
    with np.errstate(all="ignore"):
        nu_ci = (1 / slope[3], 1 / slope[2]) if slope[2] > 0 else (math.nan, math.nan)
        nu_boot = bt(1 / b_b[b_b > 0]) if multi else (math.nan, math.nan)
    preferred = "log" if aic_lin <= aic_pow else "power"
    lin_rec = _record(
        "cls_log", "cls", counts,
        stats={"n_points": n, "n_levels": n_levels, "r2": lin["r2"], "aic": aic_lin,
               "bic": bic_lin},
        params={
            "slope": _param(slope[0], slope[1], slope[2:], bt(b_b)),
            "intercept": _param(*lin["intercept"][:2], lin["intercept"][2:], bt(b_a)),
            "nu": _param(1 / slope[0] if slope[0] else math.nan, ci=nu_ci, boot=nu_boot),
        },
        preferred=preferred,
    )  # fmt: skip
    pow_rec = _record(
        "cls_power", "cls", counts,
        stats={"n_points": n, "n_levels": n_levels, "r2": pw["r2"], "aic": aic_pow,
               "bic": bic_pow},
        params={
            "exponent": _param(pw["slope"][0], pw["slope"][1], pw["slope"][2:], bt(p_b)),
            "log_prefactor": _param(*pw["intercept"][:2], pw["intercept"][2:], bt(p_a)),
        },
        preferred=preferred,
    )  # fmt: skip
    cmp_rec = _record(
        "cls_compare", "cls", counts,
        stats={"n_points": n, "n_levels": n_levels, "aic": aic_pow - aic_lin,
               "bic": bic_pow - bic_lin},
        params={"delta_aic": _param(aic_pow - aic_lin), "delta_bic": _param(bic_pow - bic_lin)},
        preferred=preferred,
    )  # fmt: skip
    return [lin_rec, pow_rec, cmp_rec]


# ---------------------------------------------------------------- representation clock


def _profile_ssr(t: np.ndarray, x: np.ndarray, tkl: np.ndarray, w: np.ndarray | None = None):
    """Profile criterion for offsets tkl (G,) under weights w (B, n): T-scale SSR and slope.

    For each offset, log(t - tkl) is regressed on x (weighted OLS) and the fitted curve
    tkl + exp(a + b x) is scored by its squared error in t, so criteria at different offsets are
    on one scale (log-scale SSRs are not: they shrink as the offset moves away from the data).
    """
    with np.errstate(all="ignore"):
        y = np.log(t[None, :] - tkl[:, None])  # (G, n)
        if w is None:
            w = np.ones((1, len(t)))
        ww = w[:, None, :]  # (B, 1, n)
        a, b = _wls_batch(x, y[None], ww)  # (B, G)
        pred = tkl[None, :, None] + np.exp(a[..., None] + b[..., None] * x)
        ssr = (ww * (t - pred) ** 2).sum(-1)
    return np.where(np.isfinite(ssr), ssr, np.inf), b


def _tkl_grid(t: np.ndarray) -> np.ndarray:
    hi = float(np.min(t))
    return hi * (1 - np.geomspace(1.0, 1e-4, _PROFILE_GRID))


def profile_t_kl(t: np.ndarray, x: np.ndarray) -> float:
    """T_KL of T = T_KL + exp(c) eta^-(2 theta - 1), by profile least squares over [0, min T).

    A grid search of `_profile_ssr` followed by a bounded Brent refinement around the best
    grid point. A T-scale likelihood with log-normal errors would be unbounded as T_KL -> min T
    (the threshold-parameter degeneracy); the T-scale squared error is not.
    """
    if float(np.min(t)) <= 0:
        return math.nan
    grid = _tkl_grid(t)
    ssr, _ = _profile_ssr(t, x, grid)
    i = int(np.argmin(ssr[0]))
    lo_b, hi_b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    if hi_b <= lo_b:
        return float(grid[i])
    res = optimize.minimize_scalar(
        lambda g: float(_profile_ssr(t, x, np.array([g]))[0][0, 0]),
        bounds=(lo_b, hi_b),
        method="bounded",
    )
    return float(res.x) if res.success and res.fun <= ssr[0, i] else float(grid[i])


def _onset_tkl(clocks_cell: pd.DataFrame, s: dict) -> pd.Series:
    """Per-seed T_KL: the rep_srank clock at t_kl_onset_eta (NaN where censored/diverged)."""
    on = _level_match(clocks_cell[clocks_cell["clock"] == "rep_srank"], float(s["t_kl_onset_eta"]))
    return on.set_index("seed")[s["fit_time"]].astype(float)


def fit_representation_clock(rows: pd.DataFrame, clock: str, cell: pd.DataFrame, s: dict) -> dict:
    """log(T_rep(eta) - T_KL) = c + (2 theta - 1) log(1/eta) (Thm 4.8/4.9), theta with CIs.

    T_KL by `t_kl_rule`: "onset" per seed (rep_srank clock at t_kl_onset_eta), "profile" one
    value per cell (`profile_t_kl`, re-profiled in every bootstrap sample), "zero". Only levels
    in the `eta` grid enter; points with T <= T_KL are dropped and counted (n_before_tkl).
    """
    tc, rule, ci = s["fit_time"], s["t_kl_rule"], float(s["ci_level"])
    counts = _counts(rows)
    eta = np.asarray(s["eta"], dtype=float)
    rows_eta = rows[np.isclose(rows["level"].to_numpy(float)[:, None], eta[None], rtol=1e-9,
                               atol=0).any(1)]  # fmt: skip
    pts = _uncensored(rows_eta, tc)
    n_levels_raw = int(pts["level"].nunique())
    mp = int(s["min_points"])
    if n_levels_raw < mp:
        return _insufficient("rep_power", clock, counts,
                             f"{n_levels_raw} uncensored eta levels < min_points={mp}",
                             stats={"n_points": len(pts), "n_levels": n_levels_raw})  # fmt: skip
    t = pts[tc].to_numpy(float)
    x = np.log(1.0 / pts["level"].to_numpy(float))
    seeds = pts["seed"].to_numpy()
    if rule == "zero":
        tkl = np.zeros_like(t)
    elif rule == "onset":
        tkl = pts["seed"].map(_onset_tkl(cell, s)).to_numpy(float)
    elif rule == "profile":
        tkl = np.full_like(t, profile_t_kl(t, x))
    else:
        raise ValueError(f"t_kl_rule must be onset, profile or zero, got {rule!r}")
    keep = np.isfinite(tkl) & (t > tkl)
    n_before = int((~keep).sum())
    t, x, tkl, seeds = t[keep], x[keep], tkl[keep], seeds[keep]
    n_levels = len(np.unique(x))
    st = {"n_points": len(t), "n_levels": n_levels, "n_before_tkl": n_before}
    if n_levels < mp:
        return _insufficient("rep_power", clock, counts,
                             f"{n_levels} eta levels after T_KL ({rule}) < min_points={mp}",
                             stats=st)  # fmt: skip
    y = np.log(t - tkl)
    fit = _ols(x, y, ci)
    w = _boot_weights(seeds, np.zeros(len(t)), int(s["bootstrap_samples"]),
                      int(s["bootstrap_seed"]))  # fmt: skip
    multi = len(np.unique(seeds)) > 1
    if rule == "profile":
        grid = _tkl_grid(t)
        ssr, slopes = _profile_ssr(t, x, grid, w)
        b_b = np.take_along_axis(slopes, ssr.argmin(1)[:, None], 1)[:, 0]
        b_tkl = grid[ssr.argmin(1)]
    else:
        b_b = _wls_batch(x, y, w)[1]
        b_tkl = None
    bt = (lambda v: _pct(v, ci)) if multi else (lambda v: (math.nan, math.nan))
    sl = fit["slope"]
    params = {
        "exponent": _param(sl[0], sl[1], sl[2:], bt(b_b)),
        "theta": _param((sl[0] + 1) / 2, sl[1] / 2, ((sl[2] + 1) / 2, (sl[3] + 1) / 2),
                        bt((b_b + 1) / 2)),
        "intercept": _param(*fit["intercept"][:2], fit["intercept"][2:]),
        "t_kl": _param(float(np.mean(tkl)), boot=bt(b_tkl) if b_tkl is not None else
                       (math.nan, math.nan)),
    }  # fmt: skip
    st.update({"r2": fit["r2"]})
    return _record("rep_power", clock, counts, stats=st, params=params)


def fit_late_slope(ds: xr.Dataset, tkl: dict[int, float] | float, s: dict) -> dict:
    """Cross-check: slope of log Delta(t) vs log(t - T_KL) late in training = -1/(2 theta - 1).

    Uses the normalised energy gap (clocks.structural_gaps) at every logged point of every
    non-diverged member with t > T_KL and late_gap_range[0] <= gap <= late_gap_range[1];
    theta_late = (1 - 1/slope) / 2. tkl: one value, or per-seed values (onset rule).
    """
    ci = float(s["ci_level"])
    gaps = structural_gaps(ds, s)
    empty = {"n_seeds": int(ds.sizes["seed"]), "n_diverged": 0, "n_rows": 0, "n_censored": 0,
             "censored_fraction": math.nan, "n_below_floor": 0}  # fmt: skip
    if "rep_energy" not in gaps:
        return _insufficient("late_slope", "rep_energy", empty, "no energy gap in trajectory")
    g = gaps["rep_energy"].values
    seeds = ds["seed"].values.astype(np.int64)
    if s["fit_time"] == "tau" and "tau" in ds:
        tt = ds["tau"].transpose("seed", "step").values.astype(float)
    else:
        tt = np.broadcast_to(ds["step"].values.astype(float), g.shape)
    div = ds["diverged_step"].values >= 0 if "diverged_step" in ds else np.zeros(len(seeds), bool)
    if isinstance(tkl, dict):
        tk = np.array([tkl.get(int(sd), math.nan) for sd in seeds], dtype=float)
    else:
        tk = np.full(len(seeds), float(tkl))
    lo, hi = (float(v) for v in s["late_gap_range"])
    with np.errstate(invalid="ignore"):
        sel = (tt > tk[:, None]) & (g >= lo) & (g <= hi) & ~div[:, None] & np.isfinite(g)
    counts = dict(empty, n_diverged=int(div.sum()), n_rows=int(sel.sum()))
    sidx = np.broadcast_to(seeds[:, None], g.shape)[sel]
    x = np.log(tt[sel] - np.broadcast_to(tk[:, None], g.shape)[sel])
    y = np.log(g[sel])
    n_x = len(np.unique(np.round(x, 12)))
    mp = int(s["min_points"])
    st = {"n_points": int(sel.sum()), "n_levels": n_x}
    if n_x < mp:
        return _insufficient(
            "late_slope",
            "rep_energy",
            counts,
            f"{n_x} late points in gap range < min_points={mp}",
            stats=st,
        )
    fit = _ols(x, y, ci)
    w = _boot_weights(sidx, np.zeros(len(x)), int(s["bootstrap_samples"]),
                      int(s["bootstrap_seed"]))  # fmt: skip
    b_b = _wls_batch(x, y, w)[1]
    multi = len(np.unique(sidx)) > 1
    bt = (lambda v: _pct(v, ci)) if multi else (lambda v: (math.nan, math.nan))
    sl = fit["slope"]
    with np.errstate(all="ignore"):
        th = (1 - 1 / sl[0]) / 2
        th_ci = ((1 - 1 / sl[2]) / 2, (1 - 1 / sl[3]) / 2) if sl[3] < 0 else (math.nan, math.nan)
        th_b = bt((1 - 1 / b_b[b_b < 0]) / 2)
    st["r2"] = fit["r2"]
    return _record("late_slope", "rep_energy", counts, stats=st, params={
        "slope": _param(sl[0], sl[1], sl[2:], bt(b_b)),
        "theta": _param(th, ci=th_ci, boot=th_b),
    })  # fmt: skip


# ---------------------------------------------------------------- ratio and scaling


def fit_separation_ratio(cell: pd.DataFrame, clock: str, s: dict) -> dict:
    """R = T_clock(ref) / T_cls(ref) per seed; geometric mean over seeds with t and bootstrap CI.

    Reference levels: s["reference_levels"]. Seeds where T_cls fires but the slow clock does
    not are right-censored ratios (counted as n_censored), never dropped silently.
    """
    tc, ci = s["fit_time"], float(s["ci_level"])
    cls_all = cell[(cell["clock"] == "cls") & ~cell["below_floor"]]
    rep_all = cell[cell["clock"] == clock]
    ref_c = _nearest_level(cls_all, float(s["reference_levels"]["cls"]))
    ref = _nearest_level(rep_all, float(s["reference_levels"][clock]))
    cls_rows = _level_match(cls_all, ref_c)
    rep_rows = _level_match(rep_all, ref)
    counts = _counts(pd.concat([cls_rows, rep_rows]))
    if cls_rows.empty or rep_rows.empty:
        return _insufficient("ratio", clock, counts, "no cls level above the CE floor or no "
                             f"{clock} level in the clocks table", level=ref)  # fmt: skip
    m = cls_rows.set_index("seed")[[tc, "censored", "diverged"]].join(
        rep_rows.set_index("seed")[[tc, "censored"]].add_suffix("_rep"), how="inner"
    )
    m = m[~m["diverged"]]
    both = m[~m["censored"] & ~m["censored_rep"] & (m[tc] > 0) & (m[f"{tc}_rep"] > 0)]
    n_rc = int((~m["censored"] & m["censored_rep"]).sum())
    counts = dict(
        counts,
        n_rows=len(m),
        n_censored=len(m) - len(both),
        censored_fraction=(len(m) - len(both)) / len(m) if len(m) else math.nan,
    )
    st = {"n_points": len(both), "n_levels": 1, "n_right_censored": n_rc, "cls_level": ref_c}
    if len(both) < 1:
        return _insufficient("ratio", clock, counts, "no seed with both clocks uncensored",
                             level=ref, stats=st)  # fmt: skip
    lr = np.log(both[f"{tc}_rep"].to_numpy(float) / both[tc].to_numpy(float))
    n = len(lr)
    mean = float(lr.mean())
    if n > 1:
        se = float(lr.std(ddof=1) / math.sqrt(n))
        q = stats.t.ppf(0.5 + ci / 2, n - 1)
        ci_r = (math.exp(mean - q * se), math.exp(mean + q * se))
        rng = np.random.default_rng(int(s["bootstrap_seed"]))
        draws = rng.integers(0, n, size=(int(s["bootstrap_samples"]), n))
        boot = _pct(np.exp(lr[draws].mean(1)), ci)
    else:
        se, ci_r, boot = math.nan, (math.nan, math.nan), (math.nan, math.nan)
    return _record("ratio", clock, counts, level=ref, stats=st, params={
        "ratio": _param(math.exp(mean), se * math.exp(mean), ci_r, boot),
        "ratio_median": _param(float(np.exp(np.median(lr)))),
    })  # fmt: skip


def _axis_columns(clocks: pd.DataFrame) -> list[str]:
    fixed = set(IDENTITY_COLUMNS) | set(CLOCK_COLUMNS)
    return [c for c in clocks.columns if c not in fixed]


def fit_scaling(clocks: pd.DataFrame, s: dict) -> list[dict]:
    """log T = c + k log(axis) across cells, per clock at its reference level, per varying axis.

    The other varying axes are held fixed: one fit per combination of their values (`group`).
    Points are (cell, seed) clocks; bootstrap resamples seeds within each cell.
    """
    tc, ci, mp = s["fit_time"], float(s["ci_level"]), int(s["min_points"])
    axes = _axis_columns(clocks)
    varying = [a for a in axes if clocks[a].nunique(dropna=True) > 1]
    out = []
    for axis in [a for a in s["scaling_axes"] if a in varying]:
        others = [a for a in varying if a != axis]
        for clock in CLOCKS:
            if clock not in s["reference_levels"]:
                continue
            crow = clocks[(clocks["clock"] == clock) & ~clocks["below_floor"]]
            ref = _nearest_level(crow, float(s["reference_levels"][clock]))
            rows = _level_match(crow, ref)
            if rows.empty:
                continue
            groups = rows.groupby(others, dropna=False) if others else [((), rows)]
            for key, g in groups:
                key = key if isinstance(key, tuple) else (key,)
                gdesc = json.dumps({o: _jsonable(v) for o, v in zip(others, key, strict=True)})
                counts = _counts(g)
                pts = _uncensored(g, tc)
                av = pd.to_numeric(pts[axis], errors="coerce").to_numpy(float)
                pts = pts[(av > 0) & (pts[tc].to_numpy(float) > 0)]
                n_vals = int(pts[axis].nunique())
                st = {"n_points": len(pts), "n_levels": n_vals}
                kw = {"level": ref, "axis": axis, "group": gdesc, "stats": st}
                if n_vals < mp:
                    out.append(_insufficient("scaling", clock, counts,
                                             f"{n_vals} positive {axis} values with uncensored "
                                             f"clocks < min_points={mp}", **kw))  # fmt: skip
                    continue
                x = np.log(pts[axis].to_numpy(float))
                y = np.log(pts[tc].to_numpy(float))
                fit = _ols(x, y, ci)
                cells = pts["cell_id"].astype(str).to_numpy()
                w = _boot_weights(
                    cells + "\x00" + pts["seed"].astype(str).to_numpy(),
                    cells,
                    int(s["bootstrap_samples"]),
                    int(s["bootstrap_seed"]),
                )
                a_b, b_b = _wls_batch(x, y, w)
                st["r2"] = fit["r2"]
                sl, ic = fit["slope"], fit["intercept"]
                out.append(_record("scaling", clock, counts, **kw, params={
                    "exponent": _param(sl[0], sl[1], sl[2:], _pct(b_b, ci)),
                    "log_prefactor": _param(ic[0], ic[1], ic[2:], _pct(a_b, ci)),
                }))  # fmt: skip
    return out


# ---------------------------------------------------------------- entry point


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _flatten(rec: dict, study: str, cell_id: str) -> list[dict]:
    base = {
        "study": study,
        "cell_id": cell_id,
        **{k: rec[k] for k in ("fit", "clock", "level", "axis", "group", "preferred")},
        **{k: rec["stats"].get(k, math.nan) for k in ("r2", "aic", "bic", "cls_level")},
        "n_points": rec["stats"].get("n_points", 0),
        "n_levels": rec["stats"].get("n_levels", 0),
        **rec["counts"],
        "status": rec["status"],
        "reason": rec["reason"],
    }
    params = rec["params"] or {"": _param(math.nan)}
    return [{**base, "param": name, **p} for name, p in params.items()]


def fit_clocks(
    clocks: pd.DataFrame, settings: dict, trajectories: dict[str, xr.Dataset] | None
) -> tuple[pd.DataFrame, dict]:
    """All fits for a study's clocks table -> (tidy fits table, JSON-able summary).

    Table: one row per (fit, parameter), columns FIT_COLUMNS (docs/design.md "Fits output").
    trajectories (cell_id -> trajectory Dataset) enable the late-time slope cross-check.
    """
    s = resolve_settings(settings)
    rows_out: list[dict] = []
    cells_json: dict = {}
    axes = _axis_columns(clocks)
    for cell_id, cell in clocks.groupby("cell_id", sort=True):
        study = str(cell["study"].iloc[0]) if "study" in cell else ""
        recs = []
        by_clock = {c: cell[cell["clock"] == c] for c in CLOCKS if (cell["clock"] == c).any()}
        if "cls" in by_clock:
            recs += fit_classifier_clock(by_clock["cls"], s)
        rep_recs = {}
        for c in REP_CLOCKS:
            if c in by_clock:
                rep_recs[c] = fit_representation_clock(by_clock[c], c, cell, s)
                recs.append(rep_recs[c])
        if trajectories is not None and cell_id in trajectories and "rep_energy" in rep_recs:
            if s["t_kl_rule"] == "onset":
                tkl = {int(k): v for k, v in _onset_tkl(cell, s).items()}
            elif s["t_kl_rule"] == "profile":
                p = rep_recs["rep_energy"]["params"].get("t_kl")
                tkl = p["estimate"] if p else math.nan
            else:
                tkl = 0.0
            recs.append(fit_late_slope(trajectories[cell_id], tkl, s))
        for c in (*REP_CLOCKS, "gen_acc", "gen_loss", "gate"):
            if c in by_clock and c in s["reference_levels"] and "cls" in by_clock:
                recs.append(fit_separation_ratio(cell, c, s))
        for r in recs:
            rows_out += _flatten(r, study, str(cell_id))
        cells_json[str(cell_id)] = {
            "axes": {a: _jsonable(cell[a].iloc[0]) for a in axes},
            "counts": {c: _counts(r) for c, r in by_clock.items()},
            "fits": [_jsonable(r) for r in recs],
        }
    scaling = fit_scaling(clocks, s)
    study = str(clocks["study"].iloc[0]) if len(clocks) and "study" in clocks else ""
    for r in scaling:
        rows_out += _flatten(r, study, "*")
    table = pd.DataFrame(rows_out, columns=list(FIT_COLUMNS))
    summary = {
        "settings": _jsonable(s),
        "n_cells": len(cells_json),
        "cells": cells_json,
        "scaling": [_jsonable(r) for r in scaling],
    }
    return table, summary
