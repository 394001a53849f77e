"""``deep_linear``: a depth-L chain of bias-free linear layers, the theory's own model (eq. 2.7).

Blocks and matrices ``W1..WL``; the end-to-end map ``A = W_L ... W_1``. Inputs: concatenated
one-hots of the token pair (d_in = 2p) or the teacher's dense vectors. Init (``init_scheme``):
``uniform`` = ``nn.Linear``'s U(-1/sqrt(fan_in), 1/sqrt(fan_in)), or ``orthogonal`` = every
``W_l`` (semi-)orthogonal with unit singular values (the lazy regime, docs/science.md 6); times
``init_scale`` and the layer's ``layer_init_scales`` entry, optionally re-factored to a balanced
factorisation of the same map (``balanced_init``). Extra metrics: the Schatten energy of ``A``,
the balancedness gap (eq. 2.7) and, on a teacher task with fewer train samples than input
dimensions, the spurious energy ``||A P_perp||_F^2`` (the part of the map the data never sees).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from twoclocks.config import cell_default
from twoclocks.train import metrics as tm
from twoclocks.train.models.base import Forward, ModelSpec, linear_bound, one_hot_pairs, uniform

__all__ = [
    "DeepLinearNet",
    "DeepLinearSpec",
    "balance",
    "input_complement_projector",
    "orthogonal",
    "spurious_energy",
]


@dataclass(frozen=True)
class DeepLinearSpec(ModelSpec):
    """Shape of a stacked ``deep_linear`` model."""

    kind = "deep_linear"
    config_keys = ("depth", "width", "balanced_init", "init_scheme", "layer_init_scales")
    end_to_end_name = "A"
    is_deep_linear = True
    omitted_at_default = ("init_scheme", "layer_init_scales")

    depth: int = 1
    width: int = 0
    balanced_init: bool = False
    init_scheme: str = "uniform"
    layer_init_scales: tuple[float, ...] | None = None
    # dense inputs with fewer train samples than dimensions: the span of the train inputs has a
    # non-trivial orthogonal complement, so the spurious energy is logged
    spurious_inputs: bool = False

    @classmethod
    def from_params(cls, params: dict, common: dict[str, Any]) -> DeepLinearSpec:
        scales = params.get("layer_init_scales", cell_default("layer_init_scales"))
        depth = int(params["depth"])
        if scales is not None and len(scales) != depth:
            raise ValueError(
                f"layer_init_scales has {len(scales)} values for depth {depth}: one per layer"
            )
        dense = common["input_kind"] == "dense"
        return cls(
            depth=depth,
            width=int(params["width"]),
            balanced_init=bool(params.get("balanced_init", cell_default("balanced_init"))),
            init_scheme=str(params.get("init_scheme", cell_default("init_scheme"))),
            layer_init_scales=None if scales is None else tuple(float(v) for v in scales),
            spurious_inputs=dense
            and "train_size" in params
            and int(params["train_size"]) < int(common["input_dim"]),
            **common,
        )

    @classmethod
    def check_params(cls, params: dict) -> list[str]:
        """`layer_init_scales` gives one scale per layer."""
        scales, depth = params.get("layer_init_scales"), params["depth"]
        if scales is not None and len(scales) != depth:
            return [
                f"layer_init_scales has {len(scales)} value(s) for depth = {depth}; give one "
                f"scale per layer W_1..W_{depth} (or null for 1 each)"
            ]
        return []

    def blocks(self) -> list[str]:
        return [f"W{k}" for k in range(1, self.depth + 1)]

    def _dims(self) -> list[int]:
        return [self.linear_input_dim] + [self.width] * (self.depth - 1) + [self.num_classes]

    def init_member(self, gen: torch.Generator, scale: float) -> dict[str, Tensor]:
        """Layer by layer from ``gen`` (uniform or orthogonal), times ``scale`` and the layer's
        ``layer_init_scales`` entry; then balanced if asked. The default scheme with no layer
        scales draws exactly what it drew before these options existed."""
        dims = self._dims()
        layer = self.layer_init_scales or (1.0,) * self.depth
        if self.init_scheme == "orthogonal":
            draw = [orthogonal(gen, (dims[k], dims[k - 1])) for k in range(1, self.depth + 1)]
        elif self.init_scheme == "uniform":
            draw = [
                uniform(gen, (dims[k], dims[k - 1]), linear_bound(dims[k - 1]))
                for k in range(1, self.depth + 1)
            ]
        else:
            raise ValueError(f"init_scheme {self.init_scheme!r}: use uniform or orthogonal")
        out = {}
        for k in range(1, self.depth + 1):
            w = draw[k - 1] * scale
            out[f"W{k}"] = w if self.layer_init_scales is None else w * layer[k - 1]
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
            Metric(
                "spurious_energy",
                "spurious energy ||A P_perp||_F^2, P_perp onto the complement of the train inputs",
                lambda c: spurious_energy(c.matrices["A"], input_complement_projector(c.train.x)),
                applies=lambda spec: spec.spurious_inputs,
                where="deep_linear, teacher with train_size < input_dim",
            ),
        ]

    def reference(self) -> DeepLinearNet:
        return DeepLinearNet(self)


def orthogonal(gen: torch.Generator, shape: tuple[int, int]) -> Tensor:
    """A (semi-)orthogonal float64 matrix from ``gen``: orthonormal rows (out <= in) or columns.

    QR of a Gaussian with the signs of R's diagonal folded in (Haar-distributed); every singular
    value is 1.
    """
    rows, cols = shape
    g = torch.randn((max(rows, cols), min(rows, cols)), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r))
    return q if rows >= cols else q.T


_PROJECTORS: dict[int, tuple[weakref.ref, Tensor]] = {}


def input_complement_projector(x: Tensor) -> Tensor:
    """P_perp (d, d) float64: the projector onto the orthogonal complement of span(train inputs).

    ``x`` (n, d) the encoded train inputs. ``P_perp = I - V_r V_r^T`` with ``V_r`` the right
    singular vectors of ``x`` (float64) whose singular values exceed ``max(n, d) * eps *
    s_max`` (numpy's rank rule). Computed once per inputs tensor (cached while it lives), so
    once per dataset and run, not per log step.
    """
    hit = _PROJECTORS.get(id(x))
    if hit is not None and hit[0]() is x:
        return hit[1]
    x64 = x.detach().to(torch.float64)
    _, s, vh = torch.linalg.svd(x64, full_matrices=False)
    tol = max(x64.shape) * torch.finfo(torch.float64).eps * (s[0] if s.numel() else 0.0)
    v = vh[s > tol]
    proj = torch.eye(x64.shape[1], dtype=torch.float64, device=x64.device) - v.T @ v
    key = id(x)
    _PROJECTORS[key] = (weakref.ref(x, lambda _, k=key: _PROJECTORS.pop(k, None)), proj)
    return proj


def spurious_energy(a: Tensor, proj: Tensor) -> Tensor:
    """``||A P_perp||_F^2`` per member, (M,) float64, for the end-to-end maps ``a`` (M, C, d).

    The component of the map on directions no train input has: the CE loss cannot see it (its
    gradient in A lies in the span of the inputs), so under GD only weight decay removes it
    (docs/science.md 6).
    """
    a64 = a.to(torch.float64)
    # bmm, not matmul: matmul folds the members into one (M C, d) GEMM whose rounding depends on
    # M, so a member's value would depend on its stack (measured: 1e-16..1e-13 relative)
    ap = torch.bmm(a64, proj.expand(a64.shape[0], *proj.shape))
    return ap.square().sum(dim=(1, 2))


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
