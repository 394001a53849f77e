"""Publishing directory outputs (zarr stores, cache entries) so that no reader sees a partial one.

Snakemake cannot tell an empty or half-written directory from a finished one, and a job can die
at any point; so every directory output is written under another name and renamed into place
with one ``os.replace`` once complete. The one home of that pattern: data stores, split cell
stores, trained stores and cache entries all go through here.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["copy_dir", "partial_path", "replace_dir", "write_dir", "write_zarr"]


def partial_path(path: str | os.PathLike) -> Path:
    """Where `path` is written before it is published: ``<path>.partial`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move the finished directory `src` to `dst` in one rename, replacing an older `dst`."""
    dst = Path(dst)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(src, dst)
    return dst


def write_dir(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(partial)`` on a fresh ``<path>.partial`` (a leftover of a killed job is
    removed first), then publish it at `path` with `replace_dir`."""
    path = Path(path)
    partial = partial_path(path)
    shutil.rmtree(partial, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(partial)
    return replace_dir(partial, path)


def copy_dir(
    src: str | os.PathLike, dst: str | os.PathLike, *, keep_existing: bool = False
) -> Path:
    """Copy the tree `src` to a unique temporary sibling of `dst`, then rename it to `dst`.

    `keep_existing`: for entries that several jobs may publish at once (the shared cache): when
    `dst` appeared meanwhile, the first published copy stays and ours is dropped. Else an older
    `dst` is replaced. Snakemake's ``.snakemake_timestamp`` marker files are not copied.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".snakemake_timestamp"))
    if not keep_existing:
        return replace_dir(tmp, dst)
    try:
        os.replace(tmp, dst)
    except OSError:  # another job published the same entry first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def write_zarr(path: str | os.PathLike, ds) -> Path:
    """Publish the xarray Dataset `ds` as a zarr v3 store at `path` (via `write_dir`)."""
    return write_dir(
        path, lambda partial: ds.to_zarr(partial, mode="w", consolidated=False, zarr_format=3)
    )
