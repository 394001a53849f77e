"""What every stacked model shares: the spec base class, the forward record, init helpers.

A model is a frozen dataclass subclassing :class:`ModelSpec`, registered by name in
``twoclocks.train.models`` (``@register``). The subclass owns everything about its kind: the
config keys it reads (``config_keys``), its parameter blocks, per-member init, the stacked
forward, its named matrices (the end-to-end map included, named once in ``end_to_end_name``),
its own logged metrics (``extra_metrics``) and its plain ``nn.Module`` reference. Nothing outside
the model modules branches on the model's name.

Every parameter tensor has shape ``(M, ...)``: member ``i`` is one independent network (one seed
and, optionally, its own init scale). Init draws each member from its own ``torch.Generator``
seeded with its seed, in float64 on the CPU, then casts; so a seed gives the same member whatever
the stack, device or dtype.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twoclocks.train import metrics as tm

if TYPE_CHECKING:  # pragma: no cover
    from twoclocks.train.metric_catalog import Metric

__all__ = ["Forward", "ModelSpec", "member_linear", "one_hot_pairs", "per_member", "uniform"]


@dataclass
class Forward:
    """Model outputs: ``logits`` (M, n, C); ``z`` the first-layer input (relu: the combined
    embedding, built on first access since training never needs it; deep linear: the input,
    shared, (n, d)); ``pre`` the pre-activations of every hidden layer (empty for linear models);
    ``h`` the last hidden representation (the head's input)."""

    logits: Tensor
    z_fn: Callable[[], Tensor]
    pre: list[Tensor]
    h: Tensor

    @functools.cached_property
    def z(self) -> Tensor:
        return self.z_fn()


@dataclass(frozen=True)
class ModelSpec:
    """Static shape information of a stacked model (everything but the parameter values).

    Common fields come from the dataset; subclasses add their own (their ``config_keys``).
    """

    kind: ClassVar[str] = ""  # the config's `model` value; set by each subclass
    config_keys: ClassVar[tuple[str, ...]] = ()  # cell keys this model reads (config.py)
    end_to_end_name: ClassVar[str] = ""  # name of the end-to-end map among `matrices()`
    is_deep_linear: ClassVar[bool] = False  # the theory's object: a product of linear layers
    token_inputs_only: ClassVar[bool] = False  # needs a token (modular) task
    # keys added after studies were run: left out of the resolved cell (config.py) while at their
    # schema default, so an existing cell keeps its params, hash, cache entry and trajectory
    omitted_at_default: ClassVar[tuple[str, ...]] = ()

    num_classes: int
    input_kind: str  # "tokens" (modular: int pairs) | "dense" (teacher: float vectors)
    vocab_size: int | None = None
    input_dim: int | None = None  # dense input dimension (teacher)

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_params(cls, params: dict, common: dict[str, Any]) -> ModelSpec:
        """The spec of a resolved cell dict; ``common`` holds the dataset-derived fields."""
        raise NotImplementedError

    @classmethod
    def check_params(cls, params: dict) -> list[str]:
        """Problems of a resolved cell's model keys that the schema cannot express, each naming
        the key and the fix (config.py reports them before anything runs); [] when fine."""
        return []

    @classmethod
    def block_names(cls, params: dict, input_kind: str) -> list[str]:
        """The parameter block names of a resolved cell's model, without initialising it (the
        `frozen_blocks` check): the blocks of its spec on placeholder dataset sizes. A model whose
        blocks depend on the dataset's sizes overrides this."""
        tokens = input_kind == "tokens"
        common = dict(
            num_classes=1,
            input_kind=input_kind,
            vocab_size=1 if tokens else None,
            input_dim=None if tokens else 1,
        )
        return cls.from_params(params, common).blocks()

    @property
    def symmetric_tokens(self) -> bool:
        """True when the model cannot tell ``(a, b)`` from ``(b, a)`` (see `distinct_samples`)."""
        return False

    # --- parameters --------------------------------------------------------------------------
    @property
    def linear_input_dim(self) -> int:
        """Input dimension of the first linear map (one-hot pairs: 2p; dense: d)."""
        if self.input_kind == "tokens":
            return 2 * int(self.vocab_size)
        return int(self.input_dim)

    def blocks(self) -> list[str]:
        """All parameter block names, in the canonical (design.md) order."""
        raise NotImplementedError

    def weight_blocks(self) -> list[str]:
        """Names of the weight matrices (the blocks that are not biases)."""
        return self.blocks()

    def init_member(self, gen: torch.Generator, scale: float) -> dict[str, Tensor]:
        """One member's parameters in float64, drawn in a fixed order from ``gen``."""
        raise NotImplementedError

    # --- forward -----------------------------------------------------------------------------
    def encode_inputs(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """Inputs as the stacked forward takes them (default: unchanged)."""
        return x

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Forward:
        """Batched forward over all members on encoded inputs ``x``."""
        raise NotImplementedError

    def logits(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Evaluation logits ``(M, n, C)`` without autograd (the test metrics of every log row).
        Default: :meth:`forward`'s; a model may override it with a faster path that keeps no
        intermediate activations."""
        with torch.no_grad():
            return self.forward(params, x).logits

    # --- matrices ----------------------------------------------------------------------------
    def end_to_end_factors(self, params: dict[str, Tensor]) -> list[Tensor]:
        """``[W_1, ..., W_L]`` whose product ``W_L ... W_1`` is the end-to-end map."""
        raise NotImplementedError

    def end_to_end(self, params: dict[str, Tensor]) -> Tensor:
        """The float64 end-to-end map ``(M, C, d_in)`` (``metrics.end_to_end`` of the factors)."""
        return tm.end_to_end(self.end_to_end_factors(params))

    def matrices(self) -> list[str]:
        """Names of the logged matrices (``srank``'s ``matrix`` axis), end-to-end map last."""
        return [*self.weight_blocks(), self.end_to_end_name]

    def matrix_tensors(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """The logged matrices by name (the end-to-end map in float64)."""
        out = {n: params[n] for n in self.matrices() if n != self.end_to_end_name}
        out[self.end_to_end_name] = self.end_to_end(params)
        return out

    @property
    def sv_count(self) -> int:
        """Number of singular values of the end-to-end map (the store's ``sv`` axis)."""
        return min(self.num_classes, self.linear_input_dim)

    @property
    def has_residue_embedding(self) -> bool:
        """Whether :meth:`residue_embedding` exists (then the Fourier gap is logged)."""
        return False

    def residue_embedding(self, params: dict[str, Tensor]) -> Tensor:
        """(M, p, d) embedding of the residues 0..p-1 for the Fourier gap."""
        raise NotImplementedError

    # --- logging and references --------------------------------------------------------------
    @classmethod
    def extra_metrics(cls) -> list[Metric]:
        """Metrics only this model logs (``metric_catalog.Metric`` declarations)."""
        return []

    def reference(self) -> nn.Module:
        """An unstacked ``nn.Module`` computing the same function (tests, the bench)."""
        raise NotImplementedError

    def reference_of_member(self, params: dict[str, Tensor], i: int) -> nn.Module:
        """The plain reference module holding member ``i``'s parameters."""
        first = params[self.blocks()[0]]
        net = self.reference().to(dtype=first.dtype, device=first.device)
        with torch.no_grad():
            for name, p in net.block_params().items():
                p.copy_(params[name][i])
        return net


def per_member(value: float | Sequence[float], n: int, name: str) -> list[float]:
    """A scalar broadcast to ``n`` members, or a list checked to have ``n`` values."""
    if isinstance(value, (int, float)):
        return [float(value)] * n
    out = [float(v) for v in value]
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} values for {n} members")
    return out


def uniform(gen: torch.Generator, shape: tuple[int, ...], bound: float) -> Tensor:
    """U(-bound, bound) in float64 (``nn.Linear``'s init with ``bound = 1/sqrt(fan_in)``)."""
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * bound


def linear_bound(fan_in: int) -> float:
    return 1.0 / math.sqrt(fan_in)


def one_hot_pairs(x: Tensor, p: int, dtype: torch.dtype) -> Tensor:
    """Concatenated one-hots of token pairs ``(a, b)``, (n, 2) -> (n, 2p)."""
    return torch.cat([F.one_hot(x[:, 0], p), F.one_hot(x[:, 1], p)], dim=1).to(dtype)


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


def member_linear(h: Tensor, w: Tensor) -> Tensor:
    """``h W^T`` per member (a later hidden layer or the head), (M, n, k) x (M, m, k) -> (M, n, m):
    per-member ``mm`` on the CPU (see `_MemberMatmulNT`), one ``bmm`` on accelerators."""
    if h.device.type == "cpu":
        return _MemberMatmulNT.apply(h, w)
    return torch.bmm(h, w.transpose(1, 2))
