"""The training-set mean gated map (`metrics.mean_gated_map`, behind `srank_gated`) against its
per-sample definition ``mean_a U D_L(a) W_L ... D_1(a) W_1``, in float64, for 1-3 hidden layers."""

from __future__ import annotations

import pytest
import torch

from twoclocks.train import metrics as tm
from twoclocks.train.engine import Samples
from twoclocks.train.models import forward, init_params, model_spec


def _per_sample_mean(spec, theta, x, weight, i):
    """The definition: every sample's gated map, formed explicitly, then the weighted mean."""
    u = theta["U"][i]
    ws = [theta[f"W{k}"][i] for k in range(1, spec.hidden_layers + 1)]
    pre = forward(spec, theta, x).pre
    maps = []
    for a in range(x.shape[0]):
        j = ws[0]
        for k, w in enumerate(ws):
            if k:
                j = w @ j
            j = (pre[k][i, a] > 0).to(j.dtype)[:, None] * j
        maps.append(u @ j)
    w = torch.ones(x.shape[0], dtype=torch.float64) if weight is None else weight.double()
    return torch.einsum("a,apd->pd", w, torch.stack(maps)) / w.sum()


@pytest.mark.parametrize(
    ("combine", "layers", "bias"), [("concat", 2, True), ("sum", 2, False), ("concat", 3, True)]
)
def test_mean_gated_map_matches_per_sample_definition(combine, layers, bias):
    p = 11
    params = {
        "model": "relu_embed",
        "embed_dim": 5,
        "combine": combine,
        "hidden_width": 9,
        "hidden_layers": layers,
        "bias": bias,
    }
    spec = model_spec(params, {"task": "modular", "num_classes": p, "vocab_size": p})
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x_all = torch.stack([a.ravel(), b.ravel()], 1)[::2].contiguous()
    train = Samples.of(spec, x_all, (x_all[:, 0] + x_all[:, 1]) % p)  # sum: weights 2
    theta = init_params(spec, [0, 5], dtype=torch.float64)
    with torch.no_grad():
        pre = forward(spec, theta, train.x).pre
        gates = [(t > 0).to(t.dtype) for t in pre]
        hidden = [theta[f"W{k}"] for k in range(1, layers + 1)]
        got = tm.mean_gated_map(theta["U"], hidden, gates, train.weight)
        # several chunks of a few samples each give the same map (deep stacks chunk)
        tiny = tm.mean_gated_map(theta["U"], hidden, gates, train.weight, chunk_bytes=1 << 12)
        for i in range(2):
            want = _per_sample_mean(spec, theta, train.x, train.weight, i)
            scale = want.abs().max()
            assert (got[i] - want).abs().max() <= 1e-10 * scale
            assert (tiny[i] - want).abs().max() <= 1e-10 * scale
    assert got.shape == (2, p, spec.linear_input_dim)


def test_deep_gated_map_stays_within_its_chunk_budget():
    """The deep path's working set is chunked: the largest float64 block it forms stays within
    the budget (here 64 kB) whatever the sample count."""
    g = torch.Generator().manual_seed(0)
    m, n, p, h, d = 1, 3000, 7, 16, 5
    u = torch.randn(m, p, h, generator=g, dtype=torch.float64)
    ws = [torch.randn(m, h, d, generator=g, dtype=torch.float64)]
    ws += [torch.randn(m, h, h, generator=g, dtype=torch.float64) for _ in range(2)]
    gates = [(torch.rand(m, n, h, generator=g) > 0.5).double() for _ in range(3)]
    seen: list[int] = []
    real = torch.Tensor.__matmul__

    def spy(a, b):
        out = real(a, b)
        seen.append(out.numel() * out.element_size())
        return out

    torch.Tensor.__matmul__ = spy
    try:
        small = tm.mean_gated_map(u, ws, gates, None, chunk_bytes=64 << 10)
    finally:
        torch.Tensor.__matmul__ = real
    big = tm.mean_gated_map(u, ws, gates, None)
    assert max(seen) <= 64 << 10
    assert (small - big).abs().max() <= 1e-12 * big.abs().max()
