"""The frozen-gate reduction (Prop. 4.1, opt-in `analysis.reduction`): from the exact state at
t0 the network trained with its training-set gates frozen tracks the real one on the plateau."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context
from twoclocks.analyze.gates import gate_drift, snapshot_gates
from twoclocks.analyze.results import relu_runs


def reduction_runs(reductions: Mapping[str, xr.Dataset], study, s: dict) -> dict[str, dict]:
    """Per (cell, seed, anchor) of the frozen-gate stage (`train.frozen_gates.reduce_cell`):
    the maxima over the plateau (t0, T_gen] of the relative divergence and of the relative
    test- and train-CE gaps |CE_frozen - CE_real| / CE_real, and whether the gate
    precondition held there (`gate_drift` on the weight snapshots of [T_cls, T_gen], both
    drifts <= ``gate_drift_max``; ``precondition`` None when it cannot be measured)."""
    trajectories = {cid: ds for cid, ds in relu_runs(study)} if study is not None else {}
    out: dict[str, dict] = {}
    for cid, red in sorted(reductions.items()):
        if "divergence" not in red:  # no member had both clocks (the store's note says why)
            continue
        seeds = [int(x) for x in red["seed"].to_numpy()]
        t_cls, t_gen = red["t_cls"].to_numpy(), red["t_gen"].to_numpy()
        held: list[bool | None] = [None] * len(seeds)
        ds = trajectories.get(cid)
        if ds is not None and "checkpoint_step" in ds:
            try:
                recs = gate_drift(*snapshot_gates(ds), t_cls, t_gen)
                for i, rec in enumerate(recs):
                    if rec["n_snapshots"] >= 2:
                        held[i] = bool(
                            max(rec["max_drift"], rec["max_weighted"]) <= s["gate_drift_max"]
                        )
            except (ValueError, RuntimeError):
                pass
        steps = red["step"].to_numpy()
        real_test = red["real_test_loss"].to_numpy()
        real_train = red["real_train_loss"].to_numpy()
        for k, anchor in enumerate(red["anchor"].to_numpy()):
            for i, seed in enumerate(seeds):
                t0 = int(red["t0"].to_numpy()[k, i])
                if t0 < 0:
                    continue
                win = (steps > t0) & (steps <= t_gen[i])
                if not win.any():
                    continue
                out[f"{cid}/seed={seed}/{anchor}"] = {
                    "t0": t0,
                    "t_gen": float(t_gen[i]),
                    "max_divergence": float(np.nanmax(red["divergence"].to_numpy()[k, i, win])),
                    "max_test_ce_gap": _max_rel_gap(
                        red["frozen_test_loss"].to_numpy()[k, i, win], real_test[i, win]
                    ),
                    "max_train_ce_gap": _max_rel_gap(
                        red["frozen_train_loss"].to_numpy()[k, i, win], real_train[i, win]
                    ),
                    "precondition": held[i],
                }
    return out


def _max_rel_gap(frozen: np.ndarray, real: np.ndarray) -> float:
    return float(np.nanmax(np.abs(frozen - real) / real))


def judge_reduction(ctx: Context, s: dict) -> dict:
    runs = reduction_runs(ctx.reductions or {}, {c: ds for c, _p, ds in ctx.datasets}, s)
    tol = s["reduction_tol"]
    for r in runs.values():
        r["tracks"] = bool(r["max_divergence"] <= tol and r["max_test_ce_gap"] <= tol)
    scored = {k: r for k, r in runs.items() if r["precondition"]}
    unscored = len(runs) - len(scored)
    if len(scored) < s["min_runs"]:
        why = (
            f"{len(scored)} (run, t0) pairs where the gate precondition held on [T_cls, T_gen] "
            f"(gate drift <= {s['gate_drift_max']:g} with >= 2 weight snapshots); {unscored} "
            "reported but not scored"
        )
        if runs:
            why += "; " + _reduction_summary(runs, "all pairs")
        return ctx.record(INCONCLUSIVE, why, runs=runs)
    tracked = np.array([r["tracks"] for r in scored.values()])
    verdict = PASS if tracked.mean() > 0.5 else FAIL
    ev = (
        f"tracked (divergence and test-CE gap <= {tol:g} up to T_gen) in "
        f"{int(tracked.sum())}/{tracked.size} scored (run, t0) pairs; "
        + _reduction_summary(scored, "scored")
        + f"; {unscored} pairs without the gate precondition not scored"
    )
    return ctx.record(verdict, ev, runs=runs)


def _reduction_summary(runs: Mapping[str, dict], what: str) -> str:
    div = np.array([r["max_divergence"] for r in runs.values()])
    te = np.array([r["max_test_ce_gap"] for r in runs.values()])
    tr = np.array([r["max_train_ce_gap"] for r in runs.values()])
    return (
        f"{what}: max relative divergence ||theta_frozen - theta_real|| / ||theta_real - "
        f"theta(t0)|| median {np.median(div):.3g} (range {div.min():.3g}-{div.max():.3g}), max "
        f"relative test-CE gap median {np.median(te):.3g}, train-CE gap median {np.median(tr):.3g}"
    )


SPECS = (
    ClaimSpec(
        id="relu_reduction",
        statement="Where the training-set gates stay fixed, the ReLU network reduces to a linear "
        "model in the active coordinates (Prop. 4.1): trained from the same state at t0 in "
        "{T_cls, mid-plateau} with its gates frozen, it tracks the real network through the "
        "plateau.",
        section="Prop. 4.1 ('in regions where the activation patterns on the training set remain "
        "fixed, the network reduces to a linear model in the active coordinates')",
        scope=RELU,
        inputs=("cells", "reductions", "measures"),
        thresholds=("reduction_tol", "gate_drift_max", "min_runs"),
        rule=lambda s: (
            "Only with analysis.reduction on. From the exact training state at "
            "t0 in {T_cls(eps_star), mid-plateau} the network is trained on with its training-set "
            "gates frozen (the linear model in the active coordinates, Prop. 4.1). A (run, t0) "
            f"pair tracks when over (t0, T_gen] the relative divergence ||theta_frozen - "
            f"theta_real|| / ||theta_real - theta(t0)|| and the relative test-CE gap stay <= "
            f"{s['reduction_tol']:g}; only pairs whose gates drift by at most "
            f"{s['gate_drift_max']:g} on [T_cls, T_gen] are scored; PASS if more than half of them "
            "track, else FAIL"
        ),
        judge=judge_reduction,
        order=200,
        applies=lambda ctx: ctx.reductions is not None,
    ),
)
