"""Stacked sweeps: cells trained in one program equal the same cells trained alone, bitwise."""

import json

import numpy as np
import pytest
from conftest import TINY_RELU_CELL

from twoclocks.data.modular import make_modular
from twoclocks.train.group import stacked_params, train_group
from twoclocks.train.store import open_trajectory


def cell(wd, lr=1e-2, **extra):
    return dict(
        TINY_RELU_CELL,
        cell_id=f"relu/wd={wd}",
        weight_decay=wd,
        lr=lr,
        steps=60,
        seeds=[0, 1],
        **extra,
    )


@pytest.fixture(scope="module")
def data():
    return make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)


def test_stacked_params_fold_hyperparameters_per_member():
    params = stacked_params([cell(0.5), cell(1.0, lr=3e-3)])
    assert params["seeds"] == [0, 1, 0, 1]
    assert params["weight_decay"] == [0.5, 0.5, 1.0, 1.0]
    assert params["lr"] == [1e-2, 1e-2, 3e-3, 3e-3]
    with pytest.raises(ValueError, match="differ in \\['hidden_width'\\]"):
        stacked_params([cell(0.5), cell(1.0, hidden_width=32)])


def test_stacked_sweep_equals_cells_trained_alone(tmp_path, data):
    cells = [cell(0.5), cell(1.0, lr=3e-3)]
    stacked = train_group(cells, data, tmp_path / "stacked", state_dir=tmp_path / "s1")
    for c in cells:
        alone = train_group(
            [c],
            data,
            tmp_path / f"alone-{c['weight_decay']}",
            state_dir=tmp_path / f"s-{c['weight_decay']}",
        )
        a = open_trajectory(stacked[c["cell_id"]]).load()
        b = open_trajectory(alone[c["cell_id"]]).load()
        assert json.loads(a.attrs["cell"]) == c
        assert a.sizes == b.sizes
        for name in b.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        np.testing.assert_array_equal(a["tau"].values, b["tau"].values)
    assert not (tmp_path / "s1").exists()  # work dir cleaned after the split
