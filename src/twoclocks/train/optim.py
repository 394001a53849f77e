"""Stacked optimisers: AdamW, SGD(momentum) and Muon with per-member lr and weight decay.

Each parameter has a leading member axis M; ``lr`` and ``weight_decay`` are (M,) float64 tensors
broadcast over the other axes. The update order replicates ``torch.optim.AdamW`` and
``torch.optim.SGD`` (single-tensor path) so that member i follows exactly the trajectory of an
unstacked model trained by torch's optimiser (Muon: ``torch.optim.Muon``'s update, its
Newton-Schulz orthogonalisation batched over the members). Per-member scalar factors are computed
in float64 (as torch does with Python floats) and cast to the parameter dtype. Weight decay
applies to every weight matrix (layerwise) and, by default, to biases too (torch's default param
group).

A member can be frozen (``active[i] = False``): its gradient is zeroed, its lr and weight decay
are zero and its state is reset, so its parameters stop changing exactly.

A parameter block can be frozen for every member (``frozen``, the cell's ``frozen_blocks``): the
optimiser skips it (no update, no weight decay, no state), so it keeps its initial values
bitwise; its gradient is still computed by autograd, so per-block gradient norms stay logged.
With nothing frozen the step runs exactly the ops it ran before this option existed.

State is a flat dict of plain tensors (``state_dict``/``load_state_dict``), saved without pickle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from twoclocks.config import cell_defaults

__all__ = [
    "ADAMW_MATRIX_BLOCKS",
    "StackedAdamW",
    "StackedMuon",
    "StackedSGD",
    "make_optimizer",
    "newton_schulz",
]


def _member_vector(value: float | Sequence[float] | Tensor, m: int, device) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64, device=device)
    if t.ndim == 0:
        t = t.expand(m).clone()
    if t.shape != (m,):
        raise ValueError(f"per-member value has shape {tuple(t.shape)}, expected ({m},)")
    return t


def _bcast(v: Tensor, p: Tensor) -> Tensor:
    """(M,) float64 -> (M, 1, ..., 1) in the parameter dtype."""
    return v.to(p.dtype).view(-1, *([1] * (p.ndim - 1)))


class _Stacked:
    def __init__(
        self,
        params: dict[str, Tensor],
        lr: float | Sequence[float] | Tensor,
        weight_decay: float | Sequence[float] | Tensor,
        decay: dict[str, bool] | None,
        frozen: Sequence[str] = (),
    ):
        unknown = sorted(set(frozen) - set(params))
        if unknown:
            raise ValueError(
                f"frozen blocks {unknown} are not parameter blocks; blocks: {list(params)}"
            )
        if set(frozen) >= set(params):
            raise ValueError(f"frozen blocks {sorted(frozen)} leave nothing to train")
        self.params = params
        self.frozen = frozenset(frozen)
        # the blocks the optimiser updates (and keeps state for), in parameter order
        self.trained = {n: p for n, p in params.items() if n not in self.frozen}
        first = next(iter(params.values()))
        m, dev = first.shape[0], first.device
        self.lr = _member_vector(lr, m, dev)
        self.weight_decay = _member_vector(weight_decay, m, dev)
        self.decay = {n: True for n in params} if decay is None else dict(decay)
        self.active = torch.ones(m, dtype=torch.bool, device=dev)
        self._all_active = True  # host-side copy: no device sync per step
        self.step_count = 0
        self.state: dict[str, Tensor] = {}

    def _masked(self) -> tuple[Tensor, Tensor, bool]:
        if self._all_active:
            return self.lr, self.weight_decay, True
        zero = torch.zeros_like(self.lr)
        return (
            torch.where(self.active, self.lr, zero),
            torch.where(self.active, self.weight_decay, zero),
            False,
        )

    def _grads(self, all_active: bool) -> dict[str, Tensor]:
        grads = {}
        for n, p in self.trained.items():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if not all_active:
                g = torch.where(_bcast(self.active, p).bool(), g, torch.zeros_like(g))
            grads[n] = g
        return grads

    def freeze(self, members: Tensor) -> None:
        """Freeze members (bool (M,)): no further updates, state zeroed."""
        self.active &= ~members
        self._all_active = bool(self.active.all())
        for v in self.state.values():
            v[members] = 0

    def state_dict(self) -> dict[str, Tensor]:
        out = {f"state/{k}": v for k, v in self.state.items()}
        out["step_count"] = torch.tensor(self.step_count, dtype=torch.int64)
        out["active"] = self.active.clone()
        return out

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        self.step_count = int(sd["step_count"])
        self.active = sd["active"].to(self.active.device, torch.bool).clone()
        self._all_active = bool(self.active.all())
        for k, v in self.state.items():
            v.copy_(sd[f"state/{k}"])


class StackedAdamW(_Stacked):
    """AdamW (decoupled weight decay, bias correction), replicating torch.optim.AdamW."""

    def __init__(
        self,
        params: dict[str, Tensor],
        lr,
        weight_decay,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decay: dict[str, bool] | None = None,
        frozen: Sequence[str] = (),
    ):
        super().__init__(params, lr, weight_decay, decay, frozen)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        for n, p in self.trained.items():
            self.state[f"exp_avg/{n}"] = torch.zeros_like(p)
            self.state[f"exp_avg_sq/{n}"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self) -> None:
        lr, wd, all_active = self._masked()
        grads = self._grads(all_active)
        self.step_count += 1
        bc1 = 1.0 - self.beta1**self.step_count
        bc2_sqrt = math.sqrt(1.0 - self.beta2**self.step_count)
        shrink = 1.0 - lr * wd  # float64, like torch's Python-float arithmetic
        step_size = lr / bc1
        for n in self.trained:
            self._update(n, grads[n], shrink, step_size, bc2_sqrt)

    def _update(self, n: str, g: Tensor, shrink: Tensor, step_size: Tensor, bc2_sqrt: float):
        """One block's AdamW update (decay, moments, step)."""
        p = self.params[n]
        if self.decay[n]:
            p.mul_(_bcast(shrink, p))
        m, v = self.state[f"exp_avg/{n}"], self.state[f"exp_avg_sq/{n}"]
        m.lerp_(g, 1.0 - self.beta1)
        v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
        # torch's `(v.sqrt() / bc2_sqrt).add_(eps)`, then `step_size * (m / denom)`, in one
        # buffer: the same ops in the same order (bits unchanged), two allocations fewer
        buf = v.sqrt().div_(bc2_sqrt).add_(self.eps)
        torch.div(m, buf, out=buf)
        p.sub_(buf.mul_(_bcast(step_size, p)))


