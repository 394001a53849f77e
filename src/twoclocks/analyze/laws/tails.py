"""Tail models of a gap G(t) after T_cls, the generic mixture included (issue #22.2).

Under gradient descent with weight decay the generic tail is a sum of exponential rates
(theta = 1/2, docs/science.md 9); over a finite window such a sum looks like a power law. So one
member's tail is fitted by (least squares on log G: multiplicative noise)

- `exp`:   G = G_inf + A exp(-r u)
- `exp2`:  G = G_inf + A1 exp(-r1 u) + A2 exp(-r2 u)  (two rates: the generic case)
- `exp3`:  three rates (a mixture whose rates span decades looks like a power law longer)
- `power`: G = G_inf + A (1 + u/d)^-p                 (theta = (1 + 1/p)/2)

with u = (t - t_ref)/span and G_inf free in [lower, G_end) (an approach to a floor) or fixed at a
known zero. The tail is called POWER only when the power law beats the best exponential model
by BIC_MARGIN and its late local rate -d log(G - G_inf)/dt keeps falling like 1/(t - t0)
(log-log slope of the rate on t - t0 below -RATE_FALL, with confidence); EXPONENTIAL or MIXTURE
when the exponential family is not beaten and the late rate levels off; otherwise INCONCLUSIVE.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

EXPONENTIAL, MIXTURE, POWER, INCONCLUSIVE = "exponential", "mixture", "power", "inconclusive"
# Pre-registered: a BIC difference of 6 is "strong" evidence (Kass & Raftery 1995); the late
# rate of a power tail falls as (t - t0)^-1, of an exponential mixture it levels off (slope 0);
# the boundary is half way.
BIC_MARGIN = 6.0
RATE_FALL = 0.5
MAX_POINTS, MIN_POINTS = 300, 20


@dataclass
class TailFit:
    """One member's tail: per model its parameters, BIC and asymptote (G_inf, se); the verdict."""

    verdict: str
    models: dict = field(default_factory=dict)
    rate_slope: float = math.nan
    rate_slope_se: float = math.nan
    exponent: float = math.nan
    theta: float = math.nan
    reason: str = ""
    n: int = 0


def _thin(dt: np.ndarray, keep: int) -> np.ndarray:
    if len(dt) <= keep:
        return np.arange(len(dt))
    target = np.geomspace(dt[0], dt[-1], keep)
    return np.unique(np.clip(np.searchsorted(dt, target), 0, len(dt) - 1))


def _model(name: str, q: np.ndarray, u: np.ndarray, c: float | None) -> np.ndarray:
    """Model value; q holds (c, ...) unless the asymptote c is fixed (known zero)."""
    if c is None:
        c, q = q[0], q[1:]
    if name == "exp":
        return c + np.exp(q[0] - q[1] * u)
    if name in ("exp2", "exp3"):
        rate, out = 0.0, c
        for i in range(0, len(q), 2):  # rates r1 < r1 + dr2 < r1 + dr2 + dr3
            rate = rate + q[i + 1]
            out = out + np.exp(q[i] - rate * u)
        return out
    return c + np.exp(q[0] - q[2] * np.log1p(u / np.exp(q[1])))


def _jac(name: str, q: np.ndarray, u: np.ndarray, c: float | None) -> np.ndarray:
    """d log(model)/dq, analytic (n x len(q)): a forward-difference Jacobian costs len(q) more
    model calls per iteration and most of the fit's time (the calibration stage's hot path)."""
    free = c is None
    if free:
        c, q = q[0], q[1:]
    if name == "exp":
        e = np.exp(q[0] - q[1] * u)
        cols = [e, -u * e]
    elif name in ("exp2", "exp3"):
        rate, terms = 0.0, []
        for i in range(0, len(q), 2):
            rate = rate + q[i + 1]
            terms.append(np.exp(q[i] - rate * u))
        tail = np.cumsum(terms[::-1], axis=0)[::-1]  # sum_{i >= j} of the terms: d/d(dr_j)
        cols = [x for j, e in enumerate(terms) for x in (e, -u * tail[j])]
    else:
        v = u / np.exp(q[1])
        e = np.exp(q[0] - q[2] * np.log1p(v))
        cols = [e, q[2] * e * v / (1 + v), -np.log1p(v) * e]
    m = _model(name, q if not free else np.concatenate([[c], q]), u, None if free else c)
    cols = ([np.ones_like(u)] if free else []) + cols
    live = m > 1e-300  # where the model is clipped, the residual does not move
    return np.where(live[:, None], np.stack(cols, axis=1) / np.where(live, m, 1.0)[:, None], 0.0)


