"""Tests for the batched metric primitives against per-member numpy/scipy references."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from twoclocks.train import metrics as mt

FAST = settings(max_examples=25, deadline=None)
seeds = st.integers(0, 2**32 - 1)
members = st.integers(1, 3)


def _f64(t):
    assert t.dtype == torch.float64
    return t.numpy()


def _logits(rng, m, n, c):
    return torch.from_numpy(3.0 * rng.standard_normal((m, n, c)).astype(np.float32))


# ------------------------------------------------------------------------------ logit metrics


@FAST
@given(seed=seeds, m=members, n=st.integers(1, 40), c=st.integers(2, 12))
def test_logit_metrics_match_reference(seed, m, n, c):
    rng = np.random.default_rng(seed)
    logits = _logits(rng, m, n, c)
    y = torch.from_numpy(rng.integers(0, c, n))
    z, yn = logits.numpy().astype(np.float64), y.numpy()
    lm = {k: _f64(v) for k, v in mt.logit_metrics(logits, y).items()}
    for i in range(m):
        true = z[i, np.arange(n), yn]
        ce = np.mean(logsumexp(z[i], axis=1) - true)
        other = np.where(np.arange(c)[None, :] == yn[:, None], -np.inf, z[i]).max(axis=1)
        margin = true - other
        np.testing.assert_allclose(lm["loss"][i], ce, rtol=1e-12)
        acc = np.mean(z[i].argmax(axis=1) == yn)
        assert lm["acc"][i] == pytest.approx(acc, abs=1e-15)
        np.testing.assert_allclose(
            [lm["margin_min"][i], lm["margin_mean"][i]], [margin.min(), margin.mean()]
        )


def test_cross_entropy_resolves_tiny_losses_from_float32_logits():
    c, n = 10, 6
    y = torch.arange(n) % c
    margin_true = torch.tensor([20.0, 30.0, 40.0])  # one member per margin
    logits = torch.zeros(3, n, c, dtype=torch.float32)
    logits.scatter_(
        -1, y.view(1, -1, 1).expand(3, -1, 1), margin_true.view(3, 1, 1).expand(-1, n, 1)
    )
    lm = mt.logit_metrics(logits, y)
    loss = _f64(lm["loss"])
    expected = np.log1p((c - 1) * np.exp(-margin_true.double().numpy()))
    assert np.all(expected < 1e-7)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    naive = torch.nn.functional.cross_entropy(logits[2], y).item()  # float32 floors at 0 here
    assert naive == 0.0 and loss[2] > 0
    np.testing.assert_allclose(_f64(lm["margin_min"]), margin_true.numpy())
    assert _f64(lm["acc"]).tolist() == [1.0, 1.0, 1.0]


def test_ties_are_not_correct_and_members_are_independent():
    logits = torch.zeros(2, 4, 3)
    logits[1, :, 0] = torch.nan
    y = torch.tensor([0, 1, 2, 0])
    out = mt.logit_metrics(logits, y)
    assert out["acc"][0] == 0.0 and out["margin_min"][0] == 0.0
    assert out["loss"][0].item() == pytest.approx(np.log(3.0), rel=1e-15)
    assert torch.isnan(out["loss"][1]) and torch.isnan(out["margin_mean"][1])


# ---------------------------------------------------------------------------- spectral metrics


@FAST
@given(seed=seeds, m=members, a=st.integers(1, 9), b=st.integers(1, 9), depth=st.integers(1, 4))
def test_spectral_metrics_match_reference(seed, m, a, b, depth):
    rng = np.random.default_rng(seed)
    mats = torch.from_numpy(rng.standard_normal((m, a, b)).astype(np.float32))
    sv, srank = _f64(mt.singular_values(mats)), _f64(mt.stable_rank(mats))
    for i in range(m):
        s = np.linalg.svd(mats[i].numpy().astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(sv[i], s, rtol=1e-10)
        np.testing.assert_allclose(srank[i], np.sum(s**2) / s[0] ** 2, rtol=1e-10)
        energy = _f64(mt.schatten_energy(mats, depth, rtol=0.0))[i]
        np.testing.assert_allclose(energy, np.sum(s ** (2.0 / depth)), rtol=1e-10)


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_stable_rank_of_rank_r_isometry_is_r(rank):
    rng = np.random.default_rng(rank)
    q1 = np.linalg.qr(rng.standard_normal((20, rank)))[0]
    q2 = np.linalg.qr(rng.standard_normal((15, rank)))[0]
    mats = torch.from_numpy(np.stack([c * q1 @ q2.T for c in (0.1, 1.0, 50.0)]))
    torch.testing.assert_close(
        mt.stable_rank(mats), torch.full((3,), float(rank), dtype=torch.float64)
    )


def test_zero_and_nonfinite_members_give_nan_not_errors():
    mats = torch.randn(3, 4, 5)
    mats[0] = 0.0
    mats[1, 2, 3] = torch.inf
    srank = mt.stable_rank(mats)
    assert torch.isnan(srank[0]) and torch.isnan(srank[1]) and 1.0 <= srank[2] <= 4.0
    assert torch.isnan(mt.singular_values(mats)[1]).all()
    assert torch.isnan(mt.schatten_energy(mats, 3)[1]) and mt.schatten_energy(mats, 3)[0] == 0


def _balanced_factors(A, depth):
    """``[W_1, ..., W_L]`` with ``W_L ... W_1 = A`` and every ``W_l^T W_l`` sharing a spectrum."""
    u, s, vh = torch.linalg.svd(A, full_matrices=False)
    root = torch.diag_embed(s ** (1.0 / depth))
    if depth == 1:
        return [A]
    return [root @ vh] + [root] * (depth - 2) + [u @ root]


@FAST
@given(seed=seeds, m=members, a=st.integers(1, 7), b=st.integers(1, 7), depth=st.integers(1, 4))
def test_balancedness_gap_zero_iff_balanced(seed, m, a, b, depth):
    rng = np.random.default_rng(seed)
    A = torch.from_numpy(rng.standard_normal((m, a, b)))
    factors = _balanced_factors(A, depth)
    torch.testing.assert_close(mt.end_to_end(factors), A)
    sqnorm = sum(w.square().sum(dim=(-2, -1)) for w in factors)
    energy = mt.schatten_energy(A, depth)
    torch.testing.assert_close(depth * energy, sqnorm)
    torch.testing.assert_close(
        mt.balancedness_gap(factors, depth), torch.zeros(m, dtype=torch.float64), atol=1e-9, rtol=0
    )
    if depth >= 2:
        scale = 1.5 + rng.random()
        unbalanced = [factors[0] * scale, factors[1] / scale, *factors[2:]]
        torch.testing.assert_close(mt.end_to_end(unbalanced), A)
        gap = mt.balancedness_gap(unbalanced, depth)
        assert torch.all(gap > 1e-6 * sqnorm)
        torch.testing.assert_close(gap, sum(w.square().sum((-2, -1)) for w in unbalanced) - sqnorm)


@FAST
@given(seed=seeds, m=members, depth=st.integers(1, 4), width=st.integers(1, 6))
def test_balancedness_gap_matches_reference_and_is_nonnegative(seed, m, depth, width):
    rng = np.random.default_rng(seed)
    dims = [5] + [width] * (depth - 1) + [4]
    factors = [
        torch.from_numpy(rng.standard_normal((m, dims[i + 1], dims[i])).astype(np.float32))
        for i in range(depth)
    ]
    gap = _f64(mt.balancedness_gap(factors, depth))
    for i in range(m):
        ws = [f[i].numpy().astype(np.float64) for f in factors]
        A = np.linalg.multi_dot(ws[::-1]) if depth > 1 else ws[0]
        s = np.linalg.svd(A, compute_uv=False)
        s = s[s > max(A.shape) * np.finfo(np.float64).eps * s[0]]
        ref = sum(np.sum(w**2) for w in ws) - depth * np.sum(s ** (2.0 / depth))
        np.testing.assert_allclose(gap[i], ref, rtol=1e-9, atol=1e-9)
        assert gap[i] >= -1e-9 * sum(np.sum(w**2) for w in ws)
    with pytest.raises(ValueError):
        mt.balancedness_gap(factors, depth + 1)


# ----------------------------------------------------------------------------------- Fourier


def _fourier_reference(E, keep, include_constant=False):
    p = E.shape[0]
    X = np.fft.fft(E, axis=0)
    bins = (np.abs(X) ** 2).sum(axis=1) / p
    energy = [bins[0]] + [bins[k] + bins[p - k] for k in range(1, p // 2 + (p % 2))]
    if p % 2 == 0:
        energy.append(bins[p // 2])
    energy = np.array(energy)
    total = np.sum(E**2)
    np.testing.assert_allclose(energy.sum(), total, rtol=1e-10)
    candidates = energy if include_constant else energy[1:]
    kept = np.sort(candidates)[::-1][:keep].sum()
    return (total - kept) / (total + 1e-12)


@FAST
@given(
    seed=seeds, m=members, p=st.integers(2, 30), d=st.integers(1, 6), data=st.data(),
    include_constant=st.booleans(),
)  # fmt: skip
def test_fourier_gap_matches_reference(seed, m, p, d, data, include_constant):
    rng = np.random.default_rng(seed)
    keep = data.draw(st.integers(0, p // 2 + int(include_constant)))
    E = torch.from_numpy(rng.standard_normal((m, p, d)).astype(np.float32))
    gap = _f64(mt.fourier_gap(E, keep, include_constant=include_constant))
    for i in range(m):
        ref = _fourier_reference(E[i].numpy().astype(np.float64), keep, include_constant)
        np.testing.assert_allclose(gap[i], ref, rtol=1e-10, atol=1e-12)
    assert np.all((gap >= 0) & (gap <= 1))


def test_fourier_gap_separates_key_frequencies_from_noise():
    p, d, keep = 113, 32, 5
    rng = np.random.default_rng(0)
    r = np.arange(p)[:, None]
    stacks = []
    for _ in range(3):
        freqs = rng.choice(np.arange(1, (p + 1) // 2), keep, replace=False)
        phases = 2 * np.pi * r * freqs[None, :] / p  # (p, keep)
        basis = np.concatenate([np.cos(phases), np.sin(phases)], axis=1)
        stacks.append(basis @ rng.standard_normal((2 * keep, d)))
    E = torch.from_numpy(np.stack(stacks))
    assert torch.all(mt.fourier_gap(E, keep) < 1e-12)
    assert torch.all(mt.fourier_gap(E, keep - 1) > 0.05)
    noise = torch.randn(3, p, d, generator=torch.Generator().manual_seed(1))
    assert torch.all(mt.fourier_gap(noise, keep) > 0.8)
    constant = torch.ones(2, p, d)
    assert torch.all(mt.fourier_gap(constant, 1) > 1 - 1e-9)
    assert torch.all(mt.fourier_gap(constant, 1, include_constant=True) < 1e-12)
    with pytest.raises(ValueError):
        mt.fourier_gap(E, p)


# ------------------------------------------------------------------------- separation gap


def _class_reference(z, y, num_classes):
    present = [c for c in range(num_classes) if np.any(y == c)]
    mu = {c: z[y == c].mean(axis=0) for c in present}
    within = sum(np.sum((z[a] - mu[y[a]]) ** 2) for a in range(len(y)))
    between = sum(np.sum((mu[c] - mu[d]) ** 2) for c in present for d in present if c != d)
    return present, mu, within, between


@FAST
@given(seed=seeds, m=members, n=st.integers(2, 30), h=st.integers(1, 6), c=st.integers(2, 8))
def test_separation_gap_matches_reference(seed, m, n, h, c):
    rng = np.random.default_rng(seed)
    num_classes = c + 2  # two labels can never occur: absent classes must be ignored
    y = torch.from_numpy(rng.integers(0, c, n))
    z = torch.from_numpy(rng.standard_normal((m, n, h)).astype(np.float32))
    raw = _f64(mt.separation_gap(z, y, num_classes, normalize=False))
    normed = _f64(mt.separation_gap(z, y, num_classes))
    for i in range(m):
        present, _, within, between = _class_reference(
            z[i].numpy().astype(np.float64), y.numpy(), c
        )
        k = len(present)
        if k < 2:
            assert np.isnan(raw[i]) and np.isnan(normed[i])
            continue
        np.testing.assert_allclose(raw[i], within / (between + 1e-12), rtol=1e-9)
        ref = (within / n) / (between / (k * (k - 1)) + 1e-12)
        np.testing.assert_allclose(normed[i], ref, rtol=1e-9)


def test_separation_gap_zero_for_collapsed_classes_and_size_free():
    rng = np.random.default_rng(3)
    num_classes, n = 7, 50
    y = torch.from_numpy(rng.integers(0, num_classes, n))
    means = torch.from_numpy(rng.standard_normal((2, num_classes, 4)))
    collapsed = means[:, y]
    assert torch.all(mt.separation_gap(collapsed, y, num_classes) < 1e-20)
    noisy = collapsed + 0.3 * torch.from_numpy(rng.standard_normal(collapsed.shape))
    gap = mt.separation_gap(noisy, y, num_classes)
    assert torch.all(gap > 0)
    doubled = mt.separation_gap(torch.cat([noisy, noisy], dim=1), torch.cat([y, y]), num_classes)
    torch.testing.assert_close(doubled, gap)


# ------------------------------------------------------------------------------------- gates


@FAST
@given(seed=seeds, m=members, n=st.integers(1, 20), h=st.integers(1, 8))
def test_gate_metrics_match_reference(seed, m, n, h):
    rng = np.random.default_rng(seed)
    pre = torch.from_numpy(rng.standard_normal((m, n, h)).astype(np.float32))
    prev = torch.from_numpy(rng.random((m, n, h)) < 0.5)
    flip = _f64(mt.gate_flip_fraction(prev, pre > 0))
    low = _f64(mt.preact_min_abs(pre))
    for i in range(m):
        assert flip[i] == pytest.approx(np.mean(prev[i].numpy() != (pre[i].numpy() > 0)))
        assert low[i] == np.abs(pre[i].numpy()).min()
    assert torch.all(mt.gate_flip_fraction(prev, prev) == 0)


def test_separation_gap_near_collapse_is_exact_and_member_independent():
    """Near-collapsed classes (within-class scatter ~1e-10 of the total) take the deviation form:
    still exact to 1e-9, and a member's value is the same bits alone or stacked."""
    rng = np.random.default_rng(4)
    num_classes, n, h = 5, 60, 7
    y = torch.from_numpy(rng.integers(0, num_classes, n))
    means = rng.standard_normal((num_classes, h)) * 10
    tight = means[y.numpy()] + 1e-4 * rng.standard_normal((n, h))
    loose = means[y.numpy()] + rng.standard_normal((n, h))
    z = torch.from_numpy(np.stack([tight, loose]))
    got = _f64(mt.separation_gap(z, y, num_classes))
    for i, zi in enumerate((tight, loose)):
        mu = np.stack([zi[y.numpy() == c].mean(0) for c in range(num_classes)])
        within = ((zi - mu[y.numpy()]) ** 2).sum() / n
        d = mu[:, None, :] - mu[None, :, :]
        between = (d**2).sum() / (num_classes * (num_classes - 1))
        np.testing.assert_allclose(got[i], within / (between + 1e-12), rtol=1e-9)
    for i in range(2):
        assert torch.equal(mt.separation_gap(z[i : i + 1], y, num_classes)[0], torch.tensor(got[i]))


def test_small_spectra_run_on_one_thread_whatever_the_thread_count():
    """The weight spectra (small per-member Gram products and eigenproblems) run on one thread:
    the same bits under 1 and 2 torch threads, and the caller's thread count is restored."""
    g = torch.Generator().manual_seed(3)
    mats = torch.randn(3, 113, 128, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = mt.singular_values_gram(mats, dtype=torch.float32)
        two64 = mt.singular_values_gram(mats.double())
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        assert torch.equal(mt.singular_values_gram(mats, dtype=torch.float32), two)
        assert torch.equal(mt.singular_values_gram(mats.double()), two64)
    finally:
        torch.set_num_threads(before)
    ref = torch.linalg.svdvals(mats.double())
    torch.testing.assert_close(two64, ref, rtol=1e-10, atol=1e-6)
