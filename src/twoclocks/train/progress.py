"""Training progress: the bar on a terminal and the periodic lines in the rule's log.

Both read rows the engine already wrote to its host buffers (no extra forward pass, no device
sync). ``progress_stream`` decides where the bar is drawn; ``Progress`` draws it and logs.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, TextIO

import numpy as np

__all__ = [
    "PROGRESS_EVERY_FRACTION",
    "PROGRESS_MIN_INTERVAL_S",
    "Progress",
    "duration",
    "progress_stream",
]

log = logging.getLogger("twoclocks.train")


def progress_stream(progress: bool | None = None) -> TextIO | None:
    """Where the progress bar is drawn: the process's own stderr (``sys.__stderr__``), or None.

    Pipeline scripts point ``sys.stderr`` at the rule's log file (`twoclocks.logs.to_file`), so
    TTY-ness is judged on ``sys.__stderr__``: an interactive ``snakemake`` run shows the bar on
    the terminal while log lines still go to the log; a batch job (stderr a file) draws none.
    ``progress=None`` draws only on a TTY; True forces the bar, False suppresses it.
    """
    stream = sys.__stderr__
    if stream is None or progress is False:
        return None
    if progress is None:
        try:
            progress = stream.isatty()
        except (AttributeError, ValueError, OSError):  # closed or not a real file
            progress = False
    return stream if progress else None


PROGRESS_EVERY_FRACTION = 0.05  # a log line at most every 5% of the steps ...
PROGRESS_MIN_INTERVAL_S = 30.0  # ... and at most every 30 s (whichever is rarer)
_BAR_REFRESH_S = 0.5  # the bar's metric text changes at most this often


def _spread(v: np.ndarray, fmt: str) -> str:
    """Median over the finite members, with ``[min, max]`` when there are several."""
    v = v[np.isfinite(v)]
    if not v.size:
        return "n/a"
    med = format(float(np.median(v)), fmt)
    return med if v.size == 1 else f"{med} [{v.min():{fmt}}, {v.max():{fmt}}]"


def duration(seconds: float) -> str:
    """``4m05s``, or ``1h02m`` from an hour on: a duration for log lines."""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """The progress bar on a terminal (tqdm, in place) and the periodic lines in the log.

    Both show step, steps/s, ETA and, summarised over members (median [min, max]), the train CE
    and test accuracy of the latest log row. They only read rows `_log` already wrote to the
    host buffers: no extra forward pass and no device sync. Log lines come at step ``start``, at
    the end and in between at most every ``PROGRESS_EVERY_FRACTION`` of the steps and
    ``PROGRESS_MIN_INTERVAL_S`` seconds (whichever is rarer).
    """

    def __init__(self, run: Any, progress: bool | None):
        self.run, self.bar = run, None
        stream = progress_stream(progress)
        if stream is not None:
            from tqdm import tqdm

            name = str(run.params.get("cell_id", "train"))
            self.bar = tqdm(total=run.steps, initial=run.start, desc=name, unit="step", file=stream)
        self.every = max(1, math.ceil(run.steps * PROGRESS_EVERY_FRACTION))
        self.t0 = self.last_s = self.bar_s = time.perf_counter()
        self.start = self.last_t = run.start

    def metrics(self) -> str:
        """Train CE and test accuracy of the latest log row at or before the current step."""
        run = self.run
        i = int(np.searchsorted(run.layout.steps, run.t, side="right")) - 1
        if i < 0:
            return ""
        ce, acc = run.buffers["train_loss"][:, i], run.buffers["test_acc"][:, i]
        out = (
            f"@{int(run.layout.steps[i])} train_ce {_spread(ce, '.4g')} "
            f"test_acc {_spread(acc, '.3f')}"
        )
        n_div = int(np.count_nonzero(run.buffers["diverged_step"] >= 0))
        return out + (f" diverged {n_div}/{len(run.seeds)}" if n_div else "")

    def report(self) -> None:
        """Called once per step after the log row (if any) is written."""
        run, t = self.run, self.run.t
        if self.bar is not None and t in run.log_index:
            now = time.perf_counter()
            if now - self.bar_s >= _BAR_REFRESH_S or t == run.steps:
                self.bar.set_postfix_str(self.metrics(), refresh=False)
                self.bar_s = now
        if t == self.start:
            what = "resuming" if t else "starting"
            n = len(run.seeds)
            members = f"{n} member" + ("s" if n != 1 else "")
            log.info("step %d/%d %s, %s; %s", t, run.steps, what, members, self.metrics())
            return
        if t != run.steps and t - self.last_t < self.every:
            return
        now = time.perf_counter()
        if t != run.steps and now - self.last_s < PROGRESS_MIN_INTERVAL_S:
            return
        rate = (t - self.start) / max(now - self.t0, 1e-9)
        tail = f"ETA {duration((run.steps - t) / rate)}" if t < run.steps else "done"
        tail += f" (elapsed {duration(now - self.t0)})"
        log.info("step %d/%d %.1f steps/s %s; %s", t, run.steps, rate, tail, self.metrics())
        self.last_t, self.last_s = t, now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