def _starts(name: str, u: np.ndarray, y: np.ndarray, c0: float) -> list[list[float]]:
    """Starting points from a straight line through log(G - c0) against u (or log u/d)."""
    with np.errstate(all="ignore"):
        r = np.log(np.maximum(np.exp(y) - c0, 1e-300))
    slope, icpt = np.polyfit(u, r, 1)
    rate = float(np.clip(-slope, 1e-3, 1e3))
    if name == "exp":
        return [[icpt, rate]]
    if name == "exp2":
        return [
            [icpt - 0.7, rate / 3, icpt - 0.7, rate * 3],
            [icpt - 0.1, rate, icpt - 2, rate * 10],
        ]
    if name == "exp3":
        return [[icpt - 1.1, rate / 5, icpt - 1.1, rate, icpt - 1.1, rate * 5]]
    out = []
    for d in (1e-4, 1e-2, 1.0):
        s, i0 = np.polyfit(np.log1p(u / d), r, 1)
        out.append([i0, math.log(d), float(np.clip(-s, 1e-2, 40.0))])
    return out


def _bounds(name: str, lower: float, upper: float, fixed: bool) -> tuple[list, list]:
    """Parameter bounds: rates in [1e-4, 1e4] per span, power p in [1e-3, 50], G_inf in range."""
    inf = np.inf
    lo = {"exp": [-inf, 1e-4], "exp2": [-inf, 1e-4] * 2, "exp3": [-inf, 1e-4] * 3,
          "power": [-inf, -23.0, 1e-3]}  # fmt: skip
    hi = {"exp": [inf, 1e4], "exp2": [inf, 1e4] * 2, "exp3": [inf, 1e4] * 3,
          "power": [inf, 7.0, 50.0]}  # fmt: skip
    if fixed:
        return lo[name], hi[name]
    return [lower, *lo[name]], [upper, *hi[name]]


def _fit_model(name, u, y, lower, upper, c_fixed, c_starts) -> dict | None:
    """Best of several starts (least squares on log G); its BIC, asymptote and SE (Jacobian)."""
    best = None
    lo, hi = _bounds(name, lower, upper, c_fixed is not None)
    for c0 in c_starts if c_fixed is None else [c_fixed]:
        for s in _starts(name, u, y, c0):
            x0 = np.clip(s if c_fixed is not None else [c0, *s], lo, hi)
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    res = optimize.least_squares(
                        lambda q: np.log(np.maximum(_model(name, q, u, c_fixed), 1e-300)) - y,
                        x0, jac=lambda q: _jac(name, q, u, c_fixed), bounds=(lo, hi),
                        x_scale="jac", max_nfev=200,
                    )  # fmt: skip
            except (ValueError, np.linalg.LinAlgError):
                continue
            if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
                best = res
    if best is None:
        return None
    n, m = len(y), len(best.x) + 1
    bic = n * math.log(max(2 * best.cost / n, 1e-300)) + m * math.log(n)
    c, se = (c_fixed, 0.0) if c_fixed is not None else (float(best.x[0]), math.nan)
    if c_fixed is None:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            cov = np.linalg.pinv(best.jac.T @ best.jac) * (2 * best.cost / max(n - m + 1, 1))
        se = float(np.sqrt(cov[0, 0])) if cov[0, 0] >= 0 else math.nan
    fit = _model(name, best.x, u, c_fixed)
    return {"q": best.x, "bic": bic, "cost": float(best.cost), "g_inf": c, "g_inf_se": se,
            "fit": fit, "fixed": c_fixed is not None}  # fmt: skip


