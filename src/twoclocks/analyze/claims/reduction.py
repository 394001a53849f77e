"""The frozen-gate reduction (Prop. 4.1, opt-in `analysis.reduction`): from the exact state at
t0 the network trained with its training-set gates frozen tracks the real one on the plateau.

Decided on the frozen-vs-real divergence at T_gen for every run with anchors (issue 24 item 1),
each measure normalised by the null model that stays at theta(t0); the gate precondition
(`gates_stable`) is reported beside it, no longer a filter (it held in no run: ~12% drift)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from twoclocks.analyze.claims.separation import RELU
from twoclocks.analyze.claims.spec import FAIL, INCONCLUSIVE, PASS, ClaimSpec, Context
from twoclocks.analyze.results import gate_pairs, gate_window, measure_rows


def reduction_runs(measures: pd.DataFrame | None, s: dict) -> dict[str, dict]:
    """Per (cell, seed, anchor) of the frozen-gate stage (`replay.frozen_gates.reduce_cell`,
    folded into the measures table), at T_gen (the last reduce-stage step at or before
    ceil(T_gen); ``at_step``): the null-normalised weight divergence ``divergence``, the
    test-CE error ``test_ce_error``, the real network's log test-CE drop since t0
    ``test_ce_drop`` and its gate drift since t0 ``gate_drift`` (NaN in stores without it); the
    maxima over (t0, T_gen] of the divergence and of the relative test- and train-CE gaps; and
    ``precondition``: whether the gates held by `gates_stable`'s measure on the weight snapshots
    of [T_cls, T_gen] (both drifts <= ``gate_drift_max``; None when it cannot be measured),
    reported, never used to select pairs."""
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
        series = {m: measure_rows(measures, cid, m) for m in (*_GAPS, *_AT_GEN)}
        for (anchor, seed), div in measure_rows(measures, cid, "reduction_divergence").groupby(
            ["anchor", "seed"], sort=True
        ):
            t0, t_gen = int(div["ref_step"].iloc[0]), float(times["t_gen"][seed])
            win = div["step"].to_numpy() <= np.ceil(t_gen)
            if not win.any():
                continue
            at = int(div["step"].to_numpy()[win].max())
            run = {"t0": t0, "t_gen": t_gen, "at_step": at, "max_divergence": _max(div, win)}
            for m, key in {**_GAPS, **_AT_GEN}.items():
                g = series[m]
                g = g[(g["anchor"] == anchor) & (g["seed"] == seed)]
                steps = g["step"].to_numpy()
                if m in _GAPS:
                    run[key] = _max(g, steps <= np.ceil(t_gen)) if len(g) else np.nan
                else:
                    run[key] = float(g["value"].to_numpy()[steps == at][0]) if (
                        steps == at).any() else np.nan  # fmt: skip
            run["precondition"] = _held(pairs.get(int(seed)), times["t_cls"][seed], t_gen, s)
            out[f"{cid}/seed={seed}/{anchor}"] = run
    return _in_anchor_order(out)


_GAPS = {"reduction_test_ce_gap": "max_test_ce_gap", "reduction_train_ce_gap": "max_train_ce_gap"}
_AT_GEN = {
    "reduction_divergence": "divergence",
    "reduction_test_ce_error": "test_ce_error",
    "reduction_test_ce_drop": "test_ce_drop",
    "reduction_gate_drift": "gate_drift",
}


def _max(rows: pd.DataFrame, win: np.ndarray) -> float:
    v = rows["value"].to_numpy()[win]
    return float(np.nanmax(v)) if np.isfinite(v).any() else np.nan


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


def score_pair(run: dict, s: dict) -> bool | None:
    """Whether one (run, t0) pair tracks at T_gen (both null-normalised errors <=
    reduction_tol); None (not scored) where either is unmeasured or the real test CE fell by
    less than reduction_min_drop (natural log) since t0."""
    div, err, drop = run["divergence"], run["test_ce_error"], run["test_ce_drop"]
    if not (np.isfinite(div) and np.isfinite(err) and np.isfinite(drop)):
        return None
    if drop < s["reduction_min_drop"]:
        return None
    return bool(div <= s["reduction_tol"] and err <= s["reduction_tol"])


def judge_reduction(ctx: Context, s: dict) -> dict:
    runs = reduction_runs(ctx.measures, s)
    for r in runs.values():
        r["tracks"] = score_pair(r, s)
    scored = {k: r for k, r in runs.items() if r["tracks"] is not None}
    unscored = len(runs) - len(scored)
    held = [r["precondition"] for r in runs.values() if r["precondition"] is not None]
    pre = f"; gate precondition (gates_stable's drift <= {s['gate_drift_max']:g}) held in " + (
        f"{sum(held)}/{len(held)} pairs' runs (reported, not a filter)" if held else "no run"
    )
    if len(scored) < s["min_runs"]:
        why = (
            f"{len(scored)} scored (run, t0) pairs (both errors measured at T_gen and the real "
            f"test CE down by >= {s['reduction_min_drop']:.3g} in ln since t0); {unscored} "
            "reported but not scored"
        )
        if runs:
            why += "; " + _reduction_summary(runs, "all pairs")
        return ctx.record(INCONCLUSIVE, why + pre, runs=runs)
    tracked = np.array([r["tracks"] for r in scored.values()])
    verdict = PASS if tracked.mean() > 0.5 else FAIL
    by_anchor = {
        a: [r["tracks"] for k, r in scored.items() if k.endswith(f"/{a}")] for a in ("cls", "mid")
    }
    ev = (
        f"tracked at T_gen (weight divergence and test-CE error, each against the null that "
        f"stays at theta(t0), <= {s['reduction_tol']:g}) in {int(tracked.sum())}/{tracked.size} "
        "scored (run, t0) pairs ("
        + ", ".join(f"t0 = {a}: {sum(v)}/{len(v)}" for a, v in by_anchor.items() if v)
        + "); "
        + _reduction_summary(scored, "scored")
        + f"; {unscored} pairs not scored"
        + pre
    )
    return ctx.record(verdict, ev, runs=runs)


def _reduction_summary(runs: Mapping[str, dict], what: str) -> str:
    def med(key: str) -> str:
        v = np.array([r[key] for r in runs.values()], dtype=float)
        v = v[np.isfinite(v)]
        if not v.size:
            return "n/a"
        return f"{np.median(v):.3g} (range {v.min():.3g}-{v.max():.3g})"

    return (
        f"{what}, at T_gen: weight divergence ||theta_frozen - theta_real|| / ||theta_real - "
        f"theta(t0)|| median {med('divergence')}, test-CE error |ln CE_frozen - ln CE_real| / "
        f"|ln CE_real(t0) - ln CE_real| median {med('test_ce_error')}, the real network's gate "
        f"drift since t0 median {med('gate_drift')}; max over (t0, T_gen] of the divergence "
        f"median {med('max_divergence')}, relative train-CE gap median {med('max_train_ce_gap')}"
    )


SPECS = (
    ClaimSpec(
        id="relu_reduction",
        statement="Where the training-set gates stay fixed, the ReLU network reduces to a linear "
        "model in the active coordinates (Prop. 4.1); used on the plateau: trained from the same "
        "state at t0 in {T_cls, mid-plateau} with its gates frozen, it tracks the real network "
        "to T_gen.",
        section="Prop. 4.1 ('in regions where the activation patterns on the training set remain "
        "fixed, the network reduces to a linear model in the active coordinates')",
        scope=RELU,
        inputs=("measures",),
        thresholds=("reduction_tol", "reduction_min_drop", "gate_drift_max", "min_runs"),
        rule=lambda s: (
            "Only with analysis.reduction on. From the exact training state at "
            "t0 in {T_cls(eps_star), mid-plateau} the network is trained on with its training-set "
            "gates frozen (the linear model in the active coordinates, Prop. 4.1). Every (run, t0) "
            "pair is read at T_gen (the last reduce step at or before ceil(T_gen)): the weight "
            "divergence ||theta_frozen - theta_real|| / ||theta_real - theta(t0)|| and the test-CE "
            "error |ln CE_frozen - ln CE_real| / |ln CE_real(t0) - ln CE_real| (the frozen "
            "parameters in the real network), each 1 for a model left at theta(t0). A pair tracks "
            f"when both are <= {s['reduction_tol']:g}; pairs whose real test CE fell by less than "
            f"{s['reduction_min_drop']:.3g} (ln) since t0 are reported, not scored. PASS if more "
            "than half of the scored pairs track, else FAIL; INCONCLUSIVE below "
            f"{s['min_runs']} scored pairs. The gate precondition (gates_stable) is reported "
            "next to it, not used to select pairs"
        ),
        judge=judge_reduction,
        order=200,
        applies=lambda ctx: ctx.reduction,
    ),
)
