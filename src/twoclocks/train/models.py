"""Stacked functional models with a leading member axis, plus unstacked ``nn.Module`` references.

Every parameter tensor has shape ``(M, ...)``: member ``i`` is one independent network (one seed
and, optionally, its own init scale). Parameters are an ordered ``dict`` keyed by the block names
of docs/design.md: relu ``E, W1..Wk, b1..bk, U``; deep linear ``W1..WL``.

Init: each member is drawn from its own ``torch.Generator`` seeded with its seed, in float64 on the
CPU, then cast; so a seed gives the same member whatever the stack, device or dtype. Scales follow
``nn.Embedding`` (N(0, 1)) and ``nn.Linear`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and
bias), times ``init_scale``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twoclocks.config import cell_default

__all__ = [
    "DeepLinearNet",
    "ModelSpec",
    "ReluEmbedNet",
    "Forward",
    "distinct_samples",
    "forward",
    "init_params",
    "model_spec",
]


@dataclass(frozen=True)
class ModelSpec:
    """Static shape information of a model (everything but the parameter values)."""

    kind: str  # "relu_embed" | "deep_linear"
    num_classes: int
    input_kind: str  # "tokens" (modular: int pairs) | "dense" (teacher: float vectors)
    vocab_size: int | None = None
    input_dim: int | None = None  # dense input dimension (teacher)
    embed_dim: int = 0
    combine: str = "sum"
    hidden_width: int = 0
    hidden_layers: int = 0
    bias: bool = False
    depth: int = 0
    width: int = 0
    balanced_init: bool = False

    @property
    def linear_input_dim(self) -> int:
        """Input dimension of the first linear map (deep linear: 2p for one-hot pairs)."""
        if self.kind == "relu_embed":
            return self.embed_dim * (2 if self.combine == "concat" else 1)
        if self.input_kind == "tokens":
            return 2 * int(self.vocab_size)
        return int(self.input_dim)

    def weight_blocks(self) -> list[str]:
        """Names of the weight matrices (the blocks that are not biases)."""
        if self.kind == "relu_embed":
            return ["E", *[f"W{k}" for k in range(1, self.hidden_layers + 1)], "U"]
        return [f"W{k}" for k in range(1, self.depth + 1)]

    def blocks(self) -> list[str]:
        """All parameter block names, in the canonical (design.md) order."""
        if self.kind == "relu_embed":
            ws = [f"W{k}" for k in range(1, self.hidden_layers + 1)]
            bs = [f"b{k}" for k in range(1, self.hidden_layers + 1)] if self.bias else []
            return ["E", *ws, *bs, "U"]
        return self.weight_blocks()


def model_spec(params: dict, dataset_attrs: dict, input_dim: int | None = None) -> ModelSpec:
    """Build a :class:`ModelSpec` from a resolved cell dict and the dataset's attrs."""
    task = dataset_attrs.get("task", params.get("task"))
    input_kind = "tokens" if task == "modular" else "dense"
    common = dict(
        num_classes=int(dataset_attrs["num_classes"]),
        input_kind=input_kind,
        vocab_size=int(dataset_attrs["vocab_size"]) if input_kind == "tokens" else None,
        input_dim=None if input_kind == "tokens" else int(input_dim),
    )
    model = params["model"]
    if model == "relu_embed":
        if input_kind != "tokens":
            raise ValueError("relu_embed needs a token (modular) task")
        return ModelSpec(
            kind=model,
            embed_dim=int(params["embed_dim"]),
            combine=str(params.get("combine", cell_default("combine"))),
            hidden_width=int(params["hidden_width"]),
            hidden_layers=int(params.get("hidden_layers", cell_default("hidden_layers"))),
            bias=bool(params.get("bias", cell_default("bias"))),
            **common,
        )
    if model == "deep_linear":
        return ModelSpec(
            kind=model,
            depth=int(params["depth"]),
            width=int(params["width"]),
            balanced_init=bool(params.get("balanced_init", cell_default("balanced_init"))),
            **common,
        )
    raise ValueError(f"unknown model {model!r}")


