"""Atomic writes: everything that matters is written to a temporary sibling and renamed into place,
so an interrupted run never leaves a file that looks complete. A write the system refuses (a full disk,
a read-only folder) is a one-line DoodleError naming the file, and the file before it is untouched.

`lock_folder` claims a folder for one process (an exclusive flock held while it works, released by the
OS however the process ends), and `clean_temporaries` removes what killed processes left behind.

`read_json` / `parse_json` are how every JSON file doodle wrote is read back: whatever a hand or a
damaged disk made of it (not UTF-8, nested 100,000 deep, a 5,000-digit number, a byte order mark) is
a BadJSON (a ValueError) with a short reason, never a RecursionError or a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from doodle.errors import DoodleError

TMP_SUFFIX = ".tmp"  # every temporary is ".<name>.<random><suffix>.tmp" beside its target
LOCK_NAME = ".lock"


class BadJSON(ValueError):
    """Text that is not a JSON document doodle can use; str() is a short reason without the text itself."""


def parse_json(data: str | bytes):
    """JSON text (str, or UTF-8 bytes) -> its value; a leading byte order mark is ignored (Windows editors
    add one). Anything else is BadJSON."""
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return json.loads(data.removeprefix("\ufeff"))
    except json.JSONDecodeError as err:
        raise BadJSON(f"{err.msg} at line {err.lineno} column {err.colno}") from None
    except UnicodeDecodeError:
        raise BadJSON("not UTF-8 text") from None
    except RecursionError:  # json's parser recurses once per nesting level
        raise BadJSON("nested too deeply") from None
    except ValueError:  # the one other refusal: an integer past Python's digit limit (a DoS guard)
        raise BadJSON(f"a whole number of more than {sys.get_int_max_str_digits()} digits") from None


def read_json(path: str | os.PathLike):
    """The JSON value in the file at `path`: OSError when it cannot be read, BadJSON when it is not JSON."""
    with open(path, "rb") as fh:
        return parse_json(fh.read())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(path: str | os.PathLike, exc: OSError) -> DoodleError:
    """A refused write as one line naming the file, with what to do about it (exit code 1)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some disk space and run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "the folder is not writable; pick another one"
    else:
        advice = "check the folder and run again"
    return DoodleError(f"{path}: cannot write ({reason}); {advice}", exit_code=1)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An OSError while creating, writing or renaming the temporary becomes write_error(path)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + TMP_SUFFIX, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual permissions
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write `text` (UTF-8) to `path`."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write `obj` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Atomically write one array as .npy (never pickled)."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Atomically write named arrays as .npz (never pickled)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def clean_temporaries(folder: str | os.PathLike, older_than: float | None = None) -> int:
    """Delete the temporaries atomic_path left in `folder` when its process was killed; how many went.

    Only call it while no other process can be writing there (lock_folder), or with `older_than`
    seconds, which spares anything recent enough to belong to a live writer."""
    removed = 0
    now = time.time()
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        try:
            if older_than is None or now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or not ours to delete: harmless
    return removed


_HELD: set[str] = set()  # resolved folders this process has claimed: a claim may be re-entered (train -> fit)


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, busy: str) -> Iterator[Path]:
    """Claim `folder` (created if needed) for this process while the block runs.

    Another process already holding it makes DoodleError(busy) with `{pid}` filled in. The lock is an
    flock on `folder/.lock`: the OS drops it when the process ends, even by kill -9, so nothing stale
    is ever left to clean up by hand."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        yield folder
        return
    lock = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise write_error(folder, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.fstat(fd), os.stat(lock)):
            raise OSError("the lock file was replaced: its owner gave the folder up meanwhile")
    except OSError:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DoodleError(busy.format(pid=pid)) from None
    with contextlib.suppress(OSError):  # the pid only makes the other process's message friendlier
        os.pwrite(fd, f"{os.getpid():>10}\n".encode(), 0)  # fixed width: no truncate (ext4 flushes those)
    _HELD.add(key)
    try:
        yield folder
    finally:
        _HELD.discard(key)
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty temporary folder beside `path`; if the block succeeds it takes `path`'s place (a folder
    already there is moved aside, then deleted), else it is deleted. Either way no half-written folder is ever at
    `path`. The caller decides beforehand whether what is at `path` may be replaced."""
    import shutil

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    except OSError as exc:
        raise write_error(path, exc) from None
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a finished folder gets the usual permissions
        yield tmp
        if path.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", suffix=TMP_SUFFIX, dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    except OSError as exc:
        if old is not None and not path.exists():  # put the earlier folder back
            with contextlib.suppress(OSError):
                os.replace(old / path.name, path)
        raise write_error(path, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
