"""Log-like, polynomial or INCONCLUSIVE: the law of clock times T(x) by effect size (issue #22.1).

x = log(1/level). The log law (Thm 3.5, Prop 3.6 for T_cls; an exponential tail for T_rep) has
a constant local slope dT/dx; the free-offset power law T = T0 + C exp(k x) (Thm 4.8/4.9) has a
slope that grows by exp(k span) over the fitted span of x. The effect size is that drift,
D = log(slope at the top level / slope at the bottom level) = k * span (span in e-folds of the
level). Nested laws cannot be told apart by AIC on near-deterministic seeds (any curvature is
"significant"); an equivalence margin on D can (two one-sided tests on its interval):

- LOG-LIKE: the interval lies inside (-DRIFT_MARGIN, DRIFT_MARGIN);
- POLYNOMIAL: the interval lies wholly above DRIFT_MARGIN;
- INCONCLUSIVE otherwise, with the reason and what would resolve it.

The interval resamples what is independent: one D per seed (each seed's levels come from one
trajectory and are not independent points), a t-interval across seeds; and, where the caller
passes block-bootstrap replicates of each trajectory's tail (`resample.tail_replicates`), the
within-trajectory SE of the seed mean, an interval of its own. Law-form uncertainty:
D is measured twice, by the power law's exponent and model-free by the ratio of the straight-line
slopes over the lower and upper halves of the levels; the reported interval is the union of all
of them (each valid under its own assumption: seeds exchangeable; the noise within a run).
AIC (log law vs power law, seeds pooled) is reported and decides nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from twoclocks.analyze.laws import resample

LOG_LIKE, POLYNOMIAL, INCONCLUSIVE = "log-like", "polynomial", "inconclusive"
# Pre-registered (issue #22, before any study result): a clock is log-like when its local slope
# dT/dlog(1/x) changes by less than 50% over the fitted levels. Reason: the log law's signature
# is one rate (slope 1/nu); the floors and transients we know bend the slope by ~10-35% over the
# fitted decades, and the paper's polynomial clock with k = 2 theta - 1 >= 0.1 over >= 2 decades
# (4.6 e-folds) bends it by >= 58%.
DRIFT_MARGIN = math.log(1.5)
CI_LEVEL = 0.95
MIN_LEVELS, MIN_SEEDS = 4, 2
# drift profile grid (effect size D in e-folds of slope change over the span); an optimum on an
# edge is no fitted drift
_D_GRID = np.linspace(-12.0, 40.0, 2601)
BOOT_REACH = 4.0  # replicates' drift searched within this many e-folds of the seeds' estimates


@dataclass
class LawDecision:
    """One clock's law decision with its effect size (drift D = k * span) and the reason."""

    decision: str
    drift: float = math.nan
    drift_low: float = math.nan
    drift_high: float = math.nan
    k: float = math.nan
    k_low: float = math.nan
    k_high: float = math.nan
    span_efolds: float = math.nan
    margin: float = DRIFT_MARGIN
    n_seeds: int = 0
    levels: list = field(default_factory=list)
    aic_log: float = math.nan
    aic_power: float = math.nan
    reason: str = ""
    resolve: str = ""
    drift_seeds: list = field(default_factory=list)
    boot_reps: int = 0
    drift_se_within: float = math.nan

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _wls(phi: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """t = a + b phi by weighted least squares over the last axis (broadcast): a, b, SSR."""
    with np.errstate(all="ignore"):
        sw = w.sum(-1)
        mx = (w * phi).sum(-1) / sw
        my = (w * t).sum(-1) / sw
        dx = phi - mx[..., None]
        sxx = (w * dx * dx).sum(-1)
        b = (w * dx * (t - my[..., None])).sum(-1) / sxx
        a = my - b * mx
        ssr = (w * (t - a[..., None] - b[..., None] * phi) ** 2).sum(-1)
    return a, b, ssr


def _phi(d: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(exp(D xs) - 1)/D with xs in [0, 1]: the power law's regressor, -> xs as D -> 0."""
    d = np.asarray(d, float)[..., None]
    safe = np.where(np.abs(d) < 1e-9, 1.0, d)
    return np.where(np.abs(d) < 1e-9, xs + 0 * d, np.expm1(d * xs) / safe)


def drift_param(
    xs: np.ndarray, t: np.ndarray, w: np.ndarray, grid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of t (S, n): the power law's drift D (profiled, parabola-refined) and its SSR.

    xs (n,) in [0, 1] (levels scaled to the span), weights w (S, n): relative errors 1/T^2 on the
    levels a seed crossed, 0 elsewhere. NaN where the optimum sits on the grid's edge. grid: a
    contiguous part of the profile grid (default the whole of it).
    """
    grid = _D_GRID if grid is None else grid
    phi = _phi(grid, xs)  # (G, n)
    _, _, ssr = _wls(phi[None], t[:, None, :], w[:, None, :])  # (S, G)
    ssr = np.where(np.isfinite(ssr), ssr, np.inf)
    i = np.argmin(ssr, axis=1)
    g = len(grid)
    rows = np.arange(len(i))
    y0, y1, y2 = (ssr[rows, np.clip(i + o, 0, g - 1)] for o in (-1, 0, 1))
    h = grid[1] - grid[0]
    with np.errstate(all="ignore"):
        den = y0 - 2 * y1 + y2
        shift = np.where(den > 0, 0.5 * h * (y0 - y2) / den, 0.0)
    d = grid[i] + np.clip(np.nan_to_num(shift), -h, h)
    edge = (i == 0) | (i == g - 1) | ~np.isfinite(y1)
    return np.where(edge, np.nan, d), y1


def drift_free(xs: np.ndarray, t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Model-free drift per row: log of the ratio of straight-line slopes over the upper and the
    lower half of the levels, scaled from the distance between the halves' centres to the span.

    Weighted by w (S, n; 0 = not crossed). NaN where a half has fewer than 2 levels or a slope is
    not positive.
    """
    out = np.full(t.shape[0], np.nan)
    for s in range(t.shape[0]):
        ok = w[s] > 0
        x, y, sw = xs[ok], t[s, ok], np.sqrt(w[s, ok])
        n = len(x)
        if n < MIN_LEVELS:
            continue
        half = (n + 1) // 2
        lo, hi = slice(0, half), slice(n - half, n)
        b_lo = np.polyfit(x[lo], y[lo], 1, w=sw[lo])[0]
        b_hi = np.polyfit(x[hi], y[hi], 1, w=sw[hi])[0]
        gap = x[hi].mean() - x[lo].mean()
        if b_lo > 0 and b_hi > 0 and gap > 0:
            out[s] = math.log(b_hi / b_lo) * (x.max() - x.min()) / gap
    return out


def t_interval(v: np.ndarray, level: float) -> tuple[float, float, float]:
    """Mean of independent replicates (seeds) and its t-interval; infinite with < MIN_SEEDS."""
    v = v[np.isfinite(v)]
    if len(v) < MIN_SEEDS:
        return (float(v.mean()) if len(v) else math.nan), -math.inf, math.inf
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))
    q = float(stats.t.ppf(0.5 + level / 2, len(v) - 1))
    return m, m - q * se, m + q * se


def _aics(xs: np.ndarray, t: np.ndarray, w: np.ndarray, d: float) -> tuple[float, float]:
    """AIC of the log law and of the power law at drift d, seeds pooled (reported only)."""
    n = float((w > 0).sum())
    ssr_l = _wls(xs[None], t, w)[2].sum()  # per-seed intercepts and slopes
    ssr_p = _wls(_phi(np.array([d if np.isfinite(d) else 0.0]), xs), t, w)[2].sum()
    m = int((w > 0).any(1).sum())
    return (
        n * math.log(max(ssr_l / n, 1e-18)) + 2 * (2 * m + 1),
        n * math.log(max(ssr_p / n, 1e-18)) + 2 * (2 * m + 2),
    )


def classify(low: float, high: float, margin: float = DRIFT_MARGIN) -> str:
    """Two one-sided tests on the drift interval against the equivalence margin."""
    if -margin < low and high < margin:
        return LOG_LIKE
    if low > margin:
        return POLYNOMIAL
    return INCONCLUSIVE


def _explain(dec: LawDecision, n_seeds: int) -> tuple[str, str]:
    lo, hi, m = dec.drift_low, dec.drift_high, dec.margin
    if dec.decision == LOG_LIKE:
        return f"slope drift D in [{lo:.3g}, {hi:.3g}] inside +-{m:.3g}", ""
    if dec.decision == POLYNOMIAL:
        return f"slope drift D in [{lo:.3g}, {hi:.3g}] above the margin {m:.3g}", ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no finite drift interval (a seed's law was not identified)", "more seeds"
    if hi <= -m:
        return (
            f"slope drift D in [{lo:.3g}, {hi:.3g}] below -{m:.3g}: the slope falls "
            "(sub-logarithmic: saturating clock times), neither law",
            "levels further from the start of the clock",
        )
    half = (hi - lo) / 2
    dist = max(abs(dec.drift - m), 1e-3)
    need = int(math.ceil(n_seeds * (half / dist) ** 2))
    return (
        f"slope drift D = {dec.drift:.3g} in [{lo:.3g}, {hi:.3g}] straddles the margin {m:.3g}",
        f"about {need} seeds (now {n_seeds}) or more decades of levels",
    )


def crossing_weights(x: np.ndarray, t: np.ndarray, rel_noise: np.ndarray | None) -> np.ndarray:
    """Inverse variances of crossing times (S, n): sigma_T = (sigma_g / g) * |dT/dx|, the
    relative noise of the quantity at the level times the local slope (a quantity falling by a
    relative d g/g at the rate -d log g/dt = 1/(dT/dx) crosses d g/g * dT/dx later).
    Without rel_noise: relative errors 1/T^2 (analyze/fits.py's law fits)."""
    if rel_noise is None:
        return 1.0 / t**2
    slope = np.abs(np.gradient(t, x, axis=1))
    floor = 0.1 * np.median(slope, axis=1, keepdims=True)
    sig = np.asarray(rel_noise, float) * np.maximum(slope, floor)
    return 1.0 / np.maximum(sig, 1e-9 * t) ** 2


def _within(xs, t, w, times_boot, d_par, m_f, ci_level):
    """Within-trajectory intervals of both drift estimates from bootstrap times (B, S, n); the
    replicates' drift is profiled over the grid within BOOT_REACH of the seeds' estimates (an
    optimum on that edge is no estimate, which widens the interval to infinity if common)."""
    tb = np.asarray(times_boot, float)
    n_b, n_s, n = tb.shape
    flat = tb.reshape(n_b * n_s, n)
    ok = (np.isfinite(flat) & (flat > 0)).all(axis=1)
    safe = np.where(ok[:, None], flat, np.tile(t, (n_b, 1)))
    wb = np.tile(w, (n_b, 1))
    m_p = float(np.mean(d_par))
    near = (_D_GRID >= np.nanmin(d_par) - BOOT_REACH) & (_D_GRID <= np.nanmax(d_par) + BOOT_REACH)
    grid = _D_GRID[near] if near.sum() >= 3 else _D_GRID
    db = np.where(ok, drift_param(xs, safe, wb, grid)[0], np.nan).reshape(n_b, n_s)
    fb = np.where(ok, drift_free(xs, safe, wb), np.nan).reshape(n_b, n_s)
    z = float(stats.norm.ppf(0.5 + ci_level / 2))
    lo_p, hi_p, se = resample.within_interval(m_p, db, z)
    lo_f, hi_f, _ = resample.within_interval(m_f, fb, z)
    return min(lo_p, lo_f), max(hi_p, hi_f), se


def decide_law(
    levels: np.ndarray,
    times: np.ndarray,
    ci_level: float = CI_LEVEL,
    rel_noise=None,
    times_boot: np.ndarray | None = None,
) -> LawDecision:
    """Decide the law of one clock from times (S seeds, K levels); NaN = censored.

    Only levels every seed crossed are fitted (the fitted decades are common to all seeds).
    rel_noise (S, K): relative noise SD of the crossed quantity at each level, for inverse-
    variance weights (`crossing_weights`); None: relative errors. times_boot (B, S, K): the
    same clock's times on B block-bootstrap replicates of each seed's trajectory; their
    within-trajectory interval joins the union (None: seeds only).
    """
    levels = np.asarray(levels, float)
    times = np.atleast_2d(np.asarray(times, float))
    if times.shape[1] != len(levels):
        raise ValueError(f"times {times.shape} must be (seeds, len(levels) = {len(levels)})")
    both = np.isfinite(times) & (times > 0)
    use = both.all(axis=0) & (levels > 0)
    x = np.log(1.0 / levels[use])
    t = times[:, use]
    rn = None if rel_noise is None else np.broadcast_to(rel_noise, times.shape)[:, use]
    n_seeds = times.shape[0]
    dec = LawDecision(INCONCLUSIVE, n_seeds=n_seeds, levels=[float(v) for v in levels[use]])
    if len(x) < MIN_LEVELS or n_seeds < MIN_SEEDS:
        dec.reason = (
            f"{len(x)} levels crossed by every seed (needs {MIN_LEVELS}), {n_seeds} seeds "
            f"(needs {MIN_SEEDS})"
        )
        dec.resolve = "a longer run or more seeds"
        return dec
    order = np.argsort(x)
    x, t = x[order], t[:, order]
    span = float(x[-1] - x[0])
    xs = (x - x[0]) / span
    w = crossing_weights(x, t, None if rn is None else rn[:, order])
    d_par, _ = drift_param(xs, t, w)
    d_free = drift_free(xs, t, w)
    m_p, lo_p, hi_p = t_interval(d_par, ci_level)
    m_f, lo_f, hi_f = t_interval(d_free, ci_level)
    if not np.isfinite(d_par).all():
        lo_p, hi_p = -math.inf, math.inf
    if not np.isfinite(d_free).all():
        lo_f, hi_f = -math.inf, math.inf
    lo, hi = min(lo_p, lo_f), max(hi_p, hi_f)
    if times_boot is not None and np.asarray(times_boot).shape[0] > 1:
        tb = np.asarray(times_boot, float)[:, :, use][:, :, order]
        lo_w, hi_w, dec.drift_se_within = _within(xs, t, w, tb, d_par, m_f, ci_level)
        lo, hi, dec.boot_reps = min(lo, lo_w), max(hi, hi_w), int(tb.shape[0])
    dec.drift, dec.drift_low, dec.drift_high = m_p, lo, hi
    dec.span_efolds = span
    dec.k, dec.k_low, dec.k_high = m_p / span, dec.drift_low / span, dec.drift_high / span
    dec.drift_seeds = [float(v) for v in d_par]
    dec.aic_log, dec.aic_power = _aics(xs, t, w, m_p)
    dec.decision = classify(dec.drift_low, dec.drift_high, dec.margin)
    dec.reason, dec.resolve = _explain(dec, n_seeds)
    return dec