def distinct_samples(spec: ModelSpec, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Merge samples the model cannot tell apart into one weighted sample.

    With sum-combined embeddings ``z = E[a] + E[b]`` the pairs ``(a, b)`` and ``(b, a)`` are the
    same input, so a pair and its transpose with the same label (for ``add``, every pair whose
    transpose is on the same side of the split: all of an unordered split) need one forward and
    backward, counted twice. Any loss or
    metric that is a mean over samples is unchanged when taken as a weighted mean over the
    distinct ones. Returns ``(x, y, weight)`` of the distinct samples in first-occurrence order,
    ``weight`` their float64 multiplicities; ``weight`` is None (and ``x, y`` are returned as
    given) when every sample is distinct or the model is not symmetric in its two tokens.
    """
    if not (spec.kind == "relu_embed" and spec.combine == "sum"):
        return x, y, None
    xs = np.sort(x.cpu().numpy(), axis=1)
    key = np.concatenate([xs, y.cpu().numpy().reshape(-1, 1)], axis=1)
    _, first, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
    if len(first) == len(x):
        return x, y, None
    order = np.argsort(first)
    idx = torch.as_tensor(first[order], device=x.device)
    weight = torch.as_tensor(counts[order], dtype=torch.float64, device=x.device)
    return x[idx], y[idx], weight


def _per_member(value: float | Sequence[float], n: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * n
    out = [float(v) for v in value]
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} values for {n} members")
    return out


def _uniform(gen: torch.Generator, shape: tuple[int, ...], bound: float) -> Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * bound


def _member_init(spec: ModelSpec, seed: int, scale: float) -> dict[str, Tensor]:
    """One member's parameters in float64, drawn in a fixed order from its own generator."""
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, Tensor] = {}
    if spec.kind == "relu_embed":
        out["E"] = torch.randn(
            (spec.vocab_size, spec.embed_dim), generator=gen, dtype=torch.float64
        )
        d_in = spec.linear_input_dim
        biases = {}
        for k in range(1, spec.hidden_layers + 1):
            bound = 1.0 / math.sqrt(d_in)
            out[f"W{k}"] = _uniform(gen, (spec.hidden_width, d_in), bound)
            if spec.bias:
                biases[f"b{k}"] = _uniform(gen, (spec.hidden_width,), bound)
            d_in = spec.hidden_width
        out.update(biases)
        out["U"] = _uniform(gen, (spec.num_classes, d_in), 1.0 / math.sqrt(d_in))
        return {k: v * scale for k, v in out.items()}
    dims = [spec.linear_input_dim] + [spec.width] * (spec.depth - 1) + [spec.num_classes]
    for k in range(1, spec.depth + 1):
        out[f"W{k}"] = _uniform(gen, (dims[k], dims[k - 1]), 1.0 / math.sqrt(dims[k - 1])) * scale
    if spec.balanced_init and spec.depth > 1:
        out = _balance(out, spec.depth, gen)
    return out


