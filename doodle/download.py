"""Fetch Quick, Draw! files from Google's bucket (or a mirror), resumably, never half-written.

Upstream `<base>/full/<format>/<word>.<ext>` lands in `<data_dir>/<format>/<word>.<ext>`.
A download streams into `<path>.part` and is renamed into place only when complete, so an
interrupted one resumes from the `.part` with an HTTP Range request. `max_drawings=N` reads only
the first N lines (ndjson) or the header plus N rows (npy, by Range request), because upstream
files are 50-300 MB. A sidecar `<data_dir>/<format>/.<word>.<ext>.json` records the limit a file
was fetched with, so asking later for more drawings fetches again and asking for fewer does not.
"""

from __future__ import annotations

import http.client
import io
import json
import concurrent.futures
import operator
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from doodle import fsutil
from doodle.categories import FORMATS, extension, is_category, local_path, suggest
from doodle.errors import DoodleError
from doodle.progress import NULL_REPORTER, Reporter

DEFAULT_BASE_URL = "https://storage.googleapis.com/quickdraw_dataset"

CHUNK = 64 * 1024  # bytes per read: one progress update each
USER_AGENT = "doodle/0.1 (+https://quickdraw.withgoogle.com/data)"
# Google's bitmaps are a 128-byte header then uint8 rows of 28*28; guessing that layout lets the
# first Range request of a limited .npy fetch carry everything (a second request covers the rest).
NPY_HEADER_GUESS = 128
NPY_ROW_GUESS = 784
NPY_MAX_HEADER = 1 << 16  # numpy itself refuses headers over 10,000 bytes unless told otherwise
RETRY_STATUS = (408, 429)  # 4xx codes that mean "try again later"; every 5xx is retried too
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}


@dataclass
class DownloadResult:
    """What happened to one file."""

    word: str
    format: str
    path: Path
    status: str  # "downloaded" | "resumed" | "skipped" | "failed"
    bytes: int  # size of the file on disk (0 when failed)
    drawings: int | None  # lines / rows in the file; None when unknown (a file we did not write)
    seconds: float
    error: str | None = None  # one line, when failed


class _Transient(Exception):
    """A failure worth retrying: 5xx, dropped connection, short body, timeout."""


class _Fatal(Exception):
    """A failure that retrying will not fix (404, not a .npy file, disk error); str() is the message."""


@dataclass
class _Job:
    """One file to fetch, and the paths it touches."""

    word: str
    fmt: str
    url: str
    path: Path

    @property
    def part(self) -> Path:
        return self.path.with_name(self.path.name + ".part")

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(f".{self.path.name}.json")

    @property
    def name(self) -> str:
        return self.path.name


class _Progress:
    """Reporter calls for one file: `start` on the first response, `update(completed=)` on later ones."""

    def __init__(self, reporter: Reporter, key: str, description: str):
        self.reporter, self.key, self.description = reporter, key, description
        self.started = False
        self.done = 0  # bytes in the output so far; the retry loop watches it to see progress

    def begin(self, total: int | None, completed: int = 0) -> None:
        if not self.started:
            self.reporter.start(self.key, self.description, total=total, unit="bytes")
            self.started = True
            if completed:
                self.reporter.update(self.key, completed=completed)
        else:
            self.reporter.update(self.key, completed=completed, total=total)
        self.done = completed

    def advance(self, n: int) -> None:
        self.done += n
        self.reporter.update(self.key, advance=n)

    def end(self) -> None:
        if self.started:
            self.reporter.end(self.key)


# ---------------------------------------------------------------------------------------- names

def resolve_base_url(base_url: str | None = None) -> str:
    """The mirror to use: `base_url`, else $DOODLE_BASE_URL, else Google's bucket (a folder becomes file://)."""
    base = (base_url or os.environ.get("DOODLE_BASE_URL") or DEFAULT_BASE_URL).strip()
    if "://" not in base:  # a local mirror given as a plain folder
        folder = Path(base).expanduser()
        if not folder.is_dir():
            raise DoodleError(f"base URL '{base}' is neither an http(s):// or file:// URL nor an existing folder")
        return folder.resolve().as_uri()
    scheme = base.split("://", 1)[0].lower()
    if scheme not in ("http", "https", "file"):
        raise DoodleError(f"base URL '{base}': unsupported scheme '{scheme}'; use https://, http:// or file://")
    return base.rstrip("/")


