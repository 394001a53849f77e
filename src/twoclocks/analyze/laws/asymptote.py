"""Representation-clock law when the gap's asymptote may not be identified (issue #22.3, 22.4).

Per member the tail models (`tails.fit_tail`) bound the asymptote G_inf: every model the BIC
cannot exclude (within tails.BIC_MARGIN of the best) contributes its G_inf +- 2 SE; the plausible
range is their hull, clipped to [lower, G_end). The clock T_rep(eta) (normalised at T_cls, only
later crossings, stability window) is recomputed for N_PROFILE asymptotes across that range and
the law decided at each. The reported drift interval is the union over the profile (the
asymptote's uncertainty carried into it); if the decision moves across the range the result is
INCONCLUSIVE, with how far the gap fell and about how much longer a run would need. A known zero
(spurious energy, Fourier energy outside the key frequencies) is used as is and preferred.

POLYNOMIAL also needs the tail to say POWER: a sum of exponential rates bends T_rep(eta) like a
power law over a few decades, but its clock is logarithmic in the end (docs/science.md 7, 9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from twoclocks.analyze.clocks import stable_crossing
from twoclocks.analyze.laws import resample, tails
from twoclocks.analyze.laws.decision import (
    CI_LEVEL,
    INCONCLUSIVE,
    LOG_LIKE,
    POLYNOMIAL,
    LawDecision,
    classify,
    decide_law,
    t_interval,
)

N_PROFILE = 5
# a level counts only where its distance above the asymptote is NOISE_SDS noise SDs of G there
# (the noise SD from the best tail model's residuals): below, the crossing times noise, not the
# clock (the same reason as analyze/clocks.py's RESOLVE_SE for the asymptote's error)
NOISE_SDS = 3.0
# the remaining gap a run should reach before its asymptote counts as seen (of G(T_cls) - G_inf)
SEEN_FRACTION = 0.01


@dataclass
class RepLaw:
    """A representation clock's law over the asymptote's plausible range, and its tail verdict."""

    law: LawDecision
    tail: str
    tail_reason: str
    g_inf_low: list = field(default_factory=list)
    g_inf_high: list = field(default_factory=list)
    known_zero: bool = False
    profile: list = field(default_factory=list)
    fell_fraction: float = math.nan
    more_steps: float = math.nan
    theta: float = math.nan
    theta_low: float = math.nan
    theta_high: float = math.nan


def plausible_range(fit: tails.TailFit, lower: float, g_end: float) -> tuple[float, float]:
    """Hull of G_inf +- 2 SE over the tail models within BIC_MARGIN of the best, each exponential
    model's extended by its nested step (`nested_step`): the SE covers the noise, not a model
    that is the wrong shape."""
    if not fit.models:
        return lower, g_end
    best = min(m["bic"] for m in fit.models.values())
    lo, hi = math.inf, -math.inf
    for name, m in fit.models.items():
        if m["bic"] <= best + tails.BIC_MARGIN:
            se = m["g_inf_se"] if math.isfinite(m["g_inf_se"]) else abs(g_end - lower)
            reach = abs(nested_step(fit.models, name)) + 2 * se
            lo, hi = min(lo, m["g_inf"] - reach), max(hi, m["g_inf"] + reach)
    upper = lower + (g_end - lower) * (1 - 1e-6)
    return float(np.clip(lo, lower, upper)), float(np.clip(hi, lower, upper))


NESTED = ("exp", "exp2", "exp3")


def nested_step(models: dict, name: str) -> float:
    """How far G_inf moved when the exponential model `name` added its last rate (0 for `exp`
    and the power law, and where a fit failed). The plausible range extends by it either way:
    a misshapen tail (a stretched exponential, a drifting rate) is fitted by ever more rates
    whose asymptotes walk towards the truth without reaching it, by amounts far above their SEs
    at low noise, and the rest of the walk is taken to be at most its last step (a geometric
    walk with ratio <= 1/2); or the last rate went to a start-up bump instead of the tail and the
    model before it was the nearer. A tail the model fits moves by its noise only."""
    i = NESTED.index(name) if name in NESTED else 0
    if i == 0 or NESTED[i - 1] not in models:
        return 0.0
    step = models[name]["g_inf"] - models[NESTED[i - 1]]["g_inf"]
    return float(step) if math.isfinite(step) else 0.0


def rel_noise_at_levels(gaps, t_ref, steps, g_inf, levels, noise) -> np.ndarray:
    """Relative noise SD of the normalised gap at each level (S, K): noise * G / (G - G_inf)."""
    g_ref = np.array([np.interp(tr, steps, row) for tr, row in zip(t_ref, gaps, strict=True)])
    dist = levels[None, :] * (g_ref - g_inf)[:, None]
    return np.asarray(noise)[:, None] * np.abs(g_inf[:, None] + dist) / dist


def rep_times(steps, gaps, t_ref, g_inf, levels, window_logs: int, noise=None) -> np.ndarray:
    """T_rep(eta) per member (S, K) for asymptotes g_inf (S,), as analyze/clocks.py defines it:
    g = (G - G_inf) / (G(T_cls) - G_inf), G(T_cls) interpolated linearly, only logs t >= T_cls.
    noise (S,): relative noise SD of G; levels within NOISE_SDS of it are NaN (unresolved)."""
    steps = np.asarray(steps, float)
    g_ref = np.array([np.interp(tr, steps, row) for tr, row in zip(t_ref, gaps, strict=True)])
    with np.errstate(all="ignore"):
        g = (gaps - g_inf[:, None]) / (g_ref - g_inf)[:, None]
    g = np.where(steps[None, :] >= np.asarray(t_ref)[:, None], g, np.nan)
    t, _ = stable_crossing(g, steps, np.broadcast_to(steps, g.shape), levels, window_logs)
    if noise is not None:
        dist = levels[None, :] * (g_ref - g_inf)[:, None]  # raw distance above the asymptote
        raw = g_inf[:, None] + dist
        t = np.where(dist >= NOISE_SDS * np.asarray(noise)[:, None] * np.abs(raw), t, np.nan)
    return t


def _more_steps(fit: tails.TailFit, steps, t_ref: float, t_end: float) -> float:
    """Steps beyond t_end until the best tail model's remaining gap is SEEN_FRACTION of its fall
    (inf where the model never gets there: the estimate is rough, a guide for the next run)."""
    if not fit.models:
        return math.inf
    name = min(fit.models, key=lambda k: fit.models[k]["bic"])
    m = fit.models[name]
    span = t_end - t_ref
    u = np.geomspace(1e-3, 1e4, 4000)
    model = tails._model(name, m["q"], u, m["g_inf"] if m["fixed"] else None)
    h = model - m["g_inf"]
    h0 = float(np.interp(0.0, u, h, left=h[0]))
    done = u[h <= SEEN_FRACTION * h0]
    return max(float(done[0] * span + t_ref - t_end), 0.0) if done.size else math.inf


def _noise(fit: tails.TailFit) -> float:
    """Relative noise SD of G: the residual SD of the best tail model on log G."""
    if not fit.models:
        return math.nan
    m = min(fit.models.values(), key=lambda v: v["bic"])
    return math.sqrt(2 * m["cost"] / max(fit.n, 1))


def _profile(steps, gaps, t_ref, levels, window_logs, lows, highs, noise, reps=None):
    """The law at N_PROFILE asymptotes across [lows, highs]; reps (B, S, N): block-bootstrap
    replicates of the gaps, whose clock times give each decision's within-run interval."""
    out = []
    for f in np.linspace(0.0, 1.0, N_PROFILE):
        if out and np.array_equal(lows, highs):  # a known zero: one asymptote, one decision
            out.append(out[0])
            continue
        g_inf = lows + f * (highs - lows)
        t = rep_times(steps, gaps, t_ref, g_inf, levels, window_logs, noise)
        rel = rel_noise_at_levels(gaps, t_ref, steps, g_inf, levels, noise)
        tb = None
        if reps is not None:
            b, s = reps.shape[:2]
            tr, gi, nz = (np.tile(np.asarray(a, float), b) for a in (t_ref, g_inf, noise))
            tb = rep_times(steps, reps.reshape(b * s, -1), tr, gi, levels, window_logs, nz)
            tb = tb.reshape(b, s, len(levels))
        out.append(decide_law(levels, t, rel_noise=rel, times_boot=tb))
    return out


