"""Peak resident memory of a train job, estimated from its shapes before any job runs.

One train job (a stacked group, `train.group`) holds, at its peak:

- the baseline: the Python interpreter, torch and the libraries the job imports, and the
  allocator's and thread pools' own memory (measured, ``BASELINE_MB``);
- per parameter: the weights, their gradients, the optimiser state (AdamW: two moments; SGD with
  momentum: one), the parameters before a logged update (``update_ratio``), the float64 copies of
  weights and gradients the norm metrics read, and the host copies of a checkpoint or snapshot;
- the activations of the full-batch forward and backward over the distinct train samples;
- the log row's temporaries (its pass over the test set, the gates, the Gram matrices, the float64
  separation gap), while the train forward's pre-activations are still alive.

Each term is bytes = count x members x dtype size, with counts taken from the model's shapes
(`block_shapes`, `activation_floats`); the per-sample counts were checked against the resident
peaks the bench measures (``python -m twoclocks.bench --memory-table``, docs/performance.md).
The declared Snakemake ``mem_mb`` is the estimate times ``MARGIN`` (times the attempt), and
:func:`check_study` refuses a study whose largest job exceeds the machine or ``max_job_mem_mb``.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALLOCATOR_SLACK",
    "BASELINE_MB",
    "MARGIN",
    "JobMemory",
    "activation_floats",
    "block_shapes",
    "check_study",
    "declared_mem_mb",
    "group_memory",
    "job_memory",
    "machine_mem_mb",
    "mem_mb_of",
]

MB = 1 << 20
BASELINE_MB = 330.0  # python + torch + twoclocks + zarr imported, first ops run (ru_maxrss)
# Resident bytes per live byte of parameters and activations: the allocator keeps freed
# (n, H) blocks for reuse (glibc arenas of the training and writer threads), so the resident
# peak of a training run sits ~1.65-2.0x above the live bytes counted here (measured over
# widths 128-1024 and 1-3 hidden layers, docs/performance.md).
ALLOCATOR_SLACK = 1.85
MARGIN = 1.5  # declared mem_mb over the estimate: the estimate's error (measured within 10%)
DTYPE_BYTES = {"float32": 4, "float64": 8}
# per parameter, in units of the training dtype: weights, grads, the pre-update copy, two
# transient foreach temporaries of the update, host copies of a checkpoint (params + state)
PARAM_COPIES = {"adamw": 5 + 2 + 3, "sgd": 5 + 1 + 2}  # SGD: the momentum buffer
PARAM_F64_COPIES = 2  # float64 weights and gradients (`LogContext.params64`, `grads64`)


@dataclass(frozen=True)
class JobMemory:
    """One job's estimate: its parts in MB and the shapes they came from."""

    members: int
    n_train: int
    n_test: int
    params_per_member: int
    dtype: str
    parts: dict[str, float]

    @property
    def total_mb(self) -> float:
        return float(sum(self.parts.values()))

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in self.parts.items())
        return (
            f"~{self.total_mb:,.0f} MB ({parts} MB; {self.members} member(s) x "
            f"{self.params_per_member:,} parameters, {self.n_train:,} train / {self.n_test:,} "
            f"test samples, {self.dtype})"
        )


def block_shapes(spec) -> dict[str, tuple[int, ...]]:
    """One member's parameter shapes by block, from the spec alone (nothing allocated)."""
    own = getattr(spec, "block_shapes", None)
    if callable(own):
        return dict(own())
    if spec.kind == "deep_linear":
        dims = spec._dims()
        return {f"W{k}": (dims[k], dims[k - 1]) for k in range(1, spec.depth + 1)}
    raise ValueError(f"no memory model for model {spec.kind!r}: give its spec a block_shapes()")


def activation_floats(spec, n_train: int, n_test: int) -> tuple[int, int]:
    """Floats per member alive at the peak of (training step, log row).

    relu_embed (L hidden layers of width H, C classes, vocabulary V): the step keeps each
    layer's pre-activation and ReLU output for the backward, the logits and their log-softmax,
    and at its height two (n, H) gradients and the first layer's two gathered rows; the log row
    keeps the pre-activations and last hidden layer of the train forward while it takes the test
    logits, the gates (train forward and the previous row's), their float copies and the float64
    separation gap of one member (counted as floats of the training dtype)."""
    own = getattr(spec, "activation_floats", None)
    if callable(own):  # a model with its own activation model (transformer)
        return own(n_train, n_test)
    c = spec.num_classes
    if spec.kind == "relu_embed":
        h, layers = spec.hidden_width, spec.hidden_layers
        tables = spec.vocab_size * h * (2 if spec.combine == "concat" else 1)
        step = n_train * (h * (2 * layers + 4) + 3 * c) + 2 * tables
        row = n_train * (h * (3 * layers + 4) + c) + n_test * (2 * h + c) + tables
        return step, row
    widths = list(block_shapes(spec).values())
    hidden = sum(w[0] for w in widths)
    step = n_train * (2 * hidden + 2 * c + spec.linear_input_dim)
    return step, step + n_test * (max(w[0] for w in widths) + c)


@functools.lru_cache(maxsize=64)
def _dataset(data_json: str):
    """The dataset of a cell (small; built once per dataset id, as the data rule builds it)."""
    from twoclocks.data.io import build_dataset

    return build_dataset(json.loads(data_json))


