"""Precondition of the ReLU corollary: the training-set gate pattern stays fixed on
[T_cls, T_gen] (Prop. 4.1, App. F.3). An assumption the paper needs, not a claim of it: MET or
NOT MET, from the cumulative gate drift between weight snapshots."""

from __future__ import annotations

import numpy as np

from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import INCONCLUSIVE, MET, NOT_MET, ClaimSpec, Context
from twoclocks.analyze.results import (
    clock_times,
    gate_pairs,
    gate_window,
    gen_clock,
    pick_level,
    unmeasured_reason,
)


def drift_records(ctx: Context, cid: str, seeds, t_start: np.ndarray, t_end: np.ndarray):
    """Per member of cell `cid`: the cumulative gate drift on [t_start, t_end], from the replay
    stage's measures (ValueError saying why when the cell has none)."""
    why = unmeasured_reason(ctx.measures, cid, "gate_drift")
    if why:
        raise ValueError(why)
    pairs = gate_pairs(ctx.measures, cid)
    if not pairs:
        raise ValueError("no gate measures (the replay stage's runs/<cell>/measures.parquet)")
    empty = pairs[next(iter(pairs))].iloc[:0]
    return [
        gate_window(pairs.get(s, empty), a, b)
        for s, a, b in zip(seeds, t_start, t_end, strict=True)
    ]


def judge_gates(ctx: Context, s: dict) -> dict:
    clocks = ctx.clocks
    cls_level = pick_level(clocks, "cls", s["cls_eps"])
    gclock, glevel = gen_clock(clocks, s["gen_acc_level"])
    t_cls = clock_times(clocks, "cls", cls_level).set_index(["cell_id", "seed"])["step"]
    t_gen = clock_times(clocks, gclock, glevel).set_index(["cell_id", "seed"])["step"]
    runs, skipped = {}, []
    for cid, ds in ctx.runs():
        if "checkpoint_step" not in ds:
            skipped.append(f"{cid}: no weight snapshots")
            continue
        seeds = [int(x) for x in ds["seed"].to_numpy()]
        a = np.array([t_cls.get((cid, x), np.nan) for x in seeds], dtype=float)
        b = np.array([t_gen.get((cid, x), np.nan) for x in seeds], dtype=float)
        try:
            recs = drift_records(ctx, cid, seeds, a, b)
        except ValueError as err:  # not measured: a store this cell's params cannot rebuild
            skipped.append(f"{cid}: {err}")
            continue
        for seed, rec in zip(seeds, recs, strict=True):
            if rec["n_snapshots"] >= 2:
                runs[f"{cid}/seed={seed}"] = rec
    why_short = f"; skipped {skipped}" if skipped else ""
    if len(runs) < s["min_runs"]:
        why = (
            f"{len(runs)} runs with both clocks and >= 2 weight snapshots in [T_cls, T_gen] "
            f"(raise logging.snapshot_count for a finer grid){why_short}"
        )
        return ctx.record(INCONCLUSIVE, why)
    drift = np.array([r["max_drift"] for r in runs.values()])
    weighted = np.array([r["max_weighted"] for r in runs.values()])
    n_snap = np.array([r["n_snapshots"] for r in runs.values()])
    held = (drift <= s["gate_drift_max"]) & (weighted <= s["gate_drift_max"])
    verdict = MET if held.mean() > 0.5 else NOT_MET
    ev = (
        f"cumulative gate drift from the snapshot at T_cls(eps={cls_level:.0e}) to the last "
        f"one before T_gen ({gclock}@{glevel:g}): max fraction of (train sample, unit) gates "
        f"changed, median {np.median(drift):.3g} (range {drift.min():.3g}-{drift.max():.3g}); "
        f"weighted by each unit's share of the logits, median {np.median(weighted):.3g}; "
        f"held (both <= {s['gate_drift_max']:g}) in {int(held.sum())}/{held.size} runs "
        f"({int(np.median(n_snap))} snapshots per window, median){why_short}"
    )
    return ctx.record(verdict, ev, runs=runs)


SPECS = (
    ClaimSpec(
        id="gates_stable",
        kind="precondition",
        statement="Precondition (an assumption of the paper's ReLU corollary, not a claim of it): "
        "the training-set gate pattern stays fixed on [T_cls, T_gen], where the frozen-gate "
        "reduction is used (Prop. 4.1).",
        section="Prop. 4.1 and App. F.3 (frozen gates; pre-activation margin)",
        scope=RELU,
        inputs=("cells", "clocks", "measures"),
        thresholds=("cls_eps", "gen_acc_level", "gate_drift_max", "min_runs"),
        rule=lambda s: (
            "A precondition of the paper's ReLU corollary, not a claim of it. "
            "MET if in more than half of the runs the training-set gate pattern drifts by at most "
            f"{s['gate_drift_max']:g} (fraction of (sample, unit) gates changed since the weight "
            "snapshot at T_cls, and the same weighted by each unit's share of the logits) on the "
            "snapshots in [T_cls, T_gen]; NOT MET otherwise"
        ),
        judge=judge_gates,
        order=70,
    ),
)
