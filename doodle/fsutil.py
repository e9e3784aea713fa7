"""Atomic writes: everything that matters is written to a temporary sibling and renamed into place,
so an interrupted run never leaves a file that looks complete (`atomic_folder` does the same for a whole
folder). A write the system refuses (a full disk, a read-only folder) is a one-line DoodleError naming the
file, and the file before it is untouched.

`locked` is the one file lock: an exclusive flock held while a block runs, released by the OS however
the process ends (kill -9 included), either refused at once when another process holds it or waited
for. `lock_folder` claims a run folder with it, downloads lock each file they fetch, and play locks
the file it appends a drawing to. `clean_temporaries` removes what killed processes left behind.

`check_npz` checks an .npz against what it should hold before any array is read: member names, then
each .npy header's shape and dtype, then each member's unpacked size against its header, so a
hand-edited or hostile file (a header claiming a 37 GiB array, a zip bomb, a pickle) is refused in
milliseconds instead of being decompressed or allocated.

`read_json` / `parse_json` are how every JSON file doodle wrote is read back: whatever a hand or a
damaged disk made of it (not UTF-8, nested 100,000 deep, a 5,000-digit number, a byte order mark) is
a BadJSON (a ValueError) with a short reason, never a RecursionError or a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping

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
            # mypy checks **arrays against savez's allow_pickle: bool too; the names are array names
            np.savez(fh, **arrays)  # type: ignore[arg-type]


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


class Stopped(Exception):
    """A wait for a lock ended because its `stop` event was set (Ctrl-C elsewhere in the process)."""


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, wait: bool = False, busy: str = "{path}: in use by process {pid}",
           on_wait: Callable[[str], None] | None = None, stop=None, note_pid: bool = True,
           unlink: bool = False, flags: int = os.O_RDWR) -> Iterator[int]:
    """Open `path` (created if needed) and hold an exclusive flock on it while the block runs; yields the fd.

    Held by another process: without `wait`, DoodleError(busy) with `{path}` and `{pid}` replaced; with
    `wait`, `on_wait(pid)` once, then the lock is waited for (in 50 ms polls while a threading.Event
    `stop` is given: Stopped when it is set). note_pid writes this process's pid into the file, for the
    other side's message (not for a data file). unlink removes the file on release; a waiter that then
    holds the lock of a removed file tries again on the current one, so two processes never both hold
    the lock of one path."""
    path = Path(path)
    told = False
    while True:
        fd = os.open(path, flags | os.O_CREAT, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if stop is not None or not wait else 0))
                    break
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() if note_pid else ""
                    if not wait:
                        raise DoodleError(_fill(busy, path, holder)) from None
                    if on_wait is not None and not told:
                        on_wait(holder or "?")
                        told = True
                    if stop.wait(0.05):
                        raise Stopped from None
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)  # we hold the lock of a file its owner removed on release: take the current one
        if not wait:
            raise DoodleError(_fill(busy, path, ""))
    try:
        if note_pid:
            with contextlib.suppress(OSError):  # only makes the other side's message friendlier
                os.pwrite(fd, f"{os.getpid():>10}\n".encode(), 0)  # fixed width: no truncate (ext4 flushes those)
        yield fd
    finally:
        if unlink:
            path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock


_HELD: set[str] = set()  # resolved folders this process has claimed: a claim may be re-entered (train -> fit)


def _fill(busy: str, path: Path, pid: str) -> str:
    """The busy message with its placeholders replaced (not str.format: a path may hold braces)."""
    return busy.replace("{path}", str(path)).replace("{pid}", pid or "?")


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike, busy: str) -> Iterator[Path]:
    """Claim `folder` (created if needed) for this process while the block runs: `locked` on folder/.lock.

    Another process already holding it makes DoodleError(busy) with `{pid}` replaced; the claim may be
    re-entered by this process (train -> fit)."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        yield folder
        return
    with contextlib.ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(locked(folder / LOCK_NAME, busy=busy.replace("{path}", str(folder))))
        except OSError as exc:
            raise write_error(folder, exc) from None
        _HELD.add(key)
        try:
            yield folder
        finally:
            _HELD.discard(key)


