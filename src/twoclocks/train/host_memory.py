"""Keep freed host memory in the process (glibc malloc), so that a step's temporaries do not
page-fault back in every step.

glibc serves blocks above its mmap threshold (128 KB at start, raised as large blocks are freed)
with fresh mmaps and returns the top of the heap to the OS above its trim threshold, so a CPU
step's temporaries of a few hundred KB to a few MB are zero-filled page by page again on every
step: ~300 minor page faults per step of the bench cell. With the mmap threshold at 32 MB and
the trim threshold at 512 MB they are reused instead: ~24 faults per step, 5-7% less CPU time
per bare step on the 2-core VM by itself (docs/performance.md has the bench with it and the
optimiser's fewer temporaries), peak resident memory +3.5% there. The bits
of a run do not change (allocation decides where numbers live, never their arithmetic).

Process-wide and not undone (glibc has no call that restores its adaptive thresholds): a
training job is its own process. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform

log = logging.getLogger("twoclocks.host_memory")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD_BYTES = 512 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True where they were set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        )
    except (OSError, AttributeError):
        return False
    if not ok:
        log.debug("mallopt refused the thresholds; glibc keeps its defaults")
    return ok
