"""Classifier-clock levels too close to a floor to be clocks (docs/science.md 5, 7; issue #22.5).

Near a floor (the run's own final train CE: weight decay holds CE above it; or the training
dtype's resolution) T_cls(eps) bends upward and diverges, whatever the law above it: a log law
that approaches a floor reads as a power law. Levels within FLOOR_FACTOR of either floor are
dropped before a law is fitted, and the caller is told which.
"""

from __future__ import annotations

import numpy as np

# drop eps levels below FLOOR_FACTOR x the floor: the floor's share of the loss must stay under
# ~10% so that log(1/(eps - floor)) stays within 0.1 nat of log(1/eps) (slope bend < ~11%)
FLOOR_FACTOR = 10.0


def dtype_floor(dtype: str) -> float:
    """Smallest train CE the training dtype resolves: its machine epsilon (clocks.ce_floor)."""
    return float(np.finfo(np.dtype(dtype)).eps)


def drop_floor_levels(
    levels: np.ndarray, final_ce: np.ndarray | float, dtype: str = "float32"
) -> tuple[np.ndarray, list[dict]]:
    """Split eps levels into kept ones and dropped ones (with the reason).

    levels (K,); final_ce: the run's final train CE per seed (the largest counts: a level must
    be clear of every seed's floor). A level is dropped when it is below FLOOR_FACTOR x
    max(final CE, dtype floor). Returns (kept levels, [{"level", "floor", "source"}, ...]).
    """
    levels = np.asarray(levels, dtype=float)
    if levels.ndim != 1 or not np.all(levels > 0):
        raise ValueError("levels must be a 1-d array of positive eps values")
    ce = np.asarray(final_ce, dtype=float).ravel()
    ce = ce[np.isfinite(ce)]
    run_floor = float(ce.max()) if ce.size else 0.0
    dt_floor = dtype_floor(dtype)
    floor = max(run_floor, dt_floor)
    source = "final train CE" if run_floor >= dt_floor else f"{dtype} resolution"
    keep = levels >= FLOOR_FACTOR * floor
    dropped = [{"level": float(lv), "floor": floor, "source": source} for lv in levels[~keep]]
    return levels[keep], dropped
