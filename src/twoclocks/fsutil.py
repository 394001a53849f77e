"""File-system helpers for publishing outputs without duplicating them on disk."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


def link_tree(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Publish the directory tree `src` at `dst` with hard links: one copy of the data on disk,
    two names, either of which can be deleted without touching the other.

    Falls back to copying, file by file, where a hard link is impossible (`dst` on another
    file system, or one without hard links). Returns "linked", "copied" or "linked+copied".
    Safe for zarr stores: zarr rewrites a file by writing a new one and renaming it over the
    old name, which replaces that name's link instead of changing the shared data.
    """
    how: set[str] = set()

    def link_or_copy(s: str, d: str) -> str:
        try:
            os.link(s, d)
            how.add("linked")
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copy2(s, d)
            how.add("copied")
        return d

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return "+".join(sorted(how, reverse=True)) or "linked"


def prune_empty_dirs(path: str | os.PathLike, stop: str | os.PathLike) -> list[Path]:
    """Remove `path` and then its parents while they are empty, never `stop` or anything above
    it (`path` must lie under `stop`). Returns the removed directories.

    Another job may be writing next to them: a directory that is not empty (or already gone)
    ends the walk instead of failing.
    """
    path, stop = Path(path).absolute(), Path(stop).absolute()
    if stop not in path.parents:
        raise ValueError(f"{path} is not under {stop}")
    removed = []
    while path != stop:
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # not empty
            break
        else:
            removed.append(path)
        path = path.parent
    return removed
