"""How a doodle process shares the machine's cores with others: `claim()` around training, evaluation and
cache builds.

BLAS's own threads are what made a training step 10x slower and erratic (1.5 to 92 ms) beside a second
doodle process on 2 cores: OpenBLAS splits every product across all cores and its threads spin while they
wait for each other, so two such processes spend their time waiting for a thread the other displaced.
And OpenBLAS rounds a product differently on one thread than on several (784-long dot products: the first
layer's), so a BLAS thread count that followed the load would make a run's weights depend on its
neighbours. Inside a claim, BLAS runs on one thread and doodle splits the work itself (doodle.team: fixed
blocks, the same bits on any number of threads), with as many threads as its fair share: every process
inside a claim holds a locked file in the temp folder (the OS drops the lock of a killed one), and each
takes `cores // processes` threads, looked at again every second. A cache build with workers=0 keeps as
many categories in flight as its share (doodle.cache), and its worker processes have one BLAS thread
each (doodle.rasterpool). `DOODLE_THREADS=N` fixes the count instead. Processes that are not doodle's
are not counted: the team's threads wait without spinning, so beside them it slows down, not to a halt.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator

from threadpoolctl import threadpool_limits

from doodle import team
from doodle.errors import DoodleError
from doodle.fsutil import locked

ENV = "DOODLE_THREADS"


def registry() -> Path:
    """The folder of claim files, one per computing doodle process of this user."""
    return Path(tempfile.gettempdir()) / f"doodle-{os.getuid()}" / "cores"


def computing(folder: Path) -> int:
    """How many processes hold a claim file in `folder` locked now. A file nobody holds is a killed process's
    (the OS dropped its lock) and is removed: a claim being made meanwhile finds its file gone and makes
    another (fsutil.locked)."""
    live = 0
    with contextlib.suppress(OSError):
        for path in folder.glob("*.claim"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    path.unlink()
            except BlockingIOError:
                live += 1
            except OSError:
                pass
            finally:
                os.close(fd)  # a lock this took is released with it
    return live


def fair_share(processes: int, cores: int | None = None) -> int:
    """Threads for one of `processes` doodle processes computing at once on `cores` cores: at least one."""
    return max(1, (team.CORES if cores is None else cores) // max(1, processes))


def fixed_threads() -> int | None:
    """DOODLE_THREADS as a count, or None when unset."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise DoodleError(f"{ENV}={value!r}: give a whole number of threads, at least 1, or unset it")
    return int(value)


_depth = 0  # claims entered and not left (train -> score re-enters)
_fixed: int | None = None  # DOODLE_THREADS of the current claim
_folder: Path | None = None  # where this process's claim file is, while it has one


def share() -> int:
    """Threads (or worker processes) for this process now: DOODLE_THREADS, else its fair share of the cores
    among the doodle processes computing (itself included)."""
    if _fixed is not None:
        return _fixed
    return fair_share(computing(_folder) if _folder is not None else 1 + computing(registry()))


@contextlib.contextmanager
def claim() -> Iterator[None]:
    """Compute on this process's fair share of the cores while the block runs: registered for other doodle
    processes to see, BLAS on one thread, the team sized to the share (and resized every team.RECHECK
    seconds). No thread is started: a pool of worker processes can still fork."""
    global _depth, _fixed, _folder
    if _depth:
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    fixed = fixed_threads()
    with contextlib.ExitStack() as stack:
        stack.enter_context(threadpool_limits(1, user_api="blas"))
        claims = registry()
        folder: Path | None = claims
        try:
            claims.mkdir(parents=True, exist_ok=True)
            # wait: another process counting the claims holds each file for a moment
            stack.enter_context(locked(claims / f"{os.getpid()}.claim", wait=True, unlink=True, note_pid=False))
        except (OSError, DoodleError):  # no shared temp folder: compute as if alone
            folder = None
        _depth, _fixed, _folder = 1, fixed, folder
        team.TEAM.share, team.TEAM.threads = share, share()
        try:
            yield
        finally:
            _depth, _fixed, _folder = 0, None, None
            team.TEAM.share, team.TEAM.threads = None, 1
