"""margin_linear (Assumption 3.4, Prop. 3.6), gap_at_gen (Thm 5.6) and plateau_wd_scaling on
synthetic stores and clocks with known answers, at the paper study's cadence (dense logs to step
100, then every 50 steps to 15,000; 3 seeds), including the cases that must stay INCONCLUSIVE."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from twoclocks.analyze import claims as C
from twoclocks.analyze.claims.margin import margin_run

STEPS = np.concatenate([np.arange(0, 100), np.arange(100, 15001, 50)]).astype(np.int64)
T = STEPS.astype(float)
SEEDS = (0, 1, 2)
WDS = (0.6, 0.8, 1.0)


def _store(cid: str, wd: float, lr: float = 1e-3, **variables) -> xr.Dataset:
    cell = {"cell_id": cid, "model": "relu_embed", "weight_decay": wd, "lr": lr}
    data = {k: (("seed", "step"), np.asarray(v, float)) for k, v in variables.items()}
    return xr.Dataset(
        data,
        coords={"seed": np.array(SEEDS, np.int64), "step": STEPS},
        attrs={"cell": json.dumps(cell), "model": "relu_embed", "dtype": "float64"},
    )


def _law(b: float, rel: float = 0.05, status: str = "ok") -> dict:
    """A fits.json cls law record with slope b (steps per unit of log(1/eps))."""
    p = {"estimate": b, "ci_low": b * (1 - rel), "ci_high": b * (1 + rel)}
    return {"fit": "law", "clock": "cls", "status": status, "preferred": "log",
            "params": {"b": p}}  # fmt: skip


def _fits(laws: dict, fit_time: str = "step") -> dict:
    return {"settings": {"fit_time": fit_time},
            "cells": {cid: {"fits": [rec]} for cid, rec in laws.items()}}  # fmt: skip


def _linear_margin_cell(cid: str, nu: float, noise: float = 0.01, seed: int = 0) -> xr.Dataset:
    """Minimum margin nu (t - t0) - 1 after a start-up (t0 = 200), seed jitter on nu and t0,
    multiplicative noise on the CE; the CE follows the margin: L = 2 exp(-(margin + 1))."""
    rng = np.random.default_rng(seed)
    m, L = [], []
    for i in range(len(SEEDS)):
        nu_i, t0 = nu * (1 + 0.03 * i), 200.0 + 20 * i
        true = nu_i * (T - t0) - 1.0
        m.append(true + noise * rng.normal(size=T.size))
        L.append(2.0 * np.exp(-(true + 1.0)) * np.exp(noise * rng.normal(size=T.size)))
    return _store(cid, 1.0, train_margin_min=np.array(m), train_loss=np.maximum(np.array(L), 1e-9))


def _margin(cells, fits, **settings):
    got = {c["id"]: c for c in C.evaluate_claims(cells, pd.DataFrame(), fits, settings)}
    return got["margin_linear"]


def test_margin_run_recovers_the_rate_the_window_and_the_contraction():
    ds = _linear_margin_cell("a", 0.01, noise=0.0)
    m, L = ds["train_margin_min"].values[0], ds["train_loss"].values[0]
    r = margin_run(STEPS, m, L, 1e-6, 8)
    assert r["t0"] == 350  # first log with a positive margin: 0.01 (t - 200) - 1 > 0
    assert r["t_end"] == pytest.approx(200 + 100 * np.log(2e6), abs=50)  # L = 1e-6 there
    assert r["nu"] == pytest.approx(0.01) and r["drift"] == pytest.approx(0.0, abs=1e-9)
    # L_{t+1}/L_t = exp(-nu): Prop. 3.6's mu = 1 - exp(-0.01)
    assert r["mu_median"] == pytest.approx(1 - np.exp(-0.01)) and r["mu_positive_fraction"] == 1
    assert margin_run(STEPS, m, L, 1e-6, 200) is None  # too few logs for the window


def test_linear_margin_with_the_cls_slope_passes_at_the_paper_cadence():
    cells = {f"relu/wd={w}": _linear_margin_cell(f"relu/wd={w}", 0.01 * w, seed=i)
             for i, w in enumerate((0.6, 0.8, 1.0))}  # fmt: skip
    fits = _fits({cid: _law(1 / (0.01 * w)) for cid, w in zip(cells, WDS, strict=True)})
    got = _margin(cells, fits)
    assert got["verdict"] == "PASS", got["evidence"]
    cell = got["details"]["cells"]["relu/wd=1.0"]
    assert cell["linear"] == "linear" and cell["match"] == "match"
    assert cell["nu"][0] == pytest.approx(0.0103, rel=0.02)
    assert "contraction" in got["evidence"]
    # a fit in tau = lr * step has its slope in tau units: converted with the cell's lr
    tau = _fits({c: _law(1e-3 / (0.01 * w)) for c, w in zip(cells, WDS, strict=True)}, "tau")
    assert _margin(cells, tau)["verdict"] == "PASS"


def test_a_slope_that_does_not_match_the_cls_law_fails():
    cells = {"relu/a": _linear_margin_cell("relu/a", 0.01)}
    got = _margin(cells, _fits({"relu/a": _law(3 / 0.01)}))
    assert got["verdict"] == "FAIL" and "mismatch" in got["evidence"]
    assert (
        "bound: the CE falls at least as fast as the minimum margin grows) in 0/1"
        in got["evidence"]
    )
    fast = _margin(cells, _fits({"relu/a": _law(0.4 / 0.01)}))  # the CE falls 2.5x faster
    assert fast["verdict"] == "FAIL" and "grows) in 1/1 cells" in fast["evidence"]


def test_a_logarithmic_margin_is_curved_and_fails():
    """GD without weight decay: the margin grows like log t (the CE like 1/t)."""
    m = np.array([3.0 * np.log1p(np.maximum(T - 200.0, 0) / 100.0) - 0.5 for _ in SEEDS])
    cells = {"relu/gd": _store("relu/gd", 0.0, train_margin_min=m, train_loss=2 * np.exp(-m))}
    got = _margin(cells, _fits({"relu/gd": _law(100.0)}))
    assert got["verdict"] == "FAIL"
    assert got["details"]["cells"]["relu/gd"]["linear"] == "curved"


def test_borderline_curvature_no_fit_or_short_windows_are_inconclusive():
    # the late half's slope is 0.3 / 0.5 / 0.7 of the early one: drifts straddle the bound
    loss = np.exp(-T * np.log(1e7) / T[-1]) * np.ones((3, 1))  # 1e-6 at step 12,857
    mid = 0.5 * (250.0 + 12900.0)  # the window: first positive margin to train CE <= 1e-6
    m = np.array([np.where(T < mid, 1e-3 * (T - 200), 1e-3 * (mid - 200) + r * 1e-3 * (T - mid))
                  for r in (0.3, 0.5, 0.7)])  # fmt: skip
    cells = {"relu/b": _store("relu/b", 1.0, train_margin_min=m, train_loss=loss)}
    got = _margin(cells, _fits({"relu/b": _law(1000.0)}))
    assert got["verdict"] == "INCONCLUSIVE"
    assert got["details"]["cells"]["relu/b"]["linear"] == "undecided"
    # linear but no ok cls law fit: the slope cannot be compared
    lin = {"relu/a": _linear_margin_cell("relu/a", 0.01)}
    none = _margin(lin, _fits({"relu/a": _law(100.0, status="insufficient")}))
    assert none["verdict"] == "INCONCLUSIVE" and "no ok cls law fit" in none["evidence"]
    # the margin turns positive only on the last 5 logs
    late = np.where(T > T[-6], 1.0, -1.0) * np.ones((3, 1))
    short = {
        "relu/s": _store("relu/s", 1.0, train_margin_min=late, train_loss=np.ones((3, T.size)))
    }
    why = _margin(short, None)
    assert why["verdict"] == "INCONCLUSIVE" and "3 runs too short" in why["evidence"]


# --- gap_at_gen ------------------------------------------------------------------------------
def _gap_cell(cid: str, wd: float, t_cls: float, g_at_gen: float, tau_c: float = 800.0):
    """A stable rank of UW that rises to its post-fit peak 21 at t_cls and decays to 1 with time
    scale tau_c; T_gen is where the normalised gap is `g_at_gen`. Returns (store, clock rows)."""
    t_gen = t_cls + tau_c * np.log(1 / g_at_gen)
    g = np.where(T < t_cls, 5.0 + 16.0 * T / t_cls, 1.0 + 20.0 * np.exp(-(T - t_cls) / tau_c))
    srank = np.stack([np.stack([g] * 4, -1)] * 3)  # (seed, step, matrix)
    loss = np.exp(-0.004 * T) * np.ones((3, 1))
    ds = _store(cid, wd, train_loss=loss, test_loss=0.01 + 0 * loss)
    ds["srank"] = (("seed", "step", "matrix"), srank)
    ds = ds.assign_coords(matrix=["E", "W1", "U", "UW"])
    ds.attrs["end_to_end_matrix"] = "UW"
    rows = []
    for i, s in enumerate(SEEDS):
        base = {"cell_id": cid, "weight_decay": wd, "seed": s, "censored": False}
        tg = t_gen * (1 + 0.002 * i)
        rows.append({**base, "clock": "gen_acc", "level": 0.99, "step": tg})
        rows.append({**base, "clock": "rep_srank", "level": 0.1, "step": tg + 500,
                     "t_cls_ref": t_cls, "g_inf": 1.0, "pre_fit": False})  # fmt: skip
    return ds, rows


def _gap_study(spec: dict):
    cells, rows = {}, []
    for cid, (wd, t_cls, g) in spec.items():
        ds, r = _gap_cell(cid, wd, t_cls, g)
        cells[cid] = ds
        rows += r
    got = {c["id"]: c for c in C.evaluate_claims(cells, pd.DataFrame(rows), None, {})}
    return got["gap_at_gen"]


def test_the_same_gap_at_t_gen_in_every_cell_passes():
    got = _gap_study({f"relu/wd={w}": (w, 900.0 / w, 0.2) for w in (0.6, 0.8, 1.0)})
    assert got["verdict"] == "PASS", got["evidence"]
    assert all(v == pytest.approx(0.2, rel=0.05) for v in got["details"]["cells"].values())
    # the gap is the same but the train CE at T_gen differs: no coupling (q ~ 0)
    assert abs(got["details"]["q_train"][0]) < 0.05


def test_gaps_that_differ_across_cells_fail_and_the_coupling_is_measured():
    # T_cls fixed, the gap at T_gen = (train CE at T_gen)^(1/2) up to a constant: q = 1/2
    spec, t_cls = {}, 900.0
    for w, g in ((0.6, 0.4), (0.8, 0.15), (1.0, 0.05)):
        spec[f"relu/wd={w}"] = (w, t_cls, g)
    got = _gap_study(spec)
    assert got["verdict"] == "FAIL", got["evidence"]
    assert got["details"]["ratio"][0] == pytest.approx(8.0, rel=0.05)
    # log g = -(t - t_cls)/800, log L = -0.004 t: q = 1 / (800 * 0.004) = 0.3125
    assert got["details"]["q_train"][0] == pytest.approx(0.3125, rel=0.02)


def test_gap_at_gen_is_inconclusive_with_too_few_cells_or_a_censored_clock():
    two = _gap_study({f"relu/wd={w}": (w, 900.0, 0.2) for w in (0.8, 1.0)})
    assert two["verdict"] == "INCONCLUSIVE" and "need 3" in two["evidence"]
    # borderline: max/min of the cell medians straddles the factor 2 across seed draws
    cells, rows = {}, []
    for w, g in ((0.6, 0.2), (0.8, 0.25), (1.0, 0.4)):
        ds, r = _gap_cell(f"relu/wd={w}", w, 900.0, g)
        cells[f"relu/wd={w}"] = ds
        for row in r:  # two seeds of the wd 1.0 cell grok later (gaps 0.1, 0.2 there)
            if w == 1.0 and row["clock"] == "gen_acc" and row["seed"] == 2:
                row["step"] = 900.0 + 800.0 * np.log(1 / 0.1)
            if w == 1.0 and row["clock"] == "gen_acc" and row["seed"] == 1:
                row["step"] = 900.0 + 800.0 * np.log(1 / 0.2)
        rows += r
    got = {c["id"]: c for c in C.evaluate_claims(cells, pd.DataFrame(rows), None, {})}
    gap = got["gap_at_gen"]
    assert gap["verdict"] == "INCONCLUSIVE", gap["evidence"]
    lo, hi = gap["details"]["ratio"][1:]
    assert lo <= 2.0 < hi  # the interval holds the bound: neither the same nor different


# --- plateau_wd_scaling ------------------------------------------------------------------------
def _plateau_clocks(k: float, wds=(0.6, 0.7, 0.8, 0.9, 1.0), jitter=0.03) -> pd.DataFrame:
    rows = []
    for w in wds:
        for i, s in enumerate(SEEDS):
            base = {"cell_id": f"relu/wd={w}", "weight_decay": w, "seed": s, "censored": False}
            plateau = 2000.0 * w**k * (1 + jitter * (i - 1))
            rows.append({**base, "clock": "cls", "level": 1e-6, "step": 900.0})
            rows.append({**base, "clock": "gen_acc", "level": 0.99, "step": 900.0 + plateau})
    return pd.DataFrame(rows)


def _plateau(clocks):
    cells = {c: _store(c, float(c.split("=")[1]), train_loss=np.ones((3, T.size)))
             for c in clocks["cell_id"].unique()}  # fmt: skip
    got = {c["id"]: c for c in C.evaluate_claims(cells, clocks, None, {})}
    return got["plateau_wd_scaling"]


def test_plateau_exponent_is_recovered_with_its_interval():
    got = _plateau(_plateau_clocks(-1.0))
    assert got["verdict"] == "MEASURED"
    fit = got["details"]["fits"]["gen_acc"][0]
    assert fit["exponent"][0] == pytest.approx(-1.0, abs=0.01) and fit["minus_one_inside"]
    half = _plateau(_plateau_clocks(-0.5))["details"]["fits"]["gen_acc"][0]
    assert half["exponent"][0] == pytest.approx(-0.5, abs=0.01)
    assert not half["minus_one_inside"] and half["exponent"][1] > -0.7


def test_plateau_needs_three_weight_decays():
    got = _plateau(_plateau_clocks(-1.0, wds=(0.8, 1.0)))
    assert got["verdict"] == "INCONCLUSIVE" and "3 positive weight decays" in got["evidence"]