# --- reading back an .npz doodle wrote: checked before a byte of data is read ---------------------------

NPZ_ERRORS = (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError)  # np.load on a damaged file
NPY_HEADER_MAX = 4096  # bytes before an .npy member's data: np.save writes 128 (numpy reads up to 10,000)
NUMERIC = "fiu"  # dtype kinds of weights and row indices


class NpzProblem(ValueError):
    """Why an .npz does not hold what its description says. `mismatch`: a sound archive, but of other
    arrays (other names, shapes or kinds) than described; otherwise it is damaged or hostile."""

    def __init__(self, reason: str, mismatch: bool = False):
        super().__init__(reason)
        self.mismatch = mismatch


def check_npz(path: str | Path, shapes: Mapping[str, tuple[int | None, ...]], optional: Collection[str] = (),
              kinds: dict[str, str] | None = None) -> None:
    """Raise NpzProblem unless the .npz at `path` holds exactly the arrays `shapes` describes (a None
    dimension: any length), less any of `optional`, reading only the zip directory and .npy headers.

    Each array's dtype kind must be in `kinds[name]` (default: numbers); an array whose size its shape
    leaves open (a None dimension, or text) may unpack to no more than the archive's size on disk (doodle
    stores members uncompressed). So np.load afterwards reads only what was checked: no extra member is
    decompressed, no header can claim more memory than described, no pickle runs."""
    kinds = kinds or {}
    try:
        limit = Path(path).stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename.removesuffix(".npy") if i.filename.endswith(".npy") else i.filename for i in infos]
            missing = sorted(set(shapes) - set(names) - set(optional))
            unexpected = sorted(set(names) - set(shapes))
            if missing or unexpected:
                raise NpzProblem(f"missing {_few(missing)}, unexpected {_few(unexpected)}", mismatch=True)
            if len(set(names)) != len(names):
                raise NpzProblem("an array is stored twice")
            for name, info in zip(names, infos):
                _check_member(zf, info, name, shapes[name], kinds.get(name, NUMERIC), limit)
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
        raise NpzProblem(f"not a readable .npz: {type(exc).__name__}") from None


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, shape: tuple[int | None, ...],
                  kinds: str, limit: int) -> None:
    """One member against its described shape and kinds: declared size, then its .npy header."""
    dims = [d for d in shape if d is not None]
    open_ended = len(dims) < len(shape) or "U" in kinds
    most = limit if open_ended else math.prod(dims) * 16  # 16: the widest number (long double)
    if info.file_size > NPY_HEADER_MAX + most:
        raise NpzProblem(f"{name} unpacks to {info.file_size:,} bytes, more than the {NPY_HEADER_MAX + most:,} "
                         "its description allows")
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            got, _, dtype = read_header(fh, max_header_size=NPY_HEADER_MAX)
        except ValueError:
            raise NpzProblem(f"{name} has no readable .npy header") from None
        start = fh.tell()
    if dtype.hasobject:
        raise NpzProblem(f"{name} holds Python objects (pickled data is never loaded)")
    if dtype.kind not in kinds or len(got) != len(shape) \
            or any(n < 0 or (want is not None and n != want) for n, want in zip(got, shape)):
        want = "(" + ", ".join("any" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
        raise NpzProblem(f"{name} has shape {got} ({dtype}), expected {want}", mismatch=True)
    if info.file_size != start + math.prod(got) * dtype.itemsize:  # cut short, or more than its header says
        raise NpzProblem(f"{name} holds {info.file_size - start:,} bytes of data where its header describes "
                         f"{math.prod(got) * dtype.itemsize:,}")


def _few(names: list[str], most: int = 5) -> str:
    """A list of names for a message: the first few (repr, so no newline gets through), or 'none'."""
    if not names:
        return "none"
    shown = ", ".join(repr(n[:60]) for n in names[:most])
    return f"[{shown}]" + (f" and {len(names) - most} more" if len(names) > most else "")