def _dataset_attrs(data_json: str) -> tuple[dict, int | None]:
    ds = _dataset(data_json)
    return dict(ds.attrs), int(ds.sizes["feature"]) if "feature" in ds.sizes else None


@functools.cache
def _sample_counts(data_json: str, symmetric: bool) -> tuple[int, int]:
    """Distinct train and test inputs of a dataset (what the engine trains and evaluates,
    `models.distinct_samples`)."""
    ds = _dataset(data_json)

    def distinct(split: str) -> int:
        x, y = ds[f"x_{split}"].values, ds[f"y_{split}"].values
        if not symmetric or x.ndim != 2 or x.shape[1] != 2:
            return int(x.shape[0])
        key = np.concatenate([np.sort(x, axis=1), y.reshape(-1, 1)], axis=1)
        return int(np.unique(key, axis=0).shape[0])

    return distinct("train"), distinct("test")


def job_memory(params: dict) -> JobMemory:
    """The estimate for one train job of a resolved (or stacked, `group.stacked_params`) cell.

    Measured on CPU jobs; on a GPU the parameters and activations live in device memory, so for
    host memory it is an upper bound (device memory is not checked here)."""
    from twoclocks.data.io import data_params
    from twoclocks.train.models import model_spec

    data_json = json.dumps(data_params(params), sort_keys=True, default=str)
    attrs, input_dim = _dataset_attrs(data_json)
    spec = model_spec(params, attrs, input_dim=input_dim)
    n_train, n_test = _sample_counts(data_json, bool(spec.symmetric_tokens))
    members = len(params["seeds"])
    dtype = str(params.get("dtype", "float32"))
    size = DTYPE_BYTES[dtype]
    n_params = sum(math.prod(s) for s in block_shapes(spec).values())
    copies = PARAM_COPIES.get(str(params.get("optimizer", "adamw")), PARAM_COPIES["adamw"])
    step, row = activation_floats(spec, n_train, n_test)
    parts = {
        "baseline": BASELINE_MB,
        "parameters": members * n_params * (copies * size + PARAM_F64_COPIES * 8) / MB,
        "activations": members * max(step, row) * size / MB,
    }
    parts["allocator"] = (ALLOCATOR_SLACK - 1.0) * (parts["parameters"] + parts["activations"])
    return JobMemory(members, n_train, n_test, n_params, dtype, parts)


def group_memory(cells: list[dict]) -> JobMemory:
    """The estimate for the train job of one group's resolved cells (stacked, as it trains)."""
    key = json.dumps([dict(c) for c in cells], sort_keys=True, default=str)
    return _group_memory(key)


@functools.lru_cache(maxsize=4096)
def _group_memory(key: str) -> JobMemory:
    from twoclocks.train.group import stacked_params

    return job_memory(stacked_params(json.loads(key)))


def declared_mem_mb(cells: list[dict], attempt: int = 1) -> int:
    """Snakemake ``mem_mb`` of the train job of ``cells`` (one group): the estimate times
    ``MARGIN`` (rounded up to 10 MB), times the attempt (a retry after an out-of-memory kill
    asks for more)."""
    return mem_mb_of(group_memory(cells)) * int(attempt)


def mem_mb_of(est: JobMemory) -> int:
    """The declared memory of an estimate at the first attempt."""
    return int(math.ceil(est.total_mb * MARGIN / 10.0) * 10)


def machine_mem_mb() -> int:
    """This machine's physical memory in MB."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MB)


def check_study(study, where: str, *, local: bool = True) -> None:
    """Refuse (ConfigError), before any job runs, a study whose largest train job cannot fit:
    its declared memory above ``max_job_mem_mb`` (config) or, without it and for a local run,
    above this machine's memory. The message names the job's cells, the model keys, the
    estimate and the fixes."""
    from twoclocks.config import ConfigError

    cap = study.config.get("max_job_mem_mb")
    if cap is None and not local:
        return  # a cluster's nodes are not this machine; its scheduler enforces mem_mb
    source = "max_job_mem_mb" if cap is not None else "this machine's memory"
    cap = float(machine_mem_mb() if cap is None else cap)
    jobs = [
        (group_memory([c.params for c in cells]), gid, cells) for gid, cells in study.groups.items()
    ]
    est, gid, cells = max(jobs, key=lambda j: j[0].total_mb)
    need = mem_mb_of(est)
    if need <= cap:
        return
    p = cells[0].params
    keys = ", ".join(f"{k}: {p[k]}" for k in SHAPE_KEYS if k in p)
    raise ConfigError(
        f"{where}: train job {gid!r} (cells {', '.join(c.id for c in cells)}) needs mem_mb "
        f"{need:,}: estimate {est.describe()} x {MARGIN} margin; above {source} "
        f"({cap:,.0f} MB). Its keys: {keys}. Fix: fewer stacked seeds (`seeds`) or fewer "
        "`stack_axes` (fewer members per job), a smaller model or train set, or a bigger node "
        "(set `max_job_mem_mb` to its memory in MB)."
    )


SHAPE_KEYS = (
    "model",
    "embed_dim",
    "combine",
    "hidden_width",
    "hidden_layers",
    "width",
    "depth",
    "input_dim",
    "modulus",
    "train_fraction",
    "train_size",
    "dtype",
    "seeds",
)
