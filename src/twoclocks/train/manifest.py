"""A small JSON manifest beside each trajectory store.

Snakemake cannot tell an empty zarr directory from a full one (docs/design.md, "Contracts"), so
downstream rules depend on this file, written only after the store was validated. It also
records a checksum of every file of the store (`store_checksums`), so that every later reader can
tell a deleted, truncated or altered chunk from real data (`twoclocks.verify`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from twoclocks.provenance import json_safe
from twoclocks.train.store import open_trajectory


def seed_status(seeds: Iterable[int], diverged_step: Iterable[int]) -> dict[str, str]:
    """Per-seed outcome for the store's `seed_status` attr: "ok", or "diverged@<step>" for a
    member frozen at its first non-finite step (`diverged_step` >= 0; -1 = never)."""
    return {
        str(int(s)): ("ok" if d < 0 else f"diverged@{int(d)}")
        for s, d in zip(seeds, diverged_step, strict=True)
    }


CHECKSUM_ALGORITHM = "sha256"


def _file_record(path: Path, digest: bool) -> dict:
    if not digest:
        return {"bytes": path.stat().st_size}
    with open(path, "rb") as fh:
        value = hashlib.file_digest(fh, CHECKSUM_ALGORITHM).hexdigest()
    return {"bytes": path.stat().st_size, CHECKSUM_ALGORITHM: value}


def store_checksums(store: str | Path, *, digest: bool = True) -> dict[str, dict[str, dict]]:
    """Per array of a zarr store, every file it consists of -> its size and sha256.

    Hashes the files as they lie on disk (compressed chunks plus `zarr.json` metadata), which is
    cheaper than decoding every array and catches the same damage: a deleted chunk (which zarr
    would silently read back as NaN), a truncated or altered one, changed attributes. Keys are
    array names (``"."`` for the store's root metadata, which holds the attrs); file paths are
    relative to the array's directory, with ``/``. Hidden files (Snakemake's
    ``.snakemake_timestamp``) are not part of the store and are skipped. ``digest=False``
    records sizes only (a stat per file, for a quick structural check).
    """
    root = Path(store)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: trajectory store not found")
    arrays: dict[str, dict[str, dict]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        array = rel_dir.parts[0] if rel_dir.parts else "."
        for name in sorted(f for f in filenames if not f.startswith(".")):
            rel = (rel_dir / name).relative_to(array) if array != "." else Path(name)
            record = _file_record(Path(dirpath) / name, digest)
            arrays.setdefault(array, {})[rel.as_posix()] = record
    return dict(sorted(arrays.items()))


def summarize(store: str | Path) -> dict:
    """What a downstream step may rely on: shapes, seeds, per-seed status, identity."""
    ds = open_trajectory(store)
    if "train_loss" not in ds or ds.sizes.get("step", 0) == 0:
        raise ValueError(f"{store}: not a complete trajectory store (no train_loss over step)")
    loss = ds["train_loss"].values
    cell = json.loads(ds.attrs["cell"])
    return {
        "store": str(store),
        "cell_id": cell["cell_id"],
        "cell_hash": cell["cell_hash"],
        "sizes": {k: int(v) for k, v in ds.sizes.items()},
        "seeds": [int(s) for s in ds["seed"].values],
        "last_step": int(ds["step"].values[-1]),
        "seed_status": json.loads(ds.attrs.get("seed_status", "{}")),
        "final_train_loss": json_safe(loss[:, -1].astype(float)),
        "dtype": ds.attrs.get("dtype"),
        "device": ds.attrs.get("device"),
    }


def write_manifest(
    store: str | Path, path: str | Path, *, checksums: dict | None = None, **extra
) -> dict:
    """Validate `store` and write its manifest (plus `extra`, e.g. wall_seconds) to `path`,
    with the checksums of the store's files (`store_checksums` of the final store, computed
    here unless given)."""
    record = {
        **summarize(store),
        **extra,
        "checksum_algorithm": CHECKSUM_ALGORITHM,
        "checksums": store_checksums(store) if checksums is None else checksums,
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")  # atomic: a reader never sees half a manifest
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return record