def remote_url(base_url: str, fmt: str, word: str) -> str:
    """Google's bucket layout: `<base>/full/<fmt>/<word>.<ext>`, the name percent-encoded ("alarm%20clock")."""
    return f"{base_url.rstrip('/')}/full/{fmt}/{urllib.parse.quote(word, safe='')}.{extension(fmt)}"


def _check_words(words: Sequence[str]) -> list[str]:
    """Unique words in order, or one DoodleError naming every unknown one with its closest names."""
    unique = list(dict.fromkeys(words))
    unknown = [w for w in unique if not is_category(w)]
    if unknown:
        hints = "; ".join(f"'{w}' (closest: {', '.join(suggest(w)) or 'none'})" for w in unknown)
        noun = "category" if len(unknown) == 1 else "categories"
        raise DoodleError(f"unknown {noun} {hints}; names are case- and space-sensitive, as in Google's list")
    return unique


# ---------------------------------------------------------------------------------------- HTTP

def _open(url: str, timeout: float, start: int = 0, end: int | None = None):
    """GET `url`, asking for bytes start..end (inclusive) when that is not the whole file."""
    # identity: no gzip, so byte offsets in Range and Content-Range are offsets in the file itself
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start or end is not None:
        headers["Range"] = f"bytes={start}-{'' if end is None else end}"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _span(resp, start: int) -> tuple[int, int | None, int | None]:
    """(file offset of the body's first byte, body length, file size); a 200 (Range ignored) starts at 0."""
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if (resp.status or 200) != 206:  # file:// responses carry no status: like a server ignoring Range
        return 0, length, length
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if m is None or int(m.group(1)) != start:
        raise _Transient(f"asked for bytes from {start}, got Content-Range {resp.headers.get('Content-Range')!r}")
    return start, length, None if m.group(3) == "*" else int(m.group(3))


def _not_found(url: str, word: str, why: str) -> _Fatal:
    others = [s for s in suggest(word, n=4) if s != word][:3]
    return _Fatal(f"{url}: not found ({why}); is '{word}' spelled right? closest: {', '.join(others) or 'none'}")


def _classify(exc: BaseException, job: _Job) -> Exception:
    """Turn what urllib, http.client or the disk raised into _Transient (retry) or _Fatal (give up)."""
    if isinstance(exc, (_Transient, _Fatal)):
        return exc
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
        if exc.code in (404, 410):
            return _not_found(job.url, job.word, str(exc.code))
        if exc.code >= 500 or exc.code in RETRY_STATUS:
            return _Transient(f"HTTP {exc.code}")
        return _Fatal(f"{job.url}: HTTP {exc.code} {exc.reason}")
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, FileNotFoundError):  # file:// mirror without this file
            return _not_found(job.url, job.word, "no such file")
        if isinstance(exc.reason, socket.gaierror):
            host = urllib.parse.urlsplit(job.url).hostname
            return _Transient(f"cannot resolve {host}: {exc.reason.strerror}; "
                              f"offline? set $DOODLE_BASE_URL to a mirror")
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            return _Fatal(f"{job.url}: {exc.reason}")
        return _Transient(str(exc.reason))
    if isinstance(exc, http.client.IncompleteRead):
        return _Transient(f"connection dropped after {len(exc.partial)} bytes of a chunk")
    if isinstance(exc, (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError)):
        return _Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if isinstance(exc, OSError):  # the disk, not the network: retrying will not help
        return _Fatal(f"{exc.filename or job.path}: {exc.strerror or exc}")
    raise exc


