"""The fits of the clocks table (docs/science.md 7, docs/design.md "Fits output").

- `fit_law`: one law selection for both clocks. Per cell and clock, the uncensored post-fit
  clock times T(x) at levels x (eps for `cls`, eta for `rep_*`) are fitted by the log law
  `T = a + b log(1/x)` and by the free-offset power law `T = T0 + C x^-k` (T0 free, also below
  the first crossing), both by least squares with relative errors (weights 1/T^2), and compared
  by AIC. Every parameter and delta-AIC gets a seed-bootstrap interval.
- `fit_separation_ratio`, `fit_scaling`: T_clock / T_cls per seed, and power-law scaling of the
  clocks with each grid axis across cells.
- `fit_clocks`: every fit of a study; which clocks take which fit is declared per clock
  (`clock_specs`). The tail and KL summaries come from `tails` (the per-member tail and KL fits
  run in the clocks stage, which needs the asymptote to define the crossings: `tails.fit_tail`,
  `kl.fit_kl`, re-exported here).

Only clocks-table columns are read (data flow: trajectories -> clocks -> fits). A fit is `ok` only
when its law is identified (enough uncensored levels, >= 2 seeds for the bootstrap, finite
intervals, parameters inside their domain); otherwise `insufficient` with the reason.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import optimize

from twoclocks.analyze.clock_specs import (
    CLOCK_COLUMNS,
    IDENTITY_COLUMNS,
    KL_FIELDS,
    RESOLVE_SE,
    clock_names,
)
from twoclocks.analyze.fit_common import boot_counts as _boot_counts
from twoclocks.analyze.fit_common import counts as _counts
from twoclocks.analyze.fit_common import insufficient as _insufficient
from twoclocks.analyze.fit_common import level_match as _level_match
from twoclocks.analyze.fit_common import nearest_level as _nearest_level
from twoclocks.analyze.fit_common import param as _param
from twoclocks.analyze.fit_common import record as _record
from twoclocks.analyze.fit_common import uncensored as _uncensored
from twoclocks.analyze.fit_common import wls as _wls
from twoclocks.analyze.kl import fit_kl
from twoclocks.analyze.settings import resolve_settings
from twoclocks.analyze.tails import TAIL_MAX_POINTS, TAIL_MIN_POINTS, fit_tail, fit_tail_summary
from twoclocks.provenance import json_safe

# names other modules and tests import from here (the tail and KL fits moved to their modules)
__all__ = [
    "FIT_COLUMNS",
    "KL_FIELDS",
    "K_MAX",
    "K_MIN",
    "TAIL_MAX_POINTS",
    "TAIL_MIN_POINTS",
    "_boot_counts",
    "_param",
    "_wls",
    "fit_clocks",
    "fit_kl",
    "fit_law",
    "fit_scaling",
    "fit_separation_ratio",
    "fit_tail",
    "fit_tail_summary",
    "law_fit_arrays",
]

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
    "n_relapsed",
    "status",
    "reason",
)
# power-law exponent k is profiled on a log grid over [K_MIN, K_MAX]; an optimum on either edge
# is not an identified power law (at K_MIN it is the log law, the k -> 0 limit).
K_MIN, K_MAX, K_GRID = 1e-3, 20.0, 240
# relative-error floor of the law fits: a noise-free fit would give log(0) in the AIC
SIGMA2_FLOOR = 1e-18
LAW_NAMES = {"log": "logarithmic", "power": "power law"}


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


def _law_problems(law: str, params: dict, f: dict, n_seeds: int) -> list[str]:
    """Why the chosen law is not identified (empty: it is): no seed bootstrap, a non-finite
    interval of its parameters, or a parameter outside its domain over its whole interval."""
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
    return why


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
        if clock in clock_names(kind="classifier"):  # nu = 1/b (Prop 3.6)
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
    why = _law_problems(law, params, f, n_seeds)
    status = "insufficient" if why else "ok"
    return _record("law", clock, counts, stats=st, params=params, preferred=law, status=status,
                   reason="; ".join(why))  # fmt: skip


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
        for clock in clock_names(fit="scaling"):
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


def _tail(cell: pd.DataFrame, rows: pd.DataFrame, clock: str, s: dict) -> dict | None:
    return fit_tail_summary(rows, clock, s) if "tail_law" in cell else None


def _ratio(cell: pd.DataFrame, rows: pd.DataFrame, clock: str, s: dict) -> dict | None:
    ok = clock in s["reference_levels"] and (cell["clock"] == "cls").any()
    return fit_separation_ratio(cell, clock, s) if ok else None


# per-cell fits by the name a clock declares them with (`ClockSpec.fits`), in record order:
# (the cell's rows, the clock's rows, clock, resolved settings) -> record, or None where it
# does not apply. `kl` is summarised in the tail record; `scaling` runs across cells.
PER_CELL_FITS = {
    "law": lambda cell, rows, clock, s: fit_law(rows, clock, s),
    "tail": _tail,
    "ratio": _ratio,
}


def fit_clocks(clocks: pd.DataFrame, settings: dict) -> tuple[pd.DataFrame, dict]:
    """All fits for a study's clocks table -> (tidy fits table, JSON-able summary).

    Per cell, each declared clock takes the fits its declaration names (`clock_specs`; built
    in: `law` for `cls` and every rep clock, `tail` for every rep clock, `ratio` for every slow
    clock), in the order of PER_CELL_FITS; across cells: `scaling`. Reads only the clocks table
    (design.md "Fits output").
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
        names = clock_names()
        by_clock = {c: cell[cell["clock"] == c] for c in names if (cell["clock"] == c).any()}
        recs = [
            rec
            for fit, run in PER_CELL_FITS.items()
            for c in clock_names(fit=fit)
            if c in by_clock and (rec := run(cell, by_clock[c], c, s)) is not None
        ]
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
