"""The training run's background writer: store and resume-state writes off the training thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

__all__ = ["BackgroundWriter"]


class BackgroundWriter:
    """Runs store writes on one background thread, in submission order, while training goes on.

    Everything submitted must own its data (copies, never views of live tensors or buffers).
    Order makes resume safe: a state file is only written after the rows and snapshots submitted
    before it. ``wait`` blocks until all submitted writes are done and re-raises the first error.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="twoclocks-writer")
        self._pending: list = []

    def submit(self, fn, *args) -> None:
        self._raise_failed()
        self._pending.append(self._pool.submit(fn, *args))

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for fut in done:
            fut.result()

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
