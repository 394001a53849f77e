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
        # float32 Gram matrices: ~1e-6 relative (docstring of singular_values_gram); the logit
        # matrix's Gram comes from the hidden one (U (h^T h) U^T), the reference's from the logits
        assert got["srank_hidden"][i] == pytest.approx(_srank(h.numpy()), rel=1e-5)
        assert got["srank_logits"][i] == pytest.approx(_srank(logits.numpy()), rel=1e-5)
        mean_j = torch.stack(jac).mean(0).numpy()
        assert got["srank_gated"][i] == pytest.approx(_srank(mean_j), rel=1e-5)


def test_fig3_candidates_are_logged_on_every_fourth_row(tmp_path):
    """`every_rows`: the engine fills rows 0, 4, 8, ... and leaves NaN between."""
    from conftest import TINY_RELU_CELL

    from twoclocks.data.modular import make_modular
    from twoclocks.train import store as ts
    from twoclocks.train.engine import train_cell
    from twoclocks.train.models.relu_embed import FIG3_EVERY_ROWS

    data = make_modular(op="add", modulus=13, train_fraction=0.5, split="unordered", split_seed=0)
    cell = dict(TINY_RELU_CELL, steps=10, log_dense_steps=10, snapshot_count=2)
    traj = ts.open_trajectory(train_cell(cell, data, tmp_path / "t" / "trajectory.zarr")).load()
    rows = np.arange(traj.sizes["step"])
    due = rows % FIG3_EVERY_ROWS == 0
    for name in ("srank_gated", "srank_hidden", "srank_logits"):
        v = traj[name].values
        assert np.isfinite(v[:, due]).all() and np.isnan(v[:, ~due]).all(), name
    assert np.isfinite(traj["srank"].values).all()  # the clocks' stable ranks: every row
