"""``relu_embed``: trainable token embeddings, summed or concatenated, a ReLU MLP, a linear head.

Blocks ``E, W1..Wk, b1..bk (if bias), U``; logged matrices ``E, W1..Wk, U`` and the end-to-end
map ``UW = U W_k ... W_1`` (gates ignored). Init follows ``nn.Embedding`` (N(0, 1)) and
``nn.Linear`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias), times ``init_scale``.
Extra metrics: the Prop. 4.2 gradient-hierarchy terms, the App. F.3 gate statistics and the
stable ranks of the Fig. 3 candidates that are not weight matrices (the training-set mean gated
map, the hidden-activation matrix and the logit matrix).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twoclocks.config import cell_default
from twoclocks.train import metrics as tm
from twoclocks.train.models.base import (
    Forward,
    ModelSpec,
    linear_bound,
    member_linear,
    uniform,
)

__all__ = ["GateFn", "ReluEmbedNet", "ReluEmbedSpec"]

GateFn = Callable[[int, Tensor], Tensor]

# The Fig. 3 candidates that are not weight matrices serve a figure and the pre-registered
# srank_drop, not a clock, and cost ~2.5 ms per log row each on the bench CPU (two float32
# eigenproblems and an n x H^2 Gram): logged on every 4th log row (200 steps at the paper
# study's cadence), which keeps the bench's metrics share near its target.
FIG3_EVERY_ROWS = 4


@dataclass(frozen=True)
class ReluEmbedSpec(ModelSpec):
    """Shape of a stacked ``relu_embed`` model (token inputs only)."""

    kind = "relu_embed"
    config_keys = (
        "embed_dim",
        "combine",
        "hidden_width",
        "hidden_layers",
        "bias",
        "embed_init_scale",
    )
    end_to_end_name = "UW"
    token_inputs_only = True
    omitted_at_default = ("embed_init_scale",)

    embed_dim: int = 0
    combine: str = "sum"
    hidden_width: int = 0
    hidden_layers: int = 1
    bias: bool = True
    embed_init_scale: float = 1.0

    @classmethod
    def from_params(cls, params: dict, common: dict[str, Any]) -> ReluEmbedSpec:
        if common["input_kind"] != "tokens":
            raise ValueError("relu_embed needs a token (modular) task")
        return cls(
            embed_dim=int(params["embed_dim"]),
            combine=str(params.get("combine", cell_default("combine"))),
            hidden_width=int(params["hidden_width"]),
            hidden_layers=int(params.get("hidden_layers", cell_default("hidden_layers"))),
            bias=bool(params.get("bias", cell_default("bias"))),
            embed_init_scale=float(
                params.get("embed_init_scale", cell_default("embed_init_scale"))
            ),
            **common,
        )

    @property
    def symmetric_tokens(self) -> bool:
        """Sum-combined embeddings cannot tell ``(a, b)`` from ``(b, a)``."""
        return self.combine == "sum"

    @property
    def linear_input_dim(self) -> int:
        return self.embed_dim * (2 if self.combine == "concat" else 1)

    def _hidden(self) -> list[str]:
        return [f"W{k}" for k in range(1, self.hidden_layers + 1)]

    def weight_blocks(self) -> list[str]:
        return ["E", *self._hidden(), "U"]

    def blocks(self) -> list[str]:
        bs = [f"b{k}" for k in range(1, self.hidden_layers + 1)] if self.bias else []
        return ["E", *self._hidden(), *bs, "U"]

    def block_shapes(self) -> dict[str, tuple[int, ...]]:
        """One member's block shapes (what :meth:`init_member` draws), allocating nothing."""
        h, layers = self.hidden_width, self.hidden_layers
        out: dict[str, tuple[int, ...]] = {"E": (int(self.vocab_size), self.embed_dim)}
        out.update(
            {f"W{k}": (h, self.linear_input_dim if k == 1 else h) for k in range(1, layers + 1)}
        )
        if self.bias:
            out.update({f"b{k}": (h,) for k in range(1, layers + 1)})
        out["U"] = (self.num_classes, h)
        return out

    def init_member(self, gen: torch.Generator, scale: float) -> dict[str, Tensor]:
        """Draws in a fixed order (E, then W_k and b_k per layer, then U) from ``gen``, every
        block times ``scale``; E also times ``embed_init_scale`` (the other blocks' draws do not
        depend on it)."""
        out: dict[str, Tensor] = {}
        out["E"] = torch.randn(
            (self.vocab_size, self.embed_dim), generator=gen, dtype=torch.float64
        )
        if self.embed_init_scale != 1.0:
            out["E"] = out["E"] * self.embed_init_scale
        d_in = self.linear_input_dim
        biases = {}
        for k in range(1, self.hidden_layers + 1):
            bound = linear_bound(d_in)
            out[f"W{k}"] = uniform(gen, (self.hidden_width, d_in), bound)
            if self.bias:
                biases[f"b{k}"] = uniform(gen, (self.hidden_width,), bound)
            d_in = self.hidden_width
        out.update(biases)
        out["U"] = uniform(gen, (self.num_classes, d_in), linear_bound(d_in))
        return {k: v * scale for k, v in out.items()}

    def forward(self, params: dict[str, Tensor], x: Tensor, gate: GateFn | None = None) -> Forward:
        """``x``: int64 (n, 2) token pairs. ``gate(k, pre)``, if given, returns the 0/1 mask (same
        shape and dtype as ``pre``) that replaces ReLU's indicator ``pre > 0`` in hidden layer
        ``k``: ``h = pre * mask`` (the frozen-gate reduction, `replay.frozen_gates`). Without it
        the forward is ``torch.relu`` as always; with ``mask = (pre > 0)`` both are bitwise
        equal, gradients included."""
        e, w1 = params["E"], params["W1"]
        m, p = e.shape[0], e.shape[1]
        ia, ib = x[:, 0], x[:, 1]
        # First layer through per-token tables: (E[a] + E[b]) W1^T = (E W1^T)[a] + (E W1^T)[b]
        # (concat: one table per half of W1). The matmul runs over the p vocabulary rows instead
        # of the n >> p samples; rows are picked with index_select on the member-flattened table
        # (its backward is a fast index_add, unlike advanced indexing's accumulate).
        offsets = torch.arange(m, device=x.device)[:, None] * p
        fa, fb = (ia[None, :] + offsets).reshape(-1), (ib[None, :] + offsets).reshape(-1)
        ta, tb = (t.reshape(m * p, -1) for t in self._token_tables(e, w1))
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
                return ea + eb if self.combine == "sum" else torch.cat([ea, eb], dim=2)

        pre, h = [], a
        for k in range(1, self.hidden_layers + 1):
            if k > 1:
                a = member_linear(h, params[f"W{k}"])
            if self.bias:
                a = a + params[f"b{k}"][:, None, :]
            pre.append(a)
            h = torch.relu(a) if gate is None else a * gate(k, a)
        return Forward(logits=member_linear(h, params["U"]), z_fn=z_fn, pre=pre, h=h)

    def _token_tables(self, e: Tensor, w1: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token first-layer tables ``(M, p, H)`` of the first and second token: ``E W1^T``
        for both (sum; the same tensor), or ``E`` through each half of ``W1`` (concat)."""
        if self.combine == "sum":
            t = torch.bmm(e, w1.transpose(1, 2))
            return t, t
        d = e.shape[2]
        return (
            torch.bmm(e, w1[:, :, :d].transpose(1, 2)),
            torch.bmm(e, w1[:, :, d:].transpose(1, 2)),
        )

    def logits(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Evaluation logits (the test set at every log row) without the intermediates
        :meth:`forward` keeps: the first bias is folded into the first token's table, so one
        fused gather-sum gives the pre-activation, and the ReLUs run in place. Avoiding three
        fresh (M, n, H) tensors measured ~2x faster on the paper's test set (docs/performance.md).
        Values equal :meth:`forward`'s up to float rounding (the bias is added before the second
        token's row instead of after it)."""
        with torch.no_grad():
            e = params["E"]
            m, p = e.shape[0], e.shape[1]
            ta, tb = self._token_tables(e, params["W1"])
            if self.bias:
                ta = ta + params["b1"][:, None, :]
            table = torch.cat([ta, tb], dim=1).reshape(2 * m * p, -1)
            offsets = torch.arange(m, device=x.device)[:, None] * (2 * p)
            rows = torch.stack(
                [
                    (x[:, 0][None, :] + offsets).reshape(-1),
                    (x[:, 1][None, :] + offsets + p).reshape(-1),
                ],
                dim=1,
            )
            h = F.embedding_bag(rows, table, mode="sum").view(m, x.shape[0], -1).relu_()
            for k in range(2, self.hidden_layers + 1):
                a = member_linear(h, params[f"W{k}"])
                if self.bias:
                    a.add_(params[f"b{k}"][:, None, :])
                h = a.relu_()
            return member_linear(h, params["U"])

    def end_to_end_factors(self, params: dict[str, Tensor]) -> list[Tensor]:
        return [params[n] for n in self._hidden()] + [params["U"]]

    @property
    def has_residue_embedding(self) -> bool:
        return True

    def residue_embedding(self, params: dict[str, Tensor]) -> Tensor:
        return params["E"][:, : self.vocab_size]

    def embedding_sqnorm(self, e: Tensor, x: Tensor) -> Tensor:
        """Per-sample ``||z||^2`` of the combined embedding, (M, n) float64, through the Gram
        matrix ``E E^T`` (sum: ``G_aa + G_bb + 2 G_ab``; concat: ``G_aa + G_bb``), never
        forming z."""
        e = e.double()
        g = (e @ e.transpose(1, 2)).flatten(1)
        v = e.shape[1]
        a, b = x[:, 0], x[:, 1]
        sq = g[:, a * (v + 1)] + g[:, b * (v + 1)]
        return sq + 2.0 * g[:, a * v + b] if self.combine == "sum" else sq

    @classmethod
    def extra_metrics(cls):
        from twoclocks.train.metric_catalog import Metric

        return [
            Metric(
                "delta_norm",
                "||softmax(f)-onehot(y)||_F / sqrt(n_train) (Prop. 4.2)",
                compute=lambda c: c.train_logits["delta_rms"],
                needs_delta=True,
            ),
            Metric("h_norm", "||h||_F / sqrt(n_train), last hidden layer (Prop. 4.2)", _h_norm),
            Metric("z_norm", "||z||_F / sqrt(n_train), combined embedding (Prop. 4.2)", _z_norm),
            Metric("U_spec", "spectral norm of the head U (Prop. 4.2)", _spec_norm("U")),
            Metric(
                "W_spec", "spectral norm of the first hidden layer W1 (Prop. 4.2)", _spec_norm("W1")
            ),
            Metric("E_spec", "spectral norm of the embedding E (Prop. 4.2)", _spec_norm("E")),
            Metric(
                "gate_flip_fraction",
                "fraction of train ReLU gates flipped since last log",
                _gate_flip,
            ),
            Metric(
                "srank_gated",
                "stable rank of the training-set mean gated map mean_a U D(a) W (d logits / d z)",
                _gated_srank,
                every_rows=FIG3_EVERY_ROWS,
            ),
            Metric(
                "srank_hidden",
                "stable rank of the hidden-activation matrix (train samples x last-layer units)",
                _hidden_srank,
                every_rows=FIG3_EVERY_ROWS,
            ),
            Metric(
                "srank_logits",
                "stable rank of the train logit matrix (train samples x classes)",
                _logits_srank,
                every_rows=FIG3_EVERY_ROWS,
            ),
            Metric(
                "preact_min_abs",
                "min |pre-activation| over train samples and units",
                lambda c: tm.preact_min_abs(c.pre),
            ),
        ]

    def reference(self) -> ReluEmbedNet:
        return ReluEmbedNet(self)


# ---------------------------------------------------------------------------------------------
# Metric computations (each reads one log step's `metric_catalog.LogContext`)


def _h_norm(c):
    hsq = c.fwd.h.square().sum(-1, dtype=torch.float64)  # float32 squares, float64 sums
    return tm.wmean(hsq, c.train.weight).sqrt()


def _z_norm(c):
    sq = c.spec.embedding_sqnorm(c.params["E"], c.train.x)
    return tm.wmean(sq, c.train.weight).sqrt()


def _gate_flip(c):
    if c.prev_gates is None:  # step 0: nothing to compare with
        return c.nan()
    return tm.gate_flip_fraction(c.prev_gates, c.gates, c.train.weight)


def _spec_norm(block):
    return lambda c: c.spectra[block][:, 0]


def _hidden_gram(c):
    """Weighted float32 Gram matrix ``h^T diag(w) h`` (M, H, H) of the last hidden layer's
    activations on the training set, shared by the hidden and logit stable ranks."""
    h = c.fwd.h.float()
    if c.train.weight is not None:
        h = h * c.train.weight.to(h).sqrt()[None, :, None]
    return tm.gram(h.mT)


def _hidden_srank(c):
    """Stable rank of the hidden-activation matrix (rows weighted by multiplicity) from its
    float32 Gram matrix (largest singular value to ~1e-6 relative, enough for a stable rank);
    per member, so a member's value does not depend on its stack."""
    return tm.stable_rank_of_gram(c.shared("hidden_gram", _hidden_gram))


def _logits_srank(c):
    """Stable rank of the logit matrix ``L = h U^T`` (the head has no bias): its Gram
    ``L^T W L = U (h^T W h) U^T`` comes from the hidden Gram, p x p, with no second pass over
    the samples."""
    u = c.params["U"].detach().float()
    g = tm.gram_through(u, c.shared("hidden_gram", _hidden_gram))
    return tm.stable_rank_of_gram(g)


def _gated_srank(c):
    """Stable rank of ``J = mean_a U D_L(a) W_L ... D_1(a) W_1`` (multiplicity-weighted): the
    Jacobian d logits / d z of the map acting on the combined embedding, averaged over the
    training set (docs/science.md 8), by `metrics.mean_gated_map` (no per-sample maps)."""
    gates = [(a > 0).to(a.dtype) for a in c.fwd.pre]  # each (M, n, H_k), exact 0/1
    hidden = [c.params[n].detach() for n in c.spec.weight_blocks() if n.startswith("W")]
    j = tm.mean_gated_map(c.params["U"].detach(), hidden, gates, c.train.weight)
    # only its stable rank is stored: float32 eigenvalues, as for every non-end-to-end map
    j = j.float()
    return tm.stable_rank_of_gram(tm.gram(j if j.shape[1] <= j.shape[2] else j.mT))


class ReluEmbedNet(nn.Module):
    """Unstacked reference for ``relu_embed`` (nn.Embedding + nn.Linear), for tests/benchmarks."""

    def __init__(self, spec: ReluEmbedSpec):
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
    def from_member(cls, spec: ReluEmbedSpec, params: dict[str, Tensor], i: int) -> ReluEmbedNet:
        return spec.reference_of_member(params, i)

    def forward(self, x: Tensor) -> Tensor:
        ea, eb = self.embed(x[:, 0]), self.embed(x[:, 1])
        h = ea + eb if self.spec.combine == "sum" else torch.cat([ea, eb], dim=1)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.head(h)