def late_rate_slope(t, g, g_inf: float, t0: float, t_max: float = math.inf) -> tuple[float, float]:
    """Log-log slope s of the late local rate -d log(G - G_inf)/dt on t - t0, with its SE.

    Over the late half (in time) of the window up to t_max (where the gap still stands above
    the noise), with G_inf held fixed, log(G - G_inf) = c - a (x^beta - 1)/beta, x = (t - t0) /
    (t_start - t0), is fitted to log G (multiplicative noise): its local rate is proportional to
    x^(beta - 1), so s = beta - 1 (a power tail: beta = 0, s = -1; a levelled-off mixture:
    beta = 1, s = 0). The SE is the Jacobian's. NaN where fewer than 10 logs qualify.
    """
    ok = (t > t0) & (t <= t_max) & np.isfinite(g) & (g > 0)
    t, g = t[ok], g[ok]
    if len(t) < 10:
        return math.nan, math.nan
    late = t >= t[0] + (t[-1] - t[0]) / 2
    t, y = t[late], np.log(g[late])
    if len(t) < 10 or not np.all(np.exp(y[:3]) > g_inf):
        return math.nan, math.nan
    x = (t - t0) / (t[0] - t0)
    lx = np.log(x)

    def model(q):
        beta = q[2]
        shape = lx if abs(beta) < 1e-8 else np.expm1(beta * lx) / beta
        return np.log(np.maximum(g_inf + np.exp(q[0] - q[1] * shape), 1e-300))

    h0 = max(float(np.exp(y[0]) - g_inf), 1e-300)
    x0 = [math.log(h0), 1.0, 0.5]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = optimize.least_squares(
                lambda q: model(q) - y, x0, bounds=([-np.inf, 1e-6, -3.0], [np.inf, 1e4, 4.0]),
                x_scale="jac", max_nfev=200,
            )  # fmt: skip
            cov = np.linalg.pinv(res.jac.T @ res.jac) * (2 * res.cost / max(len(t) - 3, 1))
    except (ValueError, np.linalg.LinAlgError):
        return math.nan, math.nan
    se = float(np.sqrt(cov[2, 2])) if cov[2, 2] >= 0 else math.nan
    return float(res.x[2] - 1.0), se


def _above_noise(model: dict, t: np.ndarray, g: np.ndarray) -> float:
    """Last time at which the fitted gap above its asymptote exceeds 3 noise SDs of G."""
    sigma = math.sqrt(2 * model["cost"] / len(t))
    clear = (model["fit"] - model["g_inf"]) > 3 * sigma * model["fit"]
    return float(t[clear][-1]) if clear.any() else -math.inf


def _slopes(model: dict, t, g, t0: float, g_inf: float) -> tuple[float, float]:
    return late_rate_slope(t, g, g_inf, t0, _above_noise(model, t, g))


def _edge(models: list[dict], sign: float, lower: float) -> float:
    """The plausible asymptote that is hardest on a rate test: the highest G_inf + 2 SE (a higher
    asymptote makes the rate fall less) for sign +1, the lowest G_inf - 2 SE for sign -1."""
    vals = [m["g_inf"] + sign * 2 * (m["g_inf_se"] if math.isfinite(m["g_inf_se"]) else math.inf)
            for m in models]  # fmt: skip
    return max(vals) if sign > 0 else max(min(vals), lower)


