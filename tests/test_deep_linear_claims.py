"""The deep-linear lazy-regime claims (issue 13) on hand-built clocks tables and fits records:
each rule's PASS, FAIL and INCONCLUSIVE, with the thresholds of the `claims:` section."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from twoclocks.analyze import claims as C
from twoclocks.analyze import law_calibration as LC
from twoclocks.analyze.claims import dln_tail_rate as TR
from twoclocks.analyze.laws import DRIFT_MARGIN, LOG_LIKE, POLYNOMIAL

T_CLS = 100.0
LR, WD_GD = 0.5, 0.001  # plain GD: 2 wd lr = 1e-3 per step
RATE = -2 * np.log1p(-LR * WD_GD)


def _rows(cell_id: str, wd: float, scheme: str, ratio: float | None, g_ref: float = 2.0,
          optimizer: str = "sgd", timescale: float = 1 / RATE, law: str = "exp",
          t_cls: float = T_CLS, depth: int = 3, momentum: float = 0.0):  # fmt: skip
    """Three seeds of rep_spurious at eta 0.1 (and 0.5) with the member's tail fit; ratio None =
    the clock never fired; t_cls NaN = T_cls(eps_star) never fired."""
    out = []
    for seed in range(3):
        for level in (0.5, 0.1):
            fired = ratio is not None and np.isfinite(t_cls)
            out.append(
                {
                    "study": "s",
                    "grid": cell_id.split("/")[0],
                    "cell_id": cell_id,
                    "cell_hash": "0" * 12,
                    "depth": depth,
                    "weight_decay": wd,
                    "init_scheme": scheme,
                    "optimizer": optimizer,
                    "momentum": momentum,
                    "lr": LR if optimizer == "sgd" else 0.01,
                    "seed": seed,
                    "clock": "rep_spurious",
                    "level": level,
                    "step": (ratio * T_CLS * (1 + 0.1 * seed) * level / 0.1) if fired else np.nan,
                    "censored": not fired,
                    "pre_fit": False,
                    "unresolved": False,
                    "below_floor": False,
                    "diverged": False,
                    "t_cls_ref": t_cls,
                    "g_ref": g_ref,
                    "tail_law": law if np.isfinite(t_cls) else "",
                    "tail_timescale": timescale * (1 + 0.01 * seed) if law == "exp" else np.nan,
                }
            )
    return out


def _clocks(lazy_ratio=50.0, wd0_ratio=None, rich_ratio=None) -> pd.DataFrame:
    rows = []
    for wd in (0.01, 0.03, 0.1):  # AdamW lazy cells
        rows += _rows(f"lazy/wd={wd}", wd, "orthogonal", lazy_ratio, optimizer="adamw")
    rows += _rows("wd0/wd=0.0", 0.0, "orthogonal", wd0_ratio, optimizer="adamw")
    rows += _rows("rich/wd=0.1", 0.1, "uniform", rich_ratio, g_ref=0.01, optimizer="adamw")
    return pd.DataFrame(rows)


def _gd_clocks(**kw) -> pd.DataFrame:
    """Two lazy plain-GD cells (depth 3) and the AdamW cells of `_clocks`."""
    rows = []
    for cid in ("gd/d=3/a", "gd/d=3/b"):
        rows += _rows(cid, WD_GD, "orthogonal", 50.0, **kw)
    return pd.concat([pd.DataFrame(rows), _clocks()], ignore_index=True)


def _by_id(clocks, fits=None, study=None, settings=None):
    return {c["id"]: c for c in C.evaluate_claims(study, clocks, fits, settings or {})}


def test_deep_linear_passes_on_a_slow_spurious_clock_and_fails_on_a_fast_one():
    got = _by_id(_clocks(lazy_ratio=50.0))["deep_linear"]
    assert got["verdict"] == "PASS", got["evidence"]
    assert set(got["details"]["per_cell"]) == {"lazy/wd=0.01", "lazy/wd=0.03", "lazy/wd=0.1"}
    assert np.isclose(got["details"]["per_cell"]["lazy/wd=0.1"], 55.0)  # median of 50, 55, 60
    fast = _by_id(_clocks(lazy_ratio=2.0))["deep_linear"]
    assert fast["verdict"] == "FAIL"
    # the threshold comes from the claims: section
    strict = _by_id(_clocks(lazy_ratio=50.0), settings={"dln_min_ratio": 100.0})["deep_linear"]
    assert strict["verdict"] == "FAIL"


def test_deep_linear_counts_cells_that_never_fired_as_no_clock():
    clocks = _clocks(lazy_ratio=None)
    got = _by_id(clocks)["deep_linear"]
    assert got["verdict"] == "INCONCLUSIVE" and "0 lazy runs" in got["evidence"]


def test_deep_linear_excludes_and_counts_cells_without_t_cls_never_a_ratio_of_zero():
    rows = _rows("lazy/wd=0.2", 0.2, "orthogonal", 50.0, optimizer="adamw", t_cls=np.nan)
    clocks = pd.concat([_clocks(lazy_ratio=50.0), pd.DataFrame(rows)], ignore_index=True)
    got = _by_id(clocks)["deep_linear"]
    assert got["verdict"] == "PASS", got["evidence"]
    assert "lazy/wd=0.2" not in got["details"]["per_cell"]  # not counted as a ratio of 0
    assert got["details"]["cls_censored_runs"] == 3
    assert "3 runs without T_cls(eps_star)" in got["evidence"]


def test_deep_linear_without_lazy_cells_is_inconclusive():
    clocks = _clocks()
    clocks = clocks[~clocks["cell_id"].str.startswith("lazy")]
    got = _by_id(clocks)["deep_linear"]
    assert got["verdict"] == "INCONCLUSIVE" and "no deep linear" in got["evidence"]


def _full(clocks, study=None, settings=None):
    return {c["id"]: c for c in C.evaluate(study, clocks, None, settings or {})}


def test_rate_law_claims_judge_plain_gd_and_leave_adamw_out_of_scope():
    clocks = _gd_clocks()
    mom = pd.DataFrame(_rows("mom/d=3", WD_GD, "orthogonal", 50.0, momentum=0.9))
    got = _full(pd.concat([clocks, mom], ignore_index=True))
    for cid in ("dln_tail_rate", "dln_lazy_rich", "dln_rep_law", "small_sv_shrink_faster",
                "dln_depth_rate"):  # fmt: skip
        scope = got[cid]["scope"]
        assert scope["cells"] == ["gd/d=3/a", "gd/d=3/b"], (cid, scope)
        assert {"lazy/wd=0.1", "rich/wd=0.1", "wd0/wd=0.0", "mom/d=3"} <= set(scope[C.OUT_OF_SCOPE])
    # the descriptive claim keeps every optimiser
    assert "lazy/wd=0.1" in got["deep_linear"]["scope"]["cells"]


def _energy_store(cid: str, rates: tuple, amps: tuple, optimizer: str = "sgd") -> xr.Dataset:
    """Two members whose spurious energy is sum_k amps[k] exp(-rates[k] (t - T_CLS)) after
    T_CLS, logged every 50 steps to T_CLS + 5 e-folds of the slowest mode (the studies'
    horizon, config/deep_linear.yaml)."""
    end = T_CLS + 5.0 / min(rates)
    steps = np.arange(0.0, end + 1, 50.0)
    u = np.maximum(steps - T_CLS, 0.0)
    g = sum(a * np.exp(-r * u) for r, a in zip(rates, amps, strict=True))
    cell = {"cell_id": cid, "model": "deep_linear", "depth": 3, "weight_decay": WD_GD, "lr": LR,
            "optimizer": optimizer, "momentum": 0.0, "init_scheme": "orthogonal"}  # fmt: skip
    return xr.Dataset(
        {"spurious_energy": (("seed", "step"), np.repeat(g[None], 2, axis=0))},
        coords={"seed": [0, 1], "step": steps},
        attrs={"cell": json.dumps(cell), "model": "deep_linear"},
    )


def _gd_study(rates: tuple, amps: tuple = (1.0,)) -> dict:
    study = {c: _energy_store(c, rates, amps) for c in ("gd/d=3/a", "gd/d=3/b")}
    # an AdamW cell decaying at 0.002 / step (its own 2 wd lr: 0.002) is reported, never judged
    study["lazy/wd=0.1"] = _energy_store("lazy/wd=0.1", (0.002,), (1.0,), optimizer="adamw")
    return study


def test_late_rate_recovers_the_slowest_mode_of_a_mixture_at_the_study_horizon():
    steps = np.arange(0.0, T_CLS + 5 / RATE + 1, 50.0)
    u = np.maximum(steps - T_CLS, 0.0)
    margin = C.DEFAULTS["dln_rate_margin"]
    # a second mode of equal amplitude at 1.1-3 x the rate: the estimate errs only upwards (the
    # faster mode's remnant) and by less than the claims' margin (measured: <= 6.4%)
    for fast, amp in ((3.0, 10.0), (2.0, 3.0), (1.5, 1.0), (1.27, 1.0), (1.1, 1.0)):
        g = amp * np.exp(-fast * RATE * u) + np.exp(-RATE * u)
        est = TR.late_rate(steps, g, T_CLS, 0.25)
        assert RATE <= est <= (1 + margin) * RATE, (fast, amp, est / RATE)
    assert np.isclose(TR.late_rate(steps, np.exp(-RATE * u), T_CLS, 0.25), RATE, rtol=1e-9)
    assert np.isnan(TR.late_rate(steps, np.zeros_like(steps), T_CLS, 0.25))  # no positive log
    assert np.isnan(TR.late_rate(steps, np.exp(-RATE * u), np.nan, 0.25))  # no T_cls


def test_tail_rate_passes_at_2_wd_lr_and_reports_adamw_rates_unjudged():
    got = _by_id(_gd_clocks(), study=_gd_study((RATE,)))["dln_tail_rate"]
    assert got["verdict"] == "PASS", got["evidence"]
    cell = got["details"]["per_cell"]["gd/d=3/a"]
    assert np.isclose(cell["per_2wdlr"], 1.0, rtol=1e-6)
    assert np.isclose(cell["rate_hi"], 3 * cell["rate_lo"])
    assert np.isclose(got["details"]["reported"]["lazy/wd=0.1"], 0.002)
    assert "out of scope (reported, not judged)" in got["evidence"]


@pytest.mark.parametrize(
    ("rates", "amps", "verdict"),
    [
        ((2.5 * RATE,), (1.0,), "PASS"),  # inside [2 wd lr, 2 L wd lr], L = 3
        ((0.5 * RATE,), (1.0,), "FAIL"),  # slower than the first layer's own decay
        ((3.5 * RATE,), (1.0,), "FAIL"),  # beyond (1 + 0.1) 2 L wd lr
        ((3 * RATE, RATE), (10.0, 1.0), "PASS"),  # a mixture: its slowest mode is judged
    ],
)
def test_tail_rate_band_and_margin(rates, amps, verdict):
    got = _by_id(_gd_clocks(), study=_gd_study(rates, amps))["dln_tail_rate"]
    assert got["verdict"] == verdict, got["evidence"]


def test_tail_rate_reports_the_clocks_tail_fit_without_judging_it():
    clocks = _gd_clocks(law="power")  # the exp-vs-power fit's choice on a mixture
    got = _by_id(clocks, study=_gd_study((RATE,)))["dln_tail_rate"]
    assert got["verdict"] == "PASS" and "power 3" in got["evidence"]


def test_tail_rate_margin_comes_from_the_claims_section():
    study = _gd_study((0.95 * RATE,))
    assert _by_id(_gd_clocks(), study=study)["dln_tail_rate"]["verdict"] == "PASS"
    strict = _by_id(_gd_clocks(), study=study, settings={"dln_rate_margin": 0.01})
    assert strict["dln_tail_rate"]["verdict"] == "FAIL"


def test_tail_rate_excludes_and_counts_members_without_t_cls():
    got = _by_id(_gd_clocks(t_cls=np.nan), study=_gd_study((RATE,)))["dln_tail_rate"]
    assert got["verdict"] == "INCONCLUSIVE"
    assert got["details"]["cls_censored_members"] == 6
    assert "6 GD members without T_cls(eps_star)" in got["evidence"]


def _decision(decision: str) -> dict:
    """A laws-stage record of rep_spurious (analyze/law_stage.py) with `decision`."""
    drift = {"log-like": (-0.1, 0.1), "polynomial": (1.0, 2.0)}[decision]
    return {"decision": decision, "drift_low": drift[0], "drift_high": drift[1], "k": 0.1,
            "k_low": 0.05, "k_high": 0.15, "margin": DRIFT_MARGIN, "reason": decision,
            "resolve": ""}  # fmt: skip


def _calibration(cells, wrong: float = 0.0) -> dict:
    """A calibration.json of one horizon whose known-zero gap families (rep_spurious' zero is
    known) come back confidently wrong in a share `wrong` of the draws (60: enough for the
    Clopper-Pearson veto to allow a verdict with 0 wrong)."""
    fams = {
        n: {"family": n, "clock": "rep", "truth": POLYNOMIAL if "power" in n else LOG_LIKE,
            "draws": 60, "correct": 1.0 - wrong, "inconclusive": 0.0, "wrong": wrong,
            "coverage": 0.95, "n_interval": 20, "decisions": {}, "note": n,
            "identifiable": wrong == 0.0}
        for n in LC.REP_KNOWN
    }  # fmt: skip
    return {"draws": 60, "horizons": {"H": {"families": fams}}, "cells": dict.fromkeys(cells, "H")}


def _dln_rep_law(decisions: dict[str, str], wrong: float = 0.0) -> dict:
    laws = {"cells": {c: {"clocks": {"rep_spurious": _decision(d)}} for c, d in decisions.items()},
            "calibration": _calibration(decisions, wrong)}  # fmt: skip
    return {c["id"]: c for c in C.evaluate(None, _gd_clocks(), None, {}, laws=laws)}["dln_rep_law"]


def test_rep_law_takes_the_laws_stage_decision_on_plain_gd_cells_only():
    """dln_rep_law reads the laws stage (effect-size decision on the known-zero spurious
    energy), not fits.json's AIC choice; AdamW cells are out of its scope."""
    decisions = {"gd/d=3/a": LOG_LIKE, "gd/d=3/b": LOG_LIKE, "lazy/wd=0.1": POLYNOMIAL}
    got = _dln_rep_law(decisions)
    assert got["verdict"] == "PASS", got["evidence"]
    assert set(got["details"]["laws"]) == {"gd/d=3/a", "gd/d=3/b"}  # the AdamW cell is out
    # the calibration vetoes a verdict its estimators get confidently wrong at this horizon
    assert _dln_rep_law(decisions, wrong=0.2)["verdict"] == "INCONCLUSIVE"
    decisions.update({"gd/d=3/a": POLYNOMIAL, "gd/d=3/b": POLYNOMIAL})
    assert _dln_rep_law(decisions)["verdict"] == "FAIL"


