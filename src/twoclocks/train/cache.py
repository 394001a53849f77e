"""Cross-study cache of trained cells: identical cells are trained once.

Keyed by a hash of what determines the trajectory's bits: the cell's resolved config without
study/grid/cell/group names and without the requested `device` string (`auto` and `cpu` on a CPU
machine train the same program), torch's intra-op thread count (CPU reductions, hence the bits,
depend on it), the code version (a hash of the data and training sources, the library and torch
versions) and the resolved device type, because CPU and CUDA runs are not bitwise equal.
Enabled by setting `TWOCLOCKS_CACHE` to a directory shared by the studies (e.g. on a cluster's
shared filesystem). A hit copies the cached store into place and relabels its `cell` attrs for
the requesting study; a miss trains and then publishes into the cache. Entries are written to a
temporary name and renamed, so readers never see a partial entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
import zarr

import twoclocks
from twoclocks import numerics
from twoclocks.provenance import digest
from twoclocks.publish import copy_dir
from twoclocks.train.engine import resolve_device, train_cell

ENV = "TWOCLOCKS_CACHE"
log = logging.getLogger("twoclocks.cache")


@functools.cache
def code_version() -> str:
    """12 hex chars over every source file that shapes a trajectory, plus library/torch versions."""
    root = Path(twoclocks.__file__).parent
    digest = hashlib.sha256(f"{twoclocks.__version__} torch {torch.__version__}".encode())
    for path in sorted([*root.glob("data/*.py"), *root.glob("train/*.py")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# Labels and the requested device string: they do not change the computation.
KEY_EXCLUDED = frozenset({"study", "grid", "cell_id", "cell_hash", "group_id", "device"})


def run_hash(params: dict, threads: int | None = None) -> str:
    """12 hex chars of sha256 over the params that shape the run's bits, plus the thread count.

    Unlike `twoclocks.config.cell_hash`, the requested `device` is left out (the resolved device
    type is a separate part of the key) and torch's thread count (default: the current
    `torch.get_num_threads()`) and this machine's numerics fingerprint (CPU capability; GPU
    model, CUDA and cuDNN versions: `twoclocks.numerics`) are in.
    """
    core = {k: v for k, v in params.items() if k not in KEY_EXCLUDED}
    core["torch_threads"] = int(torch.get_num_threads() if threads is None else threads)
    gpu = params.get("device", "auto") in ("auto", "cuda") and torch.cuda.is_available()
    core["numerics"] = numerics.fingerprint("cuda" if gpu else "cpu")  # CPU ISA, GPU model
    return digest(core)


def cache_key(params: dict, threads: int | None = None) -> str:
    """`{run_hash}-{code_version}-{device_type}`: equal keys give bitwise equal trajectories."""
    device = resolve_device(str(params.get("device", "auto"))).type
    return f"{run_hash(params, threads)}-{code_version()}-{device}"


def cache_dir() -> Path | None:
    root = os.environ.get(ENV)
    return Path(root) if root else None


def _relabel(store: Path, params: dict, key: str) -> None:
    group = zarr.open_group(store, mode="r+")
    group.attrs.update({"cell": json.dumps(params, sort_keys=True), "cache_key": key})


def train_or_fetch(params: dict, dataset, store_path, *, state_dir=None) -> Path:
    """Publish the cell's trajectory at `store_path`, from the cache when possible."""
    store_path = Path(store_path)
    root = cache_dir()
    if root is None:
        return train_cell(params, dataset, store_path, state_dir=state_dir)
    key = cache_key(params)
    entry = root / key / "trajectory.zarr"
    if entry.exists():
        log.info("cache hit %s: copying %s (no training)", key, entry)
        copy_dir(entry, store_path)
        _relabel(store_path, params, key)
        return store_path
    log.info("cache miss %s: training", key)
    train_cell(params, dataset, store_path, state_dir=state_dir)
    copy_dir(store_path, entry, keep_existing=True)
    return store_path
