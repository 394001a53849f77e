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


# --- seed bootstrap (the independent units of a study are its seeds) ---------------------------
N_BOOT, BOOT_SEED, CI_LEVEL = 1000, 0, 0.95  # replicates, generator seed, interval level


def seed_bootstrap(groups: Mapping[str, Any], stat, n_boot: int = N_BOOT) -> tuple[float, ...]:
    """(estimate, ci_low, ci_high) of `stat(groups)` with each group's values (one per seed)
    resampled with replacement within the group (percentile interval at CI_LEVEL; a generator
    seeded with BOOT_SEED, so the interval is reproducible). `stat` maps {key: array} to a
    float; non-finite replicates are dropped, and the interval is NaN when all are."""
    arrays = {k: np.asarray(v, float) for k, v in groups.items()}
    est = float(stat(arrays))
    rng = np.random.default_rng(BOOT_SEED)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        reps[i] = stat({k: a[rng.integers(0, a.size, a.size)] for k, a in arrays.items()})
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return est, np.nan, np.nan
    lo, hi = np.quantile(reps, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    return est, float(lo), float(hi)


def three_way(lo: float, hi: float, bound: float) -> str:
    """Equivalence decision of an interval [lo, hi] against `bound`: "below" when the whole
    interval is at or below it, "above" when the whole interval is above it, else "undecided"."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undecided"
    return "below" if hi <= bound else "above" if lo > bound else "undecided"


def interp_at(steps: np.ndarray, values: np.ndarray, t: float, log: bool = False) -> float:
    """`values` at step `t`, linear between the finite logs around it (in log(values) when `log`);
    NaN outside the record or when t is not finite."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    ok = np.isfinite(values) & (values > 0 if log else True)
    if not np.isfinite(t) or ok.sum() < 2 or t < steps[ok][0] or t > steps[ok][-1]:
        return np.nan
    v = np.log(values[ok]) if log else values[ok]
    out = float(np.interp(t, steps[ok], v))
    return float(np.exp(out)) if log else out
