"""KL exponent only where it means something (issue #22.6): analyze/laws/kl.py."""

from __future__ import annotations

import numpy as np
import pytest

from twoclocks.analyze.laws import kl

T = np.arange(0, 20001, 50, dtype=float)
WD = 0.01


def test_adamw_has_no_theta_but_a_stationarity_ratio():
    sq = 10 + 5 * np.exp(-T / 3000)
    grad_f = 0.3 * WD * np.sqrt(sq)  # AdamW's fixed point is not a critical point of F
    out = kl.kl_exponent(T, 1e-3 * np.exp(-T / 2000), sq, grad_f, 1e-3 + 0 * T, WD, "adamw", 100)
    assert out.status == kl.ADAMW and np.isnan(out.theta)
    assert out.stationarity_ratio == pytest.approx(0.3, rel=1e-6)


def test_identity_case_is_detected_and_not_reported_as_a_kl_tail():
    sq = 10 * np.exp(-T / 5000)  # weight decay alone shrinks the weights
    ce = 1e-9 * np.ones_like(T)
    grad_f = WD * np.sqrt(sq)  # = sqrt(2 wd F) when CE is negligible
    out = kl.kl_exponent(T, ce, sq, grad_f, 1e-9 * np.ones_like(T), WD, "sgd", 100)
    assert out.status == kl.IDENTITY and out.theta == 0.5
    assert "identity" in out.note


def test_gd_power_tail_recovers_theta():
    theta = 0.75
    f = (1 + T / 100) ** -2.0  # energy gap above F_inf = 0
    grad_f = 0.7 * f**theta
    ce = 0.5 * f  # the loss carries half the energy: no identity
    sq = f / WD
    out = kl.kl_exponent(T, ce, sq, grad_f, grad_f / 2, WD, "sgd", 100)
    assert out.status == kl.OK
    assert out.theta == pytest.approx(theta, abs=1e-6)


def test_too_short_a_tail_is_insufficient():
    t = T[:10]
    out = kl.kl_exponent(t, t + 1, t + 1, t + 1, t + 1, WD, "sgd", 0)
    assert out.status == kl.INSUFFICIENT
