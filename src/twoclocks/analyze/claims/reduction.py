"""The frozen-gate reduction (Prop. 4.1, opt-in `analysis.reduction`): from the exact state at
t0 the network trained with its training-set gates frozen tracks the real one on the plateau."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context
from twoclocks.analyze.results import gate_pairs, gate_window, measure_rows


def reduction_runs(measures: pd.DataFrame | None, s: dict) -> dict[str, dict]:
    """Per (cell, seed, anchor) of the frozen-gate stage (`replay.frozen_gates.reduce_cell`,
    folded into the measures table): the maxima over the plateau (t0, T_gen] of the relative
    divergence and of the relative test- and train-CE gaps |CE_frozen - CE_real| / CE_real,
    and whether the gate precondition held there (the gate drift on the weight snapshots of
    [T_cls, T_gen], both drifts <= ``gate_drift_max``; ``precondition`` None when it cannot be
    measured)."""
    out: dict[str, dict] = {}
    if measures is None or measures.empty:
        return out
    div_all = measures[measures["measure"] == "reduction_divergence"]
    for cid in sorted(div_all["cell_id"].unique()):
        times = {
            name: measure_rows(measures, cid, f"reduction_{name}").set_index("seed")["value"]
            for name in ("t_cls", "t_gen")
        }
        pairs = gate_pairs(measures, cid)
        gaps = {m: measure_rows(measures, cid, m) for m in _GAPS}
        for (anchor, seed), div in measure_rows(measures, cid, "reduction_divergence").groupby(
            ["anchor", "seed"], sort=True
        ):
            t0, t_gen = int(div["ref_step"].iloc[0]), float(times["t_gen"][seed])
            win = div["step"].to_numpy() <= t_gen
            if not win.any():
                continue
            run = {"t0": t0, "t_gen": t_gen, "max_divergence": _max(div, win)}
            for m, key in _GAPS.items():
                g = gaps[m]
                g = g[(g["anchor"] == anchor) & (g["seed"] == seed)]
                run[key] = _max(g, g["step"].to_numpy() <= t_gen)
            run["precondition"] = _held(pairs.get(int(seed)), times["t_cls"][seed], t_gen, s)
            out[f"{cid}/seed={seed}/{anchor}"] = run
    return _in_anchor_order(out)


_GAPS = {"reduction_test_ce_gap": "max_test_ce_gap", "reduction_train_ce_gap": "max_train_ce_gap"}


def _max(rows: pd.DataFrame, win: np.ndarray) -> float:
    return float(np.nanmax(rows["value"].to_numpy()[win]))


def _held(pairs: pd.DataFrame | None, t_cls: float, t_gen: float, s: dict) -> bool | None:
    """Whether both gate drifts stayed <= gate_drift_max on [T_cls, T_gen]; None unmeasured."""
    if pairs is None:
        return None
    rec = gate_window(pairs, t_cls, t_gen)
    if rec["n_snapshots"] < 2:
        return None
    return bool(max(rec["max_drift"], rec["max_weighted"]) <= s["gate_drift_max"])


def _in_anchor_order(runs: dict[str, dict]) -> dict[str, dict]:
    """Runs ordered as the stage writes them: cell, then anchor (cls, mid), then seed."""

    def key(k: str):
        cid, seed, anchor = k.rsplit("/", 2)
        return cid, anchor, int(seed.split("=")[1])

    return {k: runs[k] for k in sorted(runs, key=key)}


def judge_reduction(ctx: Context, s: dict) -> dict:
    runs = reduction_runs(ctx.measures, s)
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
        inputs=("measures",),
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
        applies=lambda ctx: ctx.reduction,
    ),
)
