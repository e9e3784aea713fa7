"""Rasterising many drawings: cache-sized chunks in this process, or large jobs on a pool of worker processes.

doodle.raster draws a chunk of drawings (and a job chunk after chunk in this process: rasterize_many, what
predict uses, without importing this module's process machinery); this module decides where the parts
of a large job run. Drawings are flattened (and checked) here, so an error names the drawing wherever it is rendered;
workers receive flat arrays and return bitmaps, at most two tasks per worker in flight. Workers end with
the process they work for, even after a kill -9, and every rasterising process keeps its freed memory
(doodle.heap), so chunk after chunk reuses the same pages.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from doodle import heap
from doodle.errors import DoodleError
from doodle.progress import NULL_REPORTER, Reporter
from doodle.raster import RasterSpec, chunk_size, flatten, rasterize_many, render_flat
from doodle.team import available_cores

PARALLEL_MIN = 8192  # below this many drawings, worker processes cost more than they save
ORPHAN_POLL = 0.5  # seconds between a worker's checks that the process that started it is still there
TASK_CHUNKS = 32  # chunks per worker task: tasks of ~2,000 drawings keep inter-process traffic negligible


def rasterize_batch(drawings, spec: RasterSpec | None = None, *, size: int | None = None,
                    line_width: float | None = None, padding: float | None = None, workers: int = 1,
                    reporter: Reporter = NULL_REPORTER) -> np.ndarray:
    """Many drawings -> (N, size, size) uint8. workers > 1 (or 0 = all cores) splits large jobs across processes."""
    spec = RasterSpec.resolve(spec, size, line_width, padding)
    if not hasattr(drawings, "__len__") or not hasattr(drawings, "__getitem__"):
        drawings = list(drawings)
    n = len(drawings)
    task = chunk_size(spec) * TASK_CHUNKS
    workers = worker_count(workers, -(-n // task))  # checks `workers` too
    if n < PARALLEL_MIN:
        workers = 1
    if workers == 1:
        return rasterize_many(drawings, spec, reporter)
    heap.keep_freed_memory()  # chunk after chunk reuses the same memory (1.5x faster, see doodle.heap)
    out = np.zeros((n, spec.size, spec.size), np.uint8)
    reporter.start("raster", "rasterizing", total=n, unit="drawings")
    try:
        # Flattening (and checking) stays here, so errors name the right drawing; workers get arrays.
        tasks = ((i, (*flatten(drawings[i:i + task], base=i), spec)) for i in range(0, n, task))
        _parallel(tasks, out, workers, reporter)
    finally:
        reporter.end("raster")
    return out


def _render_task(xs, ys, nx, per_drawing, spec: RasterSpec) -> np.ndarray:
    """Worker-process entry: a flattened task of many drawings, rendered a cache-sized chunk at a time."""
    chunk = chunk_size(spec)
    points = np.bincount(np.repeat(np.arange(len(per_drawing)), per_drawing), nx, minlength=len(per_drawing))
    stroke_at = np.concatenate(([0], np.cumsum(per_drawing)))  # (drawings + 1,) first stroke of each drawing
    point_at = np.concatenate(([0], np.cumsum(points))).astype(np.int64)
    parts = []
    for i in range(0, len(per_drawing), chunk):
        j = min(i + chunk, len(per_drawing))
        p, q = point_at[i], point_at[j]
        parts.append(render_flat(xs[p:q], ys[p:q], nx[stroke_at[i]:stroke_at[j]], per_drawing[i:j], spec))
    return np.concatenate(parts) if parts else np.zeros((0, spec.size, spec.size), np.uint8)


def worker_count(workers: int, jobs: int) -> int:
    """How many processes to start for `jobs` independent jobs: `workers`, 0 meaning all cores."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise DoodleError(f"workers must be 0 (all cores) or a positive integer, got {workers!r}")
    return max(1, min(int(workers) or available_cores(), jobs))


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes, started the safest way this process allows."""
    import multiprocessing
    import threading

    # fork starts fast and needs no `if __name__ == "__main__"` guard, but is unsafe once other threads
    # (a progress bar's refresher) exist; then forkserver (the CLI entry point has the guard).
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        method = "fork"
    else:
        method = "forkserver" if "forkserver" in methods else "spawn"
    context = multiprocessing.get_context(method)
    parent = os.getpid() if method == "fork" else None
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(parent,))


def _parallel(tasks, out, workers: int, reporter: Reporter) -> None:
    """Render tasks in worker processes, at most 2 per worker in flight (bounded memory), in order."""
    try:
        with process_pool(workers) as pool:
            pending = []
            for i, args in tasks:
                pending.append((i, pool.submit(_render_task, *args)))
                while len(pending) >= 2 * workers or (pending and pending[0][1].done()):
                    j, future = pending.pop(0)
                    _store(out, j, future.result(), reporter)
            for j, future in pending:
                _store(out, j, future.result(), reporter)
    except BrokenProcessPool:
        raise DoodleError("a rasterizer worker process died (out of memory?): retry with fewer workers") from None


def _worker_init(parent: int | None) -> None:
    """Make a worker process end with the process it works for, even when that one is killed (kill -9
    leaves nobody to shut the pool down, and idle workers would wait for tasks forever).

    Forked workers: the kernel sends them SIGKILL when their parent goes (Linux prctl PR_SET_PDEATHSIG).
    Forkserver workers are children of the server, which outlives our process as long as they live; for
    them (and as a second line everywhere) a thread waits on multiprocessing's parent sentinel, a pipe
    that only our process holds open, and polls that our process still runs. It also keeps freed memory
    for reuse (doodle.heap), and has one BLAS thread: the workers are the parallelism (doodle.cores)."""
    import ctypes
    import multiprocessing
    import signal
    import sys
    import threading
    from multiprocessing.connection import wait

    from threadpoolctl import threadpool_limits

    heap.keep_freed_memory()  # every chunk's temporaries reuse the last chunk's memory (see doodle.heap)
    threadpool_limits(1, user_api="blas")
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    ppid, owner = os.getppid(), multiprocessing.parent_process()
    owner_pid = None if owner is None else owner.pid  # a parent process always has its pid
    if parent is not None and ppid != parent:  # the parent was gone before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == ppid and (owner_pid is None or _running(owner_pid)):
            if owner is None or owner.sentinel is None:
                time.sleep(ORPHAN_POLL)
            elif wait([owner.sentinel], timeout=ORPHAN_POLL):
                break  # the owner's end of the pipe closed: it is gone
        os._exit(1)

    threading.Thread(target=watch, name="doodle-orphan-watch", daemon=True).start()


def _running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (dead, waiting for its parent to notice)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc: existing is all we can tell


def _store(out, i: int, bitmaps, reporter: Reporter) -> None:
    out[i:i + len(bitmaps)] = bitmaps
    reporter.update("raster", advance=len(bitmaps))
