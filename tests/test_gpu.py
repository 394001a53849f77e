"""On a CUDA GPU: a member trained in a stack equals the same member trained alone, a run is
reproducible, and a run resumed after SIGTERM equals an uninterrupted one (scripts/gpu_check.sh
runs these with ``-m gpu``). The CPU variants check the tests themselves (slow tier)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from conftest import TINY_RELU_CELL

from twoclocks.data.modular import make_modular
from twoclocks.train import store as ts
from twoclocks.train.engine import train_cell

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.slow),
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ],
    ),
]


@pytest.fixture(scope="module")
def modular():
    return make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)


def _vars(path) -> dict[str, np.ndarray]:
    ds = ts.open_trajectory(path).load()
    return {n: v.values for n, v in ds.data_vars.items()}


def _assert_equal(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{what}: {k}", strict=True)


@pytest.mark.parametrize("device", DEVICES)
def test_stacked_member_equals_alone(modular, tmp_path, device):
    stacked = dict(TINY_RELU_CELL, device=device, seeds=[0, 1, 2], lr=[1e-2, 3e-3, 5e-3])
    alone = dict(TINY_RELU_CELL, device=device, seeds=[1], lr=[3e-3])
    a = ts.open_trajectory(train_cell(stacked, modular, tmp_path / "s" / "t.zarr")).load()
    b = ts.open_trajectory(train_cell(alone, modular, tmp_path / "a" / "t.zarr")).load()
    for name, var in b.data_vars.items():
        np.testing.assert_array_equal(
            a[name].sel(seed=[1]).values, var.values, err_msg=f"stacked vs alone: {name}"
        )


@pytest.mark.parametrize("device", DEVICES)
def test_resume_after_sigterm_equals_uninterrupted(modular, tmp_path, device):
    cell = dict(TINY_RELU_CELL, device=device, seeds=[0, 1])
    ref = _vars(train_cell(cell, modular, tmp_path / "ref" / "t.zarr"))
    again = _vars(train_cell(cell, modular, tmp_path / "again" / "t.zarr"))
    _assert_equal(ref, again, "two uninterrupted runs")
    path = tmp_path / "killed" / "t.zarr"

    def sigterm(t: int) -> None:  # delivered to this (main) thread: state saved after update 41
        if t == 41:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit) as exc:
        train_cell(cell, modular, path, on_step=sigterm)
    assert exc.value.code == 128 + signal.SIGTERM
    assert int(ts.load_state(ts.state_path(path))["step"]) == 41
    _assert_equal(ref, _vars(train_cell(cell, modular, path)), "resumed vs uninterrupted")