def _balance(ws: dict[str, Tensor], depth: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Balanced factorisation of the default init's end-to-end map (same function at init).

    With ``A = W_L ... W_1 = P S Q^T`` (rank ``k`` = min of all widths), set
    ``W_1 = R_1 [S^{1/L} Q^T; 0]``, ``W_l = R_l diag(S^{1/L}, 0) R_{l-1}^T`` and
    ``W_L = [P S^{1/L}, 0] R_{L-1}^T`` with random orthogonal ``R_l`` (from the member's generator).
    Then ``W_{l+1}^T W_{l+1} = W_l W_l^T`` exactly and the product is still ``A``. An exactly
    balanced init has rank at most ``k`` in every layer; extra hidden directions start at (and,
    under gradient flow, stay at) zero.
    """
    a = ws[f"W{depth}"]
    for k in range(depth - 1, 0, -1):
        a = a @ ws[f"W{k}"]
    p_mat, s, qh = torch.linalg.svd(a, full_matrices=False)
    width = ws["W1"].shape[0]
    k = min(s.shape[0], width)  # the product has rank <= width anyway
    p_mat, s, qh = p_mat[:, :k], s[:k], qh[:k]
    root = s.pow(1.0 / depth)
    rots = []
    for _ in range(depth - 1):
        g = torch.randn((width, width), generator=gen, dtype=torch.float64)
        q, r = torch.linalg.qr(g)
        rots.append(q * torch.sign(torch.diagonal(r)))
    out = {}
    first = torch.zeros((width, qh.shape[1]), dtype=torch.float64)
    first[:k] = root[:, None] * qh
    out["W1"] = rots[0] @ first
    mid = torch.zeros((width, width), dtype=torch.float64)
    mid[range(k), range(k)] = root
    for layer in range(2, depth):
        out[f"W{layer}"] = rots[layer - 1] @ mid @ rots[layer - 2].T
    last = torch.zeros((p_mat.shape[0], width), dtype=torch.float64)
    last[:, :k] = p_mat * root
    out[f"W{depth}"] = last @ rots[depth - 2].T
    return out


def init_params(
    spec: ModelSpec,
    seeds: Sequence[int],
    init_scale: float | Sequence[float] = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Stacked parameters ``name -> (M, ...)``; member i depends only on its seed and scale."""
    scales = _per_member(init_scale, len(seeds), "init_scale")
    members = [_member_init(spec, s, c) for s, c in zip(seeds, scales, strict=True)]
    return {
        name: torch.stack([m[name] for m in members]).to(device=device, dtype=dtype)
        for name in spec.blocks()
    }


@dataclass
class Forward:
    """Model outputs: ``logits`` (M, n, C); ``z`` the first-layer input (relu: the combined
    embedding, built on first access since training never needs it; deep linear: the input,
    shared, (n, d)); ``pre`` the pre-activations of every hidden layer (relu only); ``h`` the
    last hidden representation (the head's input)."""

    logits: Tensor
    z_fn: Callable[[], Tensor]
    pre: list[Tensor]
    h: Tensor

    @functools.cached_property
    def z(self) -> Tensor:
        return self.z_fn()


def encode_inputs(spec: ModelSpec, x: Tensor, dtype: torch.dtype) -> Tensor:
    """Deep linear inputs: concatenated one-hots of (a, b) for tokens (d_in = 2p), else x."""
    if spec.input_kind == "tokens":
        p = int(spec.vocab_size)
        return torch.cat([F.one_hot(x[:, 0], p), F.one_hot(x[:, 1], p)], dim=1).to(dtype)
    return x.to(dtype)


def forward(spec: ModelSpec, params: dict[str, Tensor], x: Tensor) -> Forward:
    """Batched forward over all members; ``x`` is int64 (n, 2) tokens or pre-encoded (n, d)."""
    if spec.kind == "relu_embed":
        e, w1 = params["E"], params["W1"]
        m, p = e.shape[0], e.shape[1]
        ia, ib = x[:, 0], x[:, 1]
        # First layer through per-token tables: (E[a] + E[b]) W1^T = (E W1^T)[a] + (E W1^T)[b]
        # (concat: one table per half of W1). The matmul runs over the p vocabulary rows instead
        # of the n >> p samples; rows are picked with index_select on the member-flattened table
        # (its backward is a fast index_add, unlike advanced indexing's accumulate).
        offsets = torch.arange(m, device=x.device)[:, None] * p
        fa, fb = (ia[None, :] + offsets).reshape(-1), (ib[None, :] + offsets).reshape(-1)
        if spec.combine == "sum":
            ta = tb = torch.bmm(e, w1.transpose(1, 2)).reshape(m * p, -1)
        else:
            d = e.shape[2]
            ta = torch.bmm(e, w1[:, :, :d].transpose(1, 2)).reshape(m * p, -1)
            tb = torch.bmm(e, w1[:, :, d:].transpose(1, 2)).reshape(m * p, -1)
        if torch.is_grad_enabled() and (e.requires_grad or w1.requires_grad):
            a = ta.index_select(0, fa) + tb.index_select(0, fb)
        else:  # evaluation: one fused gather-sum (measured 2-4x faster on the test set)
            table = ta if ta is tb else torch.cat([ta, tb])
            fb2 = fb if ta is tb else fb + m * p
            a = F.embedding_bag(torch.stack([fa, fb2], dim=1), table, mode="sum")
        a = a.view(m, x.shape[0], -1)

        def z_fn() -> Tensor:
            with torch.no_grad():
                ea, eb = e[:, ia], e[:, ib]
                return ea + eb if spec.combine == "sum" else torch.cat([ea, eb], dim=2)

        pre, h = [], a
        for k in range(1, spec.hidden_layers + 1):
            if k > 1:
                a = _member_linear(h, params[f"W{k}"])
            if spec.bias:
                a = a + params[f"b{k}"][:, None, :]
            pre.append(a)
            h = torch.relu(a)
        return Forward(logits=_member_linear(h, params["U"]), z_fn=z_fn, pre=pre, h=h)
    m = params["W1"].shape[0]
    h = x.expand(m, *x.shape)
    hidden = h
    for k in range(1, spec.depth + 1):
        hidden = h
        h = torch.bmm(h, params[f"W{k}"].transpose(1, 2))
    return Forward(logits=h, z_fn=lambda: x, pre=[], h=hidden)


class _MemberMatmulNT(torch.autograd.Function):
    """``a[i] @ b[i]^T`` for every member ``i``, one 2-D matmul each, forward and backward.

    On the 2-core CPU ``bmm`` over 3 members ran 30-90% slower per member than a single
    member's ``mm`` for the head's shapes (n ~ 3,300, 128 -> 113), and a member's ``bmm`` result
    may depend on the batch size; per-member ``mm`` calls measured faster and give a member the
    same bits whatever its stack.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        out = a.new_empty(a.shape[0], a.shape[1], b.shape[1])
        for i in range(a.shape[0]):
            torch.mm(a[i], b[i].T, out=out[i])
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = a.new_empty(a.shape)
            for i in range(a.shape[0]):
                torch.mm(g[i], b[i], out=ga[i])
        if ctx.needs_input_grad[1]:
            gb = b.new_empty(b.shape)
            for i in range(b.shape[0]):
                torch.mm(g[i].T, a[i], out=gb[i])
        return ga, gb


def _member_linear(h: Tensor, w: Tensor) -> Tensor:
    """``h W^T`` per member (a later hidden layer or the head), (M, n, k) x (M, m, k) -> (M, n, m):
    per-member ``mm`` on the CPU (see `_MemberMatmulNT`), one ``bmm`` on accelerators."""
    if h.device.type == "cpu":
        return _MemberMatmulNT.apply(h, w)
    return torch.bmm(h, w.transpose(1, 2))


def end_to_end(spec: ModelSpec, params: dict[str, Tensor]) -> Tensor:
    """The end-to-end linear map (M, C, d_in): deep linear ``A = W_L...W_1``; relu ``U W_k...W_1``
    (gates ignored, the ``UW`` of design.md)."""
    names = [f"W{k}" for k in range(1, (spec.depth or spec.hidden_layers) + 1)]
    if spec.kind == "relu_embed":
        names.append("U")
    a = params[names[0]]
    for n in names[1:]:
        a = torch.bmm(params[n], a)
    return a


class ReluEmbedNet(nn.Module):
    """Unstacked reference for ``relu_embed`` (nn.Embedding + nn.Linear), for tests/benchmarks."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.embed_dim)
        d_in = spec.linear_input_dim
        layers = []
        for _ in range(spec.hidden_layers):
            layers.append(nn.Linear(d_in, spec.hidden_width, bias=spec.bias))
            d_in = spec.hidden_width
        self.hidden = nn.ModuleList(layers)
        self.head = nn.Linear(d_in, spec.num_classes, bias=False)

    def block_params(self) -> dict[str, nn.Parameter]:
        """Parameters keyed by design.md block names."""
        out = {"E": self.embed.weight}
        for k, layer in enumerate(self.hidden, 1):
            out[f"W{k}"] = layer.weight
        if self.spec.bias:
            for k, layer in enumerate(self.hidden, 1):
                out[f"b{k}"] = layer.bias
        out["U"] = self.head.weight
        return out

    @classmethod
    def from_member(cls, spec: ModelSpec, params: dict[str, Tensor], i: int) -> ReluEmbedNet:
        net = cls(spec).to(dtype=params["E"].dtype, device=params["E"].device)
        with torch.no_grad():
            for name, p in net.block_params().items():
                p.copy_(params[name][i])
        return net

    def forward(self, x: Tensor) -> Tensor:
        ea, eb = self.embed(x[:, 0]), self.embed(x[:, 1])
        h = ea + eb if self.spec.combine == "sum" else torch.cat([ea, eb], dim=1)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.head(h)


class DeepLinearNet(nn.Module):
    """Unstacked reference for ``deep_linear``: a chain of bias-free nn.Linear layers."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        dims = [spec.linear_input_dim] + [spec.width] * (spec.depth - 1) + [spec.num_classes]
        self.layers = nn.ModuleList(
            nn.Linear(dims[k], dims[k + 1], bias=False) for k in range(spec.depth)
        )

    def block_params(self) -> dict[str, nn.Parameter]:
        return {f"W{k}": layer.weight for k, layer in enumerate(self.layers, 1)}

    @classmethod
    def from_member(cls, spec: ModelSpec, params: dict[str, Tensor], i: int) -> DeepLinearNet:
        net = cls(spec).to(dtype=params["W1"].dtype, device=params["W1"].device)
        with torch.no_grad():
            for name, p in net.block_params().items():
                p.copy_(params[name][i])
        return net

    def forward(self, x: Tensor) -> Tensor:
        """``x``: int64 (n, 2) token pairs or float (n, d), encoded like the stacked model."""
        h = encode_inputs(self.spec, x, self.layers[0].weight.dtype)
        for layer in self.layers:
            h = layer(h)
        return h
