"""Intervals that resample what is independent (issue #22.4): analyze/laws/resample.py, the
moving-block bootstrap of each trajectory's tail, and its interval in the law decision."""

from __future__ import annotations

import math

import numpy as np

from twoclocks.analyze.laws import resample
from twoclocks.analyze.laws.classifier import cls_law
from twoclocks.analyze.laws.simulate import log_grid

STEPS = log_grid(5000, 100, 20).astype(float)  # config/config.yaml's relu horizon and cadence
EPS = np.array([1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5])


def _ce(rng, n_seeds=2, noise=0.005, ar=0.0):
    """CE = 4 exp(-t/b) (a log law, reaches 1e-7 at 60% of the horizon), log-normal noise per
    log, AR(1) with coefficient `ar` (0: independent logs)."""
    b = 0.6 * 5000 / math.log(4 / 1e-7)
    e = rng.standard_normal((n_seeds, len(STEPS)))
    for i in range(1, len(STEPS)):
        e[:, i] = ar * e[:, i - 1] + math.sqrt(1 - ar**2) * e[:, i]
    return 4 * np.exp(-STEPS / b)[None, :] * np.exp(noise * e)


def test_replicates_keep_the_head_and_the_noise_level():
    rng = np.random.default_rng(0)
    v = _ce(rng, 3, 0.01)
    start = np.array([0, 100, 200])
    reps = resample.tail_replicates(v, start, np.random.default_rng(1), 16)
    assert reps.shape == (16, 3, len(STEPS))
    np.testing.assert_array_equal(reps[:, 1, :100], np.broadcast_to(v[1, :100], (16, 100)))
    # the replicates' noise around the smooth part is the data's (log-normal SD 0.01)
    smooth, _ = resample.smooth_log(v)
    sd = np.std(np.log(reps[:, 0, 20:-20]) - smooth[0, 20:-20])
    assert 0.008 < sd < 0.013, sd
    assert resample.block_length(346) == 8


def test_within_run_se_matches_the_sampling_sd_of_the_drift():
    """Two seeds with one clean curve: the drift's spread over independent noise realisations is
    the within-run SE the bootstrap must estimate (no seed-to-seed difference to hide behind)."""
    rng = np.random.default_rng(3)
    drifts, ses = [], []
    for _ in range(25):
        dec = cls_law(STEPS, _ce(rng, 2, 0.02), EPS, 5)
        drifts.append(dec.drift)
        ses.append(dec.drift_se_within)
    true_sd = float(np.std(drifts, ddof=1))
    ratio = float(np.median(ses)) / true_sd
    assert 0.5 < ratio < 2.0, (ratio, true_sd)


def test_the_bootstrap_interval_joins_the_union_and_never_narrows_it():
    rng = np.random.default_rng(5)
    ce = _ce(rng, 3, 0.01, ar=0.8)  # correlated noise within a run
    with_boot = cls_law(STEPS, ce, EPS, 5)
    seeds_only = cls_law(STEPS, ce, EPS, 5, boot=0)
    assert with_boot.boot_reps == resample.BOOT_REPS and seeds_only.boot_reps == 0
    assert with_boot.drift == seeds_only.drift
    assert with_boot.drift_low <= seeds_only.drift_low
    assert with_boot.drift_high >= seeds_only.drift_high
    assert math.isfinite(with_boot.drift_se_within) and with_boot.drift_se_within > 0
