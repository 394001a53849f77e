"""Helpers the claim modules share: number formatting, fit intervals, the two T_gen clocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from twoclocks.analyze.claims.spec import INCONCLUSIVE
from twoclocks.analyze.results import fit_param


def fmt(x: float) -> str:
    """A number to 3 significant figures; `nan` for None and non-finite values."""
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


def interval(rec: Mapping[str, Any], name: str) -> str:
    """`estimate [ci_low, ci_high]` of a fits.json parameter."""
    est, lo, hi = (fit_param(rec, name, k) for k in ("estimate", "ci_low", "ci_high"))
    return f"{fmt(est)} [{fmt(lo)}, {fmt(hi)}]"


def not_ok(recs: Mapping[str, Mapping], clock: str) -> str:
    """Why no cell has an `ok` law fit of `clock` (the fits' own reasons)."""
    if not recs:
        return f"no {clock} law fit in fits.json"
    why = "; ".join(f"{cid}: {r.get('reason') or r.get('status')}" for cid, r in recs.items())
    return f"no cell with an ok {clock} law fit ({why})"


def gen_levels(s: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The generalisation clocks every T_gen claim checks: test accuracy and test loss."""
    return [("gen_acc", s["gen_acc_level"]), ("gen_loss", s["gen_loss_level"])]


def gen_rule(s: Mapping[str, Any]) -> str:
    """The rule text of the two generalisation clocks (separation, wd_earlier)."""
    return (
        f"T_gen = first step with test accuracy >= {s['gen_acc_level']} and, separately, with "
        f"test CE <= {s['gen_loss_level']:g}; PASS (FAIL) when every clock that can be judged "
        "passes (fails), INCONCLUSIVE when the two disagree"
    )


def combine(parts: list[tuple[str, str, str]]) -> tuple[str, str]:
    """One verdict from per-clock (clock, verdict, evidence): PASS (FAIL) when every clock that
    could be judged passes (fails), INCONCLUSIVE when they disagree or none could be judged."""
    judged = {v for _c, v, _e in parts if v != INCONCLUSIVE}
    ev = "; ".join(f"[{c}: {v}] {e}" for c, v, e in parts)
    if len(judged) > 1:
        return INCONCLUSIVE, "the accuracy and loss clocks disagree: " + ev
    return (judged.pop() if judged else INCONCLUSIVE), ev