class StackedSGD(_Stacked):
    """SGD with momentum and L2 weight decay added to the gradient, replicating torch.optim.SGD
    (dampening 0, no Nesterov)."""

    def __init__(
        self,
        params: dict[str, Tensor],
        lr,
        weight_decay,
        momentum: float = 0.0,
        decay: dict[str, bool] | None = None,
        frozen: Sequence[str] = (),
    ):
        super().__init__(params, lr, weight_decay, decay, frozen)
        self.momentum = float(momentum)
        if self.momentum != 0.0:
            for n, p in self.trained.items():
                self.state[f"momentum_buffer/{n}"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self) -> None:
        lr, wd, all_active = self._masked()
        grads = self._grads(all_active)
        self.step_count += 1
        for n, p in self.trained.items():
            d = grads[n]
            if self.decay[n]:
                d = d + _bcast(wd, p) * p
            if self.momentum != 0.0:
                buf = self.state[f"momentum_buffer/{n}"]
                if self.step_count == 1:
                    buf.copy_(d)
                else:
                    buf.mul_(self.momentum).add_(d)
                d = buf
            p.sub_(_bcast(lr, p) * d)


# Muon's constants, as torch.optim.Muon (from Keller Jordan's Muon).
MUON_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MUON_EPS = 1e-7
# Matrix blocks that Muon leaves to AdamW, by the registry's block names: token and position
# embeddings and the unembedding/head (torch.optim.Muon's docs and the Muon literature: Muon is
# for hidden-layer matrices). Every block that is not a matrix per member (biases, LayerNorm
# gains) goes to AdamW too.
ADAMW_MATRIX_BLOCKS = frozenset({"E", "P", "U"})


def newton_schulz(g: Tensor, ns_steps: int, coefficients=MUON_NS_COEFFICIENTS, eps=MUON_EPS):
    """Quintic Newton-Schulz orthogonalisation of every member's matrix, (M, A, B) -> (M, A, B)
    bfloat16: torch.optim.Muon's ``_zeropower_via_newtonschulz`` with ``addmm`` batched as
    ``baddbmm`` over the member axis (each member scaled by its own Frobenius norm)."""
    a, b, c = coefficients
    x = g.bfloat16()
    tall = g.shape[-2] > g.shape[-1]
    if tall:
        x = x.mT
    x = x / x.flatten(1).norm(dim=1).clamp(min=eps).view(-1, 1, 1)
    for _ in range(ns_steps):
        gram = x @ x.mT
        update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, update, x, beta=a)
    return x.mT if tall else x


