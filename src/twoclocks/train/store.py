"""Trajectory zarr store (docs/design.md): create once, fill by region, validate, publish.

Life cycle of one cell's store:

1. :func:`create_store` writes the full-length store (every log step and snapshot known up
   front, NaN placeholders, which write no chunks) to a *partial* path next to the declared
   output (``<store>.partial``), so Snakemake never sees an incomplete store under its name.
2. The engine fills it with :func:`write_rows` / :func:`write_snapshot`: region writes that are
   chunk-aligned and idempotent (a retried write rewrites the same bytes; nothing is appended).
3. Resume state (params, optimiser state, step, gates, divergence) lives in ``<store>.state/``
   as an ``allow_pickle=False`` npz written atomically (:func:`save_state` / :func:`load_state`).
4. :func:`validate_store` checks completeness; :func:`publish` renames the partial store into
   place with ``os.replace`` and removes the state.

Stores are written and read with ``consolidated=False``; string coordinates are ``object``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from twoclocks.publish import replace_dir

__all__ = [
    "StoreLayout",
    "create_store",
    "end_to_end_matrix",
    "load_state",
    "open_trajectory",
    "partial_path",
    "publish",
    "read_buffers",
    "save_state",
    "state_path",
    "validate_store",
    "write_attrs",
    "write_rows",
    "write_snapshot",
]

STEP_CHUNK = 512
STATE_FILE = "state.npz"


@dataclass
class StoreLayout:
    """Everything about a store's shape, known before training starts.

    ``metrics`` maps a variable name to ``(extra_dim or None, long_name, units)``; metric
    variables have dims ``(seed, step[, extra_dim])``. ``snapshots`` maps a block name to the
    per-member shape of that parameter.
    """

    seeds: list[int]
    steps: np.ndarray  # int64 log steps
    tau: np.ndarray  # (seed, step) float64
    blocks: list[str]
    matrices: list[str]
    sv_count: int
    checkpoint_steps: np.ndarray  # int64 snapshot steps
    metrics: dict[str, tuple[str | None, str, str]]
    snapshots: dict[str, tuple[int, ...]]
    snapshot_dtype: str = "float32"
    attrs: dict = field(default_factory=dict)

    def extra_size(self, dim: str | None) -> int:
        return {None: 0, "block": len(self.blocks), "matrix": len(self.matrices)}.get(
            dim, self.sv_count
        )

    def metric_shape(self, name: str) -> tuple[int, ...]:
        dim = self.metrics[name][0]
        base = (len(self.seeds), len(self.steps))
        return base if dim is None else (*base, self.extra_size(dim))

    def metric_dims(self, name: str) -> tuple[str, ...]:
        dim = self.metrics[name][0]
        return ("seed", "step") if dim is None else ("seed", "step", dim)


def partial_path(store_path: Path) -> Path:
    """Sibling path where the store is built before it is published."""
    return store_path.with_name(store_path.name + ".partial")


def state_path(store_path: Path) -> Path:
    """Default resume-state directory: a sibling ``.state`` dir of the store."""
    return store_path.with_name(store_path.name + ".state")


def _snap_dims(block: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    return (f"{block}_row",) if len(shape) == 1 else (f"{block}_row", f"{block}_col")


def create_store(path: Path, layout: StoreLayout) -> None:
    """Write the full-length NaN-filled store (metadata and coordinates only) to ``path``."""
    m, s = len(layout.seeds), len(layout.steps)
    data_vars: dict = {}
    encoding: dict = {}
    for name, (dim, long_name, units) in layout.metrics.items():
        arr = np.full(layout.metric_shape(name), np.nan)
        data_vars[name] = (layout.metric_dims(name), arr, {"long_name": long_name, "units": units})
        chunks = (m, min(STEP_CHUNK, s)) + ((arr.shape[2],) if dim is not None else ())
        encoding[name] = {"chunks": chunks}
    data_vars["diverged_step"] = (
        ("seed",),
        np.full(m, -1, dtype=np.int64),
        {"long_name": "first step with a non-finite loss (-1: never)", "units": "step"},
    )
    k = len(layout.checkpoint_steps)
    for block, shape in layout.snapshots.items():
        arr = np.full((m, k, *shape), np.nan, dtype=layout.snapshot_dtype)
        data_vars[f"snap_{block}"] = (
            ("seed", "checkpoint", *_snap_dims(block, shape)),
            arr,
            {"long_name": f"snapshot of parameter block {block}", "units": "1"},
        )
        encoding[f"snap_{block}"] = {"chunks": (m, 1, *shape)}
    coords = {
        "seed": ("seed", np.asarray(layout.seeds, dtype=np.int64), {"long_name": "seed"}),
        "step": ("step", layout.steps.astype(np.int64), {"long_name": "optimizer steps"}),
        "tau": (("seed", "step"), layout.tau.astype(np.float64)),
        "block": ("block", np.asarray(layout.blocks, dtype=object)),
        "matrix": ("matrix", np.asarray(layout.matrices, dtype=object)),
        "sv": ("sv", np.arange(layout.sv_count, dtype=np.int64)),
        "checkpoint": ("checkpoint", np.arange(k, dtype=np.int64)),
        "checkpoint_step": ("checkpoint", layout.checkpoint_steps.astype(np.int64)),
    }
    coord_attrs = {
        "seed": ("member seed", "1"),
        "step": ("optimizer steps (0 = init, t = after t updates)", "step"),
        "tau": ("accumulated optimizer time (sum of lr up to and including the step)", "1"),
        "block": ("parameter block", "1"),
        "matrix": ("weight matrix or end-to-end map", "1"),
        "sv": ("singular value index (descending)", "1"),
        "checkpoint": ("weight snapshot index", "1"),
        "checkpoint_step": ("optimizer step of the weight snapshot", "step"),
    }
    ds = xr.Dataset(data_vars, coords={k_: v[:2] for k_, v in coords.items()})
    for name, (long_name, units) in coord_attrs.items():
        ds[name].attrs.update(long_name=long_name, units=units)
    ds.attrs.update(layout.attrs)
    shutil.rmtree(path, ignore_errors=True)
    ds.to_zarr(path, mode="w", consolidated=False, zarr_format=3, encoding=encoding)


def write_rows(path: Path, layout: StoreLayout, buffers: dict[str, np.ndarray], lo: int, hi: int):
    """Write log rows ``[lo, hi)`` of the in-memory ``buffers``, widened to whole chunks.

    The buffers hold every row computed so far (NaN elsewhere), so widening rewrites the same
    values: the write is idempotent and never touches a chunk partially. Written through zarr
    into the arrays `create_store` made (same codecs and bytes as an xarray region write, at
    about half the cost: no dataset to build and check per call).
    """
    if hi <= lo:
        return
    s = len(layout.steps)
    a = (lo // STEP_CHUNK) * STEP_CHUNK
    b = min(s, -(-hi // STEP_CHUNK) * STEP_CHUNK)
    group = zarr.open_group(str(path), mode="r+")
    for n in layout.metrics:
        group[n][:, a:b] = buffers[n][:, a:b]
    group["diverged_step"][:] = buffers["diverged_step"]


def write_snapshot(path: Path, layout: StoreLayout, k: int, arrays: dict[str, np.ndarray]):
    """Write snapshot ``k`` (arrays: block -> (M, *shape)) into its checkpoint slot."""
    write_snapshots(path, layout, k, [arrays])


def write_snapshots(path: Path, layout: StoreLayout, k0: int, snaps: list[dict[str, np.ndarray]]):
    """Write consecutive snapshots ``k0, k0 + 1, ...`` in one region write (through zarr)."""
    if not snaps:
        return
    group = zarr.open_group(str(path), mode="r+")
    for b in layout.snapshots:
        stacked = np.stack([s[b] for s in snaps], axis=1).astype(layout.snapshot_dtype)
        group[f"snap_{b}"][:, k0 : k0 + len(snaps)] = stacked


def read_buffers(path: Path, layout: StoreLayout) -> dict[str, np.ndarray]:
    """Load the metric rows written so far (for resume) into fresh in-memory buffers."""
    ds = _open(path)
    out = {n: ds[n].values.astype(np.float64) for n in layout.metrics}
    out["diverged_step"] = ds["diverged_step"].values.astype(np.int64)
    return out


def write_attrs(path: Path, attrs: dict) -> None:
    """Update dataset attrs in place (e.g. ``seed_status`` once training ends)."""
    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update(attrs)


def validate_store(path: Path, layout: StoreLayout) -> None:
    """Raise ``ValueError`` unless the store at ``path`` is complete and shaped per ``layout``.

    Complete: every metric and snapshot slot is filled (not NaN) for every member up to its
    ``diverged_step`` (exclusive); members that never diverged must be filled everywhere.
    """
    ds = _open(path)
    problems = []
    if not np.array_equal(ds["step"].values, layout.steps):
        problems.append("step coordinate differs from the schedule")
    for name in layout.metrics:
        if name not in ds:
            problems.append(f"missing variable {name}")
        elif ds[name].shape != layout.metric_shape(name):
            problems.append(f"{name} has shape {ds[name].shape}")
    div = ds["diverged_step"].values
    loss = ds["train_loss"].values
    for i, seed in enumerate(layout.seeds):
        limit = layout.steps < div[i] if div[i] >= 0 else np.ones(len(layout.steps), bool)
        if np.isnan(loss[i, limit]).any():
            problems.append(f"seed {seed}: train_loss not filled at some log steps")
        snap_limit = layout.checkpoint_steps < div[i] if div[i] >= 0 else slice(None)
        for b in layout.snapshots:
            if np.isnan(ds[f"snap_{b}"].values[i, snap_limit]).any():
                problems.append(f"seed {seed}: snapshot of {b} not filled")
    for key in ("cell", "provenance", "seed_status", "dtype", "device"):
        if key not in ds.attrs:
            problems.append(f"missing attr {key}")
    for name, var in {**ds.data_vars, **ds.coords}.items():
        if "long_name" not in var.attrs or "units" not in var.attrs:
            problems.append(f"{name} lacks long_name/units")
    if problems:
        raise ValueError(f"invalid trajectory store {path}: " + "; ".join(problems))


def publish(partial: Path, store_path: Path, state_dir: Path | None) -> Path:
    """Atomically move the validated partial store to its final name; drop the resume state."""
    replace_dir(partial, store_path)
    if state_dir is not None:
        shutil.rmtree(state_dir, ignore_errors=True)
    return store_path


def save_state(state_dir: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the resume state as an npz atomically (temp file + ``os.replace``); no pickle."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (STATE_FILE + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, state_dir / STATE_FILE)


def load_state(state_dir: Path) -> dict[str, np.ndarray] | None:
    """The last saved resume state, or None if there is none."""
    f = state_dir / STATE_FILE
    if not f.exists():
        return None
    with np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _open(path) -> xr.Dataset:
    with warnings.catch_warnings():
        # Snakemake drops a `.snakemake_timestamp` file into directory outputs; zarr warns on it.
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        return xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None)


def open_trajectory(path: str | os.PathLike) -> xr.Dataset:
    """Open a published trajectory store (lazily; ``.load()`` to pull it into memory)."""
    return _open(path)


def end_to_end_matrix(ds: xr.Dataset) -> str:
    """Name of the end-to-end map on a trajectory's ``matrix`` axis (``srank``), torch-free.

    The ``end_to_end_matrix`` attr (written by the engine from the model's ``end_to_end_name``);
    stores without it (older ones) list the end-to-end map last, as the engine always has.
    """
    name = ds.attrs.get("end_to_end_matrix")
    return str(name) if name else str(ds["matrix"].values[-1])


def cell_attr(ds: xr.Dataset) -> dict:
    """The resolved cell params stored in a trajectory's attrs."""
    return json.loads(ds.attrs["cell"])
