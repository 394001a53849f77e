"""Every fit of the pipeline (docs/science.md 7, docs/design.md "Fits"): the one place that fits.

- `fit_law`: one law selection for both clocks. Per cell and clock, the uncensored post-fit
  clock times T(x) at levels x (eps for `cls`, eta for `rep_*`) are fitted by the log law
  `T = a + b log(1/x)` and by the free-offset power law `T = T0 + C x^-k` (T0 free, also below
  the first crossing), both by least squares with relative errors (weights 1/T^2), and compared
  by AIC. Every parameter and delta-AIC gets a seed-bootstrap interval.
- `fit_tail`: the shape of one member's gap G(t) after T_cls: `G = G_inf + A exp(-(t - T)/b)`
  against `G = G_inf + A ((t - t0)/(T - t0))^-p`, by AIC on log G. Its G_inf is the asymptote the
  clocks stage normalises the gap against (called from `clocks.extract_clocks`, which needs it to
  define the crossings; nothing else fits outside this module).
- `fit_separation_ratio`, `fit_scaling`: T_clock / T_cls per seed, and power-law scaling of the
  clocks with each grid axis across cells.

Only clocks-table columns are read (data flow: trajectories -> clocks -> fits). A fit is `ok` only
when its law is identified (enough uncensored levels, >= 2 seeds for the bootstrap, finite
intervals, parameters inside their domain); otherwise `insufficient` with the reason.
Output format: docs/design.md "Fits output".
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
from scipy import optimize

from twoclocks.analyze.clocks import (
    CLOCK_COLUMNS,
    CLOCKS,
    IDENTITY_COLUMNS,
    LAW_CLOCKS,
    REP_CLOCKS,
    RESOLVE_SE,
    TAIL_FIELDS,
    resolve_settings,
)
from twoclocks.provenance import json_safe

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
# power-law exponent k is profiled on a log grid over [K_MIN, K_MAX]; an optimum on either edge
# is not an identified power law (at K_MIN it is the log law, the k -> 0 limit).
K_MIN, K_MAX, K_GRID = 1e-3, 20.0, 240
# relative-error floor of the law fits: a noise-free fit would give log(0) in the AIC
SIGMA2_FLOOR = 1e-18
# a tail fit uses at most this many log points (evenly spaced in log(t - T_cls)), and needs at
# least TAIL_MIN_POINTS (4 parameters, and an AIC that means something)
TAIL_MAX_POINTS, TAIL_MIN_POINTS = 400, 20
LAW_NAMES = {"log": "logarithmic", "power": "power law"}


# ---------------------------------------------------------------- regression primitives


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted simple regressions y = a + b x, broadcast over leading dims: a, b, weighted SSR."""
    with np.errstate(all="ignore"):
        sw = w.sum(-1)
        mx = (w * x).sum(-1) / sw
        my = (w * y).sum(-1) / sw
        dx = x - mx[..., None]
        sxx = (w * dx * dx).sum(-1)
        b = (w * dx * (y - my[..., None])).sum(-1) / sxx
        b = np.where(sxx > 1e-12 * np.maximum(np.abs(mx) ** 2 * sw, 1e-300), b, np.nan)
        a = my - b * mx
        ssr = (w * (y - a[..., None] - b[..., None] * x) ** 2).sum(-1)
    return a, b, ssr


