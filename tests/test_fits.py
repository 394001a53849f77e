"""Fits on clocks from synthetic trajectories with known laws (twoclocks.analyze.fits)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_clocks import synthetic_trajectory

from twoclocks.analyze.clocks import extract_clocks
from twoclocks.analyze.fits import FIT_COLUMNS, fit_clocks

FAST = {"bootstrap_samples": 200, "stability_window_logs": 3}


def _param(table: pd.DataFrame, fit: str, param: str, clock: str | None = None) -> pd.Series:
    sel = (table["fit"] == fit) & (table["param"] == param)
    if clock is not None:
        sel &= table["clock"] == clock
    rows = table[sel]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def _exp_tail_cell(rate, noise, n_seeds=4, cell_id="relu/wd=1.0", wd=1.0, rng_seed=0):
    """Train CE c_s * exp(-rate t) * lognormal noise: T_cls(eps) = log(c_s/eps)/rate."""
    rng = np.random.default_rng(rng_seed)
    steps = np.arange(0, int(20 / rate), max(1, int(0.05 / rate)))
    c = rng.uniform(1.0, 3.0, size=(n_seeds, 1))
    loss = (
        c * np.exp(-rate * steps)[None] * np.exp(noise * rng.standard_normal((n_seeds, len(steps))))
    )
    ds = synthetic_trajectory(loss, steps)
    ds.attrs["cell"] = json.dumps({**json.loads(ds.attrs["cell"]), "cell_id": cell_id})
    return extract_clocks(
        ds, {**FAST, "eps": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]}, {"weight_decay": wd}
    )


@settings(max_examples=15, deadline=None)
@given(rate=st.floats(1e-3, 2e-2), noise=st.floats(0.0, 0.05), seed=st.integers(0, 100))
def test_log_clock_slope_recovers_rate(rate, noise, seed):
    """Slope of T_cls on log(1/eps) = 1/rate within 3 %; the log law beats the power law."""
    clocks = _exp_tail_cell(rate, noise, rng_seed=seed)
    table, summary = fit_clocks(clocks, FAST, None)
    slope = _param(table, "cls_log", "slope")
    assert slope["status"] == "ok"
    assert slope["estimate"] == pytest.approx(1 / rate, rel=0.03)
    assert slope["boot_low"] <= slope["estimate"] <= slope["boot_high"]
    assert _param(table, "cls_log", "nu")["estimate"] == pytest.approx(rate, rel=0.03)
    cmp = _param(table, "cls_compare", "delta_aic")
    assert cmp["estimate"] > 0 and cmp["preferred"] == "log"
    assert summary["cells"]["relu/wd=1.0"]["counts"]["cls"]["n_censored"] == 0


def _power_gap_cell(theta, t0, rule, n_seeds=3, rng_seed=0):
    """Fourier gap 0.8 * min(1, ((t - T0)/s)^(-1/(2 theta - 1))): T_rep - T0 = s eta^-(2theta-1)."""
    rng = np.random.default_rng(rng_seed)
    b = 2 * theta - 1
    s = rng.uniform(50, 100, size=(n_seeds, 1))
    t_end = t0 + 100 * 1e3**b * 3
    steps = np.unique(
        np.concatenate([np.arange(0, t0 + 1, 50), t0 + np.geomspace(1, t_end - t0, 4000)]).astype(
            np.int64
        )
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(steps[None] > t0, (steps[None] - t0) / s, 0.0)
        gap = 0.8 * np.minimum(1.0, np.where(rel > 0, rel ** (-1 / b), 1.0))
    loss = np.exp(-0.01 * steps)[None].repeat(n_seeds, 0)
    ds = synthetic_trajectory(loss, steps, extra={"fourier_gap": gap})
    eta = [0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]
    sets = {**FAST, "eta": eta, "t_kl_rule": rule}
    return extract_clocks(ds, sets, {}), sets


@pytest.mark.parametrize(("rule", "t0"), [("zero", 0), ("profile", 3000)])
@pytest.mark.parametrize("theta", [0.6, 0.75, 0.9])
def test_power_law_gap_recovers_theta(rule, t0, theta):
    clocks, sets = _power_gap_cell(theta, t0, rule)
    table, _ = fit_clocks(clocks, sets, None)
    th = _param(table, "rep_power", "theta", "rep_fourier")
    assert th["status"] == "ok"
    assert th["estimate"] == pytest.approx(theta, abs=0.02)
    assert th["ci_low"] <= th["estimate"] <= th["ci_high"]
    if rule == "profile":
        assert _param(table, "rep_power", "t_kl", "rep_fourier")["estimate"] == pytest.approx(
            t0, rel=0.05
        )


def test_late_slope_cross_check_recovers_theta():
    """Energy gap Delta = ((t - T0)/s)^(-1/(2 theta - 1)) (wd = 0): late slope gives theta."""
    theta, t0, s = 0.7, 500.0, 40.0
    p = 1 / (2 * theta - 1)
    steps = np.unique(
        np.concatenate([np.arange(0, 501, 25), 500 + np.geomspace(1, 2e5, 800)]).astype(np.int64)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.minimum(1.0, np.where(steps > t0, ((steps - t0) / s) ** (-p), 1.0))
    loss = (1e-9 + delta)[None].repeat(2, 0)
    ds = synthetic_trajectory(loss, steps, extra={"sqnorm_total": np.zeros_like(loss)})
    sets = {**FAST, "t_kl_rule": "zero", "late_gap_range": [1e-4, 1e-1]}
    ds.attrs["cell"] = json.dumps({**json.loads(ds.attrs["cell"]), "cell_id": "c"})
    clocks = extract_clocks(ds, sets, {})
    table, summary = fit_clocks(clocks, {**sets, "t_kl_rule": "profile"}, {"c": ds})
    late = _param(table, "late_slope", "theta")
    assert late["status"] == "ok"
    assert late["estimate"] == pytest.approx(theta, abs=0.03)
    rep = _param(table, "rep_power", "theta", "rep_energy")
    assert rep["estimate"] == pytest.approx(theta, abs=0.03)


def test_censored_diverged_degrade_to_insufficient():
    """Too few uncensored levels -> status insufficient with a reason, never a number."""
    steps = np.arange(0, 2001, 20)
    slow = np.maximum(np.exp(-0.002 * steps), 0.05)  # only eps=0.1 ever reached
    loss = np.stack([slow, slow, np.exp(-0.01 * steps)])
    ds = synthetic_trajectory(loss, steps, diverged_step=np.array([-1, -1, 300]))
    clocks = extract_clocks(ds, FAST, {"weight_decay": 1.0})
    table, summary = fit_clocks(clocks, FAST, None)
    assert list(table.columns) == list(FIT_COLUMNS)
    cls = table[table["clock"] == "cls"]
    assert set(cls["fit"]) == {"cls_log", "cls_power", "cls_compare"}
    assert (cls["status"] == "insufficient").all()
    assert cls["estimate"].isna().all() and (cls["reason"].str.len() > 0).all()
    row = cls.iloc[0]
    assert row["n_diverged"] == 1 and row["n_seeds"] == 3
    assert row["n_censored"] == 20 and row["censored_fraction"] == pytest.approx(20 / 22)
    json.dumps(summary, allow_nan=False)


def test_empty_and_single_seed_do_not_crash():
    clocks = _exp_tail_cell(0.01, 0.01, n_seeds=1)
    table, summary = fit_clocks(clocks, {**FAST, "min_points": 2}, None)
    slope = _param(table, "cls_log", "slope")
    assert slope["status"] == "ok" and np.isnan(slope["boot_low"])  # one seed: no bootstrap
    sparse = clocks[clocks["clock"] == "cls"].head(2)
    table, _ = fit_clocks(sparse, FAST, None)
    assert (table["status"] == "insufficient").all()
    json.dumps(summary, allow_nan=False)


def test_ratio_and_scaling_across_weight_decay():
    """Rate proportional to weight_decay -> T_cls ~ wd^-1: scaling exponent -1."""
    wds = [0.25, 0.5, 1.0, 2.0]
    frames = [
        _exp_tail_cell(0.004 * wd, 0.0, cell_id=f"relu/wd={wd}", wd=wd, rng_seed=i)
        for i, wd in enumerate(wds)
    ]
    for f in frames:  # a constant depth axis must not be fitted
        f["depth"] = 2
    clocks = pd.concat(frames, ignore_index=True)
    table, summary = fit_clocks(clocks, FAST, None)
    sc = table[(table["fit"] == "scaling") & (table["clock"] == "cls")]
    assert set(sc["axis"]) == {"weight_decay"}
    exp = sc[sc["param"] == "exponent"].iloc[0]
    assert exp["status"] == "ok" and exp["cell_id"] == "*"
    # T_cls(1e-3) = log(c/1e-3)/(0.004 wd), c in [1, 3] per seed: exponent ~ -1
    assert exp["estimate"] == pytest.approx(-1.0, abs=0.1)
    assert exp["boot_low"] <= exp["estimate"] <= exp["boot_high"]
    assert len(summary["scaling"]) >= 1 and summary["n_cells"] == 4


def test_separation_ratio():
    steps = np.arange(0, 5001, 10)
    t = steps.astype(float)
    loss = np.exp(-0.01 * t)[None].repeat(3, 0)  # T_cls(1e-3) = 100 log(1000)
    acc = np.clip(t / 2000, 0, 1)[None].repeat(3, 0)  # T_gen(0.99) = 1980
    ds = synthetic_trajectory(loss, steps, extra={"test_acc": acc})
    clocks = extract_clocks(ds, FAST, {})
    table, _ = fit_clocks(clocks, FAST, None)
    r = _param(table, "ratio", "ratio", "gen_acc")
    assert r["status"] == "ok"
    assert r["estimate"] == pytest.approx(1980 / (100 * np.log(1000)), rel=1e-6)


def test_onset_rule_uses_per_seed_srank_onset_and_counts_right_censored_ratio():
    """T_KL (onset) = each seed's rep_srank clock at t_kl_onset_eta; censored ratios counted."""
    steps = np.arange(0, 4001, 5)
    t = steps.astype(float)
    onsets = np.array([[500.0], [800.0], [1100.0]])
    srank = 1 + 35 * np.minimum(1.0, np.exp(-(t - onsets) / 400))
    loss = np.exp(-0.01 * t)[None].repeat(3, 0)
    acc = np.where(np.arange(3)[:, None] < 2, np.clip(t / 2000, 0, 1), 0.5)  # seed 2 never
    ds = synthetic_trajectory(loss, steps, srank=srank, extra={"test_acc": acc})
    sets = {**FAST, "eta": [0.9, 0.5, 0.2, 0.1, 0.05], "t_kl_rule": "onset"}
    clocks = extract_clocks(ds, sets, {})
    table, _ = fit_clocks(clocks, sets, None)
    tkl = _param(table, "rep_power", "t_kl", "rep_srank")
    onset = onsets[:, 0] + 400 * np.log(1 / 0.9)  # gap = exp(-(t - onset)/400) crosses 0.9
    assert tkl["status"] == "ok"
    assert tkl["estimate"] == pytest.approx(onset.mean(), rel=1e-3)
    ratio = _param(table, "ratio", "ratio", "gen_acc")
    assert ratio["n_points"] == 2 and ratio["n_censored"] == 1
    assert ratio["censored_fraction"] == pytest.approx(1 / 3)


def test_outputs_write_to_parquet_and_json(tmp_path):
    clocks = _exp_tail_cell(0.01, 0.01)
    table, summary = fit_clocks(clocks, FAST, None)
    clocks.to_parquet(tmp_path / "clocks.parquet")
    table.to_parquet(tmp_path / "fits.parquet")
    back = pd.read_parquet(tmp_path / "fits.parquet")
    assert list(back.columns) == list(FIT_COLUMNS) and len(back) == len(table)
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["cells"]["relu/wd=1.0"]["fits"][0]["fit"] == "cls_log"
