"""Fits on clocks with known laws (analyze.fits); whole stores: test_clocks_known_truth.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_clocks import synthetic_trajectory

from twoclocks.analyze.clocks import extract_clocks
from twoclocks.analyze.fit_common import boot_counts, param
from twoclocks.analyze.fits import FIT_COLUMNS, K_MIN, fit_clocks, law_fit_arrays
from twoclocks.analyze.tails import fit_tail

FAST = {"bootstrap_samples": 200, "stability_window_logs": 3}


def _row(table: pd.DataFrame, fit: str, param: str, clock: str | None = None) -> pd.Series:
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


# fixed cases (no random draw decides a CI run); the first is the draw that once put the
# percentile interval one ulp above the estimate
@pytest.mark.parametrize(
    ("rate", "noise", "seed"),
    [(0.01302546120300516, 0.0, 6), (0.001, 0.05, 1), (0.02, 0.02, 2), (0.005, 0.0, 3)],
)
def test_log_clock_slope_recovers_rate(rate, noise, seed):
    """Slope of T_cls on log(1/eps) = 1/rate within 3 %; the log law is chosen; the interval
    contains the estimate even when every bootstrap replicate equals it up to rounding."""
    clocks = _exp_tail_cell(rate, noise, rng_seed=seed)
    table, summary = fit_clocks(clocks, FAST)
    b = _row(table, "law", "b")
    assert b["status"] == "ok", b["reason"]
    assert b["preferred"] == "log"
    assert b["estimate"] == pytest.approx(1 / rate, rel=0.03)
    assert b["ci_low"] <= b["estimate"] <= b["ci_high"]
    assert _row(table, "law", "nu")["estimate"] == pytest.approx(rate, rel=0.03)
    assert _row(table, "law", "delta_aic")["estimate"] > 0
    assert summary["cells"]["relu/wd=1.0"]["counts"]["cls"]["n_censored"] == 0


def test_interval_contains_its_estimate():
    p = param(1.0 + 2e-16, np.full(50, 1.0))  # replicates one ulp below the estimate
    assert p["ci_low"] <= p["estimate"] <= p["ci_high"]
    assert p["boot_high"] < p["estimate"]  # the raw percentile interval misses it
    assert np.isnan(param(1.0, None)["ci_low"])


@pytest.mark.parametrize("k", [0.3, 1.0, 2.5])
def test_power_law_recovered_exactly_with_free_offset(k):
    """Exact T = T0 + C eta^-k (T0 below the first crossing): k, T0, C to 1e-6; power chosen."""
    eta = np.geomspace(0.5, 2e-3, 9)
    t = 400.0 + 30.0 * eta**-k
    f = law_fit_arrays(np.log(1 / eta), t, np.ones((1, len(t))))
    assert f["k"][0] == pytest.approx(k, rel=1e-6)
    assert f["t0"][0] == pytest.approx(400.0, rel=1e-5)
    assert f["c"][0] == pytest.approx(30.0, rel=1e-5)
    assert f["delta_aic"][0] < -10


def test_log_law_is_not_called_a_power_law():
    """Exact T = a + b log(1/eta): the profile sits at k -> 0 and AIC keeps the log law."""
    eta = np.geomspace(0.5, 2e-3, 9)
    x = np.log(1 / eta)
    rng = np.random.default_rng(0)
    for noise in (0.0, 0.01):
        t = (700 + 1500 * x) * np.exp(noise * rng.standard_normal(len(x)))
        f = law_fit_arrays(x, t, np.ones((1, len(t))))
        assert f["delta_aic"][0] >= 0
        assert f["b"][0] == pytest.approx(1500, rel=0.02)
    assert law_fit_arrays(x, 700 + 1500 * x, np.ones((1, len(x))))["k"][0] < 10 * K_MIN


def test_times_without_a_trend_identify_no_law():
    """Clock times that do not depend on the level (noise only): insufficient, never a law."""
    rng = np.random.default_rng(5)
    rows = [
        {"cell_id": "c", "seed": seed, "clock": "rep_fourier", "level": eta,
         "step": 5000 * np.exp(0.1 * rng.standard_normal()), "censored": False,
         "diverged": False, "below_floor": False}
        for seed in range(3) for eta in (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
    ]  # fmt: skip
    clocks = pd.DataFrame(rows).assign(tau=lambda d: d["step"] * 1e-3, study="s")
    table, _ = fit_clocks(clocks, FAST)
    law = table[(table["fit"] == "law") & (table["clock"] == "rep_fourier")]
    assert (law["status"] == "insufficient").all()
    assert "not > 0" in law["reason"].iloc[0] or "edge" in law["reason"].iloc[0]


def test_bootstrap_counts_are_seeded_and_resample_whole_seeds():
    groups = np.array([0, 0, 1, 1, 2, 2])
    a = boot_counts(groups, np.zeros(6), 50, 3)
    assert np.array_equal(a, boot_counts(groups, np.zeros(6), 50, 3))
    assert (a[0] == 1).all() and (a[1:].reshape(50, 3, 2).sum(1)[:, 0] == 3).all()
    assert (a[:, ::2] == a[:, 1::2]).all()  # both levels of a seed share its draw count


def test_tail_fit_tells_exponential_from_power():
    """Asymptote 2 above the bound 1, 2 % multiplicative noise on the decaying part."""
    t = np.arange(0, 50000, 10.0)
    rng = np.random.default_rng(1)
    noise = np.exp(0.02 * rng.standard_normal(len(t)))
    exp = fit_tail(t, 2.0 + np.exp(-t / 3000) * noise, 500.0, 1.0)
    assert exp["tail_law"] == "exp" and exp["g_inf"] == pytest.approx(2.0, abs=1e-3)
    assert exp["tail_timescale"] == pytest.approx(3000, rel=0.05)
    pw = fit_tail(t, 2.0 + ((t + 100) / 100) ** -1.5 * noise, 500.0, 1.0)
    assert pw["tail_law"] == "power" and pw["tail_exponent"] == pytest.approx(1.5, rel=0.05)
    assert pw["g_inf"] == pytest.approx(2.0, abs=1e-3) and pw["tail_t0"] == pytest.approx(
        -100, abs=50
    )
    short = fit_tail(t[:5], np.ones(5), 0.0, 0.0)
    assert short["g_inf_source"] == "bound" and short["tail_law"] == ""


def test_censored_diverged_degrade_to_insufficient():
    """Too few uncensored levels -> status insufficient with a reason."""
    steps = np.arange(0, 2001, 20)
    slow = np.maximum(np.exp(-0.002 * steps), 0.05)  # only eps=0.1 ever reached
    loss = np.stack([slow, slow, np.exp(-0.01 * steps)])
    ds = synthetic_trajectory(loss, steps, diverged_step=np.array([-1, -1, 300]))
    clocks = extract_clocks(ds, FAST, {"weight_decay": 1.0})
    table, summary = fit_clocks(clocks, FAST)
    assert list(table.columns) == list(FIT_COLUMNS)
    cls = table[table["clock"] == "cls"]
    assert set(cls["fit"]) == {"law"}
    assert (cls["status"] == "insufficient").all()
    assert cls["estimate"].isna().all() and (cls["reason"].str.contains("min_levels")).all()
    row = cls.iloc[0]
    assert row["n_diverged"] == 1 and row["n_seeds"] == 3
    assert row["n_censored"] == 20 and row["censored_fraction"] == pytest.approx(20 / 22)
    json.dumps(summary, allow_nan=False)


def test_single_seed_is_insufficient_and_empty_does_not_crash():
    clocks = _exp_tail_cell(0.01, 0.01, n_seeds=1)
    table, summary = fit_clocks(clocks, FAST)
    b = _row(table, "law", "b")
    assert b["status"] == "insufficient" and "bootstrap" in b["reason"]
    assert b["estimate"] == pytest.approx(100, rel=0.03)  # measured, but not an identified law
    sparse = clocks[clocks["clock"] == "cls"].head(2)
    table, _ = fit_clocks(sparse, FAST)
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
    table, summary = fit_clocks(clocks, FAST)
    sc = table[(table["fit"] == "scaling") & (table["clock"] == "cls")]
    assert set(sc["axis"]) == {"weight_decay"}
    exp = sc[sc["param"] == "exponent"].iloc[0]
    assert exp["status"] == "ok" and exp["cell_id"] == "*"
    assert exp["estimate"] == pytest.approx(-1.0, abs=0.1)
    assert exp["ci_low"] <= exp["estimate"] <= exp["ci_high"]
    assert len(summary["scaling"]) >= 1 and summary["n_cells"] == 4


def test_separation_ratio():
    steps = np.arange(0, 5001, 10)
    t = steps.astype(float)
    loss = np.exp(-0.01 * t)[None].repeat(3, 0)  # T_cls(1e-3) = 100 log(1000)
    acc = np.clip(t / 2000, 0, 1)[None].repeat(3, 0)  # T_gen(0.99) = 1980
    ds = synthetic_trajectory(loss, steps, extra={"test_acc": acc})
    clocks = extract_clocks(ds, FAST, {})
    table, _ = fit_clocks(clocks, FAST)
    r = _row(table, "ratio", "ratio", "gen_acc")
    assert r["status"] == "ok"
    assert r["estimate"] == pytest.approx(1980 / (100 * np.log(1000)), rel=1e-6)


def test_outputs_write_to_parquet_and_json(tmp_path):
    clocks = _exp_tail_cell(0.01, 0.01)
    table, summary = fit_clocks(clocks, FAST)
    clocks.to_parquet(tmp_path / "clocks.parquet")
    table.to_parquet(tmp_path / "fits.parquet")
    back = pd.read_parquet(tmp_path / "fits.parquet")
    assert list(back.columns) == list(FIT_COLUMNS) and len(back) == len(table)
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["cells"]["relu/wd=1.0"]["fits"][0]["fit"] == "law"
