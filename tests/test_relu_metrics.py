"""The Fig. 3 candidate stable ranks of relu_embed (srank_gated, srank_hidden, srank_logits)
against explicit matrices built sample by sample with the reference network and numpy SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twoclocks.train import metric_catalog as cat
from twoclocks.train.engine import Samples
from twoclocks.train.models import forward, init_params, model_spec


def _srank(a: np.ndarray) -> float:
    s = np.linalg.svd(a, compute_uv=False)
    return float((s**2).sum() / s[0] ** 2)


@pytest.mark.parametrize(("combine", "layers"), [("sum", 1), ("concat", 2)])
def test_candidate_stable_ranks_match_explicit_matrices(combine, layers):
    p = 7
    params = {
        "model": "relu_embed",
        "embed_dim": 4,
        "combine": combine,
        "hidden_width": 6,
        "hidden_layers": layers,
        "bias": True,
    }
    attrs = {"task": "modular", "num_classes": p, "vocab_size": p}
    spec = model_spec(params, attrs)
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    x_all = torch.as_tensor(np.stack([a.ravel(), b.ravel()], 1)[::3].copy())
    y_all = (x_all[:, 0] + x_all[:, 1]) % p
    train = Samples.of(spec, x_all, y_all)  # sum: transposes merged, weights 2
    theta = init_params(spec, [0, 3], dtype=torch.float64)
    fwd = forward(spec, theta, train.x)
    ctx = cat.LogContext(
        spec=spec,
        params=theta,
        fwd=fwd,
        train=train,
        test=train,
        test_logits=fwd.logits,
        prev_gates=None,
        fourier_keep=2,
        delta=True,
    )
    names = ("srank_gated", "srank_hidden", "srank_logits")
    with torch.no_grad():
        got = {m.name: m.compute(ctx).numpy() for m in cat.metrics_for(spec) if m.name in names}
    for i in range(2):
        net = spec.reference_of_member(theta, i)
        with torch.no_grad():
            ea, eb = net.embed(x_all[:, 0]), net.embed(x_all[:, 1])
            z = ea + eb if combine == "sum" else torch.cat([ea, eb], 1)
            h, jac = z, []
            ws = [layer.weight for layer in net.hidden]
            for layer in net.hidden:
                h = torch.relu(layer(h))
            logits = net.head(h)
            for k in range(x_all.shape[0]):  # per-sample Jacobian U D_L W_L ... D_1 W_1
                act, j = z[k], torch.eye(z.shape[1], dtype=z.dtype)
                for w, layer in zip(ws, net.hidden, strict=True):
                    pre = layer(act)
                    j = (pre > 0).to(z.dtype)[:, None] * (w @ j)
                    act = torch.relu(pre)
                jac.append(net.head.weight @ j)
        # float32 Gram matrices: ~1e-6 relative (docstring of singular_values_gram)
        assert got["srank_hidden"][i] == pytest.approx(_srank(h.numpy()), rel=1e-5)
        assert got["srank_logits"][i] == pytest.approx(_srank(logits.numpy()), rel=1e-5)
        mean_j = torch.stack(jac).mean(0).numpy()
        assert got["srank_gated"][i] == pytest.approx(_srank(mean_j), rel=1e-9)
