"""Kurdyka-Lojasiewicz exponent of one member's energy gap (docs/science.md 1, 7).

Called by the clocks stage for every clock declared with the `kl` fit (`rep_energy`), with
||grad E|| from `quantities.regularised_grad_norm`; the fits stage summarises it across seeds
(`tails.fit_tail_summary`).
"""

from __future__ import annotations

import math

import numpy as np

from twoclocks.analyze.clock_specs import KL_FIELDS
from twoclocks.analyze.fit_common import wls as _wls
from twoclocks.analyze.tails import TAIL_MAX_POINTS, TAIL_MIN_POINTS, thin_log

__all__ = ["KL_FIELDS", "fit_kl"]


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
    idx = thin_log(t - t_ref, TAIL_MAX_POINTS)
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
