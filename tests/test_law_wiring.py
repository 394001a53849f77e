"""The #22 estimators wired into the pipeline: the laws stage on a tiny synthetic store, the
calibrate stage at a study's own cadence, and the law claims on synthetic laws tables
(PASS / FAIL / INCONCLUSIVE, the calibration's veto, the margin kept equal to the estimator's)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from twoclocks.analyze import claims as C
from twoclocks.analyze import law_calibration as LC
from twoclocks.analyze.claims.spec import Context
from twoclocks.analyze.law_stage import ABSENT, cell_laws, horizon_of
from twoclocks.analyze.laws import DRIFT_MARGIN, INCONCLUSIVE, LOG_LIKE, POLYNOMIAL
from twoclocks.analyze.laws.kl import ADAMW
from twoclocks.train.schedule import log_steps

CELLS = ("a", "b", "c")


# --- the law claims on synthetic tables -------------------------------------------------------
def _fam(name: str, wrong: float = 0.0) -> dict:
    truth = POLYNOMIAL if "power" in name else LOG_LIKE
    return {"family": name, "clock": "cls" if name.startswith("cls_") else "rep",
            "truth": truth, "draws": 60, "correct": 1.0 - wrong, "inconclusive": 0.0,
            "wrong": wrong, "coverage": 0.95, "n_interval": 20, "decisions": {}, "note": name,
            "identifiable": wrong == 0.0}  # fmt: skip


def _calibration(wrong: dict | None = None) -> dict:
    names = LC.CLS_FAMILIES + LC.REP_FITTED + LC.REP_KNOWN
    fams = {n: _fam(n, (wrong or {}).get(n, 0.0)) for n in names}
    return {"draws": 60, "horizons": {"H": {"families": fams}}, "cells": dict.fromkeys(CELLS, "H")}


def _rec(decision: str, k=(0.3, 0.6), margin: float = DRIFT_MARGIN) -> dict:
    drift = {LOG_LIKE: (-0.1, 0.1), POLYNOMIAL: (1.0, 2.0), INCONCLUSIVE: (-0.1, 1.0)}[decision]
    return {"decision": decision, "drift_low": drift[0], "drift_high": drift[1], "k": sum(k) / 2,
            "k_low": k[0], "k_high": k[1], "margin": margin, "reason": f"synthetic {decision}",
            "resolve": "more seeds" if decision == INCONCLUSIVE else ""}  # fmt: skip


def _judge(claim: str, clock: str, decisions, calibration=None, settings=None, datasets=(),
           **kw) -> dict:  # fmt: skip
    per_cell = {
        c: {"clocks": {clock: _rec(d, **kw)}} for c, d in zip(CELLS, decisions, strict=True)
    }
    laws = {
        "cells": per_cell,
        "calibration": _calibration() if calibration is None else calibration,
    }
    cells = pd.DataFrame({"cell_id": list(CELLS), "model": "relu_embed"})
    spec = C.get(claim)
    ctx = Context(spec, cells, pd.DataFrame(), {}, None, list(datasets), laws=laws)
    return spec.judge(ctx, C.resolve_claim_settings(settings))


def test_cls_law_pass_fail_inconclusive_from_decisions():
    ll, po, inc = LOG_LIKE, POLYNOMIAL, INCONCLUSIVE
    assert _judge("cls_log_law", "cls", [ll, ll, inc])["verdict"] == "PASS"
    assert _judge("cls_log_law", "cls", [po, po, ll])["verdict"] == "FAIL"
    rec = _judge("cls_log_law", "cls", [ll, inc, inc])
    assert rec["verdict"] == "INCONCLUSIVE" and "more seeds" in rec["evidence"]
    assert rec["details"]["calibration"]["allowed"] is True
    assert {r["family"] for r in rec["details"]["calibration"]["families"]} == set(LC.CLS_FAMILIES)


def test_calibration_with_confident_wrong_answers_vetoes_the_verdict():
    cal = _calibration({"cls_floor": 0.2})
    rec = _judge("cls_log_law", "cls", [LOG_LIKE] * 3, calibration=cal)
    assert rec["verdict"] == "INCONCLUSIVE"
    assert "calibration forbids" in rec["evidence"] and "cls_floor (12/60 wrong" in rec["evidence"]
    # a family that does not matter for the classifier clock does not veto it
    other = _calibration({"mix2": 0.5})
    assert _judge("cls_log_law", "cls", [LOG_LIKE] * 3, calibration=other)["verdict"] == "PASS"
    # no calibration at all: no verdict
    none = _judge("cls_log_law", "cls", [LOG_LIKE] * 3, calibration={})
    assert none["verdict"] == "INCONCLUSIVE" and "no calibration" in none["evidence"]


def test_veto_needs_a_clopper_pearson_bound_below_five_percent():
    few = _calibration()
    for f in few["horizons"]["H"]["families"].values():
        f["draws"] = 20  # 0/20 wrong bounds the rate only below 14%
    rec = _judge("cls_log_law", "cls", [LOG_LIKE] * 3, calibration=few)
    assert rec["verdict"] == "INCONCLUSIVE" and "needs >= 59 draws" in rec["evidence"]
    rows = rec["details"]["calibration"]["families"]
    assert all(0.13 < r["wrong_upper"] < 0.14 for r in rows)


def _margin_store(curved: bool) -> xr.Dataset:
    """3 seeds: CE 4 exp(-t/100); min margin linear in t, or accelerating (curved)."""
    steps = np.arange(0, 2001, 20)
    t = steps[None, :].astype(float) * np.ones((3, 1))
    margin = -1 + (t / 300) ** 2 if curved else -1 + t / 300
    dims = ("seed", "step")
    return xr.Dataset({"train_loss": (dims, 4 * np.exp(-t / 100)),
                       "train_margin_min": (dims, margin)},
                      coords={"seed": [0, 1, 2], "step": steps})  # fmt: skip


def test_cls_law_combines_the_levels_with_the_margins_linearity():
    from twoclocks.analyze.claims.laws import combine_margin

    assert combine_margin("for", "linear") == "for" and combine_margin("for", "absent") == "for"
    assert combine_margin("for", "curved") == "undecided"
    assert combine_margin("against", "linear") == "undecided"
    assert combine_margin("against", "undecided") == "against"
    assert combine_margin("undecided", "linear") == "undecided"
    ll = [LOG_LIKE] * 3
    lin = [(c, {}, _margin_store(False)) for c in CELLS]
    rec = _judge("cls_log_law", "cls", ll, datasets=lin)
    assert rec["verdict"] == "PASS" and "margin linear" in rec["evidence"], rec["evidence"]
    cur = [(c, {}, _margin_store(True)) for c in CELLS]
    rec = _judge("cls_log_law", "cls", ll, datasets=cur)
    assert rec["verdict"] == "INCONCLUSIVE" and "margin curved" in rec["evidence"]
    assert _judge("cls_log_law", "cls", [POLYNOMIAL] * 3, datasets=lin)["verdict"] == (
        "INCONCLUSIVE"
    )


def test_rep_law_needs_polynomial_with_exponent_in_range():
    po = [POLYNOMIAL] * 3
    assert _judge("rep_power_law", "rep_srank", po)["verdict"] == "PASS"
    assert _judge("rep_power_law", "rep_srank", po, k=(0.8, 1.4))["verdict"] == "FAIL"
    wide = {"rep_exponent_range": [0.0, 2.0]}  # the claims: setting is used
    assert (
        _judge("rep_power_law", "rep_srank", po, k=(0.8, 1.4), settings=wide)["verdict"] == "PASS"
    )
    assert _judge("rep_power_law", "rep_srank", [LOG_LIKE] * 3)["verdict"] == "FAIL"
    vetoed = _judge("rep_power_law", "rep_srank", po, calibration=_calibration({"mix3": 0.1}))
    assert vetoed["verdict"] == "INCONCLUSIVE" and "mix3" in vetoed["evidence"]


def test_margin_in_schema_equals_the_estimators_and_a_mismatch_is_inconclusive():
    assert C.DEFAULTS["law_drift_margin"] == pytest.approx(DRIFT_MARGIN, abs=1e-15)
    rec = _judge("cls_log_law", "cls", [LOG_LIKE] * 3, margin=0.2)
    assert rec["verdict"] == "INCONCLUSIVE" and "rerun the laws stage" in rec["evidence"]


# --- the laws stage on a tiny synthetic store --------------------------------------------------
def _store(ce_floor: float = 0.0, gaps: bool = True) -> tuple[xr.Dataset, dict]:
    """3 seeds, AdamW; CE = 4 exp(-t/100) (+ a floor); a known-zero Fourier gap exp(-t/600)."""
    rng = np.random.default_rng(0)
    steps = log_steps(2000, 100, 20)
    t = steps.astype(float)[None, :]
    s = np.exp(0.05 * rng.standard_normal((3, 1)))
    noise = np.exp(0.003 * rng.standard_normal((3, len(steps))))
    ce = (ce_floor + 4.0 * np.exp(-t / (100 * s))) * noise
    gap = 2.0 * np.exp(-t / (600 * s)) * noise
    sq = 50 + 10 * np.exp(-t / 300) + 0 * s
    gl = np.stack([np.sqrt(ce), np.sqrt(ce)], -1)
    dims = ("seed", "step")
    ds = xr.Dataset(
        {"train_loss": (dims, ce), "fourier_gap": (dims, gap), "sqnorm_total": (dims, sq),
         "grad_norm": (dims + ("block",), gl), "grad_norm_energy": (dims + ("block",), gl + 0.1)},
        coords={"seed": [0, 1, 2], "step": steps, "block": ["E", "W"]},
    )  # fmt: skip
    if not gaps:
        ds = ds[["train_loss"]]
    params = {"model": "relu_embed", "weight_decay": 1.0, "optimizer": "adamw", "steps": 2000,
              "log_dense_steps": 100, "log_every_steps": 20, "dtype": "float32"}  # fmt: skip
    return ds, params


@pytest.mark.slow
def test_cell_laws_decides_every_clock_and_names_what_it_cannot():
    ds, params = _store(ce_floor=5e-4)
    rec = cell_laws(ds, None, {"eps": [0.3, 0.1, 0.03, 0.01, 3e-3]}, params, "a")
    cls = rec["clocks"]["cls"]
    assert cls["decision"] in (LOG_LIKE, POLYNOMIAL, INCONCLUSIVE)
    assert [d["level"] for d in cls["dropped"]] == [3e-3]  # within 10x of the CE floor, named
    assert "dropped eps 0.003" in cls["reason"]
    assert math.isfinite(cls["noise"]) and cls["noise"] > 0
    four = rec["clocks"]["rep_fourier"]
    assert four["known_zero"] is True and four["zero"] == "known" and "tail" in four
    assert rec["clocks"]["rep_srank"]["decision"] == ABSENT  # no srank in this store
    assert rec["clocks"]["rep_energy"]["kl"]["status"] == ADAMW  # no theta for AdamW
    assert math.isfinite(rec["clocks"]["rep_energy"]["kl"]["stationarity_ratio"])
    assert rec["horizon"] == {"steps": 2000, "n_seeds": 3, "dtype": "float32",
                              "log_dense_steps": 100, "log_every_steps": 20,
                              "log_rows_per_decade": 0}  # fmt: skip


def test_cls_law_of_a_clean_exponential_ce_is_log_like():
    ds, params = _store(gaps=False)
    rec = cell_laws(ds, None, {"eps": [0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3]}, params, "a")
    assert {r["decision"] for k, r in rec["clocks"].items() if k != "cls"} == {ABSENT}
    assert rec["clocks"]["cls"]["decision"] == LOG_LIKE, rec["clocks"]["cls"]["reason"]


def test_calibration_uses_the_engines_geometric_cadence_and_gates_verdicts():
    ds, params = _store()
    params = {**params, "steps": 400, "log_rows_per_decade": 50}
    hz = horizon_of(ds, params)
    rec = {"horizon": hz, "clocks": {"cls": {"noise": 0.01, "decision": LOG_LIKE}}}
    cal = LC.study_calibration({"a": rec}, None, draws=2)
    (key,) = cal["horizons"]
    assert "50/decade" in key and cal["cells"] == {"a": key}
    assert cal["horizons"][key]["n_logs"] == len(log_steps(400, 100, 20, 50))
    assert set(cal["horizons"][key]["families"]) == set(LC.CLS_FAMILIES)  # no gap: no rep fams
    assert cal["horizons"][key]["noise"]["cls"] == 0.01
    ok, why = LC.verdict_allowed(cal, ["a"], "cls")
    bound = max(f["wrong_upper"] for f in cal["horizons"][key]["families"].values())
    assert bound > 0.05 and not ok and "needs >= 59 draws" in why and key in why  # 2 draws


def test_no_calibration_draws_runs_no_simulation_and_says_why_the_verdict_waits():
    ds, params = _store()
    rec = {"horizon": horizon_of(ds, params), "clocks": {"cls": {"noise": 0.01}}}
    cal = LC.study_calibration({"a": rec}, None, draws=0)
    (key,) = cal["horizons"]
    assert cal["draws"] == 0 and cal["horizons"][key]["families"] == {}
    ok, why = LC.verdict_allowed(cal, ["a"], "cls")
    assert not ok and "calibration_draws: 0" in why and ">= 59 draws" in why


def test_load_results_reads_laws_and_calibration(tmp_path):
    from twoclocks.analyze.results import law_decisions, load_results

    for cid, d in (("relu/wd=1", LOG_LIKE), ("lin", "absent")):
        (tmp_path / "runs" / cid).mkdir(parents=True)
        (tmp_path / "runs" / cid / "laws.json").write_text(
            f'{{"cell_id": "{cid}", "clocks": {{"cls": {{"decision": "{d}"}}}}}}'
        )
    (tmp_path / "calibration.json").write_text('{"draws": 3, "horizons": {}, "cells": {}}')
    laws = load_results(tmp_path, trajectories=False).laws
    assert laws["calibration"]["draws"] == 3 and set(laws["cells"]) == {"relu/wd=1", "lin"}
    assert list(law_decisions(laws, "cls")) == ["relu/wd=1"]  # an absent quantity is no decision


def test_report_shows_the_calibration_next_to_each_law_verdict():
    from twoclocks.report.html import law_calibration_table

    rec = _judge("cls_log_law", "cls", [LOG_LIKE] * 3, calibration=_calibration({"cls_floor": 0.1}))
    html = law_calibration_table([rec])
    assert "cls_log_law: INCONCLUSIVE; verdict allowed: False" in html
    assert "is told as log-like in 90% of 60 draws" in html and "10% (bound 18.8%)" in html
    assert law_calibration_table([{"id": "separation", "verdict": "PASS", "details": {}}]) == ""


def test_calibration_simulates_a_sparse_gap_at_its_own_row_stride(monkeypatch):
    """A gap logged on every 4th row (the gated map) is calibrated on every 4th row of the grid,
    and its verdict reads those families, not the dense grid's (issue 22 item 7)."""
    ds, params = _store()
    hz = horizon_of(ds, params)
    calls = []

    def fake_calibrate_many(tasks, draws, seed, workers):
        out = []
        for horizon, names in tasks:
            calls.append((horizon, tuple(names)))
            wrong = 0.5 if "every 4th row" in horizon.name else 0.0
            out.append({n: LC._family(_fam(n, wrong)) for n in names})
        return out

    monkeypatch.setattr(LC.laws, "calibrate_many", fake_calibrate_many)
    rec = {"horizon": hz, "clocks": {
        "cls": {"noise": 0.01, "decision": LOG_LIKE},
        "rep_srank": {"noise": 0.01, "decision": LOG_LIKE, "rows_every": 4},
        "rep_spurious": {"noise": 0.01, "decision": LOG_LIKE, "rows_every": 1}}}  # fmt: skip
    cal = LC.study_calibration({"a": rec}, None, draws=60)
    (key,) = cal["horizons"]
    dense = len(LC.horizon(hz, LC.resolve_settings(None), 0.0).log_steps)
    grids = {len(h.log_steps) for h, names in calls if not names[0].startswith("cls_")}
    assert grids == {dense, len(range(0, dense, 4))}
    assert cal["horizons"][key]["rows_every"] == {"rep_srank": 4, "rep_spurious": 1}
    ok_sparse, why = LC.verdict_allowed(cal, ["a"], "rep_srank")
    ok_dense, _ = LC.verdict_allowed(cal, ["a"], "rep_spurious")
    assert ok_dense and not ok_sparse
    assert "30/60 wrong" in why  # the sparse grid's families, not the dense grid's 0/60
    rows = LC.summary(cal, ["a"], "rep_srank")
    assert rows and all(r["wrong"] == 0.5 for r in rows)
