"""Effect-size law decisions and floors (issue #22.1, 22.4, 22.5): analyze/laws/decision.py,
floors.py, classifier.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twoclocks.analyze.laws.classifier import cls_law, measure_noise
from twoclocks.analyze.laws.decision import (
    DRIFT_MARGIN,
    INCONCLUSIVE,
    LOG_LIKE,
    POLYNOMIAL,
    classify,
    decide_law,
)
from twoclocks.analyze.laws.floors import FLOOR_FACTOR, drop_floor_levels

ETA = np.array([0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005])
X = np.log(1 / ETA)
SPAN = X.max() - X.min()


def _seeds(t_law: np.ndarray, noise: float, seed: int = 0, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return t_law[None] * np.exp(noise * rng.standard_normal((n, len(t_law))))


def test_margin_is_half_drift_of_the_slope():
    assert DRIFT_MARGIN == pytest.approx(math.log(1.5))


def test_log_law_is_log_like_and_power_law_polynomial():
    log = decide_law(ETA, _seeds(200 + 400 * X, 0.005))
    assert log.decision == LOG_LIKE
    assert -DRIFT_MARGIN < log.drift_low <= log.drift <= log.drift_high < DRIFT_MARGIN
    pw = decide_law(ETA, _seeds(100 + 300 * ETA**-0.5, 0.005))
    assert pw.decision == POLYNOMIAL
    assert pw.k_low < 0.5 < pw.k_high  # the exponent is covered
    assert pw.k == pytest.approx(0.5, rel=0.05)


def test_slight_curvature_with_a_decisive_aic_is_still_log_like():
    # slope drifts 4% over the span: AIC prefers the power law on near-deterministic seeds,
    # the effect size does not care
    k = math.log(1.04) / SPAN
    t = 300 + 1000 * np.expm1(k * (X - X.min())) / k
    dec = decide_law(ETA, _seeds(t, 1e-5))
    assert dec.aic_power < dec.aic_log - 10
    assert dec.decision == LOG_LIKE


def test_drift_on_the_margin_is_mostly_inconclusive_with_what_would_resolve_it():
    # a true drift exactly on the margin: a 95% two-sided interval misses it in ~5% of draws
    k = DRIFT_MARGIN / SPAN
    t = 300 + 1000 * np.expm1(k * (X - X.min())) / k
    decs = [decide_law(ETA, _seeds(t, 0.01, seed=s)) for s in range(40)]
    assert sum(d.decision == INCONCLUSIVE for d in decs) >= 0.85 * len(decs)
    covered = [d.drift_low <= DRIFT_MARGIN <= d.drift_high for d in decs]
    assert np.mean(covered) >= 0.9
    d = next(d for d in decs if d.decision == INCONCLUSIVE)
    assert "straddles" in d.reason and "seeds" in d.resolve


def test_too_few_levels_or_seeds_is_inconclusive():
    t = _seeds(200 + 400 * X, 0.005)
    t[:, 3:] = np.nan  # every seed censored below eta = 0.2
    assert decide_law(ETA, t).decision == INCONCLUSIVE
    assert decide_law(ETA, t[:1, :]).decision == INCONCLUSIVE


def test_classify_is_two_one_sided():
    m = DRIFT_MARGIN
    assert classify(-0.1, 0.1) == LOG_LIKE
    assert classify(m + 0.01, 5) == POLYNOMIAL
    assert classify(0.1, m + 0.1) == INCONCLUSIVE
    assert classify(-5, -m - 0.1) == INCONCLUSIVE


def test_floor_levels_are_dropped_and_named():
    eps = np.array([1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
    kept, dropped = drop_floor_levels(eps, np.array([2e-6, 5e-6, 1e-6]), "float64")
    assert kept.min() >= FLOOR_FACTOR * 5e-6
    assert [d["level"] for d in dropped] == [1e-5, 1e-6]
    assert dropped[0]["source"] == "final train CE"
    kept, dropped = drop_floor_levels(eps, np.array([1e-12]), "float32")
    assert [d["level"] for d in dropped] == [1e-6]  # within 10x of float32's 1.19e-7
    assert "float32" in dropped[0]["source"]


def test_cls_clock_near_a_floor_is_log_like_once_the_floor_is_dropped():
    steps = np.unique(np.concatenate([np.arange(101), np.arange(0, 15001, 50)])).astype(float)
    rng = np.random.default_rng(1)
    b = np.array([500.0, 550.0, 600.0])[:, None]
    ce = (3e-5 + 4 * np.exp(-steps[None] / b)) * np.exp(0.003 * rng.standard_normal((3, 1)))
    eps = np.array([1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5])
    dec = cls_law(steps, ce, eps, 5, "float64")
    assert dec.decision == LOG_LIKE
    assert "dropped eps" in dec.reason and min(dec.levels) >= 3e-4
    assert measure_noise(ce * np.exp(0.01 * rng.standard_normal(ce.shape))) == pytest.approx(
        0.01, rel=0.3
    )


def test_bad_shapes_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="seeds, len\\(levels\\)"):
        decide_law(ETA, np.ones((3, 4)))


def test_a_log_law_bending_35pc_over_four_decades_is_log_like_on_near_identical_seeds():
    # the paper study's cls_log_law case (issue #22): k ~ 0.03 over 4 decades, near a floor
    eps = np.array([1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5])
    x = np.log(1 / eps)
    k = math.log(1.35) / (x.max() - x.min())
    t = 200 + 100 * np.expm1(k * (x - x.min())) / k
    dec = decide_law(eps, _seeds(t, 1e-4, seed=2))
    assert dec.k == pytest.approx(k, rel=0.02)
    assert dec.aic_power < dec.aic_log  # AIC would call it a power law
    assert dec.decision == LOG_LIKE
