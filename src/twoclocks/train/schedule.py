"""When a run logs metric rows and weight snapshots (docs/design.md "logging").

Log rows: every step of the dense phase ``[0, log_dense_steps]``, then a sparse cadence, and
always the last step. The sparse cadence is linear (every ``log_every_steps``) or, with
``log_rows_per_decade = r > 0``, geometric: the row after step t is at
``t + max(log_every_steps, floor(t * (10^(1/r) - 1)))``, so a run logs about r rows per decade of
steps once the geometric spacing exceeds the floor ``log_every_steps`` (before that the rows are
the linear cadence's multiples of the floor). A clock T located between two rows is then known
to within ``10^(1/r) - 1`` of T (``spacing_fraction``; 2.3% at r = 100) and the row count grows
with log(steps) instead of steps. Snapshots are log-spaced (``snapshot_steps``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["cell_log_steps", "log_steps", "spacing_fraction", "snapshot_steps"]


def spacing_fraction(rows_per_decade: int) -> float:
    """Largest row spacing of the geometric cadence as a fraction of the step: 10^(1/r) - 1."""
    if rows_per_decade <= 0:
        raise ValueError(f"rows_per_decade must be > 0 (got {rows_per_decade})")
    return 10.0 ** (1.0 / rows_per_decade) - 1.0


def _sparse_steps(steps: int, every_steps: int, rows_per_decade: int) -> np.ndarray:
    """The sparse cadence over ``[0, steps]``: multiples of ``every_steps``, or the geometric
    sequence with that floor on its spacing (module docstring)."""
    every = max(1, int(every_steps))
    if rows_per_decade <= 0:
        return np.arange(0, steps + 1, every, dtype=np.int64)
    frac = spacing_fraction(rows_per_decade)
    out, t = [], 0
    while t <= steps:
        out.append(t)
        t += max(every, math.floor(t * frac))
    return np.asarray(out, dtype=np.int64)


def log_steps(
    steps: int, dense_steps: int, every_steps: int, rows_per_decade: int = 0
) -> np.ndarray:
    """Log points: every step in ``[0, dense_steps]``, then the sparse cadence (multiples of
    ``every_steps``; geometric with that floor if ``rows_per_decade > 0``), and always the last
    step."""
    dense = np.arange(0, min(dense_steps, steps) + 1)
    sparse = _sparse_steps(steps, every_steps, int(rows_per_decade))
    return np.unique(np.concatenate([dense, sparse, [steps]])).astype(np.int64)


def cell_log_steps(params: dict) -> np.ndarray:
    """A resolved cell's log points (its ``logging`` keys; no ``log_rows_per_decade``: linear)."""
    return log_steps(
        int(params["steps"]),
        int(params["log_dense_steps"]),
        int(params["log_every_steps"]),
        int(params.get("log_rows_per_decade", 0)),
    )


def snapshot_steps(steps: int, count: int) -> np.ndarray:
    """``count`` distinct log-spaced steps in ``[0, steps]``, always with 0 and ``steps`` (fewer
    if ``steps + 1 < count``)."""
    count = max(2, int(count))
    if steps + 1 <= count:
        return np.arange(steps + 1, dtype=np.int64)
    if count == 2:
        return np.array([0, steps], dtype=np.int64)
    n = count - 1
    while True:
        pts = np.unique(np.round(np.geomspace(1, steps, n)).astype(np.int64))
        if len(pts) >= count - 1:
            break
        n += 1
    pick = np.unique(np.round(np.linspace(0, len(pts) - 1, count - 1)).astype(np.int64))
    return np.concatenate([[0], pts[pick]]).astype(np.int64)
