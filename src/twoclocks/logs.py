"""Logging set-up for pipeline steps: everything a step says goes to its Snakemake log file."""

from __future__ import annotations

import logging
import sys


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