def _sv_store(cell_id: str, rates: np.ndarray) -> xr.Dataset:
    steps = np.arange(0, 1001, 50)
    s0 = np.array([5.0, 3.0, 1.0, 0.5])
    sv = s0[None, None, :] * np.exp(-steps[None, :, None] * rates[None, None, :])
    sv = np.repeat(sv, 2, axis=0)
    cell = {"cell_id": cell_id, "model": "deep_linear", "depth": 3, "weight_decay": WD_GD,
            "init_scheme": "orthogonal", "optimizer": "sgd", "momentum": 0.0, "lr": LR}  # fmt: skip
    return xr.Dataset(
        {"singular_values": (("seed", "step", "sv"), sv)},
        coords={"seed": [0, 1], "step": steps},
        attrs={"cell": json.dumps(cell)},
    )


def test_small_singular_values_shrink_faster_from_the_late_rates():
    clocks = _gd_clocks()
    ordered = np.array([1e-4, 5e-4, 2e-3, 4e-3])  # smallest singular value fastest
    study = {c: _sv_store(c, ordered) for c in ("gd/d=3/a", "gd/d=3/b")}
    got = _by_id(clocks, study=study)["small_sv_shrink_faster"]
    assert got["verdict"] == "PASS", got["evidence"]
    assert all(np.isclose(v, 1.0) for v in got["details"]["rho"].values())
    study = {c: _sv_store(c, ordered[::-1]) for c in ("gd/d=3/a", "gd/d=3/b")}
    got = _by_id(clocks, study=study)["small_sv_shrink_faster"]
    assert got["verdict"] == "FAIL"
    assert _by_id(clocks)["small_sv_shrink_faster"]["verdict"] == "INCONCLUSIVE"


