"""Kurdyka-Lojasiewicz exponent only where it means something (issue #22.6; docs/science.md 7, 9).

theta is the slope of log ||grad F|| on log(F - F_inf) along the tail, with the energy
F = CE + wd/2 sum ||W||^2 and ITS OWN gradient (for deep linear nets too: the parameter-space
gradient pairs with the parameter-space energy, not with the Schatten energy of eq. 2.7). It is
refused in two cases:

- AdamW (decoupled weight decay, per-coordinate steps): its limit satisfies m/sqrt(v) = -wd
  theta, not grad F = 0, so F's KL inequality says nothing about its tail. Reported instead: the
  stationarity ratio ||grad F|| / (wd ||theta||), 0 at a critical point of F and about 1 when the
  loss gradient is negligible;
- the identity case: once the loss terms are negligible (CE and ||grad CE|| tiny against the
  penalty and its gradient), F ~ wd/2 ||theta||^2 and ||grad F|| ~ wd ||theta|| = sqrt(2 wd F),
  so the slope is 1/2 by construction, whatever the dynamics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OK, ADAMW, IDENTITY, INSUFFICIENT = "ok", "adamw: no theta", "identity", "insufficient"
# the loss terms count as negligible below this share of the energy and of its gradient (the
# identity's slope 1/2 is then exact to about this relative error)
NEGLIGIBLE = 1e-3
MIN_POINTS = 20
DECOUPLED = {"adamw"}


@dataclass
class KLResult:
    """theta (with SE) where it means something; the stationarity ratio; the reason if not."""

    status: str
    theta: float = math.nan
    theta_se: float = math.nan
    stationarity_ratio: float = math.nan
    loss_share: float = math.nan
    grad_loss_share: float = math.nan
    n: int = 0
    note: str = ""


def kl_exponent(
    t: np.ndarray,
    ce: np.ndarray,
    sqnorm: np.ndarray,
    grad_f: np.ndarray,
    grad_ce: np.ndarray,
    weight_decay: float,
    optimizer: str,
    t_ref: float,
    f_inf: float = 0.0,
) -> KLResult:
    """One member's KL exponent from its logged series after t_ref.

    ce: train CE; sqnorm: sum_l ||W_l||_F^2; grad_f: ||grad F|| (F = CE + wd/2 sqnorm);
    grad_ce: ||grad CE||; f_inf: F's asymptote (the tail fit's, or 0).
    """
    t, ce, sq, gf, gc = (np.asarray(a, float) for a in (t, ce, sqnorm, grad_f, grad_ce))
    wd = float(weight_decay)
    sel = (t > t_ref) & np.isfinite(ce) & np.isfinite(sq) & np.isfinite(gf) & np.isfinite(gc)
    t, ce, sq, gf, gc = t[sel], ce[sel], sq[sel], gf[sel], gc[sel]
    f = ce + 0.5 * wd * sq
    out = KLResult(INSUFFICIENT, n=len(t))
    if len(t) < MIN_POINTS:
        out.note = f"{len(t)} logs after T_cls (needs {MIN_POINTS})"
        return out
    late = slice(len(t) // 2, None)
    if wd > 0:
        out.stationarity_ratio = float(np.median(gf[late] / (wd * np.sqrt(sq[late]))))
    out.loss_share = float(np.median(ce[late] / f[late]))
    out.grad_loss_share = float(np.median(gc[late] / np.maximum(gf[late], 1e-300)))
    if optimizer.lower() in DECOUPLED:
        out.status = ADAMW
        out.note = (
            "AdamW's limit is not a critical point of F (m/sqrt(v) = -wd theta): no KL exponent;"
            f" stationarity ratio ||grad F||/(wd ||theta||) = {out.stationarity_ratio:.3g}"
        )
        return out
    if wd > 0 and out.loss_share < NEGLIGIBLE and out.grad_loss_share < NEGLIGIBLE:
        out.status, out.theta = IDENTITY, 0.5
        out.note = (
            f"loss terms negligible (CE/F {out.loss_share:.2g}, ||grad CE||/||grad F|| "
            f"{out.grad_loss_share:.2g}): ||grad F|| = sqrt(2 wd F), theta = 1/2 by identity"
        )
        return out
    gap = f - f_inf
    ok = (gap > 0) & (gf > 0)
    if ok.sum() < MIN_POINTS:
        out.note = f"{int(ok.sum())} logs with F > F_inf and ||grad F|| > 0"
        return out
    x, y = np.log(gap[ok]), np.log(gf[ok])
    (b, a), cov = np.polyfit(x, y, 1, cov=True)
    out.status, out.theta, out.theta_se, out.n = OK, float(b), float(np.sqrt(cov[0, 0])), len(x)
    return out
