"""Resampling what is independent inside one trajectory: blocks of its tail (issue #22.4).

Seeds are independent replicates (the t-interval across seeds, `decision.t_interval`); the logs
of one trajectory are not: neighbouring logs share the run's noise (spikes, oscillations, the
optimiser's state). A moving-block bootstrap keeps that dependence: the trajectory's log values
are split into a smooth part (a Savitzky-Golay filter of log values in log-index space, model-
free, so no law form is assumed) and residuals; blocks of BLOCK consecutive residuals of the
tail, drawn with replacement, are laid end to end over the tail and added back to the smooth
part. Each replicate's clock times are recomputed by the caller with the same crossing rule and
its slope drift decided with the same estimator (`decision.decide_law`'s `times_boot`).

Written here (30 lines of index arithmetic) rather than taken from `arch.bootstrap`: that
library resamples a whole series per replicate, not a tail added back onto a smooth part, and
would be a new dependency (with statsmodels) for a moving-block index draw.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import savgol_filter

BOOT_REPS = 64  # replicates per trajectory (the interval uses their SD, not far percentiles)
SMOOTH_WINDOW, SMOOTH_ORDER = 11, 2  # Savitzky-Golay window (logs) and order of the smooth part


def block_length(n: int) -> int:
    """Block length for n tail logs: n^(1/3) (the rate of Politis-White's optimum), at least 3."""
    return max(3, int(math.ceil(n ** (1.0 / 3.0))))


def _leverage(window: int, order: int) -> float:
    """The smoother's weight on the central log (residuals shrink by sqrt(1 - h))."""
    return float(savgol_filter(np.eye(window)[window // 2], window, order)[window // 2])


def smooth_log(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(smooth part, residuals) of log values per row (S, N); non-positive or NaN values are
    filled by interpolation for the smooth and get residual 0."""
    v = np.atleast_2d(np.asarray(values, float))
    ok = np.isfinite(v) & (v > 0)
    logv = np.where(ok, np.log(np.where(ok, v, 1.0)), np.nan)
    smooth = np.full_like(logv, np.nan)
    for s, row in enumerate(logv):
        good = np.flatnonzero(ok[s])
        if good.size < SMOOTH_WINDOW:
            smooth[s] = row
            continue
        filled = np.interp(np.arange(len(row)), good, row[good])
        smooth[s] = savgol_filter(filled, SMOOTH_WINDOW, SMOOTH_ORDER, mode="interp")
    resid = np.where(ok, logv - smooth, 0.0) / math.sqrt(1.0 - _leverage(SMOOTH_WINDOW, 2))
    return smooth, resid


def tail_replicates(
    values: np.ndarray,
    start: np.ndarray | None,
    rng: np.random.Generator,
    reps: int = BOOT_REPS,
) -> np.ndarray:
    """Moving-block bootstrap replicates (reps, S, N) of positive trajectories (S, N).

    start (S,): first log index of each row's tail (None: the whole row); the logs before it
    are kept as they are. Residuals of the tail are resampled in blocks of `block_length` and
    added to the smooth part; values that were NaN or non-positive stay as they were.
    """
    v = np.atleast_2d(np.asarray(values, float))
    S, N = v.shape
    start = np.zeros(S, int) if start is None else np.asarray(start, int)
    smooth, resid = smooth_log(v)
    ok = np.isfinite(v) & (v > 0)
    out = np.broadcast_to(v, (reps, S, N)).copy()
    for s in range(S):
        i0 = int(np.clip(start[s], 0, N))
        n = N - i0
        if n < 2 * SMOOTH_ORDER + 2:
            continue
        b = min(block_length(n), n)
        n_blocks = -(-n // b)
        starts = rng.integers(0, n - b + 1, size=(reps, n_blocks))
        idx = (starts[:, :, None] + np.arange(b)[None, None, :]).reshape(reps, -1)[:, :n]
        r = resid[s, i0:][idx]  # (reps, n)
        new = np.exp(smooth[s, i0:][None, :] + r)
        out[:, s, i0:] = np.where(ok[s, i0:][None, :], new, v[s, i0:][None, :])
    return out


def within_interval(center: float, boot: np.ndarray, z: float) -> tuple[float, float, float]:
    """(low, high, SE) of a seed mean from per-seed replicate estimates boot (B, S): the SE of
    the mean is sqrt(sum_s var_s) / S (seeds independent), the interval center +- z SE; infinite
    where fewer than half of a seed's replicates give a finite estimate."""
    boot = np.atleast_2d(np.asarray(boot, float))
    fin = np.isfinite(boot)
    if not math.isfinite(center) or (fin.mean(axis=0) < 0.5).any():
        return -math.inf, math.inf, math.inf
    var = np.array([np.var(col[np.isfinite(col)], ddof=1) for col in boot.T])
    se = float(math.sqrt(var.sum()) / boot.shape[1])
    return center - z * se, center + z * se, se
