"""Batched metric primitives for stacked models (leading member axis ``M``).

Every function takes torch tensors whose first axis indexes the ``M`` stacked members, reduces
each member on its own (no statistic is shared across members), and returns float64 tensors on
the input's device. Nothing here loops over members or classes in Python, so one call covers a
whole cell. Non-finite members (e.g. a diverged seed) give NaN for that member only.

Equation numbers refer to arXiv 2606.05863 (see ``docs/science.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import reduce

import torch
from torch import Tensor

__all__ = [
    "balancedness_gap",
    "end_to_end",
    "fourier_energy",
    "fourier_gap",
    "gate_flip_fraction",
    "gram",
    "gram_singular_values",
    "gram_through",
    "logit_metrics",
    "mean_gated_map",
    "preact_min_abs",
    "schatten_energy",
    "separation_gap",
    "singular_values",
    "singular_values_gram",
    "stable_rank",
    "stable_rank_of_gram",
    "wmean",
]

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Logit metrics


def _other_minus_true(logits: Tensor, y: Tensor) -> Tensor:
    """Float64 ``z_c - z_y`` for every class, with the true class itself set to ``-inf``."""
    if logits.shape[-1] < 2:
        raise ValueError("logit metrics need at least two classes")
    rel = logits.to(F64, copy=True)  # subtracted in place below: never the caller's tensor
    idx = y.to(device=rel.device, dtype=torch.long).view(1, -1, 1).expand(rel.shape[0], -1, 1)
    rel.sub_(rel.gather(-1, idx))
    return rel.scatter_(-1, idx, float("-inf"))


def wmean(v: Tensor, weight: Tensor | None) -> Tensor:
    """Mean over the last (sample) axis, weighted by per-sample multiplicities if given."""
    if weight is None:
        return v.mean(dim=-1)
    w = weight.to(device=v.device, dtype=v.dtype)
    return (v * w).sum(dim=-1) / w.sum()


def _per_sample(
    logits: Tensor, y: Tensor, delta: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-sample float64 CE, margin and (if ``delta``) ``||softmax(z) - e_y||^2``, each ``(M, n)``.

    CE is ``log(1 + sum_{c != y} exp(z_c - z_y)) = softplus(lse_{c != y}(z_c - z_y))``, which
    stays accurate to float64 relative precision for arbitrarily small losses, where
    ``-log_softmax`` cancels (``log(1 + 1e-17) == 0``) and floors near 1e-16. The max inside the
    log-sum-exp is minus the margin, so both come from one pass. With ``t`` that max,
    ``s = sum exp(rel - t)`` and ``q = sum exp(2 (rel - t))`` over the other classes, the softmax
    residual of Prop. 4.2 is ``(q + s^2) / (exp(-t) + s)^2``, again without cancellation.
    """
    m, n = logits.shape[:2]
    if _per_member(logits):
        # CPU: per-member, cache-sized blocks: ~2x faster than one pass, and a member's values do
        # not depend on the stack (a flat pass puts its elements at stack-dependent offsets of
        # the vectorised exp/log loops, whose scalar tails round differently).
        blocks = [(slice(k, k + 1), i, _CHUNK) for k in range(m) for i in range(0, n, _CHUNK)]
    else:
        blocks = [(slice(None), i, _CHUNK_FLAT) for i in range(0, n, _CHUNK_FLAT)]
    if len(blocks) <= 1:
        return _per_sample_block(logits, y, delta)
    outs = [logits.new_empty((m, n), dtype=F64) for _ in range(3 if delta else 2)]
    for members, i, size in blocks:
        part = _per_sample_block(logits[members, i : i + size], y[i : i + size], delta)
        for out, value in zip(outs, part, strict=False):
            out[members, i : i + size] = value
    return outs[0], outs[1], outs[2] if delta else None


