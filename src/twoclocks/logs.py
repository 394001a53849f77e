"""Logging set-up for pipeline steps: everything a step says goes to its Snakemake log file."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

ATTEMPT_HEADER = "==== attempt"


def to_file(path: str | None) -> logging.Logger:
    """Send stderr and the `twoclocks` logger to `path` (the rule's `log:`), INFO level."""
    if path:
        sys.stderr = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the step
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,
    )
    return logging.getLogger("twoclocks")


class _Tee:
    """A text stream writing to several streams (stderr to the log and the attempts log)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def close(self) -> None:
        for s in self.streams:
            s.close()

    def __getattr__(self, name: str):  # encoding, isatty, fileno, ...: the first stream's
        return getattr(self.streams[0], name)


def keep_attempts(path: str) -> str:
    """Also append everything this step logs to ``<log>.attempts.log`` beside `path`.

    Snakemake deletes a job's declared log before each attempt (a retry, a rerun after
    preemption), and with it what the previous attempt said ("saved resume state at step N").
    This file is not declared, so it keeps every attempt, each after a header with its number,
    time, host and SLURM job id, with its log lines and whatever reaches stderr (a traceback).
    Call after `to_file`. Returns the file's path.
    """
    history = str(Path(path).with_suffix("")) + ".attempts.log"
    previous = Path(history).read_text().count(ATTEMPT_HEADER) if Path(history).exists() else 0
    stream = open(history, "a", buffering=1)  # noqa: SIM115 - lives as long as the step
    sys.stderr = _Tee(sys.stderr, stream)  # log records reach the declared log by its handler
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("twoclocks").info(
        "%s %d of %s (host %s, SLURM job %s)",
        ATTEMPT_HEADER,
        previous + 1,
        Path(path).name,
        socket.gethostname(),
        os.environ.get("SLURM_JOB_ID", "none"),
    )
    return history
