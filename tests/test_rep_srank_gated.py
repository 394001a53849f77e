"""rep_srank and srank_drop on one matrix (issue 24 item 5): the stable-rank gap of a ReLU store
is its training-set mean gated map (`srank_gated`), logged on every 4th log row with NaN between;
the clock runs on the logged rows, its stability window counted in logged rows."""

from __future__ import annotations

import numpy as np
import pytest
from test_clocks import synthetic_trajectory

from twoclocks.analyze.clocks import extract_clocks, structural_gaps

EVERY = 4  # relu_embed's FIG3_EVERY_ROWS


def _gated_run(every: int = EVERY, bounce: bool = False):
    """srank of the gated map = 4 + 30 exp(-t/300) on every `every`-th row (NaN between); UW a
    different curve on every row, so the test tells which matrix the clock read."""
    steps = np.arange(0, 6001, 10)
    t = steps.astype(float)
    loss = 2.0 * np.exp(-0.01 * t)[None]  # T_cls(1e-3) = 100 ln 2000
    gated = (4 + 30 * np.exp(-t / 300))[None].copy()
    if bounce:  # one logged row dips under every level, the next is back up: not stable
        k = np.flatnonzero(steps == 1600)[0]
        gated[0, k] = 4.0
    gated[:, np.arange(steps.size) % every != 0] = np.nan
    uw = (2 + 20 * np.exp(-t / 900))[None]
    ds = synthetic_trajectory(loss, steps, srank=uw, extra={"srank_gated": gated})
    return ds, steps


SETTINGS = {"eta": [0.5, 0.1, 0.01], "eps_star": 1e-3}


def test_rep_srank_reads_the_gated_map_where_the_store_logs_it():
    ds, _steps = _gated_run()
    gap = structural_gaps(ds, SETTINGS)["rep_srank"][0]
    np.testing.assert_array_equal(gap.values, ds["srank_gated"].values)
    # an explicit matrix still wins; a store without the gated map keeps its end-to-end map
    uw = structural_gaps(ds, {**SETTINGS, "srank_matrix": "UW"})["rep_srank"][0]
    np.testing.assert_array_equal(uw.values, ds["srank"].sel(matrix="UW").values)
    plain = structural_gaps(ds.drop_vars("srank_gated"), SETTINGS)["rep_srank"][0]
    np.testing.assert_array_equal(plain.values, uw.values)
    with pytest.raises(ValueError, match="no srank_hidden"):
        structural_gaps(ds, {**SETTINGS, "srank_matrix": "hidden"})


def test_clock_on_rows_with_nan_between_fires_where_the_curve_crosses():
    """With NaN on 3 of 4 rows the window of 5 consecutive logs never fits in the store's rows;
    on the logged rows T_rep(eta) = T_cls + 300 ln(1/eta) up to the logged spacing."""
    ds, steps = _gated_run()
    df = extract_clocks(ds, SETTINGS, {})
    rep = df[(df["clock"] == "rep_srank") & ~df["pre_fit"]].set_index("level")
    t_cls = 100 * np.log(2000)
    assert rep["g_inf"].iloc[0] == pytest.approx(4.0, abs=1e-3)
    assert not rep["censored"].any()
    for eta in (0.5, 0.1, 0.01):
        # interpolated in log(g) between logged rows 40 steps apart: exact for an exponential
        assert rep.loc[eta, "step"] == pytest.approx(t_cls + 300 * np.log(1 / eta), rel=2e-3)
    # the same curve logged on every row gives the same clocks
    full = _gated_run(every=1)[0]
    rep1 = extract_clocks(full, SETTINGS, {})
    rep1 = rep1[(rep1["clock"] == "rep_srank") & ~rep1["pre_fit"]].set_index("level")
    np.testing.assert_allclose(rep["step"], rep1["step"], rtol=2e-3)


def test_window_is_counted_in_logged_rows():
    """A single logged row under every level (step 1600) followed by logged rows above it does
    not fire the deepest level (crossed at ~2,140 by the curve):
    the window asks for 5 consecutive logged rows of the gap (here 5 x 40 steps)."""
    ds, steps = _gated_run(bounce=True)
    df = extract_clocks(ds, {**SETTINGS, "stability_window_logs": 5}, {})
    rep = df[(df["clock"] == "rep_srank") & ~df["pre_fit"]].set_index("level")
    t_cls = 100 * np.log(2000)
    assert rep.loc[0.01, "step"] == pytest.approx(t_cls + 300 * np.log(100), rel=2e-3)  # > 1600
    # and a window of 1 logged row fires on the dip for the deepest level
    one = extract_clocks(ds, {**SETTINGS, "stability_window_logs": 1}, {})
    one = one[(one["clock"] == "rep_srank") & ~one["pre_fit"]].set_index("level")
    assert one.loc[0.01, "step"] <= 1600


def test_other_clocks_keep_every_row():
    """Only all-NaN rows of a gap are dropped: a member NaN where another is logged still
    counts as not below (a clock never fires across a member's missing log)."""
    ds, steps = _gated_run(every=1)
    gated = ds["srank_gated"].values
    two = np.concatenate([gated, gated], axis=0)
    two[1, np.flatnonzero(steps == 1500)[0]] = np.nan
    loss = np.concatenate([ds["train_loss"].values] * 2, axis=0)
    uw = np.concatenate([ds["srank"].values[..., 0]] * 2, axis=0)
    ds2 = synthetic_trajectory(loss, steps, srank=uw, extra={"srank_gated": two})
    df = extract_clocks(ds2, {**SETTINGS, "stability_window_logs": 5}, {})
    rep = df[(df["clock"] == "rep_srank") & ~df["pre_fit"]]
    s0 = rep[rep["seed"] == 0].set_index("level")["step"]
    s1 = rep[rep["seed"] == 1].set_index("level")["step"]
    t_cls = 100 * np.log(2000)
    assert s0.loc[0.1] == pytest.approx(t_cls + 300 * np.log(10), rel=2e-3)  # ~1382
    # seed 1's NaN at 1500 breaks its window for eta = 0.1 only if the window spans it
    assert s1.loc[0.5] == pytest.approx(s0.loc[0.5]) and s1.loc[0.1] >= s0.loc[0.1]