def _muon_lr_ratio(shape: Sequence[int], adjust_lr: str) -> float:
    """torch.optim.Muon's ``_adjust_lr`` factor for a member's matrix of shape (A, B)."""
    a, b = shape
    if adjust_lr == "original":
        return math.sqrt(max(1, a / b))
    if adjust_lr == "match_rms_adamw":
        return 0.2 * math.sqrt(max(a, b))
    raise ValueError(f"unknown muon_adjust_lr {adjust_lr!r}; use original or match_rms_adamw")


class StackedMuon(StackedAdamW):
    """Muon on the hidden weight matrices, AdamW on every other block, one lr and weight decay
    per member for both (the pairing of torch.optim.Muon's docs: Muon for 2-D hidden matrices,
    AdamW for embeddings, head and biases). The Muon update replicates torch.optim.Muon:
    momentum ``buf.lerp_(g, 1 - mu)``, Nesterov ``g.lerp(buf, mu)``, Newton-Schulz in bfloat16,
    decoupled decay ``1 - lr wd``, step ``lr * adjust(shape)``."""

    def __init__(
        self,
        params: dict[str, Tensor],
        lr,
        weight_decay,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr: str = "original",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decay: dict[str, bool] | None = None,
        frozen: Sequence[str] = (),
    ):
        _Stacked.__init__(self, params, lr, weight_decay, decay, frozen)
        self.beta1, self.beta2, self.eps = float(betas[0]), float(betas[1]), float(eps)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.ns_steps = int(ns_steps)
        self.muon_blocks = [
            n for n, p in self.trained.items() if p.ndim == 3 and n not in ADAMW_MATRIX_BLOCKS
        ]
        self.lr_ratio = {
            n: _muon_lr_ratio(params[n].shape[1:], adjust_lr) for n in self.muon_blocks
        }
        for n, p in self.trained.items():
            if n in self.lr_ratio:
                self.state[f"momentum_buffer/{n}"] = torch.zeros_like(p)
            else:
                self.state[f"exp_avg/{n}"] = torch.zeros_like(p)
                self.state[f"exp_avg_sq/{n}"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self) -> None:
        lr, wd, all_active = self._masked()
        grads = self._grads(all_active)
        self.step_count += 1
        bc1 = 1.0 - self.beta1**self.step_count
        bc2_sqrt = math.sqrt(1.0 - self.beta2**self.step_count)
        shrink = 1.0 - lr * wd
        for n, p in self.trained.items():
            g = grads[n]
            if n not in self.lr_ratio:
                self._update(n, g, shrink, lr / bc1, bc2_sqrt)
                continue
            buf = self.state[f"momentum_buffer/{n}"]
            buf.lerp_(g, 1.0 - self.momentum)
            update = g.lerp(buf, self.momentum) if self.nesterov else buf
            ortho = newton_schulz(update, self.ns_steps)
            if self.decay[n]:
                p.mul_(_bcast(shrink, p))
            p.sub_(_bcast(lr * self.lr_ratio[n], p) * ortho)


def make_optimizer(
    cell: dict, params: dict[str, Tensor], decay: dict[str, bool] | None = None
) -> StackedAdamW | StackedSGD | StackedMuon:
    """Optimiser of a resolved cell (``optimizer``, ``lr``, ``weight_decay``, ``betas``,
    ``adam_eps``, ``momentum``, the ``muon_*`` keys, ``frozen_blocks``, optional
    ``decay_biases``)."""
    if decay is None:
        decay_biases = bool(cell.get("decay_biases", True))
        decay = {n: (decay_biases or not n.startswith("b")) for n in params}
    cell = {**cell_defaults(), **cell}  # missing keys: the schema's defaults
    kind, frozen = cell["optimizer"], list(cell["frozen_blocks"])
    if kind == "adamw":
        betas = cell["betas"]
        return StackedAdamW(
            params,
            cell["lr"],
            cell["weight_decay"],
            betas=(betas[0], betas[1]),
            eps=cell["adam_eps"],
            decay=decay,
            frozen=frozen,
        )
    if kind == "sgd":
        return StackedSGD(params, cell["lr"], cell["weight_decay"], cell["momentum"], decay, frozen)
    if kind == "muon":
        betas = cell["betas"]
        return StackedMuon(
            params,
            cell["lr"],
            cell["weight_decay"],
            momentum=cell["muon_momentum"],
            nesterov=cell["muon_nesterov"],
            ns_steps=cell["muon_ns_steps"],
            adjust_lr=cell["muon_adjust_lr"],
            betas=(betas[0], betas[1]),
            eps=cell["adam_eps"],
            decay=decay,
            frozen=frozen,
        )
    raise ValueError(f"unknown optimizer {kind!r}")
