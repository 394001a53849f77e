"""relu_reduction's decision (issue 24 item 1) on synthetic measures tables: every (run, t0)
pair is read at T_gen on the null-normalised weight divergence and test-CE error, whatever the
gate precondition says; the divergence-against-drift figure from the same table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twoclocks.analyze import claims as C
from twoclocks.analyze.claims.reduction import reduction_runs, score_pair
from twoclocks.analyze.claims.spec import Context, get
from twoclocks.replay.table import frame

CELL = "relu/wd=1"
STEPS = np.arange(100, 1001, 50)  # log steps of the reduce stage after t0


def _pair_rows(seed: int, anchor: str, t0: int, div: float, err: float, drop: float) -> list:
    """Rows of one (seed, anchor): the divergence ramps up to `div` at T_gen (step 800), the
    test-CE error is `err` there, the gate drift grows linearly to 0.12 at T_gen."""
    rows = []
    frac = np.clip((STEPS - t0) / (800 - t0), 0, None)
    series = {
        "reduction_divergence": div * frac,
        "reduction_test_ce_error": np.full(STEPS.size, err),
        "reduction_test_ce_drop": drop * frac,
        "reduction_gate_drift": 0.12 * frac,
        "reduction_test_ce_gap": np.full(STEPS.size, 0.5),
        "reduction_train_ce_gap": np.full(STEPS.size, 0.2),
    }
    for measure, values in series.items():
        for step, v in zip(STEPS, values, strict=True):
            if step > t0:
                rows.append({"cell_id": CELL, "seed": seed, "measure": measure, "anchor": anchor,
                             "ref_step": t0, "step": int(step), "value": float(v)})  # fmt: skip
    return rows


def _table(pairs: dict, t_gen: float = 800.0, drift_pairs: bool = False) -> pd.DataFrame:
    """pairs: (seed, anchor) -> (div, err, drop) at T_gen; T_cls 100 and T_gen per seed."""
    rows = []
    for seed in sorted({k[0] for k in pairs}):
        for name, v in (("t_cls", 100.0), ("t_gen", t_gen)):
            rows.append({"cell_id": CELL, "seed": seed, "measure": f"reduction_{name}",
                         "value": v})  # fmt: skip
        if drift_pairs:  # gates_stable's snapshot measure: 12% drift on [T_cls, T_gen]
            for ref, step, v in ((100, 100, 0.0), (100, 800, 0.12), (800, 800, 0.0)):
                for m in ("gate_drift", "gate_drift_weighted"):
                    rows.append({"cell_id": CELL, "seed": seed, "measure": m, "ref_step": ref,
                                 "step": step, "value": v})  # fmt: skip
    for (seed, anchor), (div, err, drop) in pairs.items():
        rows += _pair_rows(seed, anchor, 100 if anchor == "cls" else 450, div, err, drop)
    return frame(rows)


def _judge(table: pd.DataFrame, **settings) -> dict:
    s = C.resolve_claim_settings(settings)
    spec = get("relu_reduction")
    ctx = Context(spec, pd.DataFrame(), pd.DataFrame(), None, table, reduction=True)
    return spec.judge(ctx, s)


def _all(div: float, err: float, drop: float = 3.0, seeds=(0, 1, 2)) -> dict:
    return {(s, a): (div, err, drop) for s in seeds for a in ("cls", "mid")}


def test_tracking_pairs_pass_whatever_the_gates_drift():
    # the gates drift 12% (> gate_drift_max 0.05: precondition not held), the frozen model tracks
    rec = _judge(_table(_all(0.2, 0.3), drift_pairs=True))
    assert rec["verdict"] == C.PASS
    assert "6/6 scored" in rec["evidence"] and "t0 = cls: 3/3" in rec["evidence"]
    assert "held in 0/6" in rec["evidence"]  # reported, not a filter
    run = rec["details"]["runs"][f"{CELL}/seed=0/cls"]
    assert run["at_step"] == 800 and run["divergence"] == pytest.approx(0.2)
    assert run["gate_drift"] == pytest.approx(0.12) and run["precondition"] is False


@pytest.mark.parametrize(
    ("div", "err", "want"),
    [(0.6, 0.1, C.FAIL), (0.1, 0.6, C.FAIL), (0.5, 0.5, C.PASS), (0.9, 1.2, C.FAIL)],
)
def test_both_errors_must_be_within_the_stated_tolerance(div, err, want):
    assert _judge(_table(_all(div, err)))["verdict"] == want


def test_majority_of_scored_pairs_decides():
    pairs = _all(0.2, 0.2)
    pairs.update({(0, "mid"): (0.8, 0.2, 3.0), (1, "mid"): (0.8, 0.2, 3.0)})
    rec = _judge(_table(pairs))
    assert rec["verdict"] == C.PASS and "4/6" in rec["evidence"]
    assert "t0 = mid: 1/3" in rec["evidence"]
    pairs[(2, "mid")] = (0.8, 0.2, 3.0)
    assert _judge(_table(pairs))["verdict"] == C.FAIL  # 3/6 is not more than half


def test_a_test_ce_that_did_not_fall_leaves_the_pair_unscored():
    rec = _judge(_table(_all(0.1, 0.1, drop=0.5)))  # real test CE fell < a factor 2
    assert rec["verdict"] == C.INCONCLUSIVE and "6 reported but not scored" in rec["evidence"]
    assert _judge(_table(_all(0.1, 0.1, drop=0.5)), reduction_min_drop=0.4)["verdict"] == C.PASS


def test_too_few_pairs_or_nothing_reduced_is_inconclusive():
    rec = _judge(_table({(0, "cls"): (0.1, 0.1, 3.0)}))
    assert rec["verdict"] == C.INCONCLUSIVE and "1 scored" in rec["evidence"]
    assert _judge(frame([]))["verdict"] == C.INCONCLUSIVE


def test_read_at_the_last_step_at_or_before_t_gen():
    # T_gen 812.4: ceil 813 is not logged, the last reduce step at or before it is 800
    runs = reduction_runs(_table(_all(0.3, 0.3), t_gen=812.4), C.resolve_claim_settings(None))
    r = runs[f"{CELL}/seed=1/mid"]
    assert r["at_step"] == 800 and r["t0"] == 450
    assert r["max_divergence"] == pytest.approx(0.3)  # the ramp's maximum on (t0, T_gen]
    assert score_pair({**r, "divergence": np.nan}, C.resolve_claim_settings(None)) is None


def test_threshold_is_in_the_schema_with_its_reason():
    from twoclocks.analyze.claims.spec import schema_claims

    entry = schema_claims()["reduction_tol"]
    assert entry["default"] == 0.5 and "null" in entry["description"]
    assert "before" in entry["description"]  # stated before the reduction ran in any study
    assert schema_claims()["reduction_min_drop"]["default"] == pytest.approx(np.log(2))


def test_figure_plots_divergence_and_test_ce_error_against_the_gate_drift():
    from twoclocks.report import figures as F

    table = _table(_all(0.2, 0.3))
    fig = F.figure_named("reduction_drift")
    assert "never" not in fig.caption and "PASS" not in fig.caption  # what is plotted, no verdict
    chart = fig.draw({"measures": table, "max_points": 400})
    spec = chart.to_dict()
    left, right = spec["hconcat"]
    assert left["layer"][0]["encoding"]["x"]["field"] == "drift"
    assert right["layer"][0]["encoding"]["y"]["field"] == "reduction_test_ce_error"
    curves = F.reduction.reduction_curves(table)
    assert curves.groupby("line").ngroups == 6 and int(curves["at_gen"].sum()) == 6
    assert curves.loc[curves["at_gen"], "step"].eq(800).all()
    assert curves["drift"].max() == pytest.approx(0.12 * 550 / 350)  # mid fork, to the horizon
    # skipped (with the reason) without the reduction's rows, listed with the rest otherwise
    charts, notes = F.build_figures({}, None, None)
    assert "reduction_drift" not in charts and any("reduction_drift" in n for n in notes)
    charts, _ = F.build_figures({}, None, None, measures=table)
    assert "reduction_drift" in charts