def _retrying(attempt, job: _Job, prog: _Progress, retries: int, backoff: float, reporter: Reporter):
    """Run `attempt()` until it succeeds; transient failures wait backoff * 2**k and try again.

    An attempt that moved the file forward does not count against `retries`: a 300 MB download
    over a link that drops every few minutes still finishes, resuming each time.
    """
    failures = 0
    while True:
        before = prog.done
        try:
            return attempt()
        except (OSError, http.client.HTTPException, _Transient, _Fatal) as exc:
            err = _classify(exc, job)
            if isinstance(err, _Fatal):
                raise err from None
            if prog.done > before:
                failures = 0
            if failures >= retries:
                raise _Fatal(f"{job.url}: {err} (gave up after {retries + 1} attempts)") from None
            delay = backoff * 2 ** failures
            failures += 1
            reporter.log(f"retrying {job.fmt}/{job.name} after {err} "
                         f"(retry {failures} of {retries}, in {delay:.1f} s)")
            time.sleep(delay)


# ---------------------------------------------------------------------------------------- streaming

def _lines_in(path: Path, stop: int | None = None) -> tuple[int, int]:
    """(newlines in `path`, byte offset just after the `stop`-th one, or the size if there are fewer)."""
    lines = offset = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n = chunk.count(b"\n")
            if stop is not None and lines + n >= stop:
                return stop, offset + _after_nth_newline(chunk, stop - lines)
            lines += n
            offset += len(chunk)
    return lines, offset


def _after_nth_newline(chunk: bytes, n: int) -> int:
    """Offset just after the n-th (1-based) newline of `chunk`."""
    at = -1
    for _ in range(n):
        at = chunk.index(b"\n", at + 1)
    return at + 1


def _stream_attempt(job: _Job, limit: int | None, timeout: float, prog: _Progress, state: dict) -> None:
    """One attempt to extend `job.part` towards the whole file (or its first `limit` lines, for ndjson).

    Sets state["lines"] (newlines written), state["stopped"] (True if cut at `limit`), and
    state["resumed"] (this attempt appended to existing bytes through an honoured Range request).
    """
    have = job.part.stat().st_size if job.part.exists() else 0
    ndjson = job.fmt != "numpy_bitmap"
    lines = _lines_in(job.part)[0] if ndjson and have else 0
    try:
        resp = _open(job.url, timeout, start=have)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        # Range past the end: either the .part is already whole (killed before the rename) or stale.
        m = re.search(r"/(\d+)", exc.headers.get("Content-Range", ""))
        exc.close()
        if m and int(m.group(1)) == have:
            state.update(lines=lines, stopped=False, resumed=True)
            return
        job.part.unlink()
        raise _Transient("partial file larger than the remote one; starting again") from None
    with resp:
        try:
            first, length, total = _span(resp, have)
        except _Transient:  # a 206 for some other range: trust nothing, start again
            job.part.unlink(missing_ok=True)
            raise
        state["resumed"] = first > 0
        if first == 0:
            lines = 0  # fresh start, or the server ignored Range: rewrite from byte 0
        prog.begin(total=None if limit else total, completed=first)
        got = 0
        with open(job.part, "ab" if first else "wb") as fh:
            while chunk := resp.read(CHUNK):
                n = chunk.count(b"\n")
                if limit is not None and lines + n >= limit:  # enough drawings: cut after the limit-th line
                    chunk = chunk[:_after_nth_newline(chunk, limit - lines)]
                    fh.write(chunk)
                    prog.advance(len(chunk))
                    state.update(lines=limit, stopped=True)
                    return
                fh.write(chunk)
                got += len(chunk)
                lines += n
                prog.advance(len(chunk))
        if length is not None and got != length:
            state["lines"] = lines
            raise _Transient(f"connection dropped after {got} of {length} bytes")
    state.update(lines=lines, stopped=False)


def _end_bytes(path: Path) -> tuple[bytes, bytes]:
    """The first and last byte of `path` (b"" for an empty file)."""
    with open(path, "rb") as fh:
        first = fh.read(1)
        if not first:
            return b"", b""
        fh.seek(-1, os.SEEK_END)
        return first, fh.read(1)


