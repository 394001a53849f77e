"""Stacked models + optimisers equal unstacked nn.Modules trained by torch.optim, per member."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from twoclocks.train.engine import member_losses
from twoclocks.train.models import (
    DeepLinearSpec,
    ModelSpec,
    ReluEmbedSpec,
    encode_inputs,
    end_to_end,
    forward,
    init_params,
)
from twoclocks.train.optim import StackedAdamW, StackedSGD

P = 7
SEEDS = [0, 1, 2]
LR = [3e-3, 1e-3, 5e-3]
WD = [0.5, 1.0, 0.0]


def _data(n: int = 30):
    g = torch.Generator().manual_seed(123)
    x = torch.randint(0, P, (n, 2), generator=g)
    return x, (x[:, 0] + x[:, 1]) % P


def _relu(combine: str, bias: bool, layers: int = 1) -> ModelSpec:
    return ReluEmbedSpec(
        num_classes=P,
        input_kind="tokens",
        vocab_size=P,
        embed_dim=6,
        combine=combine,
        hidden_width=10,
        hidden_layers=layers,
        bias=bias,
    )


def _dl(depth: int, balanced: bool = False) -> ModelSpec:
    return DeepLinearSpec(
        num_classes=P,
        input_kind="tokens",
        vocab_size=P,
        depth=depth,
        width=8,
        balanced_init=balanced,
    )


def _run(spec, dtype, opt_name, steps, lr=LR, wd=WD):
    """Train stacked and reference models side by side; return (stacked, references)."""
    x, y = _data()
    xin = encode_inputs(spec, x, dtype)
    params = init_params(spec, SEEDS, [1.0, 0.5, 2.0], dtype=dtype)
    params = {k: v.requires_grad_() for k, v in params.items()}
    refs = [spec.reference_of_member(params, i) for i in range(len(SEEDS))]
    if opt_name == "adamw":
        opt = StackedAdamW(params, lr, wd, betas=(0.9, 0.98), eps=1e-8)
        ref_opts = [
            torch.optim.AdamW(
                list(r.block_params().values()), lr=lr[i], weight_decay=wd[i], betas=(0.9, 0.98)
            )
            for i, r in enumerate(refs)
        ]
    else:
        opt = StackedSGD(params, lr, wd, momentum=0.9)
        ref_opts = [
            torch.optim.SGD(
                list(r.block_params().values()), lr=lr[i], weight_decay=wd[i], momentum=0.9
            )
            for i, r in enumerate(refs)
        ]
    for _ in range(steps):
        for v in params.values():
            v.grad = None
        member_losses(forward(spec, params, xin).logits, y).sum().backward()
        opt.step()
        for r, o in zip(refs, ref_opts, strict=True):
            o.zero_grad()
            F.cross_entropy(r(x), y).backward()
            o.step()
    return params, refs


def _max_rel_err(params, refs) -> float:
    errs = []
    for i, r in enumerate(refs):
        for name, v in r.block_params().items():
            scale = v.detach().abs().max().clamp_min(1e-12)
            errs.append(((params[name][i] - v).abs().max() / scale).item())
    return max(errs)


CASES = [
    ("relu-sum-bias", lambda: _relu("sum", True)),
    ("relu-sum-nobias", lambda: _relu("sum", False)),
    ("relu-concat-bias-2layers", lambda: _relu("concat", True, layers=2)),
    ("relu-concat-nobias", lambda: _relu("concat", False)),
    ("dl-L1", lambda: _dl(1)),
    ("dl-L3", lambda: _dl(3)),
    ("dl-L3-balanced", lambda: _dl(3, balanced=True)),
]


@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
@pytest.mark.parametrize("case", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_stacked_equals_reference_float64(case, opt_name):
    lr = LR if opt_name == "adamw" else [0.5, 0.2, 1.0]
    params, refs = _run(case(), torch.float64, opt_name, 200, lr=lr)
    assert _max_rel_err(params, refs) < 1e-6


@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
def test_stacked_equals_reference_float32(opt_name):
    lr = [1e-3, 5e-4, 2e-3] if opt_name == "adamw" else [0.1, 0.05, 0.2]
    params, refs = _run(_relu("sum", True), torch.float32, opt_name, 200, lr=lr)
    assert _max_rel_err(params, refs) < 1e-3


def test_member_init_independent_of_stack():
    spec = _relu("concat", True)
    a = init_params(spec, [0, 1, 2], dtype=torch.float64)
    b = init_params(spec, [2, 5], dtype=torch.float64)
    for name in a:
        assert torch.equal(a[name][2], b[name][0])
    assert not torch.equal(a["E"][0], a["E"][1])


def test_init_scales_match_torch_defaults():
    spec = _relu("sum", True)
    p = init_params(spec, list(range(20)), dtype=torch.float64)
    assert abs(p["E"].std().item() - 1.0) < 0.1  # nn.Embedding: N(0, 1)
    bound = 1 / 6**0.5  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert p["W1"].abs().max() <= bound and p["W1"].abs().max() > 0.9 * bound
    half = init_params(spec, list(range(20)), 0.5, dtype=torch.float64)
    assert torch.allclose(half["U"], 0.5 * p["U"])


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_balanced_init_is_balanced_and_keeps_the_map(depth):
    spec, plain = _dl(depth, balanced=True), _dl(depth)
    p = init_params(spec, [0, 3], dtype=torch.float64)
    q = init_params(plain, [0, 3], dtype=torch.float64)
    for k in range(1, depth):
        lo, hi = p[f"W{k}"], p[f"W{k + 1}"]
        assert torch.allclose(hi.transpose(1, 2) @ hi, lo @ lo.transpose(1, 2), atol=1e-12)
    assert torch.allclose(end_to_end(spec, p), end_to_end(plain, q), atol=1e-12)


def test_frozen_member_stops_and_others_continue():
    spec = _dl(2)
    x, y = _data()
    xin = encode_inputs(spec, x, torch.float64)
    params = {
        k: v.requires_grad_() for k, v in init_params(spec, SEEDS, dtype=torch.float64).items()
    }
    opt = StackedAdamW(params, LR, WD)
    for step in range(20):
        if step == 5:
            frozen = {k: v[1].detach().clone() for k, v in params.items()}
            opt.freeze(torch.tensor([False, True, False]))
        for v in params.values():
            v.grad = None
        member_losses(forward(spec, params, xin).logits, y).sum().backward()
        opt.step()
    for k, v in params.items():
        assert torch.equal(v[1], frozen[k])
    sd = opt.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert not bool(sd["active"][1])


@pytest.mark.parametrize(("combine", "layers"), [("sum", 1), ("concat", 2)])
def test_evaluation_forward_equals_the_training_forward(combine, layers):
    """Without autograd the forward takes a fused gather-sum and a per-member head (CPU); the
    logits and hidden states equal the autograd path's, and each member's equal it alone."""
    spec = _relu(combine, True, layers)
    params = init_params(spec, SEEDS, dtype=torch.float64)
    x, _ = _data(41)
    train = forward(spec, {k: v.clone().requires_grad_(True) for k, v in params.items()}, x)
    with torch.no_grad():
        ev = forward(spec, params, x)
        alone = forward(spec, {k: v[1:2] for k, v in params.items()}, x)
    torch.testing.assert_close(ev.logits, train.logits.detach(), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(ev.h, train.h.detach(), rtol=1e-14, atol=1e-14)
    assert torch.equal(alone.logits[0], ev.logits[1])


@pytest.mark.parametrize(
    ("combine", "bias", "layers"), [("sum", True, 1), ("concat", True, 2), ("sum", False, 2)]
)
def test_evaluation_logits_equal_the_forward(combine, bias, layers):
    """``spec.logits`` (the engine's test pass: bias folded into the token table, in-place
    ReLUs) equals the forward's logits to rounding, leaves the parameters untouched, and gives a
    member alone the same bits as in a stack."""
    spec = _relu(combine, bias, layers)
    params = init_params(spec, SEEDS, dtype=torch.float64)
    before = {k: v.clone() for k, v in params.items()}
    x, _ = _data(41)
    fast = spec.logits(params, x)
    with torch.no_grad():
        ref = forward(spec, params, x).logits
    torch.testing.assert_close(fast, ref, rtol=1e-13, atol=1e-13)
    assert all(torch.equal(params[k], before[k]) for k in params)
    alone = spec.logits({k: v[2:3] for k, v in params.items()}, x)
    assert torch.equal(alone[0], fast[2])
    dl = _dl(2)  # the default: forward's logits
    dlp = init_params(dl, SEEDS, dtype=torch.float64)
    xin = encode_inputs(dl, x, torch.float64)
    assert torch.equal(dl.logits(dlp, xin), forward(dl, dlp, xin).logits.detach())


def test_member_matmul_gradients_and_stack_independence():
    """The CPU per-member matmul of the head: exact gradients (gradcheck) and, bitwise, the
    same output and gradients for a member alone as in a stack."""
    from twoclocks.train.models.base import _MemberMatmulNT

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, 6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(_MemberMatmulNT.apply, (a, b))
    a32 = torch.randn(3, 333, 128, generator=g).requires_grad_(True)
    b32 = torch.randn(3, 113, 128, generator=g).requires_grad_(True)
    out = _MemberMatmulNT.apply(a32, b32)
    out.square().sum().backward()
    a1, b1 = (t.detach()[1:2].clone().requires_grad_(True) for t in (a32, b32))
    out1 = _MemberMatmulNT.apply(a1, b1)
    out1.square().sum().backward()
    assert torch.equal(out1[0], out[1]) and torch.equal(a1.grad[0], a32.grad[1])
    assert torch.equal(b1.grad[0], b32.grad[1])
    torch.testing.assert_close(out, torch.bmm(a32, b32.transpose(1, 2)), rtol=1e-5, atol=1e-4)
