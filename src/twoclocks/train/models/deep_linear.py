"""``deep_linear``: a depth-L chain of bias-free linear layers, the theory's own model (eq. 2.7).

Blocks and matrices ``W1..WL``; the end-to-end map ``A = W_L ... W_1``. Inputs: concatenated
one-hots of the token pair (d_in = 2p) or the teacher's dense vectors. Init: ``nn.Linear``'s
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) times ``init_scale``, optionally re-factored to a balanced
factorisation of the same map (``balanced_init``). Extra metrics: the Schatten energy of ``A``
and the balancedness gap (eq. 2.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from twoclocks.config import cell_default
from twoclocks.train import metrics as tm
from twoclocks.train.models.base import Forward, ModelSpec, linear_bound, one_hot_pairs, uniform

__all__ = ["DeepLinearNet", "DeepLinearSpec", "balance"]


@dataclass(frozen=True)
class DeepLinearSpec(ModelSpec):
    """Shape of a stacked ``deep_linear`` model."""

    kind = "deep_linear"
    config_keys = ("depth", "width", "balanced_init")
    end_to_end_name = "A"
    is_deep_linear = True

    depth: int = 1
    width: int = 0
    balanced_init: bool = False

    @classmethod
    def from_params(cls, params: dict, common: dict[str, Any]) -> DeepLinearSpec:
        return cls(
            depth=int(params["depth"]),
            width=int(params["width"]),
            balanced_init=bool(params.get("balanced_init", cell_default("balanced_init"))),
            **common,
        )

    def blocks(self) -> list[str]:
        return [f"W{k}" for k in range(1, self.depth + 1)]

    def _dims(self) -> list[int]:
        return [self.linear_input_dim] + [self.width] * (self.depth - 1) + [self.num_classes]

    def init_member(self, gen: torch.Generator, scale: float) -> dict[str, Tensor]:
        dims = self._dims()
        out = {
            f"W{k}": uniform(gen, (dims[k], dims[k - 1]), linear_bound(dims[k - 1])) * scale
            for k in range(1, self.depth + 1)
        }
        if self.balanced_init and self.depth > 1:
            out = balance(out, self.depth, gen)
        return out

    def encode_inputs(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """Concatenated one-hots of (a, b) for tokens (d_in = 2p), else x in ``dtype``."""
        if self.input_kind == "tokens":
            return one_hot_pairs(x, int(self.vocab_size), dtype)
        return x.to(dtype)

    def forward(self, params: dict[str, Tensor], x: Tensor) -> Forward:
        """``x``: encoded inputs (n, d_in), shared by all members."""
        m = params["W1"].shape[0]
        h = x.expand(m, *x.shape)
        hidden = h
        for k in range(1, self.depth + 1):
            hidden = h
            h = torch.bmm(h, params[f"W{k}"].transpose(1, 2))
        return Forward(logits=h, z_fn=lambda: x, pre=[], h=hidden)

    def end_to_end_factors(self, params: dict[str, Tensor]) -> list[Tensor]:
        return [params[n] for n in self.blocks()]

    @property
    def has_residue_embedding(self) -> bool:
        return self.input_kind == "tokens"

    def residue_embedding(self, params: dict[str, Tensor]) -> Tensor:
        """The two one-hot halves of W1 side by side, (M, p, 2 width) (token inputs)."""
        v, w = self.vocab_size, params["W1"]
        return torch.cat([w[:, :, :v], w[:, :, v:]], dim=1).transpose(1, 2)

    @classmethod
    def extra_metrics(cls):
        from twoclocks.train.metric_catalog import Metric

        def factors(c):
            return c.spec.end_to_end_factors(c.params)

        return [
            Metric(
                "schatten_energy",
                "Schatten energy ||A||_{S_2/L}^{2/L} (eq. 2.7)",
                lambda c: tm.schatten_energy(c.matrices["A"], c.spec.depth),
            ),
            Metric(
                "balancedness_gap",
                "sum_l ||W_l||_F^2 - L * schatten_energy (eq. 2.7)",
                lambda c: tm.balancedness_gap(factors(c), c.spec.depth),
            ),
        ]

    def reference(self) -> DeepLinearNet:
        return DeepLinearNet(self)


def balance(ws: dict[str, Tensor], depth: int, gen: torch.Generator) -> dict[str, Tensor]:
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


class DeepLinearNet(nn.Module):
    """Unstacked reference for ``deep_linear``: a chain of bias-free nn.Linear layers."""

    def __init__(self, spec: DeepLinearSpec):
        super().__init__()
        self.spec = spec
        dims = spec._dims()
        self.layers = nn.ModuleList(
            nn.Linear(dims[k], dims[k + 1], bias=False) for k in range(spec.depth)
        )

    def block_params(self) -> dict[str, nn.Parameter]:
        return {f"W{k}": layer.weight for k, layer in enumerate(self.layers, 1)}

    @classmethod
    def from_member(cls, spec: DeepLinearSpec, params: dict[str, Tensor], i: int) -> DeepLinearNet:
        return spec.reference_of_member(params, i)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: int64 (n, 2) token pairs or float (n, d), encoded like the stacked model."""
        h = self.spec.encode_inputs(x, self.layers[0].weight.dtype)
        for layer in self.layers:
            h = layer(h)
        return h
