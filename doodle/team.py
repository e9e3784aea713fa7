"""doodle's own threads: a team that runs a list of independent tasks, and the blocks of rows the
network's products are cut into for it.

A matrix product split into blocks of rows gives each row the same bits whichever thread computes it, and
the blocks are fixed by the product's shape and the machine's cores (`blocks`), never by the number of
threads running them: so a result is the same bit for bit on 1, 2 or 16 threads, and the thread count
can follow the load (doodle.cores decides it). As few blocks as the cores can use: every block repacks
the product's other operand, so 8 blocks of 98 rows cost 18% more than one product, 2 blocks 5%. The
team's threads wait on a semaphore, not spinning: a helper that wakes late finds every task taken and
goes back to sleep, so on a busy machine the caller does the work alone instead of waiting.

Nothing beyond numpy: predict imports this (through doodle.nn) and never starts a thread.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from typing import Callable

import numpy as np

MIN_ROWS = 64  # rows per block at least
MIN_WORK = 2_000_000  # multiply-adds per block at least: a smaller product is not worth a thread's wake-up
PASS = 16  # an elementwise pass over one entry costs about as much as this many multiply-adds of a product
RECHECK = 1.0  # seconds between looks at the share of the cores (Team.share)


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))  # taskset and cgroup cpusets count
    except (AttributeError, OSError):
        return os.cpu_count() or 1


CORES = available_cores()  # fixed for the process: the blocks never follow the load


def blocks(n: int, work: int = 0) -> list[slice]:
    """n rows of a product of `work` multiply-adds in near-equal blocks: one per core, at least MIN_ROWS rows
    and MIN_WORK multiply-adds each (work 0: rows alone decide). Elementwise work counts PASS per entry
    and pass; the rows may be columns, for work that is the same in every column."""
    parts = max(1, min(CORES, n // MIN_ROWS, work // MIN_WORK if work else n))
    edges = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def product(a, b, out) -> list[Callable[[], None]]:
    """Tasks that write out = a @ b (2-D arrays) by blocks of a's rows: the same bits however they are run."""
    return [functools.partial(np.matmul, a[r], b, out=out[r]) for r in blocks(len(a), a.shape[0] * b.size)]


def each(fn: Callable[[slice], None], n: int, work: int = 0) -> None:
    """fn(block) for the blocks(n, work) on the team: fn writes only its block's part of the outputs."""
    run([functools.partial(fn, r) for r in blocks(n, work)])


class _Round:
    """One call of Team.run: its tasks, claimed one at a time by whichever thread is free."""

    def __init__(self, tasks: list[Callable[[], None]]):
        self.tasks = tasks
        self.claims = itertools.count()  # next() on it is atomic under the GIL
        self.left = len(tasks)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def work(self) -> None:
        """Run tasks until none is left unclaimed."""
        while (i := next(self.claims)) < len(self.tasks):
            try:
                self.tasks[i]()
            except BaseException as exc:  # re-raised by run() in the caller's thread
                self.error = exc
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.done.set()


class Team:
    """The caller and `threads - 1` helper threads (daemons, started when first needed). With `share` (set by
    doodle.cores), `threads` is share() again every RECHECK seconds, looked at when a round starts."""

    def __init__(self) -> None:
        self.threads = 1  # 1 runs every task inline
        self.share: Callable[[], int] | None = None
        self._recheck_at = 0.0
        self._helpers: list[threading.Thread] = []
        self._wake = threading.Semaphore(0)
        self._round: _Round | None = None

    def run(self, tasks: list[Callable[[], None]]) -> None:
        """Run the tasks, each writing only its own part of the outputs; return when all have run."""
        if self.share is not None and time.monotonic() >= self._recheck_at:
            self.threads, self._recheck_at = self.share(), time.monotonic() + RECHECK
        if self.threads == 1 or len(tasks) <= 1:
            for task in tasks:
                task()
            return
        rnd = self._round = _Round(tasks)
        helpers = min(self.threads, len(tasks)) - 1
        while len(self._helpers) < helpers:
            t = threading.Thread(target=self._serve, name=f"doodle-team-{len(self._helpers) + 1}", daemon=True)
            self._helpers.append(t)
            t.start()
        for _ in range(helpers):
            self._wake.release()
        rnd.work()
        rnd.done.wait()
        if rnd.error is not None:
            raise rnd.error

    def _serve(self) -> None:
        while True:
            self._wake.acquire()
            rnd = self._round
            if rnd is not None:
                rnd.work()


TEAM = Team()  # the process's one team; doodle.cores sizes it
run = TEAM.run


def _forked() -> None:
    """A forked child has none of its parent's helper threads: it starts alone."""
    global TEAM, run
    TEAM = Team()
    run = TEAM.run


os.register_at_fork(after_in_child=_forked)
