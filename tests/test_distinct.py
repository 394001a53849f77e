"""Distinct-sample training and evaluation: merging (a, b) with (b, a) changes no number."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from twoclocks.data.modular import make_modular
from twoclocks.train import metrics as mt
from twoclocks.train.engine import member_losses
from twoclocks.train.models import distinct_samples, forward, init_params, model_spec

CELL = dict(
    model="relu_embed", embed_dim=8, combine="sum", hidden_width=12, hidden_layers=1, bias=True
)


def _data(op="add", split="unordered", modulus=11):
    ds = make_modular(op=op, modulus=modulus, train_fraction=0.5, split=split, split_seed=3)
    x = torch.as_tensor(ds["x_train"].values)
    y = torch.as_tensor(ds["y_train"].values)
    return ds, x, y


@pytest.mark.parametrize(
    ("op", "split", "merged"),
    [("add", "unordered", True), ("add", "ordered", True), ("sub", "unordered", False)],
)
def test_distinct_samples_merge_transposes_with_equal_labels(op, split, merged):
    ds, x, y = _data(op, split)
    spec = model_spec(CELL, ds.attrs)
    xu, yu, w = distinct_samples(spec, x, y)
    if not merged:  # sub: (a, b) and (b, a) have different labels, nothing to merge
        assert w is None and xu is x
        return
    assert w is not None and w.dtype == torch.float64
    assert w.sum().item() == len(x) and len(xu) < len(x)
    keys = {
        (min(a, b), max(a, b), int(c)) for (a, b), c in zip(x.tolist(), y.tolist(), strict=False)
    }
    got = [
        (min(a, b), max(a, b), int(c)) for (a, b), c in zip(xu.tolist(), yu.tolist(), strict=False)
    ]
    assert len(set(got)) == len(got) and set(got) == keys
    full = [
        (min(a, b), max(a, b), int(c)) for (a, b), c in zip(x.tolist(), y.tolist(), strict=False)
    ]
    assert [full.count(k) for k in got] == w.long().tolist()


def test_concat_embeddings_are_never_merged():
    ds, x, y = _data()
    spec = model_spec(dict(CELL, combine="concat"), ds.attrs)
    xu, yu, w = distinct_samples(spec, x, y)
    assert w is None and xu is x and yu is y


def test_weighted_loss_gradient_and_metrics_equal_the_full_set():
    """Training loss, its gradient, and every sample-mean metric on the distinct samples with
    multiplicities equal the plain ones on all samples (float64, to rounding)."""
    ds, x, y = _data()
    spec = model_spec(CELL, ds.attrs)
    xu, yu, w = distinct_samples(spec, x, y)
    p = init_params(spec, [0, 1, 2], dtype=torch.float64)
    grads = []
    for xs, ys, ws in ((x, y, None), (xu, yu, w)):
        q = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        fwd = forward(spec, q, xs)
        loss = member_losses(fwd.logits, ys, ws)
        loss.sum().backward()
        grads.append(
            (
                loss.detach(),
                {k: v.grad for k, v in q.items()},
                mt.logit_metrics(fwd.logits.detach(), ys, ws, delta=True),
                mt.separation_gap(fwd.h.detach(), ys, spec.num_classes, weight=ws),
                mt.gate_flip_fraction(fwd.pre[0] > 0, fwd.pre[0] > 0.1, ws),
            )
        )
    (l0, g0, m0, s0, f0), (l1, g1, m1, s1, f1) = grads
    torch.testing.assert_close(l1, l0, rtol=1e-13, atol=0)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-12, atol=1e-15)
    for k in m0:
        torch.testing.assert_close(m1[k], m0[k], rtol=1e-13, atol=0)
    torch.testing.assert_close(s1, s0, rtol=1e-12, atol=0)
    torch.testing.assert_close(f1, f0, rtol=1e-13, atol=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), c=st.integers(2, 9))
def test_delta_rms_matches_softmax_reference(seed, n, c):
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.1, 3.0, 40.0])
    logits = torch.from_numpy((scale * rng.standard_normal((2, n, c))).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, c, n))
    got = mt.logit_metrics(logits, y, delta=True)["delta_rms"]
    # softmax - onehot with the true entry as minus the sum of the others (no cancellation)
    others = torch.softmax(logits.double(), -1) * (1 - torch.nn.functional.one_hot(y, c).double())
    dsq = others.square().sum(-1) + others.sum(-1).square()
    ref = dsq.mean(-1).sqrt()
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-300)


def test_delta_rms_resolves_confident_and_wrong_extremes():
    c, n = 5, 4
    y = torch.zeros(n, dtype=torch.long)
    logits = torch.zeros(2, n, c)
    logits[0, :, 0] = 60.0  # confident and right: residual ~ sqrt(c - 1) * exp(-60)... tiny
    logits[1, :, 1] = 800.0  # wrong beyond exp's range: residual sqrt(2)
    got = mt.logit_metrics(logits, y, delta=True)["delta_rms"].tolist()
    s = (c - 1) * np.exp(-60.0)
    ref0 = np.sqrt((c - 1) * np.exp(-120.0) + s**2) / (1 + s)
    assert got[0] == pytest.approx(ref0, rel=1e-12) and got[0] > 0
    assert got[1] == pytest.approx(np.sqrt(2.0), rel=1e-12)


def test_logit_metrics_of_a_member_do_not_depend_on_its_stack():
    """Bitwise: each member's float64 metrics are the same alone or stacked with others, also
    for sample counts that leave the vectorised exp/log loops a scalar tail."""
    rng = np.random.default_rng(0)
    for n in (37, 2049, 4099):
        logits = torch.from_numpy((4 * rng.standard_normal((5, n, 13))).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 13, n))
        w = torch.from_numpy(rng.integers(1, 3, n).astype(np.float64))
        stacked = mt.logit_metrics(logits, y, w, delta=True)
        for k in (0, 3, 4):
            alone = mt.logit_metrics(logits[k : k + 1], y, w, delta=True)
            for name, v in alone.items():
                assert torch.equal(stacked[name][k : k + 1], v), (n, k, name)


def test_gram_singular_values_match_svd():
    rng = np.random.default_rng(1)
    mats = torch.from_numpy(rng.standard_normal((4, 113, 128)).astype(np.float32))
    mats[1] = mats[1] * torch.linspace(1e-3, 1.0, 128)  # graded spectrum
    mats[2, 0, 0] = float("nan")
    fast, exact = mt.singular_values_gram(mats), mt.singular_values(mats)
    assert torch.isnan(fast[2]).all()
    ok = [0, 1, 3]
    scale = exact[ok, :1]
    assert ((fast[ok] - exact[ok]).abs() / scale).max() < 1e-7
    np.testing.assert_allclose(fast[ok, 0], exact[ok, 0], rtol=1e-13)
    assert torch.equal(mt.singular_values_gram(mats[[1, 3]]), fast[[1, 3]])


def test_accelerator_paths_give_the_cpu_values(monkeypatch):
    """The flat/batched code paths taken on accelerators (forced here on the CPU) give the same
    metrics as the per-member CPU paths, to float64 rounding."""
    rng = np.random.default_rng(2)
    logits = torch.from_numpy((4 * rng.standard_normal((3, 20000, 7))).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 7, 20000))
    w = torch.from_numpy(rng.integers(1, 3, 20000).astype(np.float64))
    mats = torch.from_numpy(rng.standard_normal((3, 9, 12)).astype(np.float32))
    cpu = (
        mt.logit_metrics(logits, y, w, delta=True),
        mt.singular_values_gram(mats),
        mt.schatten_energy(mats, 3),
    )
    monkeypatch.setattr(mt, "_FORCE_FLAT", True)
    flat = (
        mt.logit_metrics(logits, y, w, delta=True),
        mt.singular_values_gram(mats),
        mt.schatten_energy(mats, 3),
    )
    for k in cpu[0]:
        torch.testing.assert_close(flat[0][k], cpu[0][k], rtol=1e-12, atol=0)
    torch.testing.assert_close(flat[1], cpu[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flat[2], cpu[2], rtol=1e-12, atol=0)


def test_float32_gram_keeps_stable_rank_and_norm_and_flags_overflow():
    rng = np.random.default_rng(5)
    mats = torch.from_numpy(rng.standard_normal((3, 113, 128)).astype(np.float32))
    mats[1] = mats[1] * torch.linspace(1e-3, 1.0, 128)
    mats[2] = mats[2] * 1e25  # finite, but its float32 Gram overflows
    exact = mt.singular_values(mats)
    fast = mt.singular_values_gram(mats, dtype=torch.float32)
    assert fast.dtype == torch.float64 and torch.isnan(fast[2]).all()
    np.testing.assert_allclose(fast[:2, 0], exact[:2, 0], rtol=1e-5)
    srank = lambda s: s.square().sum(-1) / s[:, 0].square()  # noqa: E731
    np.testing.assert_allclose(srank(fast[:2]), srank(exact[:2]), rtol=1e-5)
    assert torch.isfinite(mt.singular_values_gram(mats[2:])).all()  # float64 copes