def _combine(profile: list[LawDecision]) -> LawDecision:
    """One decision over the profile: the union of the drift intervals, classified again."""
    finite = [d for d in profile if math.isfinite(d.drift)]
    base = profile[len(profile) // 2]
    if not finite:
        return base
    lo = min(d.drift_low for d in profile)
    hi = max(d.drift_high for d in profile)
    law = LawDecision(**{**base.as_dict()})
    law.drift_low, law.drift_high = lo, hi
    law.k_low, law.k_high = lo / base.span_efolds, hi / base.span_efolds
    law.decision = classify(lo, hi, law.margin)
    return law


def rep_law(
    steps,
    gaps,
    t_ref,
    levels,
    window_logs: int = 5,
    lower: float = 0.0,
    known_zero: float | None = None,
    boot: int = resample.BOOT_REPS,
) -> RepLaw:
    """Decide one representation clock's law; gaps (S, N) raw G(t), t_ref (S,) = T_cls(eps*).

    boot: moving-block bootstrap replicates of each member's tail after t_ref (`resample`;
    0 = seeds only); asymptotes and tail fits stay those of the data."""
    steps = np.asarray(steps, float)
    gaps = np.atleast_2d(np.asarray(gaps, float))
    t_ref = np.asarray(t_ref, float)
    levels = np.asarray(levels, float)
    fits = [
        tails.fit_tail(steps, row, tr, lower, known_zero)
        for row, tr in zip(gaps, t_ref, strict=True)
    ]
    tail, tail_why = tails.decide_tails(fits)
    ends = np.array([np.median(row[-max(3, len(row) // 10) :]) for row in gaps])
    if known_zero is not None:
        lows = highs = np.full(len(gaps), float(known_zero))
    else:
        rng = [plausible_range(f, lower, e) for f, e in zip(fits, ends, strict=True)]
        lows, highs = np.array([r[0] for r in rng]), np.array([r[1] for r in rng])
    noise = np.array([_noise(f) for f in fits])
    reps = None
    if boot > 1:
        start = np.searchsorted(steps, np.nan_to_num(t_ref, nan=np.inf))
        reps = resample.tail_replicates(gaps, start, np.random.default_rng(0), boot)
    prof = _profile(steps, gaps, t_ref, levels, window_logs, lows, highs, noise, reps)
    law = _combine(prof)
    g_ref = np.array([np.interp(tr, steps, row) for tr, row in zip(t_ref, gaps, strict=True)])
    with np.errstate(all="ignore"):
        fell = float(np.nanmean((g_ref - ends) / (g_ref - lows)))
    more = float(
        np.nanmax([_more_steps(f, steps, tr, steps[-1]) for f, tr in zip(fits, t_ref, strict=True)])
    )
    out = RepLaw(law, tail, tail_why, list(lows), list(highs), known_zero is not None, prof)
    out.fell_fraction, out.more_steps = fell, more
    thetas = np.array([f.theta for f in fits if f.verdict == tails.POWER])
    if thetas.size:  # theta = (1 + 1/p)/2 of the power members; a t-interval across them
        out.theta, out.theta_low, out.theta_high = t_interval(thetas, CI_LEVEL)
    _explain(out)
    return out


def _explain(out: RepLaw) -> None:
    """Reasons: a decision that moves with the asymptote, or a polynomial without a power tail."""
    law = out.law
    moved = {d.decision for d in out.profile}
    run = (
        f"run about {out.more_steps:.3g} steps longer"
        if math.isfinite(out.more_steps)
        else ("a much longer run (the fitted tail does not get there)")
    )
    if len(moved) > 1:
        law.decision = INCONCLUSIVE
        law.reason = (
            f"the decision moves with the asymptote ({', '.join(sorted(moved))}); the gap "
            f"fell only {100 * out.fell_fraction:.1f}% of its way to the lowest plausible one"
        )
        law.resolve = run
    if law.decision == POLYNOMIAL and out.tail != tails.POWER:
        law.decision = INCONCLUSIVE
        law.reason = (
            f"T_rep's slope drifts by D in [{law.drift_low:.3g}, {law.drift_high:.3g}], but the "
            f"tail is not told from a sum of exponential rates (tail: {out.tail}; "
            f"{out.tail_reason})"
        )
        law.resolve = f"a longer tail ({run})"
    elif law.decision == LOG_LIKE:
        law.reason = (
            f"slope drift D in [{law.drift_low:.3g}, {law.drift_high:.3g}] inside the margin"
        )
