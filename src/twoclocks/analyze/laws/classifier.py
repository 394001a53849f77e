"""The classifier clock's law: crossings by the project's rule, floor levels dropped, then the
effect-size decision (issue #22.1, #22.5)."""

from __future__ import annotations

import math

import numpy as np

from twoclocks.analyze.clocks import stable_crossing
from twoclocks.analyze.laws import resample
from twoclocks.analyze.laws.decision import LawDecision, decide_law
from twoclocks.analyze.laws.floors import drop_floor_levels


def measure_noise(values: np.ndarray) -> float:
    """Relative noise SD per log of positive trajectories (S, N): the median absolute second
    difference of log values, scaled to an SD (MAD / 0.6745 / sqrt(6) for iid noise)."""
    v = np.log(np.asarray(values, float))
    d2 = np.diff(v, n=2, axis=-1)
    d2 = d2[np.isfinite(d2)]
    return float(np.median(np.abs(d2)) / 0.6745 / math.sqrt(6)) if d2.size else math.nan


def cls_law(
    steps: np.ndarray,
    train_loss: np.ndarray,
    eps: np.ndarray,
    window_logs: int = 5,
    dtype: str = "float32",
    noise: float | None = None,
    boot: int = resample.BOOT_REPS,
) -> LawDecision:
    """T_cls(eps) per seed (stable crossing, App. F.4) and its law; train_loss (S, N) over steps.

    Levels within FLOOR_FACTOR of the run's final train CE (the largest over seeds) or of the
    dtype's resolution are dropped first; the decision's reason names them. noise: relative
    noise SD of the CE per log (default: `measure_noise`), for inverse-variance weights.
    boot: moving-block bootstrap replicates of each seed's CE (`resample`; 0 = seeds only).
    """
    steps = np.asarray(steps, float)
    ce = np.atleast_2d(np.asarray(train_loss, float))
    if ce.shape[1] != len(steps):
        raise ValueError(f"train_loss has {ce.shape[1]} logs, steps {len(steps)}: pass (S, N)")
    last = [row[np.isfinite(row)] for row in ce]
    final = np.array([v[-1] if len(v) else np.nan for v in last])
    kept, dropped = drop_floor_levels(np.asarray(eps, float), final, dtype)
    t, _ = stable_crossing(ce, steps, np.broadcast_to(steps, ce.shape), kept, window_logs)
    noise = measure_noise(ce) if noise is None else float(noise)
    tb = None
    if boot > 1 and len(kept):
        reps = resample.tail_replicates(ce, None, np.random.default_rng(0), boot)
        flat = reps.reshape(-1, ce.shape[1])
        tb = stable_crossing(flat, steps, np.broadcast_to(steps, flat.shape), kept, window_logs)[0]
        tb = tb.reshape(boot, ce.shape[0], len(kept))
    dec = decide_law(kept, t, rel_noise=max(noise, 1e-12), times_boot=tb)
    if dropped:
        src = dropped[0]["source"]
        lv = ", ".join(f"{d['level']:.3g}" for d in dropped)
        dec.reason += f"; dropped eps {lv} (within 10x of the {src}, {dropped[0]['floor']:.3g})"
    return dec
