"""The per-block update size and the regularised gradient norm (Prop. 4.2; the KL exponent),
checked against the snapshots and explicit gradients of a float64 run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RELU_CELL

from twoclocks.data.modular import make_modular
from twoclocks.train import store as ts
from twoclocks.train.engine import train_cell
from twoclocks.train.models import ReluEmbedNet, init_params, model_spec


@pytest.fixture(scope="module")
def modular():
    return make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)


def _run(cell, data, path):
    return ts.open_trajectory(train_cell(cell, data, path / "trajectory.zarr")).load()


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_update_ratio_is_the_step_between_consecutive_snapshots(modular, tmp_path, optimizer):
    """Row t holds ||theta(t+1) - theta(t)|| / ||theta(t)|| per block, the update taken at step
    t, whatever the optimiser; the last row (no update follows) is NaN."""
    steps = 12
    cell = dict(
        TINY_RELU_CELL,
        optimizer=optimizer,
        lr=[1e-2, 3e-2, 0.3] if optimizer == "sgd" else [1e-2, 3e-3, 2e-2],
        weight_decay=[0.0, 0.5, 1.0],
        dtype="float64",
        steps=steps,
        log_dense_steps=steps,
        log_every_steps=1,
        snapshot_count=steps + 1,  # every step
    )
    traj = _run(cell, modular, tmp_path)
    assert traj["step"].values.tolist() == list(range(steps + 1))
    ratio = traj["update_ratio"]
    for block in traj["block"].values:
        snap = traj[f"snap_{block}"].values  # (seed, snapshot, ...)
        flat = snap.reshape(snap.shape[0], snap.shape[1], -1)
        want = np.linalg.norm(np.diff(flat, axis=1), axis=2) / np.linalg.norm(flat[:, :-1], axis=2)
        got = ratio.sel(block=block).values
        np.testing.assert_allclose(got[:, :-1], want, rtol=1e-12, err_msg=str(block))
        assert np.isnan(got[:, -1]).all()
        assert (got[:, :-1] > 0).all()


def test_grad_norm_energy_is_the_gradient_of_the_regularised_objective(modular, tmp_path):
    """||grad (CE + wd/2 ||theta||^2)|| per block from an explicit autograd of that objective
    on the reference module at step 0; grad_norm is the CE part alone."""
    wds = [0.0, 0.5, 1.0]
    cell = dict(TINY_RELU_CELL, dtype="float64", steps=6, weight_decay=wds, snapshot_count=2)
    traj = _run(cell, modular, tmp_path)
    spec = model_spec(cell, modular.attrs)
    p0 = init_params(spec, cell["seeds"], dtype=torch.float64)
    x = torch.as_tensor(modular["x_train"].values)
    y = torch.as_tensor(modular["y_train"].values)
    for i, wd in enumerate(wds):
        net = ReluEmbedNet.from_member(spec, p0, i)
        params = net.block_params()
        ce = F.cross_entropy(net(x), y)
        reg = sum(w.square().sum() for w in params.values())
        g_ce = torch.autograd.grad(ce, list(params.values()), retain_graph=True)
        g_e = torch.autograd.grad(ce + wd / 2 * reg, list(params.values()))
        for k, name in enumerate(params):
            got = traj["grad_norm_energy"].sel(block=name).values[i, 0]
            assert got == pytest.approx(g_e[k].norm().item(), rel=1e-10), name
            ce_only = traj["grad_norm"].sel(block=name).values[i, 0]
            assert ce_only == pytest.approx(g_ce[k].norm().item(), rel=1e-10), name
    # weight decay 0: the two norms are the same numbers
    np.testing.assert_array_equal(
        traj["grad_norm_energy"].values[0], traj["grad_norm"].values[0], strict=True
    )
    assert not np.allclose(traj["grad_norm_energy"].values[2], traj["grad_norm"].values[2])


def test_frozen_blocks_take_no_weight_decay_in_the_regularised_gradient(modular, tmp_path):
    """A block held at init (`frozen_blocks`) is not regularised: its grad_norm_energy is the
    loss gradient alone, and the clocks' ||grad E|| sums the trained blocks only."""
    from twoclocks.analyze.clocks import regularised_grad_norm

    cell = dict(TINY_RELU_CELL, dtype="float64", steps=4, snapshot_count=2, frozen_blocks=["E"])
    traj = _run(cell, modular, tmp_path)
    e, u = traj["grad_norm_energy"], traj["grad_norm"]
    np.testing.assert_array_equal(e.sel(block="E").values, u.sel(block="E").values, strict=True)
    assert not np.allclose(e.sel(block="U").values, u.sel(block="U").values)
    got, why = regularised_grad_norm(traj, cell)
    trained = e.sel(block=[b for b in e["block"].values if b != "E"])
    np.testing.assert_allclose(got.values, np.sqrt((trained**2).sum("block")).values, rtol=1e-15)
    assert why == ""
