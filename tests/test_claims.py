"""Claims: verdicts on synthetic studies built to pass, fail, or lack data; law fits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import synthetic_report as sr

from twoclocks.analyze import claims as C
from twoclocks.analyze.fits import fit_clocks
from twoclocks.replay.stage import measure_study

IDS = [
    "separation",
    "wd_earlier",
    "plateau_wd_scaling",
    "srank_drop",
    "srank_timing",
    "srank_generalisation",
    "cls_log_law",
    "margin_linear",
    "rep_power_law",
    "gap_at_gen",
    "grad_hierarchy",
    "gates_stable",
    "fourier",
    "deep_linear",
    "dln_tail_rate",
    "dln_lazy_rich",
    "dln_rep_gates_gen",
    "small_sv_shrink_faster",
    "dln_depth_rate",
    "dln_rep_law",
]
# the deep-linear lazy-regime claims need the spurious-energy clock (issue 13), which the
# synthetic study does not have: tests/test_deep_linear_claims.py covers them
DLN_IDS = {
    "deep_linear",
    "dln_tail_rate",
    "dln_lazy_rich",
    "dln_rep_gates_gen",
    "small_sv_shrink_faster",
    "dln_depth_rate",
    "dln_rep_law",
}
# the theorems' plain-GD claims: the synthetic deep cells are AdamW, so no cell is in their scope
GD_ONLY_IDS = DLN_IDS - {"deep_linear"}
# the law claims read the laws and calibrate stages' tables: tests/test_law_wiring.py
LAW_IDS = ("cls_log_law", "rep_power_law")

DESCRIPTIVE = {"plateau_wd_scaling", "srank_timing", "srank_generalisation"}


@pytest.fixture(scope="module")
def study():
    cells = sr.study()
    return cells, sr.clocks(cells)


@pytest.fixture(scope="module")
def fits(study):
    """fits.json content from the fits stage's own code (claims never fit)."""
    return fit_clocks(study[1], {"bootstrap_samples": 200})[1]


def _by_id(claims):
    return {c["id"]: c for c in claims}


def test_synthetic_grokking_passes_every_claim(study, fits):
    cells, clocks = study
    measures = measure_study(cells, fourier_keep=6)  # the replay stage (gates from snapshots)
    claims = C.evaluate_claims(cells, clocks, fits, {}, measures=measures)
    assert [c["id"] for c in claims] == IDS
    for c in claims:
        assert set(c) == {"id", "claim", "verdict", "evidence", "details"}
        # the law claims read the laws stage's tables (tests/test_law_wiring.py), not fits.json
        want = "INCONCLUSIVE" if c["id"] in (*DLN_IDS, *LAW_IDS) else "PASS"
        want = "OUT OF SCOPE" if c["id"] in GD_ONLY_IDS else want  # not judged at all
        want = "MET" if c["id"] == "gates_stable" else want  # a precondition, not a claim
        want = "MEASURED" if c["id"] in DESCRIPTIVE else want  # the paper states no value
        # the synthetic clocks have no asymptote columns: tests/test_relu_gap_claims.py
        want = "INCONCLUSIVE" if c["id"] == "gap_at_gen" else want
        # no freeze-E ablation cell in the synthetic study: tests/test_relu_claims.py
        want = "INCONCLUSIVE" if c["id"] == "grad_hierarchy" else want
        assert c["verdict"] == want, (c["id"], c["evidence"])
        assert c["evidence"] and c["claim"]


def test_no_data_is_inconclusive_with_reason():
    claims = C.evaluate_claims(None, pd.DataFrame(), None, None)
    assert [c["id"] for c in claims] == IDS
    assert all(c["verdict"] == "INCONCLUSIVE" and c["evidence"] for c in claims)


def test_no_deep_cells_is_out_of_scope(study):
    cells = sr.study(deep=False)
    got = _by_id(C.evaluate_claims(cells, sr.clocks(cells), {}, {}))
    assert got["deep_linear"]["verdict"] == "OUT OF SCOPE"
    assert "no cell of this study is in the claim's scope" in got["deep_linear"]["evidence"]
    assert "relu_embed" in got["deep_linear"]["evidence"]
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


def _rec(cid_clock_status_law, **params):
    clock, status, law = cid_clock_status_law
    return {
        "fit": "law",
        "clock": clock,
        "status": status,
        "preferred": law,
        "reason": "" if status == "ok" else "2 uncensored post-fit levels < min_levels=4",
        "params": {
            k: {"estimate": v, "ci_low": v * 0.9, "ci_high": v * 1.1} for k, v in params.items()
        },
    }


def test_law_claims_never_read_fits_json_aic(study, fits):
    """fits.json's law fits decide nothing: without the laws stage's decisions the law claims
    are INCONCLUSIVE and say what is missing."""
    cells, clocks = study
    got = _by_id(C.evaluate_claims(cells, clocks, fits, {}))
    for cid in LAW_IDS:
        assert got[cid]["verdict"] == "INCONCLUSIVE"
        assert "no law decision" in got[cid]["evidence"]


def test_settings_are_used_and_unknown_keys_rejected(study, fits):
    cells, clocks = study
    base = _by_id(C.evaluate_claims(cells, clocks, fits, {}))
    strict = _by_id(C.evaluate_claims(cells, clocks, fits, {"gen_acc_level": 0.5}))
    assert "gen_acc@0.99" in base["separation"]["evidence"]
    assert "gen_acc@0.5" in strict["separation"]["evidence"]
    with pytest.raises(ValueError, match="unknown claims settings"):
        C.evaluate_claims(cells, clocks, fits, {"eta": [0.1]})


def test_claim_defaults_match_the_schema():
    from twoclocks.config import load_schema

    props = load_schema()["properties"]["claims"]["properties"]
    assert {k: v["default"] for k, v in props.items()} == C.DEFAULTS


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


def test_relapsed_runs_never_count_for_separation_or_weight_decay():
    """Issue 26: a run whose test accuracy falls back after T_gen is not a grokked run."""
    cells = sr.study(deep=False)
    clocks = sr.clocks(cells)
    clocks["relapse"] = False
    base = _by_id(C.evaluate_claims(cells, clocks, {}, {}))
    assert "relapsed (out): 0" in base["separation"]["evidence"]
    gen = (clocks["clock"] == "gen_acc") & (clocks["level"] == 0.99)
    # every run of the smallest weight decay relapses: no ratio, and it never grokked
    clocks.loc[gen & (clocks["cell_id"] == "relu/wd=0.6"), "relapse"] = True
    got = _by_id(C.evaluate_claims(cells, clocks, {}, {}))
    sep = got["separation"]
    assert "relapsed (out): 3" in sep["evidence"]
    assert set(sep["details"]["per_cell"]) == {"relu/wd=0.8", "relu/wd=1.0"}
    assert got["wd_earlier"]["details"]["t_gen"]["relu/wd=0.6"] == np.inf
    assert base["wd_earlier"]["details"]["t_gen"]["relu/wd=0.6"] < np.inf
