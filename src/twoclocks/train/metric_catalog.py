"""Every logged metric, declared once: name, store dim, long name, units, when it applies, and
how to compute it from a per-log-step :class:`LogContext`.

The engine logs ``metrics_for(spec)`` in this order; the store layout and its validation take
their variables from the same list (``store_metrics``); docs/design.md's metric table is
``markdown_table()`` (a test compares them); the bench's reference computes the same set
(``names_for``). Model-specific metrics are declared by the model module
(``ModelSpec.extra_metrics``) and sit between the common ones and the structural gaps.

Adding a metric: append a :class:`Metric` to ``COMMON`` or ``GAPS`` (or to a model's
``extra_metrics``) with a compute function reading what it needs from the context; shared work
(the float64 logit pass, spectra, squared norms, gates) is a cached property of the context, so
each costs one computation per log step whatever the number of metrics that use it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from twoclocks.train import metrics as tm

__all__ = [
    "COMMON",
    "GAPS",
    "LogContext",
    "Metric",
    "all_metrics",
    "markdown_table",
    "metrics_for",
    "names_for",
    "store_metrics",
]


def _always(spec: Any) -> bool:
    return True


@dataclass(frozen=True)
class Metric:
    """One logged metric: a float64 variable ``(seed, step[, dim])`` of the trajectory store.

    ``compute(ctx)`` returns ``(M,)`` or ``(M, k)`` float64; ``applies(spec)`` says whether a
    model/task logs it; ``where`` says the same in words for the docs; ``needs_delta`` asks the
    float64 train logit pass for the softmax residual too; ``after_update`` metrics are computed
    once the optimiser has taken this step's update (``ctx.before`` holds the parameters before
    it, ``ctx.params`` those after; NaN at the last step, which takes no update);
    ``every_rows`` > 1 logs the metric on every that-many-th log row only (row 0 included; NaN
    between), for costly metrics that serve a figure rather than a clock.
    """

    name: str
    long_name: str
    compute: Callable[[LogContext], Tensor]
    units: str = "1"
    dim: str | None = None  # extra store dim: "block", "matrix" or "sv"
    applies: Callable[[Any], bool] = _always
    where: str = "all"
    needs_delta: bool = False
    after_update: bool = False
    every_rows: int = 1

    def logged_at(self, row: int) -> bool:
        """Whether log row ``row`` (0-based) holds this metric."""
        return row % self.every_rows == 0


class LogContext:
    """What one log step's metrics read, with shared work computed once on first use.

    ``params`` (after t updates), ``fwd`` (the train forward whose backward filled the
    gradients), ``train``/``test`` samples (``x, y, weight``), ``test_logits``, the previous
    log's gates (or None), the Fourier gap's ``fourier_keep``, the members' ``weight_decay``
    (M,) and which blocks it ``decay``s; ``before``, for ``after_update`` metrics, the parameters
    before this step's update. Model-specific shared work goes through :meth:`shared`.
    """

    def __init__(
        self,
        *,
        spec,
        params: dict[str, Tensor],
        fwd,
        train,
        test,
        test_logits: Tensor,
        prev_gates: Tensor | None,
        fourier_keep: int,
        delta: bool = False,
        weight_decay: Tensor | None = None,
        decay: dict[str, bool] | None = None,
    ):
        self.spec, self.params, self.fwd = spec, params, fwd
        self.train, self.test, self.test_logits = train, test, test_logits
        self.prev_gates, self.fourier_keep, self.delta = prev_gates, fourier_keep, delta
        first = params[spec.blocks()[0]]
        self.members, self.device = first.shape[0], first.device
        self.float32 = first.dtype == torch.float32
        if weight_decay is None:
            weight_decay = torch.zeros(self.members, dtype=torch.float64, device=self.device)
        self.weight_decay = weight_decay.to(device=self.device, dtype=torch.float64)
        self.decay = {b: True for b in spec.blocks()} if decay is None else dict(decay)
        self.before: dict[str, Tensor] | None = None
        self._shared: dict[str, Any] = {}

    def shared(self, key: str, compute: Callable[[LogContext], Any]) -> Any:
        """``compute(self)`` once per log step under ``key`` (work several metrics of one model
        read, such as a Gram matrix)."""
        if key not in self._shared:
            self._shared[key] = compute(self)
        return self._shared[key]

    @functools.cached_property
    def train_logits(self) -> dict[str, Tensor]:
        """The float64 train logit pass (loss, acc, margins; delta_rms if asked)."""
        return tm.logit_metrics(self.fwd.logits, self.train.y, self.train.weight, delta=self.delta)

    @functools.cached_property
    def test_metrics(self) -> dict[str, Tensor]:
        return tm.logit_metrics(self.test_logits, self.test.y, self.test.weight)

    @functools.cached_property
    def params64(self) -> dict[str, Tensor]:
        """float64 copies of the parameter blocks, shared by the norm metrics."""
        return {b: self.params[b].detach().double() for b in self.spec.blocks()}

    @functools.cached_property
    def grads64(self) -> dict[str, Tensor]:
        """float64 copies of the loss gradients (zeros for a block without one)."""
        out = {}
        for b, p in self.params64.items():
            g = self.params[b].grad
            out[b] = torch.zeros_like(p) if g is None else g.double()
        return out

    @functools.cached_property
    def sqnorm(self) -> Tensor:
        """(M, blocks) float64 squared Frobenius norms."""
        return torch.stack([p.square().flatten(1).sum(1) for p in self.params64.values()], dim=1)

    @functools.cached_property
    def grad_norm(self) -> Tensor:
        return torch.stack([g.square().flatten(1).sum(1).sqrt() for g in self.grads64.values()], 1)

    @functools.cached_property
    def grad_norm_energy(self) -> Tensor:
        """(M, blocks) float64 ``||grad_b L + wd theta_b||``: the gradient of the regularised
        objective ``E = L + (wd / 2) ||theta||^2`` (weight decay acting on the decayed blocks;
        the objective the clocks' energy gap uses), where ``grad_norm`` has ``grad L`` only."""
        out = []
        for b, g in self.grads64.items():
            if self.decay.get(b, True):
                p = self.params64[b]
                g = g + self.weight_decay.view(-1, *([1] * (p.ndim - 1))) * p
            out.append(g.square().flatten(1).sum(1).sqrt())
        return torch.stack(out, dim=1)

    def update_ratio(self) -> Tensor:
        """(M, blocks) float64 ``||theta_b(t+1) - theta_b(t)|| / ||theta_b(t)||``: the relative
        size of this step's update per block (what Adam's per-coordinate steps do to each block,
        which raw gradient norms do not show). Needs ``before``."""
        if self.before is None:
            raise RuntimeError("update_ratio needs the parameters before the update (ctx.before)")
        out = []
        for b in self.spec.blocks():
            a0, a1 = self.before[b].double(), self.params[b].detach().double()
            step = (a1 - a0).square().flatten(1).sum(1).sqrt()
            out.append(step / a0.square().flatten(1).sum(1).sqrt())
        return torch.stack(out, dim=1)

    @functools.cached_property
    def matrices(self) -> dict[str, Tensor]:
        """The model's logged matrices by name (the end-to-end map in float64)."""
        return self.spec.matrix_tensors(self.params)

    @functools.cached_property
    def spectra(self) -> dict[str, Tensor]:
        """Singular values of every logged matrix (see :func:`spectra`)."""
        return spectra(self.matrices, self.spec.end_to_end_name, self.float32)

    @functools.cached_property
    def pre(self) -> Tensor | None:
        """All hidden pre-activations side by side, (M, n, units); None without any."""
        pre = self.fwd.pre
        if not pre:
            return None
        return torch.cat(pre, dim=2) if len(pre) > 1 else pre[0]

    @functools.cached_property
    def gates(self) -> Tensor | None:
        """ReLU gate mask ``pre > 0`` (kept for the next log's flip fraction)."""
        return None if self.pre is None else self.pre > 0

    def nan(self) -> Tensor:
        return torch.full((self.members,), math.nan, dtype=torch.float64, device=self.device)


def _singular_values_by_shape(mats: dict[str, Tensor], fn) -> dict[str, Tensor]:
    """Singular values of every (M, a, b) matrix by ``fn``, one call per distinct shape (relu: E
    and U share (p, H), so two calls become one)."""
    by_shape: dict[tuple, list[str]] = {}
    for name, a in mats.items():
        by_shape.setdefault(tuple(a.shape[1:]), []).append(name)
    out = {}
    for names in by_shape.values():
        m = mats[names[0]].shape[0]
        sv = fn(torch.cat([mats[n] for n in names], dim=0))
        out.update({n: sv[i * m : (i + 1) * m] for i, n in enumerate(names)})
    return out


def spectra(mats: dict[str, Tensor], e2e_name: str, float32: bool) -> dict[str, Tensor]:
    """Singular values of the logged matrices. float32 runs: Gram eigenvalues, in float64 for the
    end-to-end map (whose whole spectrum is stored) and in float32 for the others (only their
    stable rank and spectral norm are stored); float64 runs: float64 SVDs."""
    if not float32:
        return _singular_values_by_shape(mats, tm.singular_values)
    rest = {k: v for k, v in mats.items() if k != e2e_name}
    out = _singular_values_by_shape(
        rest, functools.partial(tm.singular_values_gram, dtype=torch.float32)
    )
    out[e2e_name] = tm.singular_values_gram(mats[e2e_name])
    return {k: out[k] for k in mats}


def _srank(c: LogContext) -> Tensor:
    return torch.stack([s.square().sum(1) / s[:, 0].square() for s in c.spectra.values()], dim=1)


def _fourier_gap(c: LogContext) -> Tensor:
    emb = c.spec.residue_embedding(c.params)
    return tm.fourier_gap(emb, min(int(c.fourier_keep), emb.shape[1] // 2))


LOSS = "nat"
MARGIN = "logit"
COMMON: list[Metric] = [
    Metric(
        "train_loss",
        "mean cross-entropy on the train set (float64 from logits)",
        lambda c: c.train_logits["loss"],
        units=LOSS,
    ),
    Metric(
        "test_loss",
        "mean cross-entropy on the test set (float64 from logits)",
        lambda c: c.test_metrics["loss"],
        units=LOSS,
    ),
    Metric("train_acc", "train accuracy", lambda c: c.train_logits["acc"]),
    Metric("test_acc", "test accuracy", lambda c: c.test_metrics["acc"]),
    Metric(
        "train_margin_min",
        "min train margin (true logit - largest other)",
        lambda c: c.train_logits["margin_min"],
        units=MARGIN,
    ),
    Metric(
        "train_margin_mean",
        "mean train margin (true logit - largest other)",
        lambda c: c.train_logits["margin_mean"],
        units=MARGIN,
    ),
    Metric("sqnorm", "squared Frobenius norm of the block", lambda c: c.sqnorm, dim="block"),
    Metric(
        "sqnorm_total",
        "sum of squared Frobenius norms of all blocks",
        lambda c: c.sqnorm.sum(1),
    ),
    Metric("srank", "stable rank ||A||_F^2/||A||_2^2 (eq. 2.3)", _srank, dim="matrix"),
    Metric(
        "singular_values",
        "singular values of the end-to-end map, descending",
        lambda c: c.spectra[c.spec.end_to_end_name],
        dim="sv",
    ),
    Metric(
        "grad_norm",
        "Frobenius norm of the loss gradient (no weight decay)",
        lambda c: c.grad_norm,
        dim="block",
    ),
    Metric(
        "grad_norm_energy",
        "Frobenius norm of the gradient of L + (wd/2)||theta||^2 (KL exponent, eq. 4.2)",
        lambda c: c.grad_norm_energy,
        dim="block",
    ),
    Metric(
        "update_ratio",
        "relative update size ||theta(t+1) - theta(t)||_F / ||theta(t)||_F (Prop. 4.2)",
        lambda c: c.update_ratio(),
        dim="block",
        after_update=True,
    ),
]

GAPS: list[Metric] = [
    Metric(
        "fourier_gap",
        "input-embedding energy outside the top frequencies",
        _fourier_gap,
        applies=lambda spec: spec.has_residue_embedding,
        where="token (modular) inputs",
    ),
    Metric(
        "separation_gap",
        "class-separation gap of the last hidden layer (App. F.5)",
        lambda c: tm.separation_gap(c.fwd.h, c.train.y, c.spec.num_classes, weight=c.train.weight),
    ),
]


def _with_where(metrics: list[Metric], where: str) -> list[Metric]:
    return [m if m.where != "all" else _replace(m, where=where) for m in metrics]


def _replace(m: Metric, **kw) -> Metric:
    from dataclasses import replace

    return replace(m, **kw)


def metrics_for(spec) -> list[Metric]:
    """The metrics a model logs, in store order: common, the model's own, structural gaps."""
    own = _with_where(type(spec).extra_metrics(), type(spec).kind)
    return [m for m in [*COMMON, *own, *GAPS] if m.applies(spec)]


def names_for(spec) -> list[str]:
    return [m.name for m in metrics_for(spec)]


def store_metrics(spec) -> dict[str, tuple[str | None, str, str]]:
    """``StoreLayout.metrics``: name -> (extra dim, long_name, units)."""
    return {m.name: (m.dim, m.long_name, m.units) for m in metrics_for(spec)}


def all_metrics() -> list[Metric]:
    """Every declared metric over every registered model (docs order), each once."""
    from twoclocks.train.models import MODELS

    out = list(COMMON)
    for cls in MODELS.values():
        out += _with_where(cls.extra_metrics(), cls.kind)
    return out + GAPS


def markdown_table() -> str:
    """The metric table of docs/design.md, generated from the declarations."""
    rows = ["| metric | dims | units | models | long name |", "| --- | --- | --- | --- | --- |"]
    for m in all_metrics():
        dims = "seed, step" + (f", {m.dim}" if m.dim else "")
        long_name = m.long_name.replace("|", "\\|")  # a bare | would split the cell
        if m.every_rows > 1:
            long_name += f"; every {m.every_rows}th log row (NaN between)"
        rows.append(f"| `{m.name}` | {dims} | {m.units} | {m.where} | {long_name} |")
    return "\n".join(rows)
