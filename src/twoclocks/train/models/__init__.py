"""Stacked functional models with a leading member axis, and their registry.

One module per model (``relu_embed``, ``deep_linear``), each a frozen :class:`ModelSpec`
subclass registered here by its config name. Everything else calls the model through this
package: :func:`model_spec` builds a cell's spec, :func:`model_class` looks a model up by name
(the error lists the valid choices), and the functions below dispatch to the spec. Adding a model
is one new module plus its ``register`` call (docs/design.md, "Extending twoclocks").

Parameters are an ordered ``dict`` keyed by the block names of docs/design.md, each ``(M, ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from twoclocks.data.tasks import task
from twoclocks.train.models.base import Forward, ModelSpec, per_member

__all__ = [
    "MODELS",
    "DeepLinearNet",
    "DeepLinearSpec",
    "Forward",
    "ModelSpec",
    "ReluEmbedNet",
    "ReluEmbedSpec",
    "distinct_samples",
    "encode_inputs",
    "end_to_end",
    "forward",
    "init_params",
    "model_class",
    "model_spec",
    "register",
]

MODELS: dict[str, type[ModelSpec]] = {}


def register(cls: type[ModelSpec]) -> type[ModelSpec]:
    """Add a model class to the registry under its ``kind`` (usable as a class decorator)."""
    if not cls.kind or not cls.end_to_end_name:
        raise ValueError(f"{cls.__name__} needs class attributes kind and end_to_end_name")
    MODELS[cls.kind] = cls
    return cls


def model_class(name: str) -> type[ModelSpec]:
    """The registered model class called ``name``; a ValueError lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}"
        ) from None


def model_spec(params: dict, dataset_attrs: dict, input_dim: int | None = None) -> ModelSpec:
    """Build the spec of a resolved cell dict on a dataset (its attrs; ``input_dim`` for dense
    inputs)."""
    input_kind = task(dataset_attrs.get("task", params.get("task"))).input_kind
    common = dict(
        num_classes=int(dataset_attrs["num_classes"]),
        input_kind=input_kind,
        vocab_size=int(dataset_attrs["vocab_size"]) if input_kind == "tokens" else None,
        input_dim=None if input_kind == "tokens" else int(input_dim),
    )
    return model_class(params["model"]).from_params(params, common)


def init_params(
    spec: ModelSpec,
    seeds: Sequence[int],
    init_scale: float | Sequence[float] = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Stacked parameters ``name -> (M, ...)``; member i depends only on its seed and scale."""
    scales = per_member(init_scale, len(seeds), "init_scale")
    members = [
        spec.init_member(torch.Generator().manual_seed(int(s)), c)
        for s, c in zip(seeds, scales, strict=True)
    ]
    return {
        name: torch.stack([m[name] for m in members]).to(device=device, dtype=dtype)
        for name in spec.blocks()
    }


def forward(spec: ModelSpec, params: dict[str, Tensor], x: Tensor) -> Forward:
    """Batched forward over all members on encoded inputs (see :func:`encode_inputs`)."""
    return spec.forward(params, x)


def encode_inputs(spec: ModelSpec, x: Tensor, dtype: torch.dtype) -> Tensor:
    """A split's inputs as the model's forward takes them (deep linear: one-hot pairs)."""
    return spec.encode_inputs(x, dtype)


def end_to_end(spec: ModelSpec, params: dict[str, Tensor]) -> Tensor:
    """The float64 end-to-end map (M, C, d_in) (deep linear ``A``; relu ``UW``, gates ignored)."""
    return spec.end_to_end(params)


def distinct_samples(spec: ModelSpec, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """Merge samples the model cannot tell apart into one weighted sample.

    With sum-combined embeddings ``z = E[a] + E[b]`` the pairs ``(a, b)`` and ``(b, a)`` are the
    same input, so a pair and its transpose with the same label (for ``add``, every pair whose
    transpose is on the same side of the split: all of an unordered split) need one forward and
    backward, counted twice. Any loss or metric that is a mean over samples is unchanged when
    taken as a weighted mean over the distinct ones. Returns ``(x, y, weight)`` of the distinct
    samples in first-occurrence order, ``weight`` their float64 multiplicities; ``weight`` is None
    (and ``x, y`` are returned as given) when every sample is distinct or the model is not
    symmetric in its two tokens (``spec.symmetric_tokens``).
    """
    if not spec.symmetric_tokens:
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


# The built-in models register themselves on import (after the registry exists).
from twoclocks.train.models.deep_linear import DeepLinearNet, DeepLinearSpec  # noqa: E402
from twoclocks.train.models.relu_embed import ReluEmbedNet, ReluEmbedSpec  # noqa: E402
from twoclocks.train.models.transformer import TransformerSpec  # noqa: E402

register(ReluEmbedSpec)
register(DeepLinearSpec)
register(TransformerSpec)