def _per_sample_block(
    logits: Tensor, y: Tensor, delta: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One block of :func:`_per_sample`, in one pass."""
    rel = _other_minus_true(logits, y)
    top = rel.amax(dim=-1, keepdim=True)
    ex = rel.sub_(top).exp_()
    s = ex.sum(dim=-1)
    t = top.squeeze(-1)
    loss = torch.nn.functional.softplus(t + s.log())
    dsq = None
    if delta:
        dsq = (ex.square_().sum(dim=-1) + s.square()) / (torch.exp(-t) + s).square()
    return loss, -t, dsq


_CHUNK = 2048  # samples per block of the float64 logit metrics (2048 x 113 doubles ~ 1.8 MB)
_CHUNK_FLAT = 16384  # samples per all-member block on accelerators (bounds the float64 copy)
_FORCE_FLAT = False  # tests: run the accelerator (flat, batched) code paths on the CPU


def _per_member(t: Tensor) -> bool:
    """Loop over members (CPU: member-independent rounding, cache-sized work) or run one batched
    program over all of them (accelerators, where per-member launches would dominate and every
    element is computed by the same code whatever its offset)."""
    return t.device.type == "cpu" and not _FORCE_FLAT


def logit_metrics(
    logits: Tensor, y: Tensor, weight: Tensor | None = None, *, delta: bool = False
) -> dict[str, Tensor]:
    """``loss``, ``acc``, ``margin_min``, ``margin_mean`` (each ``(M,)``) from one float64 pass.

    ``loss`` is the mean cross-entropy, with the logits cast to float64 *before* any arithmetic
    (a float32 loss floors near 1e-7, docs/science.md 5) and evaluated as ``softplus`` of the
    log-sum-exp of the other classes' logit gaps, which resolves losses far below 1e-16. The
    margin is ``z_y - max_{c != y} z_c``; ``acc`` is the fraction of samples with a strictly
    positive margin (argmax accuracy except at exact ties, which count as wrong: an all-zero head
    does not score 1/C for free). ``weight``: optional per-sample multiplicities for the means
    (see ``models.distinct_samples``). ``delta=True`` adds ``delta_rms``, the root mean
    square over samples of ``||softmax(z) - onehot(y)||`` (``||Delta||_F / sqrt(n)``, Prop. 4.2).
    """
    loss, margin, dsq = _per_sample(logits, y, delta)
    out = {
        "loss": wmean(loss, weight),
        "acc": wmean((margin > 0).to(F64), weight),
        "margin_min": margin.amin(dim=-1),
        "margin_mean": wmean(margin, weight),
    }
    if delta:
        out["delta_rms"] = wmean(dsq, weight).sqrt()
    return out


# ---------------------------------------------------------------------------------------------
# Spectral metrics


def singular_values(mats: Tensor) -> Tensor:
    """Singular values per member in float64, descending, ``(M, a, b) -> (M, min(a, b))``.

    Members with non-finite entries (where LAPACK would raise) come back as NaN rows.
    """
    m = mats.to(F64)
    finite = torch.isfinite(m).flatten(1).all(dim=1)
    s = torch.linalg.svdvals(torch.where(finite.view(-1, 1, 1), m, 0.0))
    return torch.where(finite.view(-1, 1), s, torch.nan)


def singular_values_gram(mats: Tensor, dtype: torch.dtype = F64) -> Tensor:
    """Singular values per member from the eigenvalues of the smaller Gram matrix, float64 out.

    About twice as fast as :func:`singular_values` on the logged (113, 128) matrices. In float64
    (default) large values are exact to float64 rounding and the smallest carry an absolute error
    near ``sqrt(eps64) s_max ~ 1.5e-8 s_max``, below the rounding of float32 weights themselves:
    fit for stable ranks and spectra of float32 runs, not for Schatten quasi-norms of tiny values.
    ``dtype=torch.float32`` (faster again) keeps the largest values to ~1e-6 relative: enough for
    a stable rank or a spectral norm, not for a spectrum. Non-finite members give NaN rows.
    """
    m = mats.to(dtype)
    if m.shape[-2] > m.shape[-1]:
        m = m.mT
    return gram_singular_values(gram(m))


_ONE_THREAD_MAX_WORK = 1 << 22  # multiply-adds (~a^2 b) below which one thread is faster


@contextlib.contextmanager
def _one_thread(work: int):
    """Run the enclosed per-member CPU products or eigenproblems of about ``work`` multiply-adds
    on one thread when that is small (the (113, 128) weight spectra). At these sizes a second
    thread only adds synchronisation: in the training loop, where the thread pool has gone idle
    between log rows, the spectra of a log row measured ~1 ms (~15%) faster this way, paired
    per row (docs/performance.md). Larger work (the hidden activations' Gram) keeps every
    thread."""
    n = torch.get_num_threads()
    if n == 1 or work > _ONE_THREAD_MAX_WORK:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def gram(m: Tensor) -> Tensor:
    """``m m^T`` per member, ``(M, a, b) -> (M, a, a)``, in ``m``'s dtype.

    CPU: one 2-D product per member, so a member's bits do not depend on its stack."""
    if _per_member(m):
        with _one_thread(m.shape[-2] ** 2 * m.shape[-1]):
            return torch.stack([a @ a.T for a in m.unbind(0)])
    return m @ m.mT


def gram_singular_values(g: Tensor) -> Tensor:
    """Singular values (descending, float64) of the matrices whose Gram matrices are ``g`` (M, k,
    k): square roots of its eigenvalues. Non-finite members give NaN rows."""
    finite = torch.isfinite(g).flatten(1).all(dim=1)  # non-finite or overflowing members
    g = torch.where(finite.view(-1, 1, 1), g, 0.0)
    # CPU: one 2-D call per member; batched eigvalsh results depend on the batch size there (a
    # member's value would depend on its stack), and the loop measured as fast or faster.
    if _per_member(g):
        with _one_thread(g.shape[-1] ** 3):
            s = torch.stack([torch.linalg.eigvalsh(a) for a in g.unbind(0)])
    else:
        s = torch.linalg.eigvalsh(g)
    s = s.to(F64).flip(-1).clamp_min(0.0).sqrt()
    return torch.where(finite.view(-1, 1), s, torch.nan)


def gram_through(u: Tensor, g: Tensor) -> Tensor:
    """Gram matrix of ``x u^T`` from the Gram matrix ``g = x^T x`` of ``x``: ``u g u^T`` per
    member, ``(M, a, k), (M, k, k) -> (M, a, a)``. The logit matrix ``h U^T`` (n x p) gets its
    p x p Gram from the hidden activations' k x k one without another pass over the n samples."""
    if _per_member(g):
        with _one_thread(u.shape[-2] * g.shape[-1] * (g.shape[-1] + u.shape[-2])):
            return torch.stack([a @ b @ a.T for a, b in zip(u.unbind(0), g.unbind(0), strict=True)])
    return u @ g @ u.mT


def stable_rank_of_gram(g: Tensor) -> Tensor:
    """Stable rank (eq. 2.3) of the matrices whose Gram matrices are ``g``: trace over the
    largest eigenvalue, ``(M,)`` float64 (NaN for non-finite members)."""
    return _srank_of(gram_singular_values(g))


def stable_rank(mats: Tensor) -> Tensor:
    """Stable rank ``||A||_F^2 / ||A||_2^2`` per member (eq. 2.3), ``(M,)`` float64.

    Lies in ``[1, rank A]``; a zero matrix gives NaN (0/0), not an error.
    """
    return _srank_of(singular_values(mats))


def _srank_of(s: Tensor) -> Tensor:
    return s.square().sum(dim=-1) / s[:, 0].square()


def schatten_energy(A: Tensor, depth: int, rtol: float | None = None) -> Tensor:
    """Schatten energy ``||A||_{S_{2/L}}^{2/L} = sum_i s_i(A)^{2/L}`` per member (eq. 2.7).

    ``depth`` is ``L``: 1 gives ``||A||_F^2``, 2 the nuclear norm, ``L >= 3`` a quasi-norm. For
    ``L >= 3`` rounding-level singular values of a rank-deficient ``A`` would add spurious
    ``s^{2/L}`` mass, so values ``<= rtol * s_max`` count as zero; the default ``rtol`` is
    ``max(a, b) * eps(A.dtype)`` (the ``matrix_rank`` convention), and ``rtol=0`` keeps all.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if rtol is None:
        fdtype = A.dtype if A.is_floating_point() else F64
        rtol = max(A.shape[-2:]) * torch.finfo(fdtype).eps
    s = singular_values(A)
    s = torch.where(s <= rtol * s[:, :1], 0.0, s)  # NaN stays NaN
    if not _per_member(s):
        return s.pow(2.0 / depth).sum(dim=-1)
    # CPU row by row: a flat pow over (M, k) rounds a member differently by its stack offset.
    return torch.stack([r.pow(2.0 / depth).sum() for r in s.unbind(0)])


def end_to_end(factors: Sequence[Tensor]) -> Tensor:
    """Float64 end-to-end map ``W_L @ ... @ W_1`` of ``factors = [W_1, ..., W_L]``.

    Each ``W_l`` is ``(M, d_l, d_{l-1})`` (``y = W x`` convention).
    """
    return reduce(lambda acc, w: w.to(F64) @ acc, factors[1:], factors[0].to(F64))


def balancedness_gap(factors: Sequence[Tensor], depth: int) -> Tensor:
    """``sum_l ||W_l||_F^2 - L * ||W_L...W_1||_{S_{2/L}}^{2/L}`` per member (eq. 2.7), ``(M,)``.

    ``factors = [W_1, ..., W_L]`` in the ``y = W x`` convention, ``W_l`` of shape
    ``(M, d_l, d_{l-1})``, so the end-to-end map is ``W_L @ ... @ W_1``. The gap is ``>= 0``
    (AM-GM over the factorisation) with equality iff the factorisation is balanced. The product
    is formed in float64 so the Schatten term is not polluted by float32 rounding.
    """
    if len(factors) != depth:
        raise ValueError(f"got {len(factors)} factors for depth {depth}")
    sqnorm = sum(w.to(F64).square().sum(dim=(-2, -1)) for w in factors)
    return sqnorm - depth * schatten_energy(end_to_end(factors), depth)


# ---------------------------------------------------------------------------------------------
# Structural gaps


def fourier_energy(E: Tensor) -> Tensor:
    """Energy per frequency of the residue axis, ``(M, p, d) -> (M, p // 2 + 1)`` float64.

    Entry ``k`` is ``||P_k E||_F^2``, the squared norm of the part of ``E`` spanned by
    ``cos(2 pi k r / p)`` and ``sin(2 pi k r / p)`` over residues ``r``; DFT bins ``k`` and
    ``p - k`` are merged (real signal), so by Parseval the entries sum to ``||E||_F^2``.
    """
    p = E.shape[1]
    X = torch.fft.rfft(E.to(F64), dim=1)
    energy = (X.real.square() + X.imag.square()).sum(dim=-1) / p
    weight = torch.full((energy.shape[1],), 2.0, dtype=F64, device=energy.device)
    weight[0] = 1.0
    if p % 2 == 0:
        weight[-1] = 1.0
    return energy * weight


def fourier_gap(
    E: Tensor, keep: int, delta: float = 1e-12, *, include_constant: bool = False
) -> Tensor:
    """Fourier rule gap ``||(I - P_rule) E||_F^2 / (||E||_F^2 + delta)`` (App. F.5), ``(M,)``.

    ``E`` is ``(M, p, d)`` with row ``r`` the embedding of residue ``r = 0..p-1`` (slice off any
    extra tokens first). ``P_rule`` projects onto the ``keep`` frequencies carrying the most energy,
    chosen per member (cos and sin of frequency ``k`` and ``p - k`` form one frequency). The value
    is in ``[0, 1]``: 0 means all of ``E``'s energy sits on ``keep`` frequencies; white noise gives
    a bit under ``1 - 2 keep / p``.

    The constant frequency ``k = 0`` (the residue-independent mean row) is *not* a candidate key
    frequency by default: it carries no information about the residue, so energy there counts as
    outside the rule. ``include_constant=True`` lets it compete for a key slot.
    """
    energy = fourier_energy(E)
    total = energy.sum(dim=-1)
    candidates = energy if include_constant else energy[:, 1:]
    if not 0 <= keep <= candidates.shape[1]:
        raise ValueError(f"keep must be in [0, {candidates.shape[1]}], got {keep}")
    kept = candidates.topk(keep, dim=-1).values.sum(dim=-1)
    return (total - kept).clamp_min(0.0) / (total + delta)


def _class_means(
    h: Tensor, y: Tensor, num_classes: int, weight: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Float64 class means ``(M, C, H)`` (zero rows for absent classes), counts, present mask."""
    z = h.to(F64)  # no copy when ``h`` is float64 already (separation_gap passes it so)
    y = y.to(device=z.device, dtype=torch.long)
    w = None if weight is None else weight.to(device=z.device, dtype=F64)
    counts = torch.bincount(y, weights=w, minlength=num_classes).to(F64)
    sums = torch.zeros(z.shape[0], num_classes, z.shape[-1], dtype=F64, device=z.device)
    sums.index_add_(1, y, z if w is None else z * w.view(1, -1, 1))
    present = counts > 0
    return sums / counts.clamp_min(1.0).view(1, -1, 1), counts, present


def separation_gap(
    h: Tensor,
    y: Tensor,
    num_classes: int,
    delta: float = 1e-12,
    *,
    normalize: bool = True,
    weight: Tensor | None = None,
) -> Tensor:
    """Class-separation gap ``S_sep`` of representations ``h`` (App. F.5), ``(M,)`` float64.

    Paper form: ``sum_a ||z_a - mu_{y_a}||^2 / (sum_{c != c'} ||mu_c - mu_c'||^2 + delta)`` over
    the ``K`` classes present in ``y`` (absent classes are ignored). With ``normalize=True``
    (default) both sums become means, the numerator over the ``n`` samples and the denominator
    over the ``K (K - 1)`` ordered class pairs, so the value does not grow with ``n`` or shrink
    with ``K``: it is (mean within-class squared distance to the class mean) / (mean squared
    distance between two class means). 0 means collapsed classes; features with no class
    structure give about ``n / (2 K)``. ``normalize=False`` returns the paper's raw ratio.
    Fewer than two present classes give NaN. ``weight``: optional per-sample multiplicities.
    """
    if _per_member(h) and h.shape[0] > 1:
        # CPU: member by member, so the float64 temporaries stay cache-sized (~1 ms, ~35% less
        # per log row in the training loop; the same bits, as every reduction is per member)
        return torch.cat(
            [
                separation_gap(a[None], y, num_classes, delta, normalize=normalize, weight=weight)
                for a in h.unbind(0)
            ]
        )
    z = h.to(F64)
    mu, counts, present = _class_means(z, y, num_classes, weight)
    n = counts.sum()
    # Within-class scatter as sum_a w_a ||z_a||^2 - sum_c n_c ||mu_c||^2 (no (M, n, H) gather;
    # measured ~3x faster). It cancels when classes (nearly) collapse, so members whose scatter
    # is below 1e-6 of the total are recomputed from the deviations, member by member.
    total = wmean(z.square().sum(dim=-1), weight) * n
    within = total - (counts * mu.square().sum(dim=-1)).sum(dim=-1)
    close = ~(within > 1e-6 * total)
    if bool(close.any()):
        yl = y.to(device=z.device, dtype=torch.long)
        dev = (z[close] - mu[close][:, yl]).square().sum(dim=-1)
        within[close] = wmean(dev, weight) * n
    k = present.sum().to(F64)
    # sum_{c != c'} ||mu_c - mu_c'||^2 = 2 K sum_c ||mu_c - mbar||^2 over present classes.
    pw = present.to(F64).view(1, -1, 1)
    mbar = (mu * pw).sum(dim=1, keepdim=True) / k
    between = 2.0 * k * ((mu - mbar) * pw).square().sum(dim=(-2, -1))
    if normalize:
        within = within / n
        between = between / (k * (k - 1.0))
    out = within / (between + delta)
    return torch.where(k >= 2, out, torch.nan)


# ---------------------------------------------------------------------------------------------
# ReLU gate metrics (App. F.3)


def gate_flip_fraction(prev: Tensor, cur: Tensor, weight: Tensor | None = None) -> Tensor:
    """Fraction of (sample, unit) gates that differ between two logs, ``(M, n, H) -> (M,)``.

    ``weight``: optional per-sample multiplicities."""
    # integer counts, then one division: the same value as a float64 mean of 0/1, without an
    # (M, n, H) float64 temporary
    flips = (prev != cur).sum(dim=-1).to(F64) / cur.shape[-1]
    return wmean(flips, weight)


GATED_CHUNK_BYTES = 64 << 20  # per-member working set of the deep (>= 3 layers) gated map


def mean_gated_map(
    head: Tensor,
    hidden: Sequence[Tensor],
    gates: Sequence[Tensor],
    weight: Tensor | None = None,
    *,
    chunk_bytes: int = GATED_CHUNK_BYTES,
) -> Tensor:
    """Weighted training-set mean of the gated map ``U D_L(a) W_L ... D_1(a) W_1``, float64.

    ``head`` U (M, p, H_L), ``hidden`` [W_1 (M, H_1, d), ..., W_L (M, H_L, H_{L-1})], ``gates``
    [g_1 (M, n, H_1), ..., g_L] 0/1 (any dtype), ``weight`` (n,) multiplicities; returns (M, p, d).
    Never forms the per-sample maps: one layer is ``U diag(mean g_1) W_1``; two layers are exact
    through the co-activation matrix, ``mean_a D_2 W_2 D_1 = W_2 * (G_2^T diag(w) G_1) / sum w``
    (elementwise; integer counts, exact); deeper stacks push ``U D_L(a)`` down to layer 1 for
    chunks of samples whose per-member working set stays within ``chunk_bytes``.
    """
    if len(hidden) == 1:  # gate counts in the gates' float dtype: integers, exact
        g = gates[0] if gates[0].is_floating_point() else gates[0].to(head.dtype)
        wt = torch.ones_like(g[0, :, 0]) if weight is None else weight.to(g)
        mean_gate = (wt @ g).double() / wt.sum().double()  # (M, H)
        return head.double() @ (mean_gate[:, :, None] * hidden[0].double())
    n = gates[0].shape[1]
    w = torch.ones(n, dtype=F64, device=head.device) if weight is None else weight.to(F64)
    u, ws = head.to(F64), [a.to(F64) for a in hidden]
    if len(hidden) == 2:
        # co-activation counts: 0/1 times integer weights, exact in float32 below 2^24 samples
        wf = w.to(torch.float32)
        g1 = gates[0].to(torch.float32)
        co = (gates[1].to(torch.float32) * wf[None, :, None]).mT @ g1  # (M, H_2, H_1)
        return u @ ((ws[1] * co.to(F64)) / w.sum()) @ ws[0]
    return _deep_gated_map(head, hidden, gates, w, chunk_bytes)


def _deep_gated_map(
    head: Tensor, hidden: Sequence[Tensor], gates: Sequence[Tensor], w: Tensor, chunk_bytes: int
) -> Tensor:
    """:func:`mean_gated_map` for three or more hidden layers: ``U D_L(a)`` pushed down to layer
    1 for chunks of samples (``n p H^2`` work per layer), products in the weights' dtype (float32
    runs: ~1e-6 relative, ample for the stable rank stored), chunk sums in float64."""
    dt = head.dtype
    widest = max(a.shape[-2] for a in hidden)
    size = torch.finfo(dt).bits // 8
    step = max(1, chunk_bytes // (3 * size * head.shape[1] * widest))
    out = []
    for k in range(head.shape[0]):  # one member at a time: its bits do not depend on the stack
        acc = torch.zeros(head.shape[1], hidden[0].shape[-2], dtype=F64, device=head.device)
        for i in range(0, w.shape[0], step):
            x = head[k][None] * gates[-1][k, i : i + step].to(dt)[:, None, :]  # (c, p, H_L)
            for wl, g in zip(hidden[:0:-1], gates[-2::-1], strict=True):
                x = (x @ wl[k]).mul_(g[k, i : i + step].to(dt)[:, None, :])
            acc += torch.einsum("c,cph->ph", w[i : i + step], x.to(F64))
        out.append(acc / w.sum() @ hidden[0][k].to(F64))
    return torch.stack(out)


def preact_min_abs(pre: Tensor) -> Tensor:
    """Pre-activation margin ``min_{a, i} |h_i(x_a)|`` per member, ``(M, n, H) -> (M,)`` float64.

    Computed in the input dtype (a min is exact) and cast; NaN entries propagate to NaN.
    """
    return pre.abs().flatten(1).amin(dim=1).to(F64)