def _npy_header_size(buf: bytes) -> int | None:
    """Total header length of a .npy that starts with `buf`, or None if `buf` is too short to tell."""
    if len(buf) < 8:
        return None
    if buf[:6] != np.lib.format.MAGIC_PREFIX:
        raise _Fatal("not a .npy file (bad magic bytes)")
    width = 2 if buf[6] == 1 else 4  # version 1 stores the header length in 2 bytes, later ones in 4
    if len(buf) < 8 + width:
        return None
    return 8 + width + int.from_bytes(buf[8:8 + width], "little")


def _npy_layout(header: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes per row) from a complete .npy header; rows must be contiguous."""
    fp = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(fp)
        if version not in _NPY_HEADER_READERS:
            raise _Fatal(f"unsupported .npy version {version[0]}.{version[1]}")
        shape, fortran, dtype = _NPY_HEADER_READERS[version](fp)
    except ValueError as exc:
        raise _Fatal(f"bad .npy header ({exc})") from None
    if dtype.hasobject or not shape or (fortran and len(shape) > 1):
        raise _Fatal(f"unexpected .npy layout: shape {shape}, dtype {dtype}, fortran_order {fortran}")
    return shape, dtype, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize


def _npy_rows(path: Path) -> int:
    """Rows in a downloaded .npy, after checking that its size matches its header."""
    with open(path, "rb") as fh:
        buf = fh.read(12)
        size = _npy_header_size(buf)
        if size is None:
            raise _Fatal("not a .npy file (too short)")
        buf += fh.read(size - len(buf))
    shape, _, row_bytes = _npy_layout(buf)
    expected = size + shape[0] * row_bytes
    actual = path.stat().st_size
    if actual != expected:
        raise _Fatal(f"bad .npy: header says {shape} ({expected} bytes) but the file has {actual}")
    return shape[0]


def _npy_head_attempt(job: _Job, limit: int, out: Path, timeout: float, prog: _Progress) -> tuple[int, bool]:
    """One attempt to write the header and first `limit` rows of the remote .npy to `out`.

    Returns (rows written, whether that is every row). The first request asks for a byte range
    sized for Google's layout; a server that ignores Range sends everything, and we stop reading
    (and close) once we have enough. A range that proves too short (wider rows, longer header) is
    followed by a request for the rest.
    """
    head = bytearray()  # the remote header, until it is complete
    need = NPY_HEADER_GUESS + limit * NPY_ROW_GUESS  # remote bytes we want; exact once the header is parsed
    pos = 0  # remote bytes consumed so far
    rows = None  # (rows written, every row?) once the header is parsed
    prog.done = 0
    with open(out, "wb") as fh:
        while pos < need:
            with _open(job.url, timeout, start=pos, end=need - 1) as resp:
                first, length, total = _span(resp, pos)
                got = 0
                while first + got < pos:  # a 200 to a follow-up request starts again at byte 0
                    chunk = resp.read(min(CHUNK, pos - first - got))
                    if not chunk:
                        break
                    got += len(chunk)
                while first + got == pos < need:
                    chunk = resp.read(min(CHUNK, need - pos))
                    if not chunk:
                        break
                    got += len(chunk)
                    pos += len(chunk)
                    if rows is not None:
                        fh.write(chunk)
                        prog.advance(len(chunk))
                        continue
                    head += chunk
                    size = _npy_header_size(head)
                    if size is not None and size > NPY_MAX_HEADER:
                        raise _Fatal(f"bad .npy: implausible header of {size} bytes")
                    if size is None or len(head) < size:
                        need = max(need, size or 0)  # a header longer than guessed: read all of it
                        continue
                    shape, dtype, row_bytes = _npy_layout(bytes(head[:size]))
                    n = min(limit, shape[0])
                    rows = (n, n == shape[0])
                    need = size + n * row_bytes
                    if rows[1]:  # the whole file: keep the remote header byte for byte
                        fh.write(head[:size])
                    else:
                        np.lib.format.write_array_header_1_0(fh, {
                            "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                            "shape": (n,) + tuple(shape[1:])})
                    body = head[size:need]
                    prog.begin(total=fh.tell() + n * row_bytes, completed=fh.tell() + len(body))
                    fh.write(body)
                if pos >= need:
                    break
                if length is not None and got < length:
                    raise _Transient(f"connection dropped after {got} of {length} bytes")
                if total is None or first + got >= total:  # we have the whole remote file, and it is short
                    raise _Fatal(f"bad .npy: the file ends after {first + got} bytes, its header needs {need}")
    if rows is None:
        raise _Fatal("bad .npy: the header never ended")
    return rows


# ---------------------------------------------------------------------------------------- one file

def _read_sidecar(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _satisfied(job: _Job, limit: int | None) -> tuple[bool, int | None]:
    """(whether the file on disk already answers this request, its drawings if known)."""
    if not job.path.is_file():
        return False, None
    meta = _read_sidecar(job.sidecar)
    if meta is None:
        # No sidecar: a whole file put there by hand (we only rename complete files into place).
        # An unreadable one: we cannot tell what the file holds, so fetch it again.
        return not job.sidecar.exists(), None
    if meta.get("bytes") != job.path.stat().st_size:
        return False, None  # the sidecar describes a replacement that never got renamed into place
    had = meta.get("max_drawings")
    return had is None or (limit is not None and limit <= had), meta.get("drawings")


def _record(job: _Job, src: Path, limit: int | None, drawings: int, stopped: bool) -> int:
    """Write the sidecar for the data in `src` (about to be renamed into place); returns its size.

    The sidecar goes first so that a crash before the rename leaves a sidecar whose byte count
    does not match the old file, which `_satisfied` treats as "fetch again".
    """
    size = src.stat().st_size
    fsutil.write_json(job.sidecar, {"url": job.url, "bytes": size,
                                    "max_drawings": limit if stopped else None, "drawings": drawings})
    return size


def _fetch_stream(job, limit, timeout, prog, retries, backoff, reporter) -> tuple[str, int, int]:
    """Stream (or resume) into the .part, check it, rename it into place: (status, bytes, drawings)."""
    state: dict = {}
    ndjson = job.fmt != "numpy_bitmap"
    if limit is not None and job.part.exists():
        lines, cut = _lines_in(job.part, stop=limit)
        if lines >= limit:  # an interrupted bigger download already holds enough: copy, keep the .part
            with open(job.part, "rb") as fh:
                head = fh.read(cut)
            with fsutil.atomic_path(job.path) as tmp:
                tmp.write_bytes(head)
                size = _record(job, tmp, limit, limit, stopped=True)
            return "resumed", size, limit
    _retrying(lambda: _stream_attempt(job, limit, timeout, prog, state), job, prog, retries, backoff, reporter)
    if ndjson:
        first, last = _end_bytes(job.part)
        if first and first not in b"{[":  # an HTML error page served with 200, say
            job.part.unlink()
            raise _Fatal(f"{job.url}: does not look like ndjson (starts with {first!r})")
        drawings = state["lines"] + (1 if last and last != b"\n" else 0)  # a last line without newline
    else:
        try:
            drawings = _npy_rows(job.part)
        except _Fatal as err:
            job.part.unlink()
            raise _Fatal(f"{job.url}: {err}") from None
    size = _record(job, job.part, limit, drawings, state.get("stopped", False))
    os.replace(job.part, job.path)
    return ("resumed" if state.get("resumed") else "downloaded"), size, drawings


def _fetch_npy_head(job, limit, timeout, prog, retries, backoff, reporter) -> tuple[str, int, int]:
    """Fetch the first `limit` rows of a .npy into a temp file and rename it into place."""
    with fsutil.atomic_path(job.path, suffix=".npy") as tmp:
        try:
            n, whole = _retrying(lambda: _npy_head_attempt(job, limit, tmp, timeout, prog),
                                 job, prog, retries, backoff, reporter)
        except _Fatal as err:
            msg = str(err)
            raise _Fatal(msg if msg.startswith(job.url) else f"{job.url}: {msg}") from None
        size = _record(job, tmp, limit, n, stopped=not whole)
    return "downloaded", size, n


def _download_one(job: _Job, limit, force, timeout, retries, backoff, reporter) -> DownloadResult:
    t0 = time.perf_counter()

    def result(status, size, drawings, error=None):
        return DownloadResult(job.word, job.fmt, job.path, status, size, drawings, time.perf_counter() - t0, error)

    if not force:
        ok, drawings = _satisfied(job, limit)
        if ok:
            return result("skipped", job.path.stat().st_size, drawings)
    else:
        job.part.unlink(missing_ok=True)  # force means from scratch, not from an old partial
    prog = _Progress(reporter, f"{job.fmt}/{job.word}", job.word)
    fetch = _fetch_npy_head if job.fmt == "numpy_bitmap" and limit is not None else _fetch_stream
    try:
        status, size, drawings = fetch(job, limit, timeout, prog, retries, backoff, reporter)
    except _Fatal as err:
        return result("failed", 0, None, str(err))
    except OSError as err:  # the disk (rename, sidecar), not the network
        return result("failed", 0, None, f"{err.filename or job.path}: {err.strerror or err}")
    finally:
        prog.end()
    return result(status, size, drawings)


# ---------------------------------------------------------------------------------------- public

def download(words: Sequence[str], fmt: str = "simplified", data_dir: str | os.PathLike = "data",
             base_url: str | None = None, max_drawings: int | None = None, force: bool = False,
             retries: int = 4, backoff: float = 0.5, timeout: float = 30.0,
             reporter: Reporter = NULL_REPORTER, jobs: int = 4) -> list[DownloadResult]:
    """Fetch each category's file (once per distinct word); one result per word, failures included.

    `jobs` files are fetched at once: small limited fetches are latency-bound, not bandwidth-bound.
    """
    if isinstance(words, str):
        words = [words]
    extension(fmt)
    words = _check_words(words)
    limit = None
    if max_drawings is not None:
        try:
            limit = operator.index(max_drawings)  # ints (numpy ones too), not floats or strings
        except TypeError:
            limit = 0
        if isinstance(max_drawings, bool) or limit < 1:
            raise DoodleError(f"max_drawings must be a whole number of at least 1 (or None for whole files), "
                              f"got {max_drawings!r}")
    if retries < 0:
        raise DoodleError(f"retries must be 0 or more, got {retries}")
    base = resolve_base_url(base_url)
    folder = Path(data_dir) / fmt
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DoodleError(f"cannot create data folder {folder}: {err.strerror or err}") from None
    def one(w: str) -> DownloadResult:
        return _download_one(_Job(w, fmt, remote_url(base, fmt, w), local_path(data_dir, fmt, w)),
                             limit, force, timeout, retries, backoff, reporter)

    if jobs <= 1 or len(words) == 1:
        return [one(w) for w in words]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, words))  # results in the order asked


def ensure_downloaded(words: Sequence[str], fmt: str = "simplified", data_dir: str | os.PathLike = "data",
                      base_url: str | None = None, max_drawings: int | None = None, force: bool = False,
                      retries: int = 4, backoff: float = 0.5, timeout: float = 30.0,
                      reporter: Reporter = NULL_REPORTER) -> list[Path]:
    """Like `download`, for pipelines: the local paths, or one DoodleError listing what failed."""
    results = download(words, fmt=fmt, data_dir=data_dir, base_url=base_url, max_drawings=max_drawings,
                       force=force, retries=retries, backoff=backoff, timeout=timeout, reporter=reporter)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        shown = "; ".join(r.error or r.word for r in failed[:3])
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise DoodleError(f"could not download {len(failed)} of {len(results)} file(s): {shown}{more}",
                          exit_code=1)  # 1, not 2: the network failed, not the user
    return [r.path for r in results]
