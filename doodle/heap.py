"""Keep freed memory in the process, so numpy's short-lived arrays do not page-fault on every step.

numpy gets every temporary from malloc and frees it a moment later. glibc returns large blocks (above
its mmap threshold) straight to the kernel, and trims the top of its heap once more than the trim
threshold lies free there; the next array of that size is then fresh pages that the kernel must fault
in and zero. Rasterising makes dozens of arrays of 0.1 to 10 MB per chunk of drawings, and building a
category's cache faulted in 200,000 pages for 6,600 drawings; with the thresholds below, 7,600, and
1.5x the drawings per second (bench/heap.py). A training step of the quickdraw16 network (1 MB
activations, masks and augmentation buffers, in two threads' arenas) faulted in 100 to 1,200 pages,
none with them, for 5 to 9% less CPU per step. So rasterize_batch asks for it (whatever process runs
it: `doodle cache` workers, Dask workers, predict, evaluate), the rasteriser's worker processes, and
training (doodle.train.fit). The process keeps at most TRIM_THRESHOLD bytes of free heap.

glibc only (Linux); elsewhere, or when the user set MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_
(their own tuning wins), nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 << 20  # blocks at least this big still come from (and go back to) the kernel directly
TRIM_THRESHOLD = 64 << 20  # free memory kept at the top of the heap before any is returned
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once. Returns whether they are in effect."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols to look at, or not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _applied
