"""Tail fits of a gap: its shape and asymptote per member, and their summary across seeds.

`fit_tail` (called by the clocks stage, `clocks.extract_clocks`, which needs G_inf to define the
crossings) fits one member's gap G(t) after T_cls: `G = G_inf + A exp(-(t - T)/b)` against
`G = G_inf + A ((t - t0)/(T - t0))^-p`, by AIC on log G (docs/science.md 7). `fit_tail_summary`
(called by the fits stage) summarises the members' results from the clocks table. A tail model
is one entry of `_tail_models` (residuals, Jacobian, bounds and starting points).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import optimize

from twoclocks.analyze.clock_specs import TAIL_FIELDS, takes_fit
from twoclocks.analyze.fit_common import counts as _counts
from twoclocks.analyze.fit_common import insufficient as _insufficient
from twoclocks.analyze.fit_common import param as _param
from twoclocks.analyze.fit_common import record as _record

# a tail fit uses at most this many log points (evenly spaced in log(t - T_cls)), and needs at
# least TAIL_MIN_POINTS (4 parameters, and an AIC that means something)
TAIL_MAX_POINTS, TAIL_MIN_POINTS = 400, 20


def _exp_starts(u: np.ndarray, r: np.ndarray, c0: float) -> list[list[float]]:
    """exp: the slope of log(G - c0) on u."""
    slope, icpt = np.polyfit(u, r, 1)
    return [[c0, icpt, float(np.clip(-slope, 2e-4, 5e3))]]


def _power_starts(u: np.ndarray, r: np.ndarray, c0: float) -> list[list[float]]:
    """power: the slope of log(G - c0) on log(1 + u/d), for d over 8 decades."""
    starts = []
    for d in np.geomspace(1e-8, 1.0, 5):
        slope, icpt = np.polyfit(np.log1p(u / d), r, 1)
        starts.append([c0, icpt, math.log(d), float(np.clip(-slope, 2e-3, 40.0))])
    return starts


def _tail_models(u: np.ndarray, lower: float, upper: float) -> dict[str, tuple]:
    """Per law: residuals log(model) - log G's model, its Jacobian, parameter bounds, and its
    starting points (u, log(G - c0), c0) -> [x0, ...].

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
        "exp": (exp_parts, ([lower, -np.inf, 1e-4], [upper, np.inf, 1e4]), _exp_starts),
        "power": (
            pow_parts,
            ([lower, -np.inf, math.log(1e-10), 1e-3], [upper, np.inf, math.log(1e3), 50.0]),
            _power_starts,
        ),
    }


def thin_log(dt: np.ndarray, keep: int) -> np.ndarray:
    """At most about `keep` indices of the sorted times dt > 0, evenly spaced in log dt."""
    if len(dt) <= keep:
        return np.arange(len(dt))
    target = np.geomspace(dt[0], dt[-1], keep)
    return np.unique(np.clip(np.searchsorted(dt, target), 0, len(dt) - 1))


def _best_fits(u: np.ndarray, g: np.ndarray, lower: float, upper: float, c_starts: set) -> dict:
    """Per tail model, the least-squares fit on log G with the lowest cost over its starts
    (`scipy.optimize.least_squares`); models where no start converges are left out."""
    y = np.log(g)
    fits = {}
    for name, (parts, bounds, starts_of) in _tail_models(u, lower, upper).items():
        best = None
        for c0 in sorted(c_starts):
            c0 = min(c0, upper)
            with np.errstate(all="ignore"):
                r = np.log(np.maximum(g - c0, 1e-300))
            for x0 in starts_of(u, r, c0):
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
    return fits


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
    idx = thin_log(t - t_ref, TAIL_MAX_POINTS)
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
    upper = lower + (gmin - lower) * (1 - 1e-9)
    g_head = float(np.median(g[: max(3, n // 50)]))
    # asymptote starts: the bound, and below min G by fractions of the tail's drop
    c_starts = {lower, *(max(lower, gmin - f * max(g_head - gmin, 0.0)) for f in (1.0, 0.01))}
    fits = _best_fits(u, g, lower, upper, c_starts)
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
    asymptote, raw units), for a clock with the `kl` fit (rep_energy) `kl_theta` (`kl.fit_kl`;
    NaN with `kl_note` saying why where ||grad E|| is not in the store), each with a
    seed-bootstrap interval. `ok` when every seed with a post-fit window has a tail fit and >= 2
    seeds do.
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
    if takes_fit(clock, "kl") and "kl_theta" in have:
        params["kl_theta"] = p("kl_theta")
        notes = {str(v) for v in have["kl_note"] if str(v)} if "kl_note" in have else set()
        st["kl_note"] = "; ".join(sorted(notes))
    n_missing = len(per) - len(have)
    why = f"{n_missing} seed(s) without a tail fit" if n_missing else ""
    return _record("tail", clock, counts, stats=st, params=params, preferred=law,
                   status="insufficient" if why else "ok", reason=why)  # fmt: skip