def _boot_counts(groups: np.ndarray, strata: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Seed-bootstrap draw counts (1 + samples, n_points); row 0 is the sample itself (all 1).

    Resampling groups (seeds) with replacement, within strata (cells), equals weighting each
    point by its group's draw count, so every bootstrap refit is one vectorised weighted fit.
    The generator is seeded (`bootstrap_seed`): the same clocks give the same intervals.
    """
    rng = np.random.default_rng(seed)
    codes, first, gidx = np.unique(groups, return_index=True, return_inverse=True)
    counts = np.zeros((samples, len(codes)))
    gstrat = np.asarray(strata)[first]
    for st in np.unique(gstrat):
        members = np.flatnonzero(gstrat == st)
        draws = rng.integers(0, len(members), size=(samples, len(members)))
        np.add.at(counts, (np.arange(samples)[:, None], members[draws]), 1.0)
    return np.concatenate([np.ones((1, len(groups))), counts[:, gidx]], axis=0)


def _param(estimate, boot=None, ci_level: float = 0.95, se=math.nan) -> dict:
    """A parameter with its seed-bootstrap interval.

    `boot_low`/`boot_high` are the percentile interval of the bootstrap replicates; the reported
    interval `ci_low`/`ci_high` is that interval widened, where needed, to contain the estimate.
    (A percentile interval need not contain the full-sample estimate: when the replicates are
    all equal up to rounding, it misses it by an ulp; with few seeds it can miss it outright.)
    """
    est = float(estimate)
    lo = hi = math.nan
    if boot is not None:
        b = np.asarray(boot, dtype=float)
        b = b[np.isfinite(b)]
        if len(b) >= 2:
            q = 100 * (1 - ci_level) / 2
            lo, hi = (float(v) for v in np.percentile(b, [q, 100 - q]))
            if not math.isfinite(se):
                se = float(b.std(ddof=1))
    ok = math.isfinite(lo) and math.isfinite(hi) and math.isfinite(est)
    return {
        "estimate": est,
        "se": float(se),
        "ci_low": min(lo, est) if ok else math.nan,
        "ci_high": max(hi, est) if ok else math.nan,
        "boot_low": lo,
        "boot_high": hi,
    }


# ---------------------------------------------------------------- bookkeeping


def _counts(rows: pd.DataFrame) -> dict:
    """Seed and row counts of one (cell, clock[, level]) slice; fractions over usable rows."""
    main = rows[~rows["pre_fit"].astype(bool)] if "pre_fit" in rows else rows
    usable = main[~main["diverged"] & ~main["below_floor"]]
    n_rows = len(usable)
    n_cens = int(usable["censored"].sum())
    key = ["cell_id", "seed"] if "cell_id" in rows.columns else ["seed"]
    return {
        "n_seeds": int(rows[key].drop_duplicates().shape[0]),
        "n_diverged": int(rows.loc[rows["diverged"], key].drop_duplicates().shape[0]),
        "n_rows": n_rows,
        "n_censored": n_cens,
        "censored_fraction": n_cens / n_rows if n_rows else math.nan,
        "n_below_floor": int(main["below_floor"].sum()),
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
    """Rows a fit may use: fired after the fit (not pre_fit), not diverged, above the CE floor."""
    ok = ~rows["diverged"] & ~rows["below_floor"] & ~rows["censored"] & rows[time_col].notna()
    for flag in ("pre_fit", "unresolved"):
        if flag in rows:
            ok &= ~rows[flag].astype(bool)
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


# ---------------------------------------------------------------- law selection (both clocks)


def _k_grid() -> np.ndarray:
    return np.geomspace(K_MIN, K_MAX, K_GRID)


def _phi(k: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(exp(k xs) - 1) / k: the power law's regressor; -> xs (the log law's) as k -> 0."""
    return np.expm1(k[..., None] * xs) / k[..., None]


def _aic(ssr: np.ndarray, n: np.ndarray, n_params: int) -> np.ndarray:
    """Gaussian AIC with relative errors sigma_i = sigma T_i (the sum log T_i term is common to
    both laws and dropped); n_params counts sigma."""
    with np.errstate(all="ignore"):
        return n * np.log(np.maximum(ssr / n, SIGMA2_FLOOR)) + 2 * n_params


def law_fit_arrays(x: np.ndarray, t: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Both laws for every bootstrap row of `counts` (B, n); x = log(1/level), t = clock times.

    Log law: weighted least squares of t on x. Power law T = T0 + C exp(k x): for fixed k it is
    linear in (T0, C), so k is profiled on a log grid (vectorised over rows), refined by a
    parabola in log k through the grid minimum and its neighbours, and row 0 (the sample) by a
    bounded Brent search. Weights counts / t^2 (relative errors: clock times span decades).
    Returns per row: a, b (log law), k, t0, c (power law), aic_log, aic_power, delta_aic
    (power minus log: > 0 favours the log law), k_edge (optimum on a grid edge).
    """
    x = np.asarray(x, float)
    t = np.asarray(t, float)
    w = counts / t**2
    n_b = counts.sum(-1)
    x0 = float(x.min())
    xs = x - x0
    a_l, b_l, ssr_l = _wls(x, t, w)
    grid = _k_grid()
    phi = _phi(grid, xs)  # (G, n)
    _, _, ssr_g = _wls(phi[None], t, w[:, None, :])  # (B, G)
    ssr_g = np.where(np.isfinite(ssr_g), ssr_g, np.inf)
    i = np.argmin(ssr_g, axis=1)
    lk = np.log(grid)
    im, ip = np.clip(i - 1, 0, K_GRID - 1), np.clip(i + 1, 0, K_GRID - 1)
    rows = np.arange(len(i))
    y0, y1, y2 = ssr_g[rows, im], ssr_g[rows, i], ssr_g[rows, ip]
    with np.errstate(all="ignore"):
        h = lk[1] - lk[0]
        denom = y0 - 2 * y1 + y2
        shift = np.where((denom > 0) & (i > 0) & (i < K_GRID - 1), 0.5 * h * (y0 - y2) / denom, 0)
    k = np.exp(lk[i] + np.clip(np.nan_to_num(shift), -h, h))

    def ssr_at(kv: float, row: int = 0) -> float:
        return float(_wls(_phi(np.array([kv]), xs)[0], t, w[row])[2])

    if 0 < i[0] < K_GRID - 1 and np.isfinite(y1[0]):
        res = optimize.minimize_scalar(
            ssr_at, bounds=(grid[i[0] - 1], grid[i[0] + 1]), method="bounded",
            options={"xatol": 1e-10 * grid[i[0]]},
        )  # fmt: skip
        if res.success and res.fun <= y1[0]:
            k[0] = float(res.x)
    ph = np.expm1(k[:, None] * xs[None, :]) / k[:, None]  # (B, n)
    a_p, b_p, ssr_p = _wls(ph, t, w)
    with np.errstate(all="ignore"):
        c = b_p / k * np.exp(-k * x0)  # T = T0 + C level^-k
        t0 = a_p - b_p / k
    aic_l, aic_p = _aic(ssr_l, n_b, 3), _aic(ssr_p, n_b, 4)
    return {
        "a": a_l,
        "b": b_l,
        "k": k,
        "t0": t0,
        "c": c,
        "aic_log": aic_l,
        "aic_power": aic_p,
        "delta_aic": aic_p - aic_l,
        "k_edge": (i == 0) | (i == K_GRID - 1),
        "k_low_edge": i == 0,
    }


def fit_law(rows: pd.DataFrame, clock: str, s: dict) -> dict:
    """One law for one cell's clock: log law vs free-offset power law by AIC (docs/science.md 7).

    Points: uncensored, non-diverged, above-floor, post-fit rows (T > 0), seeds pooled.
    Parameters: `delta_aic` (power minus log), log law `b` (slope dT/dlog(1/x); for `cls` also
    `nu` = 1/b, Prop 3.6) and `a`; power law `k`, `T0`, `C`. `preferred` is the chosen law
    (`log` when delta_aic >= 0). `ok` needs >= min_levels distinct levels, >= 2 seeds, finite
    intervals for the chosen law's parameters and delta_aic, and the chosen law inside its
    domain over its whole interval (log: b > 0; power: C > 0, and k strictly inside the profile
    grid).
    """
    tc, ci = s["fit_time"], float(s["ci_level"])
    counts = _counts(rows)
    n_pre = int(rows["pre_fit"].astype(bool).sum()) if "pre_fit" in rows else 0
    pts = _uncensored(rows, tc)
    pts = pts[(pts[tc] > 0) & (pts["level"] > 0)]
    n_levels, n_seeds = int(pts["level"].nunique()), int(pts["seed"].nunique())
    main = rows[~rows["pre_fit"].astype(bool)] if "pre_fit" in rows else rows
    n_unres = int(main["unresolved"].astype(bool).sum()) if "unresolved" in main else 0
    st = {"n_points": len(pts), "n_levels": n_levels, "n_pre_fit": n_pre, "n_fit_seeds": n_seeds,
          "n_unresolved": n_unres}  # fmt: skip
    mp = int(s["min_levels"])
    if n_levels < mp:
        why = f"{n_levels} uncensored post-fit levels < min_levels={mp}"
        if n_unres:
            why += f" ({n_unres} rows unresolved: within {RESOLVE_SE:g} SE of the asymptote)"
        return _insufficient("law", clock, counts, why, stats=st)
    x = np.log(1.0 / pts["level"].to_numpy(float))
    t = pts[tc].to_numpy(float)
    cnt = _boot_counts(pts["seed"].to_numpy(), np.zeros(len(t)), int(s["bootstrap_samples"]),
                       int(s["bootstrap_seed"]))  # fmt: skip
    # a replicate needs >= 3 distinct levels with weight to identify the power law
    lv_codes = np.unique(x, return_inverse=True)[1]
    distinct = np.zeros((cnt.shape[0], lv_codes.max() + 1))
    np.add.at(distinct, (slice(None), lv_codes), cnt)
    good = (distinct > 0).sum(1) >= 3
    f = law_fit_arrays(x, t, cnt)
    for key in ("a", "b", "k", "t0", "c", "aic_log", "aic_power", "delta_aic"):
        f[key] = np.where(good, f[key], np.nan)
    boot = (lambda v: v[1:]) if n_seeds >= 2 else (lambda v: None)
    law = "log" if f["delta_aic"][0] >= 0 else "power"
    with np.errstate(all="ignore"):
        params = {
            "delta_aic": _param(f["delta_aic"][0], boot(f["delta_aic"]), ci),
            "b": _param(f["b"][0], boot(f["b"]), ci),
            "a": _param(f["a"][0], boot(f["a"]), ci),
            "k": _param(f["k"][0], boot(f["k"]), ci),
            "T0": _param(f["t0"][0], boot(f["t0"]), ci),
            "C": _param(f["c"][0], boot(f["c"]), ci),
        }
        if clock == "cls":
            params["nu"] = _param(1 / f["b"][0], boot(1 / f["b"]), ci)
    d = params["delta_aic"]
    st.update({
        "aic_log": float(f["aic_log"][0]),
        "aic_power": float(f["aic_power"][0]),
        "aic": float(min(f["aic_log"][0], f["aic_power"][0])),
        "boot_fraction_log": float(np.nanmean(f["delta_aic"][1:] >= 0)) if n_seeds >= 2
        else math.nan,
        "law_support": "decisive" if (d["ci_low"] > 0 or d["ci_high"] < 0) else "weak",
        "finding": LAW_NAMES[law],
    })  # fmt: skip
    names = ["delta_aic", "b"] if law == "log" else ["delta_aic", "k", "T0", "C"]
    why = []
    if n_seeds < 2:
        why.append(f"{n_seeds} seed(s) with post-fit clocks: no seed bootstrap (needs >= 2)")
    bad = [n for n in names if not (math.isfinite(params[n]["ci_low"])
                                    and math.isfinite(params[n]["ci_high"]))]  # fmt: skip
    if bad and n_seeds >= 2:
        why.append(f"non-finite interval for {', '.join(bad)}")
    # domain: the whole interval, so a trend the seeds do not agree on identifies no law
    if law == "log" and not params["b"]["ci_low"] > 0 and n_seeds >= 2:
        b = params["b"]
        why.append(f"log-law slope b = {b['estimate']:.3g} [{b['ci_low']:.3g}, {b['ci_high']:.3g}]"
                   " not > 0")  # fmt: skip
    if law == "power":
        if f["k_edge"][0]:
            why.append(f"power exponent k = {f['k'][0]:.3g} on the profile edge [{K_MIN}, {K_MAX}]")
        c = params["C"]
        if not c["ci_low"] > 0 and n_seeds >= 2:
            why.append(f"power prefactor C = {c['estimate']:.3g} [{c['ci_low']:.3g}, "
                       f"{c['ci_high']:.3g}] not > 0")  # fmt: skip
    status = "insufficient" if why else "ok"
    return _record("law", clock, counts, stats=st, params=params, preferred=law, status=status,
                   reason="; ".join(why))  # fmt: skip


# ---------------------------------------------------------------- tail shape and asymptote


def _tail_models(u: np.ndarray, lower: float, upper: float) -> dict[str, tuple]:
    """Per law: residuals log(model) - log G's model, its Jacobian, and parameter bounds.

    Scaled time u = (t - T)/span. exp: (c, la, r), model c + exp(la - r u). power:
    (c, la, ld, p), model c + exp(la - p log(1 + u/d)), d = exp(ld) = (T - t0)/span.
    """

    def exp_parts(q):
        e = np.exp(q[1] - q[2] * u)
        m = q[0] + e
        return np.log(np.maximum(m, 1e-300)), np.stack([1 / m, e / m, -u * e / m], axis=1)

    def pow_parts(q):
        d = np.exp(q[2])
        lg = np.log1p(u / d)
        e = np.exp(q[1] - q[3] * lg)
        m = q[0] + e
        dld = e * q[3] * (u / d) / (1 + u / d) / m
        return np.log(np.maximum(m, 1e-300)), np.stack([1 / m, e / m, dld, -lg * e / m], axis=1)

    return {
        "exp": (exp_parts, ([lower, -np.inf, 1e-4], [upper, np.inf, 1e4])),
        "power": (
            pow_parts,
            ([lower, -np.inf, math.log(1e-10), 1e-3], [upper, np.inf, math.log(1e3), 50.0]),
        ),
    }


def _thin(dt: np.ndarray, keep: int) -> np.ndarray:
    """At most about `keep` indices of the sorted times dt > 0, evenly spaced in log dt."""
    if len(dt) <= keep:
        return np.arange(len(dt))
    target = np.geomspace(dt[0], dt[-1], keep)
    return np.unique(np.clip(np.searchsorted(dt, target), 0, len(dt) - 1))


def fit_tail(t: np.ndarray, g: np.ndarray, t_ref: float, lower: float) -> dict:
    """Tail shape and asymptote of one member's gap G(t) over t > t_ref (docs/science.md 7).

    Exponential `G = G_inf + A exp(-(t - t_ref)/b)` (theta = 1/2) against power
    `G = G_inf + A ((t - t0)/(t_ref - t0))^-p` (theta = (1 + 1/p)/2 > 1/2), t0 < t_ref free, both
    with G_inf in [lower, G_end) (lower: the gap's structural bound, 0 or 1 for a stable rank;
    G_end: the median of the window's last tenth),
    fitted by least squares on log G (multiplicative noise, `scipy.optimize.least_squares`, a few
    starts) and compared by AIC. The chosen law's G_inf is the asymptote, with its standard error
    from the Jacobian. Where no fit converges or the window has fewer than TAIL_MIN_POINTS logs,
    G_inf = lower with no standard error (`g_inf_source` "bound": every level unresolved).
    Returns TAIL_FIELDS; tail_delta_aic = AIC(power) - AIC(exp) (> 0 favours exponential).
    """
    out = dict.fromkeys(TAIL_FIELDS, math.nan)
    out.update(g_inf=float(lower), g_inf_source="bound", tail_law="", tail_n=0)
    t = np.asarray(t, float)
    g = np.asarray(g, float)
    ok = np.isfinite(t) & np.isfinite(g) & (g > 0) & (t > t_ref)
    t, g = t[ok], g[ok]
    idx = _thin(t - t_ref, TAIL_MAX_POINTS)
    t, g = t[idx], g[idx]
    n = len(t)
    out["tail_n"] = n
    # the asymptote lies below where the tail ends (the median of its last tenth): noise can put
    # single points below the asymptote, so min G is no bound
    gmin = float(np.median(g[-max(3, n // 10) :])) if n else math.nan
    if n < TAIL_MIN_POINTS or not gmin > lower:
        return out
    span = float(t.max() - t_ref)
    u = (t - t_ref) / span
    y = np.log(g)
    upper = lower + (gmin - lower) * (1 - 1e-9)
    fits = {}
    g_head = float(np.median(g[: max(3, n // 50)]))
    # asymptote starts: the bound, and below min G by fractions of the tail's drop
    c_starts = {lower, *(max(lower, gmin - f * max(g_head - gmin, 0.0)) for f in (1.0, 0.01))}
    for name, (parts, bounds) in _tail_models(u, lower, upper).items():
        best = None
        for c0 in sorted(c_starts):
            c0 = min(c0, upper)
            with np.errstate(all="ignore"):
                r = np.log(np.maximum(g - c0, 1e-300))
            if name == "exp":
                slope, icpt = np.polyfit(u, r, 1)
                starts = [[c0, icpt, float(np.clip(-slope, 2e-4, 5e3))]]
            else:
                starts = []
                for d in np.geomspace(1e-8, 1.0, 5):
                    slope, icpt = np.polyfit(np.log1p(u / d), r, 1)
                    starts.append([c0, icpt, math.log(d), float(np.clip(-slope, 2e-3, 40.0))])
            for x0 in starts:
                x0 = np.clip(x0, bounds[0], bounds[1])
                try:
                    with warnings.catch_warnings(), np.errstate(all="ignore"):
                        warnings.simplefilter("ignore")
                        res = optimize.least_squares(
                            lambda q, f=parts: f(q)[0] - y, x0,
                            jac=lambda q, f=parts: f(q)[1], bounds=bounds,
                            x_scale="jac", max_nfev=300,
                        )  # fmt: skip
                except (ValueError, np.linalg.LinAlgError):
                    continue
                if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
                    best = res
        if best is not None:
            fits[name] = best
    if not fits:
        return out
    aic = {k: n * math.log(max(2 * r.cost / n, 1e-300)) + 2 * (len(r.x) + 1)
           for k, r in fits.items()}  # fmt: skip
    law = min(aic, key=aic.get)
    res = fits[law]
    dof = max(n - len(res.x), 1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cov = np.linalg.pinv(res.jac.T @ res.jac) * (2 * res.cost / dof)
    se = float(np.sqrt(cov[0, 0])) if np.isfinite(cov[0, 0]) and cov[0, 0] >= 0 else math.nan
    out.update(
        g_inf=float(res.x[0]),
        g_inf_se=se,
        g_inf_source="tail_fit",
        tail_law=law,
        tail_delta_aic=float(aic.get("power", math.nan) - aic.get("exp", math.nan)),
    )
    if "exp" in fits:
        out["tail_timescale"] = span / float(fits["exp"].x[2])
    if "power" in fits:
        out["tail_exponent"] = float(fits["power"].x[3])
        out["tail_t0"] = t_ref - span * math.exp(float(fits["power"].x[2]))
    return out


def fit_tail_summary(rows: pd.DataFrame, clock: str, s: dict) -> dict:
    """Across seeds, the per-member tail fits the clocks stage recorded (`fit_tail` columns).

    `preferred` = the law most seeds chose (`exp` or `power`); params: `delta_aic` (power minus
    exp, mean over seeds), `timescale` (exponential b, steps; seeds with an exponential tail),
    `exponent` (power p) and `theta` = (1 + 1/p) / 2 (seeds with a power tail), `g_inf` (mean
    asymptote, raw units), for rep_energy `kl_theta` (`fit_kl`; NaN with `kl_note` saying why
    where ||grad E|| is not in the store), each with a seed-bootstrap interval. `ok` when every
    seed with a post-fit window has a tail fit and >= 2 seeds do.
    """
    ci = float(s["ci_level"])
    counts = _counts(rows)
    main = rows[~rows["pre_fit"].astype(bool) & ~rows["diverged"]] if len(rows) else rows
    per = main.drop_duplicates("seed").set_index("seed") if len(main) else main
    have = per[per["tail_law"].astype(str) != ""] if len(per) else per
    st = {"n_points": int(have["tail_n"].sum()) if len(have) else 0, "n_levels": len(have),
          "n_exp": int((have["tail_law"] == "exp").sum()) if len(have) else 0,
          "n_power": int((have["tail_law"] == "power").sum()) if len(have) else 0}  # fmt: skip
    if len(have) < 2:
        why = f"{len(have)} seed(s) with a tail fit after T_cls (needs >= 2)"
        return _insufficient("tail", clock, counts, why, stats=st)
    rng = np.random.default_rng(int(s["bootstrap_seed"]))
    draws = rng.integers(0, len(have), size=(int(s["bootstrap_samples"]), len(have)))

    laws = have["tail_law"].to_numpy()

    def p(col: str, only: str | None = None, fn=lambda v: v) -> dict:
        """Mean over seeds (only those whose tail law is `only`, if given), bootstrap CI."""
        v = fn(have[col].to_numpy(float))
        if only is not None:
            v = np.where(laws == only, v, np.nan)
        if not np.isfinite(v).any():
            return _param(math.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # replicates without such seeds
            return _param(np.nanmean(v), np.nanmean(v[draws], axis=1), ci)

    law = "exp" if st["n_exp"] >= st["n_power"] else "power"
    params = {
        "delta_aic": p("tail_delta_aic"),
        "timescale": p("tail_timescale", "exp"),
        "exponent": p("tail_exponent", "power"),
        "theta": p("tail_exponent", "power", lambda v: (1 + 1 / v) / 2),
        "g_inf": p("g_inf"),
    }
    if clock == "rep_energy" and "kl_theta" in have:
        params["kl_theta"] = p("kl_theta")
        notes = {str(v) for v in have["kl_note"] if str(v)} if "kl_note" in have else set()
        st["kl_note"] = "; ".join(sorted(notes))
    n_missing = len(per) - len(have)
    why = f"{n_missing} seed(s) without a tail fit" if n_missing else ""
    return _record("tail", clock, counts, stats=st, params=params, preferred=law,
                   status="insufficient" if why else "ok", reason=why)  # fmt: skip


KL_FIELDS = ("kl_theta", "kl_theta_se", "kl_n")


def fit_kl(t: np.ndarray, gap: np.ndarray, grad: np.ndarray, t_ref: float) -> dict:
    """Kurdyka-Lojasiewicz exponent of one member: slope of log ||grad E|| on log(E - E_inf).

    The KL inequality ||grad E|| >= c (E - E_inf)^theta is tight along a gradient-flow tail, so
    over the logs after t_ref with E - E_inf > 0 the OLS slope is theta (its standard error from
    the OLS). Under gradient flow an exponential tail gives theta = 1/2 and a power tail
    (t - t0)^-p gives theta = (1 + 1/p)/2 (docs/science.md 1, 7).
    """
    out = {"kl_theta": math.nan, "kl_theta_se": math.nan, "kl_n": 0}
    t, gap, grad = (np.asarray(a, float) for a in (t, gap, grad))
    ok = (t > t_ref) & np.isfinite(gap) & np.isfinite(grad) & (gap > 0) & (grad > 0)
    t, gap, grad = t[ok], gap[ok], grad[ok]
    idx = _thin(t - t_ref, TAIL_MAX_POINTS)
    x, y = np.log(gap[idx]), np.log(grad[idx])
    n = len(x)
    out["kl_n"] = n
    if n < TAIL_MIN_POINTS or np.ptp(x) <= 0:
        return out
    a, b, ssr = _wls(x, y, np.ones_like(x))
    sxx = float(((x - x.mean()) ** 2).sum())
    out["kl_theta"] = float(b)
    out["kl_theta_se"] = float(math.sqrt(ssr / max(n - 2, 1) / sxx))
    return out


# ---------------------------------------------------------------- ratio and scaling


def fit_separation_ratio(cell: pd.DataFrame, clock: str, s: dict) -> dict:
    """R = T_clock(ref) / T_cls(ref) per seed; geometric mean over seeds, seed-bootstrap CI.

    Reference levels: s["reference_levels"]. Seeds where T_cls fires but the slow clock does
    not are right-censored ratios (counted as n_censored), never dropped silently.
    """
    tc, ci = s["fit_time"], float(s["ci_level"])
    main = cell[~cell["pre_fit"].astype(bool)] if "pre_fit" in cell else cell
    cls_all = main[(main["clock"] == "cls") & ~main["below_floor"]]
    rep_all = main[main["clock"] == clock]
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
    boot = None
    if n > 1:
        rng = np.random.default_rng(int(s["bootstrap_seed"]))
        draws = rng.integers(0, n, size=(int(s["bootstrap_samples"]), n))
        boot = np.exp(lr[draws].mean(1))
    se = float(lr.std(ddof=1) / math.sqrt(n) * math.exp(lr.mean())) if n > 1 else math.nan
    return _record("ratio", clock, counts, level=ref, stats=st, params={
        "ratio": _param(math.exp(float(lr.mean())), boot, ci, se),
        "ratio_median": _param(float(np.exp(np.median(lr)))),
    })  # fmt: skip


def _axis_columns(clocks: pd.DataFrame) -> list[str]:
    fixed = set(IDENTITY_COLUMNS) | set(CLOCK_COLUMNS)
    return [c for c in clocks.columns if c not in fixed]


def fit_scaling(clocks: pd.DataFrame, s: dict) -> list[dict]:
    """log T = c + k log(axis) across cells, per clock at its reference level, per varying axis.

    The other varying axes are held fixed: one fit per combination of their values (`group`).
    Points are (cell, seed) clocks; the bootstrap resamples seeds within each cell.
    """
    tc, ci = s["fit_time"], float(s["ci_level"])
    axes = _axis_columns(clocks)
    varying = [a for a in axes if clocks[a].nunique(dropna=True) > 1]
    main = clocks[~clocks["pre_fit"].astype(bool)] if "pre_fit" in clocks else clocks
    out = []
    for axis in [a for a in s["scaling_axes"] if a in varying]:
        others = [a for a in varying if a != axis]
        for clock in CLOCKS:
            if clock not in s["reference_levels"]:
                continue
            crow = main[(main["clock"] == clock) & ~main["below_floor"]]
            ref = _nearest_level(crow, float(s["reference_levels"][clock]))
            rows = _level_match(crow, ref)
            if rows.empty:
                continue
            groups = rows.groupby(others, dropna=False) if others else [((), rows)]
            for key, g in groups:
                key = key if isinstance(key, tuple) else (key,)
                gdesc = json.dumps({o: json_safe(v) for o, v in zip(others, key, strict=True)})
                counts = _counts(g)
                pts = _uncensored(g, tc)
                av = pd.to_numeric(pts[axis], errors="coerce").to_numpy(float)
                pts = pts[(av > 0) & (pts[tc].to_numpy(float) > 0)]
                n_vals = int(pts[axis].nunique())
                st = {"n_points": len(pts), "n_levels": n_vals}
                kw = {"level": ref, "axis": axis, "group": gdesc, "stats": st}
                if n_vals < 3:
                    out.append(_insufficient("scaling", clock, counts,
                                             f"{n_vals} positive {axis} values with uncensored "
                                             "clocks < 3", **kw))  # fmt: skip
                    continue
                x = np.log(pts[axis].to_numpy(float))
                y = np.log(pts[tc].to_numpy(float))
                cells = pts["cell_id"].astype(str).to_numpy()
                groups = cells + "\x00" + pts["seed"].astype(str).to_numpy()
                cnt = _boot_counts(
                    groups, cells, int(s["bootstrap_samples"]), int(s["bootstrap_seed"])
                )
                a, b, ssr = _wls(x, y, cnt)
                sst = float(((y - y.mean()) ** 2).sum())
                st["r2"] = 1 - float(ssr[0]) / sst if sst > 0 else math.nan
                out.append(_record("scaling", clock, counts, **kw, params={
                    "exponent": _param(b[0], b[1:], ci),
                    "log_prefactor": _param(a[0], a[1:], ci),
                }))  # fmt: skip
    return out


# ---------------------------------------------------------------- entry point


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


def fit_clocks(clocks: pd.DataFrame, settings: dict) -> tuple[pd.DataFrame, dict]:
    """All fits for a study's clocks table -> (tidy fits table, JSON-able summary).

    Per cell: `law` for `cls` and every rep clock, `tail` for every rep clock, `ratio` for every
    slow clock; across cells: `scaling`. Reads only the clocks table (design.md "Fits output").
    """
    s = resolve_settings(settings)
    clocks = clocks.copy()
    if "pre_fit" not in clocks:
        clocks["pre_fit"] = False
    rows_out: list[dict] = []
    cells_json: dict = {}
    axes = _axis_columns(clocks)
    for cell_id, cell in clocks.groupby("cell_id", sort=True):
        study = str(cell["study"].iloc[0]) if "study" in cell else ""
        recs = []
        by_clock = {c: cell[cell["clock"] == c] for c in CLOCKS if (cell["clock"] == c).any()}
        for c in LAW_CLOCKS:
            if c in by_clock:
                recs.append(fit_law(by_clock[c], c, s))
        for c in REP_CLOCKS:
            if c in by_clock and "tail_law" in cell:
                recs.append(fit_tail_summary(by_clock[c], c, s))
        for c in (*REP_CLOCKS, "gen_acc", "gen_loss", "gate"):
            if c in by_clock and c in s["reference_levels"] and "cls" in by_clock:
                recs.append(fit_separation_ratio(cell, c, s))
        for r in recs:
            rows_out += _flatten(r, study, str(cell_id))
        cells_json[str(cell_id)] = {
            "axes": {a: json_safe(cell[a].iloc[0]) for a in axes},
            "counts": {c: _counts(r) for c, r in by_clock.items()},
            "fits": [json_safe(r) for r in recs],
        }
    scaling = fit_scaling(clocks, s)
    study = str(clocks["study"].iloc[0]) if len(clocks) and "study" in clocks else ""
    for r in scaling:
        rows_out += _flatten(r, study, "*")
    table = pd.DataFrame(rows_out, columns=list(FIT_COLUMNS))
    summary = {
        "settings": json_safe(s),
        "n_cells": len(cells_json),
        "cells": cells_json,
        "scaling": [json_safe(r) for r in scaling],
    }
    return table, summary
