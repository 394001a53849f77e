"""Stacked Muon: the batched Newton-Schulz equals torch.optim.Muon's on single matrices, the whole
update follows torch.optim.Muon (+ AdamW for the other blocks) per member, and a member trained
in a stack equals the member trained alone, bitwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.optim._muon import _zeropower_via_newtonschulz

from twoclocks.train.engine import member_losses
from twoclocks.train.models import ReluEmbedSpec, forward, init_params
from twoclocks.train.models.transformer import TransformerSpec
from twoclocks.train.optim import (
    MUON_EPS,
    MUON_NS_COEFFICIENTS,
    StackedMuon,
    make_optimizer,
    newton_schulz,
)

P = 7
SEEDS = [0, 1, 2]
LR, WD = [2e-2, 1e-2, 5e-2], [0.5, 0.1, 0.0]


@pytest.mark.parametrize("shape", [(12, 8), (8, 12), (40, 40), (97, 128)])
@pytest.mark.parametrize("steps", [1, 5])
def test_batched_newton_schulz_equals_torch_per_matrix(shape, steps):
    g = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    out = newton_schulz(g, steps)
    assert out.dtype == torch.bfloat16 and out.shape == g.shape
    for i in range(3):
        ref = _zeropower_via_newtonschulz(g[i], MUON_NS_COEFFICIENTS, steps, MUON_EPS)
        torch.testing.assert_close(out[i].float(), ref.float(), rtol=0, atol=0)
    # orthogonalised: the singular values land near 1 (0.5-1.5, Keller Jordan's quintic)
    sv = torch.linalg.svdvals(newton_schulz(g, 5)[0].float())
    assert sv.min() > 0.3 and sv.max() < 1.6


def _data(n: int = 30):
    x = torch.randint(0, P, (n, 2), generator=torch.Generator().manual_seed(3))
    return x, (x[:, 0] + x[:, 1]) % P


def _relu(layers: int = 2) -> ReluEmbedSpec:
    return ReluEmbedSpec(
        num_classes=P,
        input_kind="tokens",
        vocab_size=P,
        embed_dim=6,
        combine="concat",
        hidden_width=10,
        hidden_layers=layers,
    )


def _transformer() -> TransformerSpec:
    return TransformerSpec(
        num_classes=P, input_kind="tokens", vocab_size=P, d_model=8, n_heads=2, d_mlp=12
    )


def _cell(**kw) -> dict:
    return {"optimizer": "muon", "lr": LR, "weight_decay": WD, **kw}


def test_muon_takes_hidden_matrices_and_leaves_the_rest_to_adamw():
    spec = _transformer()
    opt = make_optimizer(_cell(), init_params(spec, SEEDS))
    assert isinstance(opt, StackedMuon)
    assert opt.muon_blocks == ["Q1", "K1", "V1", "O1", "Win1", "Wout1"]
    assert "exp_avg/E" in opt.state and "exp_avg/bin1" in opt.state and "exp_avg/U" in opt.state
    assert "momentum_buffer/E" not in opt.state
    with pytest.raises(ValueError, match="muon_adjust_lr"):
        make_optimizer(_cell(muon_adjust_lr="bogus"), init_params(spec, SEEDS))


@pytest.mark.parametrize(("nesterov", "adjust"), [(True, "original"), (False, "match_rms_adamw")])
def test_stacked_muon_follows_torch_muon_and_adamw(nesterov, adjust):
    """Per member: torch.optim.Muon on W1, W2 and torch.optim.AdamW on E, b1, b2, U, on the
    plain reference, float64 parameters (the Newton-Schulz step rounds to bfloat16 in both)."""
    spec = _relu()
    x, y = _data()
    params = init_params(spec, SEEDS, dtype=torch.float64)
    params = {k: v.requires_grad_() for k, v in params.items()}
    cell = _cell(muon_nesterov=nesterov, muon_adjust_lr=adjust, betas=[0.9, 0.98])
    opt = make_optimizer(cell, params)
    refs = [spec.reference_of_member(params, i) for i in range(3)]
    ref_opts = []
    for i, r in enumerate(refs):
        bp = r.block_params()
        mats = [bp[n] for n in ("W1", "W2")]
        rest = [bp[n] for n in ("E", "b1", "b2", "U")]
        kw = dict(lr=LR[i], weight_decay=WD[i])
        ref_opts.append(
            [
                torch.optim.Muon(mats, nesterov=nesterov, adjust_lr_fn=adjust, **kw),
                torch.optim.AdamW(rest, betas=(0.9, 0.98), **kw),
            ]
        )
    for _ in range(15):
        for v in params.values():
            v.grad = None
        member_losses(forward(spec, params, x).logits, y).sum().backward()
        opt.step()
        for r, (o1, o2) in zip(refs, ref_opts, strict=True):
            r.zero_grad()
            F.cross_entropy(r(x), y).backward()
            o1.step()
            o2.step()
    for i, r in enumerate(refs):
        for name, v in r.block_params().items():
            torch.testing.assert_close(params[name][i], v.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make_spec", [_relu, _transformer], ids=["relu", "transformer"])
def test_member_trained_in_a_stack_equals_the_member_alone(make_spec):
    spec = make_spec()
    x, y = _data()

    def train(idx):
        params = init_params(spec, [SEEDS[i] for i in idx], [[1.0, 0.5, 2.0][i] for i in idx])
        params = {k: v.requires_grad_() for k, v in params.items()}
        cell = {
            "optimizer": "muon",
            "lr": [LR[i] for i in idx],
            "weight_decay": [WD[i] for i in idx],
        }
        opt = make_optimizer(cell, params)
        for _ in range(15):
            for v in params.values():
                v.grad = None
            member_losses(forward(spec, params, x).logits, y).sum().backward()
            opt.step()
        return params, opt

    (stacked, sopt), (alone, aopt) = train([0, 1, 2]), train([2])
    for name in spec.blocks():
        assert torch.equal(stacked[name][2], alone[name][0]), name
    for key, v in aopt.state.items():
        assert torch.equal(sopt.state[key][2], v[0]), key


def test_frozen_member_stops_under_muon():
    spec = _relu(1)
    x, y = _data()
    params = {k: v.requires_grad_() for k, v in init_params(spec, SEEDS).items()}
    opt = make_optimizer(_cell(), params)
    opt.freeze(torch.tensor([False, True, False]))
    before = {k: v.detach().clone() for k, v in params.items()}
    member_losses(forward(spec, params, x).logits, y).sum().backward()
    opt.step()
    for k, v in params.items():
        assert torch.equal(v[1], before[k][1]) and not torch.equal(v[0], before[k][0]), k


def test_claims_scope_muon_cells_as_adamw_cells():
    """Every claim covers a Muon cell exactly when it covers the same cell under AdamW; of the
    paper's statements a transformer cell is covered only by the any-model clock claims (no
    deep-linear theorem, no ReLU-gate statement or reduction)."""
    import pandas as pd

    from twoclocks.analyze import claims

    models = ["relu_embed", "transformer", "deep_linear"]
    cells = pd.DataFrame(
        [
            {"cell_id": f"{m}/{o}", "model": m, "optimizer": o, "task": "modular"}
            for m in models
            for o in ("adamw", "muon")
        ]
    )
    for spec in claims.specs():
        ids = set(spec.scope.cell_ids(cells))
        for m in models:
            assert (f"{m}/adamw" in ids) == (f"{m}/muon" in ids), (spec.id, m)
        if "transformer/adamw" in ids:
            assert spec.scope.models is None, spec.id
    covering = [s.id for s in claims.specs() if "transformer/muon" in s.scope.cell_ids(cells)]
    # the classifier-clock statements (its law, Assumption 3.4's margin) and the law of the
    # representation clock speak of any model; nothing else covers a transformer
    assert sorted(covering) == ["cls_log_law", "margin_linear", "rep_power_law"], covering
