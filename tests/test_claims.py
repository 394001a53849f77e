"""Claims: verdicts on synthetic studies built to pass, fail, or lack data; law fits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import synthetic_report as sr

from twoclocks.analyze import claims as C

IDS = [
    "separation",
    "wd_earlier",
    "srank_drop",
    "cls_log_law",
    "rep_power_law",
    "grad_hierarchy",
    "gates_stable",
    "fourier",
    "deep_linear",
]


@pytest.fixture(scope="module")
def study():
    cells = sr.study()
    return cells, sr.clocks(cells)


def _by_id(claims):
    return {c["id"]: c for c in claims}


def test_synthetic_grokking_passes_every_claim(study):
    cells, clocks = study
    claims = C.evaluate_claims(cells, clocks, {}, {})
    assert [c["id"] for c in claims] == IDS
    for c in claims:
        assert set(c) == {"id", "claim", "verdict", "evidence", "details"}
        assert c["verdict"] == "PASS", (c["id"], c["evidence"])
        assert c["evidence"] and c["claim"]


def test_no_data_is_inconclusive_with_reason():
    claims = C.evaluate_claims(None, pd.DataFrame(), None, None)
    assert [c["id"] for c in claims] == IDS
    assert all(c["verdict"] == "INCONCLUSIVE" and c["evidence"] for c in claims)


def test_no_deep_cells_is_inconclusive(study):
    cells = sr.study(deep=False)
    got = _by_id(C.evaluate_claims(cells, sr.clocks(cells), {}, {}))
    assert got["deep_linear"]["verdict"] == "INCONCLUSIVE"
    assert "no deep linear" in got["deep_linear"]["evidence"]
    assert got["separation"]["verdict"] == "PASS"


def test_censored_generalisation_is_inconclusive(study):
    cells, clocks = study
    clocks = clocks.copy()
    gen = clocks["clock"] == "gen_acc"
    clocks.loc[gen, "censored"] = True
    clocks.loc[gen, "step"] = np.nan
    got = _by_id(C.evaluate_claims(cells, clocks, {}, {}))
    assert got["separation"]["verdict"] == "INCONCLUSIVE"
    assert "censored" in got["separation"]["evidence"]
    assert got["wd_earlier"]["verdict"] == "INCONCLUSIVE"


def test_reversed_weight_decay_fails(study):
    cells, clocks = study
    flip = {0.6: 1.0, 1.0: 0.6, 0.8: 0.8}
    cells = {k: v.copy() for k, v in cells.items()}
    for ds in cells.values():
        p = json.loads(ds.attrs["cell"])
        if p["model"] == "relu_embed":
            p["weight_decay"] = flip[p["weight_decay"]]
            ds.attrs["cell"] = json.dumps(p)
    got = _by_id(C.evaluate_claims(cells, clocks, {}, {}))
    assert got["wd_earlier"]["verdict"] == "FAIL"
    assert got["wd_earlier"]["details"]["rho"] == [1.0]


def test_fast_generalisation_fails_separation_and_threshold_override(study):
    cells, clocks = study
    claims = _by_id(C.evaluate_claims(cells, clocks, {}, {"separation_min_ratio": 100.0}))
    assert claims["separation"]["verdict"] == "FAIL"
    clocks = clocks.copy()
    t_cls = C.clock_times(clocks, "cls", 1e-6).set_index(["cell_id", "seed"])["step"]
    gen = clocks["clock"] == "gen_acc"
    keys = list(zip(clocks.loc[gen, "cell_id"], clocks.loc[gen, "seed"], strict=True))
    clocks.loc[gen, "step"] = [1.2 * t_cls[k] for k in keys]
    got = _by_id(C.evaluate_claims(cells, clocks, {}, {}))
    assert got["separation"]["verdict"] == "FAIL"
    assert got["separation"]["details"]["per_cell"]["relu/wd=0.6"] == pytest.approx(1.2)


def test_fit_cls_laws_prefers_the_true_law():
    eps = np.array([1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7])
    x = np.log(1 / eps)
    log_law = C.fit_cls_laws(eps, 100 + 50 * x)
    assert log_law["slope"] == pytest.approx(50) and log_law["aic_log"] < log_law["aic_power"]
    power = C.fit_cls_laws(eps, 3 * np.exp(0.5 * x))
    assert power["aic_power"] < power["aic_log"] and power["power_exponent"] == pytest.approx(0.5)


def test_fit_rep_power_recovers_exponent_and_onset():
    eta = np.geomspace(0.5, 1e-3, 8)
    fit = C.fit_rep_power(eta, 1000 + 40 * eta**-0.4)
    assert fit["exponent"] == pytest.approx(0.4, abs=0.02)
    assert fit["theta"] == pytest.approx(0.7, abs=0.01)
    assert fit["t_kl"] == pytest.approx(1000, rel=0.02)


def test_fits_json_entries_override_local_fits(study):
    _cells, clocks = study

    def rec(fit, clock, status="ok", **params):
        return {
            "fit": fit,
            "clock": clock,
            "status": status,
            "params": {k: {"estimate": v} for k, v in params.items()},
        }

    fits = {
        "cells": {
            "relu/wd=0.6": {
                "fits": [
                    rec("cls_log", "cls", slope=1.0, intercept=0.0),
                    rec("cls_compare", "cls", delta_aic=-5.0, delta_bic=-4.0),
                    rec("rep_power", "rep_srank", "insufficient"),
                ]
            }
        }
    }
    laws = C.law_fits(clocks, fits)
    assert laws["cls"]["relu/wd=0.6"] == {
        "slope": 1.0,
        "intercept": 0.0,
        "delta_aic": -5.0,
        "delta_bic": -4.0,
        "source": "fits",
    }
    assert laws["cls"]["relu/wd=0.8"]["source"] == "claims.law_fits"
    assert laws["rep_srank"]["relu/wd=0.6"]["source"] == "claims.law_fits"
    got = _by_id(C.evaluate_claims(_cells, clocks, fits, {}))
    assert got["cls_log_law"]["verdict"] == "PASS"  # 4 of 5 cells still prefer the log law
    assert "fits.json: 1 cells" in got["cls_log_law"]["evidence"]


def test_stacked_study_dataset_is_split_per_cell(study):
    cells, _clocks = study
    relu = [cells[f"relu/wd={wd}"] for wd in sr.RELU_WDS]
    stacked = pd.Series(relu)  # list-like of Datasets
    got = C.cell_datasets(list(stacked))
    assert [c[0] for c in got] == sorted(f"relu/wd={wd}" for wd in sr.RELU_WDS)
    import xarray as xr

    ds = xr.concat(
        [r.drop_vars([v for v in r.data_vars if v.startswith("snap")]) for r in relu],
        dim="cell",
        join="outer",
        data_vars="all",
        coords="different",
        compat="equals",
        combine_attrs="drop",
    )
    ds = ds.assign_coords(cell=[f"relu/wd={wd}" for wd in sr.RELU_WDS])
    ds.attrs["cells"] = json.dumps(
        {
            f"relu/wd={wd}": json.loads(r.attrs["cell"])
            for wd, r in zip(sr.RELU_WDS, relu, strict=True)
        }
    )
    split = C.cell_datasets(ds)
    assert [c[0] for c in split] == [c[0] for c in got]
    assert split[0][1]["weight_decay"] == 0.6 and split[0][2].sizes["seed"] == 3


def test_claims_json_is_strict_json(study):
    cells, clocks = study
    text = C.claims_to_json(C.evaluate_claims(cells, clocks, {}, {}))
    assert "NaN" not in text and "Infinity" not in text
    assert [c["id"] for c in json.loads(text)] == IDS


def test_separation_ratio_is_nan_when_the_classifier_clock_is_censored():
    import pandas as pd

    from twoclocks.analyze.claims import separation_ratios

    rows = []
    for seed, (t_cls, t_gen) in enumerate([(np.nan, 1300.0), (400.0, 1200.0)]):
        rows.append(
            dict(
                cell_id="c",
                seed=seed,
                clock="cls",
                level=1e-6,
                step=t_cls,
                censored=bool(np.isnan(t_cls)),
                diverged=False,
                below_floor=False,
            )
        )
        rows.append(
            dict(
                cell_id="c",
                seed=seed,
                clock="gen_acc",
                level=0.99,
                step=t_gen,
                censored=False,
                diverged=False,
                below_floor=False,
            )
        )
    ratios = separation_ratios(pd.DataFrame(rows)).set_index("seed")["ratio"]
    assert np.isnan(ratios[0])
    assert ratios[1] == pytest.approx(3.0)
