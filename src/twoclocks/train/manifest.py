"""A small JSON manifest beside each trajectory store.

Snakemake cannot tell an empty zarr directory from a full one (docs/design.md, "Contracts"), so
downstream rules depend on this file, written only after the store was validated.
"""

from __future__ import annotations

import json
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


def write_manifest(store: str | Path, path: str | Path, **extra) -> dict:
    """Validate `store` and write its manifest (plus `extra`, e.g. wall_seconds) to `path`."""
    record = {**summarize(store), **extra}
    Path(path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record
