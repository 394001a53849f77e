"""The geometric log cadence (`logging.log_rows_per_decade`): rows per decade, spacing bounds,
the linear cadence kept bit for bit when it is off, and a store trained on it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import TINY_RELU_CELL

from twoclocks.config import load_config
from twoclocks.data.modular import make_modular
from twoclocks.train import store as ts
from twoclocks.train.engine import train_cell
from twoclocks.train.schedule import cell_log_steps, log_steps, snapshot_steps, spacing_fraction

MINIMAL = {"study": "c", "seeds": [0], "grids": {"g": {"axes": {"weight_decay": [1.0]}}}}


def test_off_is_the_linear_cadence():
    for steps, dense, every in [(25, 3, 10), (15000, 100, 50), (7, 0, 3), (1000, 2000, 7)]:
        lin = log_steps(steps, dense, every)
        assert np.array_equal(log_steps(steps, dense, every, 0), lin)
        assert np.array_equal(
            lin,
            np.unique(
                np.r_[np.arange(min(dense, steps) + 1), np.arange(0, steps + 1, every), steps]
            ),
        )


@pytest.mark.parametrize("rows_per_decade", [10, 50, 100])
def test_geometric_rows_per_decade_and_spacing(rows_per_decade):
    floor, steps = 50, 10**7
    s = log_steps(steps, 100, floor, rows_per_decade)
    frac = spacing_fraction(rows_per_decade)
    assert frac == pytest.approx(10 ** (1 / rows_per_decade) - 1)
    gaps, at = np.diff(s), s[:-1]
    sparse = at >= 100
    # every gap after the dense phase is at least the floor (the last one may be cut by `steps`)
    assert np.all(gaps[sparse][:-1] >= floor)
    # and at most the stated fraction of the step, or the floor where that is larger
    assert np.all(gaps[sparse] <= np.maximum(floor, frac * at[sparse]) + 1e-9)
    # about r rows per decade once the geometric spacing exceeds the floor
    switch = floor / frac
    for lo in (10 ** math.ceil(math.log10(switch) + 0.5), 10**6):
        n = np.count_nonzero((s >= lo) & (s < 10 * lo))
        assert abs(n - rows_per_decade) <= 1, (lo, n)
    # below the switch the rows are the linear cadence's multiples of the floor
    early = s[(s >= 100) & (s < switch - floor)]
    assert np.all(early % floor == 0)
    assert s[0] == 0 and s[-1] == steps and np.all(gaps > 0)


def test_row_count_grows_with_log_steps():
    n = [len(log_steps(10**k, 100, 50, 100)) for k in (4, 5, 6)]
    lin = [len(log_steps(10**k, 100, 50)) for k in (4, 5, 6)]
    assert n[1] - n[0] == pytest.approx(100, abs=2) and n[2] - n[1] == pytest.approx(100, abs=2)
    assert lin[2] > 40 * n[2]  # linear: 20,099 rows at 10^6 steps against 410


def test_config_key_opt_in_keeps_default_params():
    """Off (the default) the key stays out of the cell params, so cell hashes and stores of
    existing configs are unchanged; set, it reaches the cell and its schedule."""
    off = load_config(MINIMAL).cells[0].params
    assert "log_rows_per_decade" not in off
    on = load_config({**MINIMAL, "logging": {"log_rows_per_decade": 20}}).cells[0].params
    assert on["log_rows_per_decade"] == 20 and on["cell_hash"] != off["cell_hash"]
    assert len(cell_log_steps(on)) < len(cell_log_steps(off))
    paper = load_config("config/paper.yaml").cells[0].params
    assert paper["log_rows_per_decade"] == 100 and len(cell_log_steps(paper)) == 227


def test_store_trained_on_the_geometric_cadence(tmp_path):
    data = make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)
    cell = dict(TINY_RELU_CELL, seeds=[0], steps=300, log_rows_per_decade=10, snapshot_count=3)
    ds = ts.open_trajectory(train_cell(cell, data, tmp_path / "trajectory.zarr", progress=False))
    want = log_steps(300, cell["log_dense_steps"], cell["log_every_steps"], 10)
    assert ds.step.values.tolist() == want.tolist()
    assert len(want) < len(log_steps(300, cell["log_dense_steps"], cell["log_every_steps"]))
    assert np.isfinite(ds.train_loss.values).all()
    assert ds.checkpoint_step.values.tolist() == snapshot_steps(300, 3).tolist()