@pytest.mark.slow  # > 2 s: full suite only (fast tier < 90 s)
def test_deep_lazy_figure_puts_lazy_next_to_rich_and_saves_identically(tmp_path):
    from twoclocks.report import figures as F

    steps = np.arange(0, 2001, 100)
    stores = {}
    for cid, scheme in (("lazy/wd=0.1", "orthogonal"), ("rich/wd=0.1", "uniform")):
        t = steps[None, :] * np.ones((2, 1))
        cell = {"cell_id": cid, "model": "deep_linear", "depth": 3, "weight_decay": 0.1,
                "optimizer": "sgd", "init_scheme": scheme}  # fmt: skip
        dims = ("seed", "step")
        stores[cid] = xr.Dataset(
            {
                "train_loss": (dims, np.exp(-t / 100.0)),
                "spurious_energy": (dims, 2.0 * np.exp(-t / 500.0)),
                "srank": (("seed", "step", "matrix"), np.ones((2, len(steps), 1)) * 1.5),
                "test_acc": (dims, 0.4 + 0.1 * t / 2000.0),
            },
            coords={"seed": [0, 1], "step": steps, "matrix": ["A"]},
            attrs={"cell": json.dumps(cell)},
        )
    chart = F.fig_deep_lazy(stores)
    spec = chart.to_dict()
    assert len(spec["vconcat"]) == 4 and all(len(r["hconcat"]) == 2 for r in spec["vconcat"])
    a = F.save_chart(chart, tmp_path / "a" / "deep_lazy")
    b = F.save_chart(F.fig_deep_lazy(stores), tmp_path / "b" / "deep_lazy")
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    del stores["lazy/wd=0.1"]["spurious_energy"], stores["rich/wd=0.1"]["spurious_energy"]
    with pytest.raises(F.FigureSkipped):
        F.fig_deep_lazy(stores)
