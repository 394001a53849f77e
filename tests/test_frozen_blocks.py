"""`frozen_blocks` (blocks held at init by the optimiser) and `embed_init_scale` (E's init
multiplier): the ablation keys of issue 14 (head fits first, Prop. 4.2; timing vs the paper)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RELU_CELL

from twoclocks import config
from twoclocks.config import ConfigError, load_config
from twoclocks.data.modular import make_modular
from twoclocks.data.teacher import make_teacher
from twoclocks.train import store as ts
from twoclocks.train.engine import set_up, train_cell
from twoclocks.train.models import init_params, model_spec
from twoclocks.train.optim import StackedAdamW, StackedSGD, make_optimizer

ATTRS = {"task": "modular", "num_classes": 13, "vocab_size": 13}
SGD = dict(optimizer="sgd", lr=0.5, momentum=0.9, weight_decay=1e-3)


@pytest.fixture(scope="module")
def modular():
    return make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)


def _train(cell: dict, dataset, steps: int, opt_state: dict | None = None, p=None):
    """A plain full-batch loop (sum of per-member mean CE, as the engine): the initial and final
    parameters, the optimiser and the per-member train CE at the start and the end."""
    dense = dataset.attrs["task"] == "teacher"
    spec = model_spec(cell, dataset.attrs, dataset.sizes["feature"] if dense else None)
    if p is None:
        p = init_params(spec, cell["seeds"], cell.get("init_scale", 1.0), dtype=torch.float32)
    p0 = {k: v.detach().clone() for k, v in p.items()}
    p = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    opt = make_optimizer(cell, p)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    x = spec.encode_inputs(torch.as_tensor(dataset["x_train"].values), torch.float32)
    y = torch.as_tensor(dataset["y_train"].values)
    losses = []
    for _ in range(steps):
        for v in p.values():
            v.grad = None
        logits = spec.forward(p, x).logits  # (M, n, C)
        loss_m = F.cross_entropy(
            logits.transpose(1, 2), y.expand(logits.shape[0], -1), reduction="none"
        ).mean(1)
        losses.append(loss_m.detach())
        loss_m.sum().backward()
        opt.step()
    return p0, p, opt, losses


@pytest.mark.parametrize(
    ("model", "variants"),
    [
        ("relu_embed", [dict(hidden_layers=k, bias=b) for k in (1, 2) for b in (True, False)]),
        ("deep_linear", [dict(depth=d) for d in (1, 2, 4)]),
    ],
)
def test_config_block_table_matches_each_model(model, variants):
    for v in variants:
        cell = {**config.cell_defaults(), **v, "model": model}
        spec = model_spec(cell, ATTRS)
        assert config.model_blocks(cell) == spec.blocks(), v


@pytest.mark.parametrize(
    ("opt", "frozen"),
    [
        ("adamw", ["E"]),
        ("adamw", ["E", "W1", "b1"]),
        ("sgd", ["E"]),
        ("sgd", ["E", "W1", "b1"]),
    ],
)
def test_frozen_blocks_keep_their_init_bitwise_while_the_rest_trains(modular, opt, frozen):
    cell = dict(TINY_RELU_CELL, frozen_blocks=frozen, **(SGD if opt == "sgd" else {}))
    p0, p, optimizer, losses = _train(cell, modular, steps=40)
    assert isinstance(optimizer, StackedSGD if opt == "sgd" else StackedAdamW)
    for name in p:
        if name in frozen:
            assert torch.equal(p[name].detach(), p0[name]), name
            # autograd still computes the frozen block's gradient (logged as grad_norm)
            assert (p[name].grad.flatten(1).norm(dim=1) > 0).all(), name
        else:
            moved = (p[name].detach() - p0[name]).flatten(1).abs().amax(1)
            assert (moved > 0).all(), name
    assert (losses[-1] < 0.8 * losses[0]).all(), (losses[0], losses[-1])  # falls by > 20%
    # no optimiser state is kept for a frozen block
    assert not any(k.split("/")[-1] in frozen for k in optimizer.state)


def test_frozen_layer_of_a_deep_linear_net_stays_put():
    ds = make_teacher(
        input_dim=8, num_classes=4, teacher_rank=2, train_size=64, test_size=32, data_seed=0
    )
    cell = dict(
        TINY_RELU_CELL,
        task="teacher",
        model="deep_linear",
        depth=3,
        width=8,
        balanced_init=True,
        init_scale=0.5,
        frozen_blocks=["W2"],
        **SGD,
    )
    p0, p, _, losses = _train(cell, ds, steps=30)
    assert torch.equal(p["W2"].detach(), p0["W2"])
    assert not torch.equal(p["W1"].detach(), p0["W1"])
    assert not torch.equal(p["W3"].detach(), p0["W3"])
    assert (losses[-1] < losses[0]).all()


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_empty_frozen_blocks_is_bitwise_the_run_without_the_key(modular, opt):
    cell = dict(TINY_RELU_CELL, **(SGD if opt == "sgd" else {}))
    _, p_a, opt_a, loss_a = _train(cell, modular, steps=25)
    _, p_b, opt_b, loss_b = _train(dict(cell, frozen_blocks=[]), modular, steps=25)
    for name in p_a:
        assert torch.equal(p_a[name], p_b[name]), name
    assert all(torch.equal(a, b) for a, b in zip(loss_a, loss_b, strict=True))
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_resume_with_frozen_blocks_is_bitwise_the_straight_run(modular, opt):
    cell = dict(TINY_RELU_CELL, frozen_blocks=["E"], **(SGD if opt == "sgd" else {}))
    p0, p_straight, _, _ = _train(cell, modular, steps=20)
    _, p_half, opt_half, _ = _train(cell, modular, steps=10)
    state = {k: v.clone() for k, v in opt_half.state_dict().items()}
    _, p_resumed, _, _ = _train(cell, modular, steps=10, opt_state=state, p=p_half)
    for name in p_straight:
        assert torch.equal(p_straight[name], p_resumed[name]), name
    assert torch.equal(p_resumed["E"].detach(), p0["E"])


def test_optimizer_rejects_unknown_and_all_blocks():
    params = {n: torch.zeros(2, 3, requires_grad=True) for n in ("E", "W1", "U")}
    with pytest.raises(ValueError, match=r"\['W2'\] are not parameter blocks.*'E', 'W1', 'U'"):
        StackedAdamW(params, 1e-3, 0.0, frozen=["W2"])
    with pytest.raises(ValueError, match="leave nothing to train"):
        StackedSGD(params, 1e-3, 0.0, frozen=["E", "W1", "U"])


def test_engine_wires_frozen_blocks_into_the_optimiser(modular):
    run = set_up(dict(TINY_RELU_CELL, frozen_blocks=["E", "W1"]), modular, torch.device("cpu"))
    assert run.opt.frozen == {"E", "W1"} and list(run.opt.trained) == ["b1", "U"]
    assert set_up(dict(TINY_RELU_CELL), modular, torch.device("cpu")).opt.frozen == set()


@pytest.mark.slow  # a full engine run (~1-8 s on the busy 2-core VM): full suite only
def test_engine_run_keeps_e_at_init_and_logs_its_gradient(modular, tmp_path):
    cell = dict(TINY_RELU_CELL, frozen_blocks=["E"], steps=40, snapshot_count=2)
    traj = ts.open_trajectory(train_cell(cell, modular, tmp_path / "t.zarr")).load()
    np.testing.assert_array_equal(traj.snap_E.values[:, -1], traj.snap_E.values[:, 0])
    assert (traj.snap_U.values[:, -1] != traj.snap_U.values[:, 0]).any(axis=(1, 2)).all()
    assert (traj.grad_norm.sel(block="E").values[:, 1:] > 0).all()
    assert (traj.train_loss.values[:, -1] < traj.train_loss.values[:, 0]).all()


# ---- config: validation before any job, identity of existing cells ----

STUDY = {
    "study": "unit",
    "seeds": [0, 1],
    "grids": {
        "relu": {"axes": {"weight_decay": [1.0]}},
        "linear": {"set": {"task": "teacher", "model": "deep_linear"}, "axes": {"depth": [3]}},
    },
}
# Hashes of STUDY's cells recorded with the code before these keys existed (commit 28352fd):
# a config that does not use them keeps its ids, hashes, cache entries and trajectories.
HASHES_BEFORE = {"relu/wd=1.0": "4d69b0c7b7dd", "linear/depth=3": "c2b32b64907a"}


def _with(**grid_sets) -> dict:
    cfg = copy.deepcopy(STUDY)
    for grid, values in grid_sets.items():
        cfg["grids"][grid].setdefault("set", {}).update(values)
    return cfg


def _rejects(cfg, *fragments):
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in:\n{info.value}"


def test_cells_without_the_new_keys_keep_their_ids_and_hashes():
    plain = load_config(STUDY).cells
    assert {c.id: c.hash for c in plain} == HASHES_BEFORE
    at_default = load_config(
        _with(relu={"frozen_blocks": [], "embed_init_scale": 1.0}, linear={"frozen_blocks": []})
    ).cells
    assert [c.params for c in at_default] == [c.params for c in plain]
    for c in plain:
        assert "frozen_blocks" not in c.params and "embed_init_scale" not in c.params


def test_the_new_keys_enter_params_and_hash_when_used():
    cells = load_config(_with(relu={"frozen_blocks": ["E"], "embed_init_scale": 0.1})).cells
    relu = cells[0]
    assert relu.params["frozen_blocks"] == ["E"] and relu.params["embed_init_scale"] == 0.1
    assert relu.hash != HASHES_BEFORE["relu/wd=1.0"]
    # a float axis labels its cells; a list-valued frozen_blocks is no axis (the clock tables
    # hold one scalar per axis and cell): the schema names the keys that are
    cfg = copy.deepcopy(STUDY)
    cfg["grids"]["relu"]["axes"] = {"embed_init_scale": [0.1, 0.3]}
    ids = [c.id for c in load_config(cfg).cells if c.params["model"] == "relu_embed"]
    assert ids == ["relu/embed_init_scale=0.1", "relu/embed_init_scale=0.3"]
    cfg["grids"]["relu"]["axes"] = {"frozen_blocks": [["E"], ["E", "W1", "b1"]]}
    _rejects(cfg, "grids.relu.axes: key 'frozen_blocks' is not allowed", "embed_init_scale")
    extra = {
        **copy.deepcopy(STUDY),
        "extra_cells": [{"grid": "relu", "set": {"frozen_blocks": []}}],
    }
    _rejects(extra, "extra_cells[0].set.frozen_blocks", "its own grid")


def test_unknown_frozen_block_names_the_cell_the_name_and_the_blocks():
    _rejects(
        _with(relu={"frozen_blocks": ["W2"]}),
        "cell relu/wd=1.0",
        "['W2']",
        "['E', 'W1', 'b1', 'U']",
        "use names from that list",
    )
    _rejects(_with(relu={"frozen_blocks": ["b1"], "bias": False}), "['E', 'W1', 'U']")
    _rejects(_with(linear={"frozen_blocks": ["E"]}), "cell linear/depth=3", "['W1', 'W2', 'W3']")


def test_freezing_every_block_is_an_error():
    _rejects(
        _with(relu={"frozen_blocks": ["E", "W1", "b1", "U"]}),
        "cell relu/wd=1.0",
        "nothing would train",
        "leave at least one block out",
    )
    _rejects(_with(linear={"frozen_blocks": ["W1", "W2", "W3"]}), "nothing would train")


def test_frozen_blocks_schema_rejects_repeats_and_non_lists():
    _rejects(_with(relu={"frozen_blocks": ["E", "E"]}), "frozen_blocks")
    _rejects(_with(relu={"frozen_blocks": "E"}), "frozen_blocks", "wrong type")


# ---- embed_init_scale ----


def test_embed_init_scale_scales_e_exactly_and_nothing_else():
    """Same seeds: E is the default draw times the scale (formed in float64, then cast), every
    other block is bitwise the default draw; a scale of 1 is the default init."""
    cell, seeds, scales = dict(TINY_RELU_CELL), [0, 3], [1.0, 0.5]
    spec, scaled = model_spec(cell, ATTRS), model_spec(dict(cell, embed_init_scale=0.1), ATTRS)
    ref64 = init_params(spec, seeds, scales, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        ref = init_params(spec, seeds, scales, dtype=dtype)
        got = init_params(scaled, seeds, scales, dtype=dtype)
        for name in ref:
            if name != "E":
                assert torch.equal(got[name], ref[name]), name
        assert torch.equal(got["E"], (ref64["E"] * 0.1).to(dtype))
    one = model_spec(dict(cell, embed_init_scale=1.0), ATTRS)
    assert torch.equal(init_params(one, seeds)["E"], init_params(spec, seeds)["E"])


def test_embed_init_scale_must_be_positive_and_applies_to_relu_only():
    _rejects(_with(relu={"embed_init_scale": 0.0}), "embed_init_scale", "out of range")
    cfg = copy.deepcopy(STUDY)
    cfg["grids"]["linear"]["axes"]["embed_init_scale"] = [0.1]
    _rejects(cfg, "grids.linear.axes.embed_init_scale: does not apply")
