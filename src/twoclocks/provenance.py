"""Provenance recorded with every output: library version, git commit, packages, device, dtype.

No timestamps or hostnames: the same inputs must give byte-identical files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import twoclocks

PACKAGES = (
    "torch",
    "numpy",
    "xarray",
    "zarr",
    "pandas",
    "scipy",
    "statsmodels",
    "altair",
    "vl-convert-python",
    "snakemake",
)


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout holding this library (suffix `-dirty` if modified), else None."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour shapes our numbers."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def collect(device: str | None = None, dtype: str | None = None) -> dict:
    """A JSON-safe provenance record for an output file.

    ``numerics`` says which float code paths made the numbers: for a run on `device` its
    fingerprint (`twoclocks.numerics.fingerprint`), else this machine's CPU identity
    (`numerics.cpu_identity`: CPU capability, architecture, torch, BLAS), the one a local
    study trains with. Values move with it in their last bits (tests/test_behaviour.py).
    """
    from twoclocks import numerics  # imports torch (lazily: `import twoclocks` stays light)

    record = {
        "library": "twoclocks",
        "library_version": twoclocks.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "numerics": numerics.cpu_identity(),
    }
    if device is not None:
        record["device"] = device
        record["numerics"] = numerics.fingerprint(device)
    if dtype is not None:
        record["dtype"] = dtype
    return record


def to_json(record: dict) -> str:
    """Canonical JSON (sorted keys) so that equal records give equal bytes."""
    return json.dumps(record, sort_keys=True, default=str)


def digest(record: Any, chars: int | None = 12) -> str:
    """Hex sha256 of `to_json(record)`, cut to `chars` (None: all 64).

    The one parameter hash: `config.cell_hash` (a run's identity), `cache.run_hash` (its bits)
    and the engine's resume fingerprint differ only in which keys they hash.
    """
    return hashlib.sha256(to_json(record).encode()).hexdigest()[:chars]


def json_safe(value: Any) -> Any:
    """`value` as strict JSON data, recursively: NaN/inf -> None (JSON null), numpy scalars and
    arrays -> Python numbers and lists, tuples -> lists, mapping keys -> str."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_parquet(df, path, record: dict) -> None:
    """Write `df` to parquet with `record` (provenance, config) in the file's schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {**(table.schema.metadata or {}), b"twoclocks": to_json(record).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)


def read_parquet_record(path) -> dict:
    """The provenance record stored by `write_parquet`."""
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"twoclocks"])