def _verdict(fit: TailFit, t, g, t_ref, span, lower: float) -> None:
    """POWER, EXPONENTIAL/MIXTURE or INCONCLUSIVE. The rate test must hold across the plausible
    asymptotes (the asymptote may not be identified): falling at the highest, levelling at the
    lowest G_inf +- 2 SE of the models the BIC cannot exclude."""
    m = fit.models
    exp_fam = None  # the fewest rates that more rates do not beat by BIC_MARGIN
    for name in ("exp", "exp2", "exp3"):
        if name in m and (exp_fam is None or m[name]["bic"] < m[exp_fam]["bic"] - BIC_MARGIN):
            exp_fam = name
    if exp_fam is None or "power" not in m:
        fit.verdict, fit.reason = INCONCLUSIVE, "a tail model did not converge"
        return
    d_bic = m[exp_fam]["bic"] - m["power"]["bic"]  # > 0 favours the power law
    pw = m["power"]
    t0 = t_ref - span * math.exp(pw["q"][-2])
    fit.exponent = float(pw["q"][-1])
    fit.theta = (1 + 1 / fit.exponent) / 2
    fall = [_slopes(pw, t, g, t0, c) for c in (pw["g_inf"], _edge([pw], 1.0, lower))]
    falls = all(math.isfinite(s) and s + 1.96 * se < -RATE_FALL for s, se in fall)
    # levelling off is tested against t - t_ref: a constant rate has slope 0 on any time axis
    plausible = [exp_fam] + (["power"] if d_bic > -BIC_MARGIN else [])
    c_low = _edge([m[k] for k in plausible], -1.0, lower)
    lev = [_slopes(m[k], t, g, t_ref, c) for k in plausible for c in (m[k]["g_inf"], c_low)]
    levels = all(math.isfinite(s) and s - 1.96 * se > -RATE_FALL for s, se in lev)
    fit.rate_slope, fit.rate_slope_se = fall[0] if d_bic > 0 else lev[0]
    if d_bic > BIC_MARGIN and falls:
        fit.verdict = POWER
        fit.reason = (
            f"power beats {exp_fam} by dBIC {d_bic:.1f}; late rate slope {fall[0][0]:.2f} "
            f"({fall[1][0]:.2f} at the highest plausible asymptote)"
        )
    elif d_bic < BIC_MARGIN and levels:
        fit.verdict = EXPONENTIAL if exp_fam == "exp" else MIXTURE
        fit.reason = (
            f"{exp_fam} not beaten (dBIC {d_bic:.1f}); late rate levels off (slope "
            f"{lev[0][0]:.2f}) down to the lowest plausible asymptote {c_low:.3g}"
        )
    else:
        s_pow, se_pow = fall[0]
        fit.verdict = INCONCLUSIVE
        fit.reason = (
            f"power vs {exp_fam} dBIC {d_bic:.1f} (needs > {BIC_MARGIN:g}); late rate slope "
            f"{s_pow:.2f} +- {1.96 * se_pow:.2f} (power: -1, levelled: 0) at the power law's "
            "asymptote" + ("" if levels else "; not levelled across the plausible asymptotes")
        )


def fit_tail(t, g, t_ref: float, lower: float = 0.0, known_zero: float | None = None) -> TailFit:
    """Fit the three tail models to one member's gap over t > t_ref and call its verdict.

    known_zero: the asymptote when the gap is zero by construction (spurious energy, Fourier
    energy outside the key frequencies): used instead of fitting G_inf.
    """
    t, g = np.asarray(t, float), np.asarray(g, float)
    ok = np.isfinite(t) & np.isfinite(g) & (g > 0) & (t > t_ref)
    t, g = t[ok], g[ok]
    idx = _thin(t - t_ref, MAX_POINTS)
    t, g = t[idx], g[idx]
    fit = TailFit(INCONCLUSIVE, n=len(t))
    g_end = float(np.median(g[-max(3, len(g) // 10) :])) if len(g) else math.nan
    if len(t) < MIN_POINTS or not g_end > lower:
        fit.reason = f"{len(t)} logs after T_cls (needs {MIN_POINTS}) or no fall above the bound"
        return fit
    span = float(t[-1] - t_ref)
    u, y = (t - t_ref) / span, np.log(g)
    upper = lower + (g_end - lower) * (1 - 1e-9)
    g_head = float(np.median(g[: max(3, len(g) // 50)]))
    drop = max(g_head - g_end, 0.0)
    c_starts = sorted({lower, max(lower, g_end - drop), max(lower, g_end - 0.05 * drop)})
    for name in ("exp", "exp2", "exp3", "power"):
        r = _fit_model(name, u, y, lower, upper, known_zero, c_starts)
        if r is not None:
            fit.models[name] = r
    _verdict(fit, t, g, t_ref, span, lower)
    return fit


def decide_tails(fits: list[TailFit]) -> tuple[str, str]:
    """One cell's tail verdict from its members: a majority camp with no member in the other.

    Camps: POWER against the exponential family (EXPONENTIAL, MIXTURE; MIXTURE if any member's
    tail needs two rates). Any member in the other camp, or no majority: INCONCLUSIVE.
    """
    v = [f.verdict for f in fits]
    n_pow = v.count(POWER)
    n_exp = v.count(EXPONENTIAL) + v.count(MIXTURE)
    tally = ", ".join(f"{k}: {v.count(k)}" for k in sorted(set(v)))
    if n_pow and n_exp:
        return INCONCLUSIVE, f"members disagree ({tally})"
    if 2 * n_pow > len(v):
        return POWER, f"members {tally}"
    if 2 * n_exp > len(v):
        return (MIXTURE if MIXTURE in v else EXPONENTIAL), f"members {tally}"
    return INCONCLUSIVE, f"no majority ({tally})"
