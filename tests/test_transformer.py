"""The stacked transformer: equal to its plain nn.Module per member, a member alone equal to the
member in a stack (bitwise, training included), and its logged matrices and metrics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from twoclocks.train import metric_catalog as mc
from twoclocks.train.engine import member_losses
from twoclocks.train.models import forward, init_params, model_class
from twoclocks.train.models.transformer import TransformerSpec
from twoclocks.train.optim import StackedAdamW

P = 7
SEEDS = [0, 1, 2]


def _spec(layers: int = 1, layernorm: bool = False, act: str = "relu") -> TransformerSpec:
    return TransformerSpec(
        num_classes=P,
        input_kind="tokens",
        vocab_size=P,
        d_model=8,
        n_heads=2,
        n_layers=layers,
        d_mlp=12,
        mlp_activation=act,
        layernorm=layernorm,
    )


def _data(n: int = 30):
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, P, (n, 2), generator=g)
    return x, (x[:, 0] + x[:, 1]) % P


def test_registered_with_its_keys():
    cls = model_class("transformer")
    assert cls is TransformerSpec and not cls.symmetric_tokens.fget(_spec())
    assert cls.check_params({"d_model": 10, "n_heads": 4})  # 4 does not divide 10
    assert cls.check_params({"d_model": 8, "n_heads": 4}) == []
    names = cls.block_names({"model": "transformer", "layernorm": True}, "tokens")
    assert names[:2] == ["E", "P"] and names[-1] == "U" and "lnfw" in names


@pytest.mark.parametrize(
    ("layers", "layernorm", "act"), [(1, False, "relu"), (2, True, "gelu"), (2, False, "relu")]
)
def test_stacked_forward_equals_reference(layers, layernorm, act):
    spec = _spec(layers, layernorm, act)
    params = init_params(spec, SEEDS, [1.0, 0.5, 2.0], dtype=torch.float64)
    x, _ = _data()
    logits = forward(spec, params, x).logits
    assert logits.shape == (3, len(x), P)
    for i in range(3):
        ref = spec.reference_of_member(params, i)
        torch.testing.assert_close(logits[i], ref(x), rtol=1e-12, atol=1e-12)
    # a different (a, b) order is a different input: the model is not symmetric
    assert not torch.allclose(logits, forward(spec, params, x.flip(1)).logits)


@pytest.mark.parametrize("layernorm", [False, True])
def test_member_trained_in_a_stack_equals_the_member_alone(layernorm):
    """20 AdamW steps in float32 with per-member lr, weight decay and init scale: member 1 of the
    stack and member 1 trained alone hold the same bits."""
    spec = _spec(2, layernorm)
    x, y = _data()
    lr, wd, scale = [3e-3, 1e-3, 5e-3], [0.5, 1.0, 0.0], [1.0, 0.5, 2.0]

    def train(idx):
        params = init_params(spec, [SEEDS[i] for i in idx], [scale[i] for i in idx])
        params = {k: v.requires_grad_() for k, v in params.items()}
        opt = StackedAdamW(params, [lr[i] for i in idx], [wd[i] for i in idx])
        for _ in range(20):
            for v in params.values():
                v.grad = None
            member_losses(forward(spec, params, x).logits, y).sum().backward()
            opt.step()
        return params

    stacked, alone = train([0, 1, 2]), train([1])
    for name in spec.blocks():
        assert torch.equal(stacked[name][1], alone[name][0]), name


def test_gradients_of_a_member_alone_equal_its_gradients_in_a_stack():
    """One float32 backward on 600 samples: every block's gradient of member 1 has the same bits
    alone as in a stack of 3 (the token-embedding gather through advanced indexing did not:
    its accumulating backward rounded by stack size from a few hundred samples on)."""
    spec = _spec(1)
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, P, (600, 2), generator=g)
    y = (x[:, 0] + x[:, 1]) % P

    def grads(seeds):
        params = {k: v.requires_grad_() for k, v in init_params(spec, seeds).items()}
        member_losses(forward(spec, params, x).logits, y).sum().backward()
        return {k: v.grad for k, v in params.items()}

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the train job's threads (with one, the old gather was exact too)
    try:
        stacked, alone = grads(SEEDS), grads([SEEDS[1]])
    finally:
        torch.set_num_threads(before)
    for name in spec.blocks():
        assert torch.equal(stacked[name][1], alone[name][0]), name


def test_training_matches_torch_adamw_on_the_reference():
    spec = _spec(1)
    x, y = _data()
    params = init_params(spec, SEEDS, dtype=torch.float64)
    params = {k: v.requires_grad_() for k, v in params.items()}
    ref = spec.reference_of_member(params, 2)
    opt = StackedAdamW(params, 1e-2, 0.3)
    ref_opt = torch.optim.AdamW(list(ref.block_params().values()), lr=1e-2, weight_decay=0.3)
    for _ in range(30):
        for v in params.values():
            v.grad = None
        member_losses(forward(spec, params, x).logits, y).sum().backward()
        opt.step()
        ref_opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        ref_opt.step()
    for name, v in ref.block_params().items():
        torch.testing.assert_close(params[name][2], v.detach(), rtol=1e-9, atol=1e-9)


def test_logged_matrices_are_the_circuits():
    spec = _spec(2)
    params = init_params(spec, SEEDS, dtype=torch.float64)
    mats = spec.matrix_tensors(params)
    assert list(mats) == spec.matrices() and spec.matrices()[-1] == "UE"
    q, k, v, o = (params[f"{c}2"][1] for c in "QKVO")
    torch.testing.assert_close(mats["QK2"][1], q.T @ k)
    torch.testing.assert_close(mats["OV2"][1], o @ v)
    assert mats["UE"].shape == (3, P, P) and mats["UE"].dtype == torch.float64
    torch.testing.assert_close(mats["UE"][0], params["U"][0] @ params["E"][0, :P].T)
    # the head's scores of head h are x^T Q_h^T K_h y; their sum over heads is Q^T K
    dh = spec.d_model // spec.n_heads
    heads = sum(q[h * dh : (h + 1) * dh].T @ k[h * dh : (h + 1) * dh] for h in range(2))
    torch.testing.assert_close(mats["QK2"][1], heads)
    assert spec.residue_embedding(params).shape == (3, P, spec.d_model)


def test_metrics_computed_on_a_log_step():
    """Every metric the transformer logs computes finite values of the declared shape (the
    srank axis over its matrices, the Fourier gap of its residue embedding)."""
    from types import SimpleNamespace

    spec = _spec(1)
    params = init_params(spec, SEEDS)
    params = {k: v.requires_grad_() for k, v in params.items()}
    x, y = _data()
    fwd = forward(spec, params, x)
    member_losses(fwd.logits, y).sum().backward()
    train = SimpleNamespace(x=x, y=y, weight=None)
    ctx = mc.LogContext(
        spec=spec,
        params=params,
        fwd=fwd,
        train=train,
        test=train,
        test_logits=fwd.logits.detach(),
        prev_gates=None,
        fourier_keep=2,
    )
    names = [m.name for m in mc.metrics_for(spec)]
    assert "fourier_gap" in names and "srank" in names and "srank_gated" not in names
    for m in mc.metrics_for(spec):
        if m.after_update:
            continue
        out = m.compute(ctx)
        assert out.shape[0] == 3 and torch.isfinite(out).all(), m.name
        if m.name == "srank":
            assert out.shape == (3, len(spec.matrices())) and (out >= 1 - 1e-5).all()


def test_a_transformer_muon_cell_trains_through_the_engine(tmp_path):
    """The registry's test: a transformer cell under Muon, resolved by config.py from the schema
    alone, trains through the engine into a valid store with its matrices and Fourier gap."""
    import numpy as np
    from conftest import TINY_RELU_CELL

    from twoclocks import config
    from twoclocks.data.modular import make_modular
    from twoclocks.train import store as ts
    from twoclocks.train.engine import train_cell

    study = {
        "study": "beyond-tiny",
        "seeds": [0, 1],
        "base": {
            "model": "transformer",
            "optimizer": "muon",
            "modulus": 7,
            "steps": 30,
            "d_model": 8,
            "n_heads": 2,
            "d_mlp": 16,
            "n_layers": 2,
        },
        "grids": {"g": {"axes": {"weight_decay": [0.1, 1.0]}}},
        "logging": {"snapshot_count": 2},
    }
    cells = config.load_config(study).cells
    params = cells[0].params
    assert params["muon_momentum"] == 0.95 and params["muon_ns_steps"] == 5
    for key in ("embed_dim", "hidden_width", "depth", "momentum"):  # not this model's/optimizer's
        assert key not in params, key
    bad = {**study, "base": {**study["base"], "d_model": 10, "n_heads": 4}}
    with pytest.raises(config.ConfigError, match="not a multiple of n_heads"):
        config.load_config(bad)
    data = make_modular(op="add", modulus=7, train_fraction=0.6, split="ordered", split_seed=0)
    cell = {
        k: v for k, v in TINY_RELU_CELL.items() if k not in model_class("relu_embed").config_keys
    }
    cell.update({k: v for k, v in params.items() if k in TransformerSpec.config_keys})
    cell.update({k: v for k, v in params.items() if k.startswith("muon_")})
    cell.update(model="transformer", optimizer="muon", steps=30, lr=0.02, seeds=[0, 1])
    cell.update(log_dense_steps=5, log_every_steps=5, snapshot_count=3)
    ds = ts.open_trajectory(train_cell(cell, data, tmp_path / "t" / "trajectory.zarr")).load()
    assert list(ds["matrix"].values) == [
        "E",
        "U",
        "QK1",
        "OV1",
        "Win1",
        "Wout1",
        "QK2",
        "OV2",
        "Win2",
        "Wout2",
        "UE",
    ]
    assert ds.attrs["end_to_end_matrix"] == "UE" and ds.sizes["sv"] == 7
    for name in ("srank", "fourier_gap", "separation_gap", "train_loss"):
        assert np.isfinite(ds[name].values).all(), name
    loss = ds["train_loss"].values
    assert (loss[:, -1] < loss[:, 0]).all()


@pytest.mark.parametrize("layers,layernorm", [(1, False), (2, True)])
def test_memory_model_sees_every_parameter_of_the_transformer(layers, layernorm):
    """The memory model's shapes (train/memory.py) are the shapes init_member draws, so a
    transformer study gets a mem_mb and a fit check like the MLP's."""
    from twoclocks.train import memory

    spec = _spec(layers, layernorm)
    drawn = spec.init_member(torch.Generator().manual_seed(0), 1.0)
    assert memory.block_shapes(spec) == {b: tuple(t.shape) for b, t in drawn.items()}
    step, row = memory.activation_floats(spec, 100, 50)
    assert 0 < row < step  # the training step's saved activations, not the test pass, peak
    assert memory.activation_floats(spec, 200, 50)[0] == 2 * step  # linear in the samples
    assert memory.activation_floats(spec, 100, 100)[1] > row  # the test pass grows the row
