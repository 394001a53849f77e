"""Whether a train job is alive: a marker file next to its resume state.

A train job writes `<state>/work/job.json` (host, pid, the process's start time) while it
trains, and on an exception records it there as failed. The work folder is removed when the
job finishes. So a reader (`twoclocks.watch`) can tell a job that runs from one whose process
is gone (killed by the kernel, SLURM or a user): its marker names a pid that no longer exists
on this host, or another process with that pid. On another host (SLURM) a live pid cannot be
checked, and the job counts as running until its marker says otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

MARKER = "job.json"


def _write(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True) + "\n")
    tmp.replace(path)


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


@contextmanager
def job_marker(work_dir: str | os.PathLike) -> Iterator[Path]:
    """Mark `work_dir` as trained by this process for the duration of the block; an exception
    (or Ctrl-C) leaves the marker saying failed and why, then propagates."""
    path = Path(work_dir) / MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": _start_time(os.getpid()),
        "started": time.time(),
        "state": "running",
    }
    _write(path, record)
    try:
        yield path
    except BaseException as exc:
        record.update(state="failed", error=f"{type(exc).__name__}: {exc}"[:300])
        record["ended"] = time.time()
        if path.parent.is_dir():
            _write(path, record)
        raise


def job_state(work_dir: str | os.PathLike) -> tuple[str, dict]:
    """("running" | "failed" | "unknown", marker record) of the job training in `work_dir`.

    unknown: no readable marker (a job started by an older version, or not yet marked).
    failed: the marker says so, or it names a process of this host that is gone (a reused pid
    is told apart by its start time); the record then gets a ``reason``.
    """
    try:
        record = json.loads((Path(work_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return "unknown", {}
    if record.get("state") == "failed":
        return "failed", {**record, "reason": record.get("error", "failed")}
    if record.get("host") == socket.gethostname():
        started = _start_time(int(record.get("pid", -1)))
        recorded = record.get("process_start")
        if started is None or (recorded is not None and abs(started - recorded) > 1.0):
            return "failed", {**record, "reason": f"process {record.get('pid')} is gone"}
    return "running", record
