"""The classifier clock's law: crossings by the project's rule, floor levels dropped, then the
effect-size decision (issue #22.1, #22.5)."""

from __future__ import annotations

import numpy as np

from twoclocks.analyze.clocks import stable_crossing
from twoclocks.analyze.laws.decision import LawDecision, decide_law
from twoclocks.analyze.laws.floors import drop_floor_levels


def cls_law(
    steps: np.ndarray,
    train_loss: np.ndarray,
    eps: np.ndarray,
    window_logs: int = 5,
    dtype: str = "float32",
) -> LawDecision:
    """T_cls(eps) per seed (stable crossing, App. F.4) and its law; train_loss (S, N) over steps.

    Levels within FLOOR_FACTOR of the run's final train CE (the largest over seeds) or of the
    dtype's resolution are dropped first; the decision's reason names them.
    """
    steps = np.asarray(steps, float)
    ce = np.atleast_2d(np.asarray(train_loss, float))
    if ce.shape[1] != len(steps):
        raise ValueError(f"train_loss has {ce.shape[1]} logs, steps {len(steps)}: pass (S, N)")
    last = [row[np.isfinite(row)] for row in ce]
    final = np.array([v[-1] if len(v) else np.nan for v in last])
    kept, dropped = drop_floor_levels(np.asarray(eps, float), final, dtype)
    t, _ = stable_crossing(ce, steps, np.broadcast_to(steps, ce.shape), kept, window_logs)
    dec = decide_law(kept, t)
    if dropped:
        src = dropped[0]["source"]
        lv = ", ".join(f"{d['level']:.3g}" for d in dropped)
        dec.reason += f"; dropped eps {lv} (within 10x of the {src}, {dropped[0]['floor']:.3g})"
    return dec
