"""Fetch Quick, Draw! files from Google's bucket (or a mirror), resumably, never half-written or wrong.

Upstream `<base>/full/<format>/<word>.<ext>` lands in `<data_dir>/<format>/<word>.<ext>`.
A download streams into `<path>.part` and is renamed into place only when complete and checked:
an ndjson file must end with a newline and its first and last lines must be drawing records; an
.npy must have a valid header and exactly the size that header declares. A body whose end cannot
be confirmed (no Content-Length) is confirmed with a Range request for the bytes after it.

An interrupted download resumes from the `.part` with a Range request, but only with `If-Range`
set to the ETag (or Last-Modified) the server gave when the `.part` was started, kept in
`.<word>.<ext>.part.json`: a file that changed on the server since is fetched again from the start.
While a file is fetched, an exclusive lock on `.<word>.<ext>.lock` keeps a second doodle process
from writing the same `.part`; it waits, then finds the file complete.

`max_drawings=N` reads only the first N lines (ndjson) or the header plus N rows (npy, by Range
request), because upstream files are 50-300 MB. A sidecar `.<word>.<ext>.json` records the limit a
file was fetched with, so asking later for more drawings fetches again and asking for fewer does not.

A hostile or broken server cannot hang a download or fill the disk: a body is refused as soon as
it shows it is not the file asked for (its first line, its .npy header, a line over MAX_LINE, more
bytes than it stated or than any Quick, Draw! file has: MAX_BYTES), and a transfer slower than
STALL_RATE over any STALL_WINDOW fails (see the settings below). Redirects are followed to
http(s) only; a compressed body (Content-Encoding) is refused, since byte offsets must be the
file's own. A `.part` that can never be resumed (refused, or with nothing to resume it by) is removed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import errno
import http.client
import io
import json
import operator
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, TypeGuard

import numpy as np

from doodle import fsutil
from doodle.categories import extension, is_category, local_path, suggest
from doodle.errors import DoodleError
from doodle.progress import NULL_REPORTER, Reporter

DEFAULT_BASE_URL = "https://storage.googleapis.com/quickdraw_dataset"
# What to do when the server cannot be reached (DownloadResult.unreachable); callers with other
# means (a config key, an offline config) pass their own to `ensure_downloaded`.
OFFLINE_HINT = "offline? point --base-url or $DOODLE_BASE_URL at a mirror (a folder or file:// URL in Google's layout)"

CHUNK = 64 * 1024  # most bytes per read (read1: whatever has arrived, so Ctrl-C and bars never wait long)
USER_AGENT = "doodle/0.1 (+https://quickdraw.withgoogle.com/data)"
# Google's bitmaps are a 128-byte header then uint8 rows of 28*28; guessing that layout lets the
# first Range request of a limited .npy fetch carry everything (a second request covers the rest).
NPY_HEADER_GUESS = 128
NPY_ROW_GUESS = 784
NPY_MAX_HEADER = 1 << 16  # numpy itself refuses headers over 10,000 bytes unless told otherwise
MAX_LINE = 1 << 24  # longest ndjson line looked at; a body with a longer one is refused (raw drawings reach ~1 MB)
RETRY_STATUS = (408, 429)  # 4xx codes that mean "try again later"; every 5xx is retried too
MAX_REDIRECTS = 10  # hops before a chain of redirects counts as a loop (urllib's own limit)

# A server that stalls or never ends must cost a bounded time and disk. Module settings, so that
# tests can lower them. The read timeout (`timeout`) bounds one silent read; a server trickling a
# byte every few seconds passes it forever, so the response headers must arrive within
# STALL_WINDOW, and every STALL_WINDOW of the body must bring STALL_RATE * STALL_WINDOW bytes.
# That also caps a whole file's time at about size / STALL_RATE + STALL_WINDOW. 1 KB/s over a
# minute fails nothing a real link would fetch (Google's bucket serves MB/s).
STALL_WINDOW = 60.0  # seconds
STALL_RATE = 1024  # bytes per second, averaged over STALL_WINDOW
# The most bytes a Quick, Draw! file can have: a body past it is refused and its .part removed.
# The largest category holds about 340,000 drawings (snowman); a bitmap row is 784 bytes (~270 MB
# for it), and the shared sample's densest category averages 1.1 KB per simplified and 10.5 KB per
# raw drawing (at most ~0.4 GB and ~3.6 GB for 340,000 of them; Google's largest files are a few
# hundred MB to about 1 GB). Each bound is 2-4 times the largest such estimate.
MAX_BYTES = {"numpy_bitmap": 1 << 30, "simplified": 2 << 30, "raw": 8 << 30}
OVERALL = "files"  # reporter key of the overall line of a multi-file download
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
    error: str | None = None  # one line, when failed: names the URL or file and what to do
    url: str = ""
    unreachable: bool = False  # failed because the server could not be reached (offline?): see OFFLINE_HINT

    @property
    def reason(self) -> str | None:
        """The error without the URL in front, so failures for the same reason can be grouped."""
        return None if self.error is None else self.error.removeprefix(f"{self.url}: ")


class _Transient(Exception):
    """A failure worth retrying: 5xx, dropped connection, short body, timeout. `host` when the server
    itself cannot be reached (its name does not resolve, it refuses connections, no route to it)."""

    def __init__(self, message: str, host: bool = False):
        super().__init__(message)
        self.host = host


class _Fatal(Exception):
    """A failure that retrying will not fix (404, not a .npy file, disk error); str() is the message."""


class _Disk(_Fatal):
    """Writing to the disk failed (full, read-only...): retrying will not help, freeing space may."""


class _Unreachable(_Fatal):
    """Every retry found the server itself unreachable: the other files of this download would be too."""


class _Bad(_Fatal):
    """A file's content is not what it should be; `cut` when it looks cut off (more bytes may fix it)."""

    def __init__(self, message: str, cut: bool = False):
        super().__init__(message)
        self.cut = cut


class _Stalled(_Fatal):
    """The server sends too slowly to ever finish (see STALL_RATE); the .part is kept for a later run."""


class _Stopped(Exception):
    """The download was interrupted (Ctrl-C in the main thread): workers stop at the next chunk."""


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
    def part_meta(self) -> Path:  # the validators (ETag, Last-Modified) the .part was started with
        return self.path.with_name(f".{self.path.name}.part.json")

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(f".{self.path.name}.json")

    @property
    def lock(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def ndjson(self) -> bool:
        return self.fmt != "numpy_bitmap"


class _Overall:
    """The one line for a multi-file download: files finished of those asked; fields `received` (bytes),
    `rate` (bytes/s) and `failed` (files)."""

    def __init__(self, reporter: Reporter, files: int):
        self.reporter, self.active = reporter, files > 1
        self.received = self.failed = 0
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()
        if self.active:
            reporter.start(OVERALL, f"{files} files", total=files, unit="files")

    def _update(self, files: int) -> None:
        if self.active:
            rate = self.received / max(time.perf_counter() - self.t0, 1e-3)
            self.reporter.update(OVERALL, advance=files, received=self.received, rate=rate, failed=self.failed)

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.received += n
            self._update(0)

    def finished(self, result: DownloadResult) -> None:
        with self.lock:
            self.failed += result.status == "failed"
            self._update(1)

    def end(self) -> None:
        if self.active:
            self.reporter.end(OVERALL)


class _Progress:
    """Reporter calls for one file: `start` on the first response, `update(completed=)` on later ones."""

    def __init__(self, reporter: Reporter, key: str, description: str, overall: _Overall, stop: threading.Event):
        self.reporter, self.key, self.description = reporter, key, description
        self.overall, self.stop = overall, stop
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
        """`n` more bytes written; also the point where an interrupted download stops."""
        if self.stop.is_set():
            raise _Stopped
        self.done += n
        self.reporter.update(self.key, advance=n)
        self.overall.add_bytes(n)

    def end(self) -> None:
        if self.started:
            self.reporter.end(self.key)


@dataclass
class _Run:
    """What the files of one `download` call share: its settings, its stop signal, and whether the
    server has been found unreachable (then the other files give up at once instead of each
    retrying it, and the retries are logged once, not once per file)."""

    limit: int | None
    force: bool
    timeout: float
    retries: int
    backoff: float
    reporter: Reporter
    overall: _Overall
    stop: threading.Event
    temporaries: list[str]
    outage: str | None = None  # why the server cannot be reached, once a file has spent its retries on it
    outage_logged: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pause(self, seconds: float, outage_ends_it: bool) -> None:
        """Wait before a retry (one for an unreachable server ends when a file gives up on it); _Stopped on Ctrl-C."""
        deadline = time.monotonic() + seconds
        while not (outage_ends_it and self.outage) and (left := deadline - time.monotonic()) > 0:
            if self.stop.wait(min(left, 0.05)):
                raise _Stopped

    def first_outage_retry(self) -> bool:
        """True once per download: whether to log a retry for an unreachable server."""
        with self.lock:
            first, self.outage_logged = not self.outage_logged, True
        return first


class _Pace:
    """The stall rule: once STALL_WINDOW seconds have passed, the latest window of that length must have
    brought STALL_RATE * STALL_WINDOW bytes. Checked as each read returns (a silent read ends by `timeout`)."""

    def __init__(self, url: str):
        self.url = url
        self.total = 0
        self.marks = collections.deque([(time.monotonic(), 0)])  # (time, total bytes then), oldest first

    def read(self, resp, n: int = CHUNK) -> bytes:
        """What has arrived of `resp`'s body, at most `n` bytes; raises _Stalled under the rule."""
        chunk = resp.read1(n)
        now = time.monotonic()
        self.total += len(chunk)
        if now - self.marks[-1][0] < STALL_WINDOW / 16 and len(self.marks) > 1:
            self.marks[-1] = (now, self.total)  # about 16 marks per window, however many reads
        else:
            self.marks.append((now, self.total))
        while len(self.marks) > 1 and self.marks[1][0] <= now - STALL_WINDOW:
            self.marks.popleft()  # keep one mark at or before the window's start
        since, before = self.marks[0]
        if now - since >= STALL_WINDOW and self.total - before < STALL_RATE * STALL_WINDOW:
            raise _Stalled(f"{self.url}: stalled: {self.total - before:,} bytes in the last {now - since:.0f} s, "
                           f"under the {_human(STALL_RATE)}/s a download needs")
        return chunk


class _Head:
    """The first bytes of a body that starts at byte 0, checked as soon as they can be: a server sending
    anything but the file asked for is refused after its first line (ndjson) or its header (.npy), not
    after gigabytes. `size` becomes the file size a .npy header declares."""

    def __init__(self, fmt: str):
        self.ndjson = fmt != "numpy_bitmap"
        self.buf = bytearray()
        self.done = False
        self.size: int | None = None

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        self.buf += chunk  # bounded: a line over MAX_LINE, or a header over NPY_MAX_HEADER, is refused
        if self.ndjson:
            at = self.buf.find(b"\n")
            if at < 0:
                return
            line = bytes(self.buf[:at])
            if not _drawing_record(line):
                raise _Bad(f"is not Quick, Draw! drawings (its first line is {_snippet(line)})")
        else:
            size = _npy_header_size(bytes(self.buf[:12]))
            if size is not None and size > NPY_MAX_HEADER:
                raise _Bad(f"is a bad .npy: implausible header of {size:,} bytes")
            if size is None or len(self.buf) < size:
                return
            shape, _, row_bytes = _npy_layout(bytes(self.buf[:size]))
            self.size = size + shape[0] * row_bytes
        self.done, self.buf = True, bytearray()


def _human(n: float) -> str:
    """A byte count for messages: 1 KB, 2.5 MB, 8 GB (powers of 1024)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError


def _printable(text: str, limit: int = 120) -> str:
    """Server-supplied text for a one-line message: control characters escaped, at most `limit` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])  # an escape is up to 10
    return shown[:limit] + ("..." if len(shown) > limit or len(text) > limit else "")


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

class _HeadersInTime:
    """An HTTP(S) connection whose response headers must all arrive within STALL_WINDOW: a server that
    trickles them a byte at a time passes every per-read timeout. Past it the socket is shut down."""

    def getresponse(self):
        fired = threading.Event()

        def cut():
            fired.set()
            with contextlib.suppress(OSError, AttributeError):
                self.sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(STALL_WINDOW, cut)
        timer.daemon = True
        timer.start()
        try:
            return super().getresponse()
        except Exception:
            if fired.is_set():
                raise _Stalled(f"stalled: no response headers within {STALL_WINDOW:g} s") from None
            raise
        finally:
            timer.cancel()


class _HTTPConnection(_HeadersInTime, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_HeadersInTime, http.client.HTTPSConnection):
    pass


class _InTime:
    """A urllib handler that opens its connections as `_HeadersInTime` ones."""

    _classes = {http.client.HTTPConnection: _HTTPConnection, http.client.HTTPSConnection: _HTTPSConnection}

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(self._classes[http_class], req, **kwargs)


class _HTTPHandler(_InTime, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_InTime, urllib.request.HTTPSHandler):
    pass


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http:// and https:// only (urllib also follows ftp://), and say a loop in one line."""

    max_redirections = MAX_REDIRECTS

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("Location") or headers.get("URI")
        try:
            scheme = urllib.parse.urlsplit(target.strip()).scheme.lower() if target else ""
        except ValueError:  # e.g. an unclosed [ in the host
            scheme = "malformed"
        if scheme not in ("", "http", "https"):
            fp.close()
            shown = target.encode("latin-1", "replace").decode("utf-8", "replace")  # http.client read it as latin-1
            raise _Fatal(f"HTTP {code} redirects to {_printable(shown)}: only http:// and https:// "
                         f"redirects are followed; check the base URL")
        try:
            return super().http_error_302(req, fp, code, msg, headers)
        except urllib.error.HTTPError as exc:
            if not str(exc.msg).startswith(self.inf_msg):
                raise
            exc.close()
            hops = sum(getattr(req, "redirect_dict", {}).values())
            raise _Fatal(f"redirect loop: {hops} redirects without reaching the file (the last one from "
                         f"{_printable(req.full_url)}); check the base URL") from None

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


_OPENER = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler, _Redirects)


def _open(url: str, timeout: float, start: int = 0, end: int | None = None, if_range: str | None = None):
    """GET `url`, asking for bytes start..end (inclusive) when that is not the whole file.

    With `if_range` (an ETag or Last-Modified date) the server sends the range only if its file
    still carries that validator, and the whole file otherwise.
    """
    # identity: no gzip, so byte offsets in Range and Content-Range are offsets in the file itself
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start or end is not None:
        headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        if if_range:
            headers["If-Range"] = if_range
    try:
        resp = _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except _Fatal as exc:  # raised inside the opener (a redirect refused, headers too slow): name the file
        raise type(exc)(f"{url}: {exc}") from None
    encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":  # compressed bytes are not the file's bytes, and Range offsets would not be its own
        resp.close()
        raise _Fatal(f"{url}: the server sent it compressed (Content-Encoding: {_printable(encoding, 40)}) "
                     f"though asked not to; serve the files as they are")
    return resp


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


def _unsatisfiable_size(exc: urllib.error.HTTPError) -> int | None:
    """The file size a 416 (range past the end) states in its `Content-Range: bytes */SIZE`, if any."""
    m = re.fullmatch(r"bytes\s+\*/(\d+)", (exc.headers.get("Content-Range") or "").strip())
    return int(m.group(1)) if m else None


def _validators(headers) -> dict:
    """What identifies this version of the remote file: a strong ETag and the Last-Modified date."""
    etag = headers.get("ETag")
    return {"etag": etag if etag and not etag.startswith("W/") else None,  # weak ETags cannot be used in If-Range
            "last_modified": headers.get("Last-Modified") or None}


def _if_range(tags: dict | None) -> str | None:
    return (tags.get("etag") or tags.get("last_modified")) if tags else None


def _same_file(saved: dict | None, got: dict) -> bool:
    """False when a response names a different version than the one we saved (a server ignoring If-Range)."""
    return not saved or all(not saved.get(k) or not got.get(k) or saved[k] == got[k] for k in got)


def _not_found(url: str, why: str) -> _Fatal:
    # Every word was checked against Google's list before any request: the mirror lacks the file.
    return _Fatal(f"{url}: not on this server ({why}); the category is in Google's dataset: "
                  f"check the base URL, or use a mirror that has it")


def _classify(exc: BaseException, job: _Job) -> _Transient | _Fatal:
    """Turn what urllib, http.client or the disk raised into _Transient (retry) or _Fatal (give up)."""
    if isinstance(exc, (_Transient, _Fatal)):
        return exc
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
        if exc.code in (404, 410):
            return _not_found(job.url, str(exc.code))
        if exc.code >= 500 or exc.code in RETRY_STATUS:
            return _Transient(f"HTTP {exc.code}")
        return _Fatal(f"{job.url}: HTTP {exc.code} {_printable(str(exc.reason))}")
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, FileNotFoundError):  # file:// mirror without this file
            return _not_found(job.url, "no such file")
        host = urllib.parse.urlsplit(job.url).netloc
        if isinstance(exc.reason, socket.gaierror):
            return _Transient(f"cannot resolve {host}: {exc.reason.strerror}", host=True)
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            return _Fatal(f"{job.url}: {_printable(str(exc.reason))}")
        if _host_down(exc.reason):
            return _Transient(f"cannot reach {host}: {exc.reason.strerror or exc.reason}", host=True)
        return _Transient(_printable(str(exc.reason)))
    if isinstance(exc, http.client.IncompleteRead):
        return _Transient(f"connection dropped after {len(exc.partial)} bytes of a chunk")
    if isinstance(exc, (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError)):
        text = _printable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return _Transient(text, host=_host_down(exc))
    if isinstance(exc, OSError):  # the disk, not the network: retrying will not help
        return _Disk(f"{exc.filename or job.path}: {exc.strerror or exc}")
    raise exc


def _host_down(reason: object) -> TypeGuard[OSError]:
    """Whether a connection error says the server cannot be reached at all (rather than this file failing)."""
    return isinstance(reason, ConnectionRefusedError) or \
        isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def _retrying(attempt, job: _Job, prog: _Progress, run: _Run):
    """Run `attempt()` until it succeeds; transient failures wait backoff * 2**k and try again.

    An attempt that moved the file further than ever before does not count against `retries`: a
    300 MB download over a link that drops every few minutes still finishes, resuming each time,
    while a server that keeps sending the same cut-off body is given up on (and one that trickles
    is stopped by the stall rule, which is not retried). A server that cannot be reached is
    retried, and logged, as one for all files: the first file to give up on it ends the others' waits.
    """
    failures = 0
    furthest = prog.done
    while True:
        try:
            return attempt()
        except (OSError, http.client.HTTPException, _Transient, _Fatal) as exc:
            err = _classify(exc, job)
            if isinstance(err, _Fatal):
                raise err from None
            if prog.done > furthest:
                furthest, failures = prog.done, 0
            tries = f"{run.retries + 1} attempt{'s' if run.retries else ''}"
            if err.host:
                with run.lock:
                    if failures >= run.retries and run.outage is None:
                        run.outage = f"{err} (gave up after {tries})"
                if run.outage is not None:
                    raise _Unreachable(f"{job.url}: {run.outage}") from None
            elif failures >= run.retries:
                raise _Fatal(f"{job.url}: {err} (gave up after {tries})") from None
            delay = run.backoff * 2 ** failures
            failures += 1
            if not err.host:
                run.reporter.log(f"retrying {job.fmt}/{job.name} after {err} "
                                 f"(retry {failures} of {run.retries}, in {delay:.1f} s)")
            elif run.first_outage_retry():
                run.reporter.log(f"{err}; retrying up to {run.retries} time{'s' if run.retries > 1 else ''}")
            run.pause(delay, outage_ends_it=err.host)
            if err.host and run.outage is not None:  # another file gave up on the server meanwhile
                raise _Unreachable(f"{job.url}: {run.outage}") from None


# ---------------------------------------------------------------------------------------- checks

def _snippet(data: bytes) -> str:
    """The start of `data` for a message: quoted text, or a description of binary bytes (never the bytes)."""
    head = data[:60]
    text: str | None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[:exc.start].decode("utf-8") if exc.reason == "unexpected end of data" else None  # cut at 60
    if text is not None and all(c.isprintable() or c in "\t\r" for c in text):
        return repr(text)
    if data[:2] == b"\x1f\x8b":
        return "gzip-compressed data"
    return f"binary data ({data[:8].hex(' ')} ...)"


def _drawing_record(line: bytes) -> bool | None:
    """True for a JSON object with a "drawing" list, False for other JSON, None for what is not JSON."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return isinstance(obj, dict) and isinstance(obj.get("drawing"), list)


def _first_line(fh) -> tuple[bytes, bool]:
    """(the first line, whether a newline ended it); at most about MAX_LINE bytes."""
    blocks, seen = [], 0
    while seen < MAX_LINE:
        block = fh.read(CHUNK)
        if not block:
            break
        at = block.find(b"\n")
        if at >= 0:
            blocks.append(block[:at])
            return b"".join(blocks), True
        blocks.append(block)
        seen += len(block)
    return b"".join(blocks), False


def _last_line(fh, size: int) -> bytes:
    """The last line of a file of `size` bytes that ends with a newline (without it); at most about MAX_LINE."""
    blocks = []
    pos = end = size - 1  # the final newline
    while pos > 0 and end - pos < MAX_LINE:
        step = min(CHUNK, pos)
        pos -= step
        fh.seek(pos)
        block = fh.read(step)
        at = block.rfind(b"\n")
        if at >= 0:
            blocks.append(block[at + 1:])
            break
        blocks.append(block)
    return b"".join(reversed(blocks))


def _check_ndjson(path: Path) -> None:
    """Raise _Bad unless `path` is whole ndjson drawings: a final newline, first and last lines drawing records."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        first, ended = _first_line(fh)
        if not first and not ended:
            raise _Bad("is empty", cut=True)
        if not ended and len(first) < size:
            raise _Bad(f"is not ndjson (no newline in its first {MAX_LINE:,} bytes)")
        record = _drawing_record(first)
        if record is None and not ended and first.lstrip()[:1] == b"{":
            raise _Bad("ends in the middle of its first line (cut off)", cut=True)
        if not record:
            raise _Bad(f"is not Quick, Draw! drawings (its first line is {_snippet(first)})")
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            raise _Bad("ends in the middle of a line (cut off)", cut=True)
        last = _last_line(fh, size)
        if not _drawing_record(last):
            raise _Bad(f"has a last line that is not a drawing record ({_snippet(last)})")


def _npy_header_size(buf: bytes | bytearray) -> int | None:
    """Total header length of a .npy that starts with `buf`, or None if `buf` is too short to tell."""
    magic = np.lib.format.MAGIC_PREFIX
    if buf[:len(magic)] != magic[:len(buf)]:
        raise _Bad("is not a .npy file (bad magic bytes)")
    if len(buf) < 8:
        return None
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
            raise _Bad(f"is a bad .npy: unsupported version {version[0]}.{version[1]}")
        shape, fortran, dtype = _NPY_HEADER_READERS[version](fp)
    except ValueError as exc:
        raise _Bad(f"is a bad .npy: its header does not parse ({exc})") from None
    if dtype.hasobject or not shape or (fortran and len(shape) > 1):
        raise _Bad(f"is a bad .npy: unexpected layout (shape {shape}, dtype {dtype}, fortran_order {fortran})")
    return shape, dtype, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize


def _check_npy(path: Path) -> int:
    """Rows in a .npy, after checking its header and that the file has exactly the size it declares."""
    actual = path.stat().st_size
    with open(path, "rb") as fh:
        buf = fh.read(12)
        size = _npy_header_size(buf)
        if size is not None and size > NPY_MAX_HEADER:
            raise _Bad(f"is a bad .npy: implausible header of {size} bytes")
        if size is None or actual < size:
            raise _Bad(f"is a bad .npy: it ends inside its header, after {actual} bytes (cut off)", cut=True)
        buf += fh.read(size - len(buf))
    shape, _, row_bytes = _npy_layout(buf)
    expected = size + shape[0] * row_bytes
    if actual != expected:
        cut = " (cut off)" if actual < expected else ""
        raise _Bad(f"is a bad .npy: its header says {shape} ({expected} bytes) but it has {actual}{cut}",
                   cut=actual < expected)
    return shape[0]


def _check_file(path: Path, fmt: str) -> int | None:
    """Raise _Bad unless `path` is a whole file of format `fmt`; the rows of an .npy (None for ndjson)."""
    if fmt == "numpy_bitmap":
        return _check_npy(path)
    _check_ndjson(path)
    return None


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


def _read_json(path: Path) -> dict | None:
    try:
        meta = fsutil.read_json(path)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _discard_part(job: _Job) -> None:
    """Forget a partial download: the .part, then the validators it was started with."""
    job.part.unlink(missing_ok=True)
    job.part_meta.unlink(missing_ok=True)


def _stream_attempt(job: _Job, run: _Run, prog: _Progress, state: dict) -> None:
    """One attempt to extend `job.part` towards the whole file (or its first `limit` lines, for ndjson).

    Sets state["lines"] (newlines written), state["stopped"] (True if cut at `limit`),
    state["resumed"] (this attempt appended to existing bytes) and state["confirmed"] (the server
    stated the file's size and we have exactly that many bytes). Raises _Bad as soon as the body
    shows it is not the file (see `_Head`, `_end`), _Stalled when it comes too slowly.
    """
    limit, timeout = run.limit, run.timeout
    have = job.part.stat().st_size if job.part.exists() else 0
    saved = _read_json(job.part_meta) if have else None
    if have and not _if_range(saved):  # nothing to ask the server whether its file is still this one
        _discard_part(job)
        have = 0
    lines = _lines_in(job.part)[0] if job.ndjson and have else 0
    try:
        resp = _open(job.url, timeout, start=have, if_range=_if_range(saved) if have else None)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise
        # Range past the end of the same file: the .part is already whole (killed before the rename).
        whole = _unsatisfiable_size(exc) == have and _same_file(saved, _validators(exc.headers))
        exc.close()
        if whole:
            state.update(lines=lines, stopped=False, resumed=True, confirmed=True)
            return
        _discard_part(job)
        raise _Transient("the partial file does not match the remote one; starting again") from None
    with resp:
        try:
            first, length, total = _span(resp, have)
        except _Transient:  # a 206 for some other range: trust nothing, start again
            _discard_part(job)
            raise
        tags = _validators(resp.headers)
        if first and not _same_file(saved, tags):  # a server that honours Range but not If-Range
            _discard_part(job)
            raise _Transient("the remote file changed since the partial download; starting again")
        _plausible(job.fmt, length, "Content-Length")
        _plausible(job.fmt, total, "Content-Range")
        if not first:  # fresh start, or the server sent the whole (possibly changed) file: rewrite from byte 0
            _discard_part(job)
            # Written in place, not renamed: a torn one does not parse, and the .part then starts over.
            job.part_meta.write_text(json.dumps({"url": job.url, **tags}))
            lines = 0
        state["resumed"] = first > 0
        prog.begin(total=None if limit else total, completed=first)
        got = 0
        pace, head = _Pace(job.url), _Head(job.fmt) if not first else None
        end, past_end = _end(job.fmt, first, length, total, None)
        since_newline = 0  # bytes since the last newline (from this body's start when resuming)
        with open(job.part, "ab" if first else "wb") as fh:
            while chunk := pace.read(resp):
                if head is not None and not head.done:
                    head.feed(chunk)
                    if head.size is not None:
                        _plausible(job.fmt, head.size, ".npy header")
                        end, past_end = _end(job.fmt, first, length, total, head.size)
                if first + got + len(chunk) > end:
                    raise _Bad(past_end)
                if job.ndjson:
                    at = chunk.rfind(b"\n")
                    since_newline = since_newline + len(chunk) if at < 0 else len(chunk) - at - 1
                    if since_newline > MAX_LINE:
                        raise _Bad(f"has a line of over {_human(MAX_LINE)}: not Quick, Draw! drawings")
                n = chunk.count(b"\n")
                if limit is not None and lines + n >= limit:  # enough drawings: cut after the limit-th line
                    chunk = chunk[:_after_nth_newline(chunk, limit - lines)]
                    fh.write(chunk)
                    prog.advance(len(chunk))
                    state.update(lines=limit, stopped=True, confirmed=True)
                    return
                fh.write(chunk)
                got += len(chunk)
                lines += n
                prog.advance(len(chunk))
        state.update(lines=lines, stopped=False, confirmed=total is not None)
        if length is not None and got != length:
            raise _Transient(f"connection dropped after {got} of {length} bytes")
        if total is not None and first + got != total:
            raise _Transient(f"connection dropped at byte {first + got} of {total}")


def _plausible(fmt: str, size: int | None, what: str) -> None:
    """Raise _Bad if a size the body states (`what`: "Content-Length") is over MAX_BYTES."""
    if size is not None and size > MAX_BYTES[fmt]:
        raise _Bad(f"claims {size:,} bytes ({what}), more than any Quick, Draw! {fmt} file has "
                   f"({_human(MAX_BYTES[fmt])} at most)")


def _end(fmt: str, first: int, length: int | None, total: int | None, declared: int | None) -> tuple[int, str]:
    """(the file offset a body starting at `first` must not pass, the refusal if it does): the end its
    Content-Length, Content-Range or .npy header states, or the size of any Quick, Draw! file."""
    ends = [(MAX_BYTES[fmt], f"is over {_human(MAX_BYTES[fmt])}, more than any Quick, Draw! {fmt} file has")]
    for end, what in ((None if length is None else first + length, "Content-Length"), (total, "Content-Range"),
                      (declared, ".npy header")):
        if end is not None:
            ends.append((end, f"runs past the {end:,} bytes its {what} states"))
    return min(ends)


def _confirm_end(job: _Job, timeout: float) -> bool:
    """Ask for the bytes after the .part when no Content-Length said where the file ends.

    True when the server confirms there are none, False when it cannot tell (it ignores Range and
    states no size); a _Transient when the file goes on (the connection was cut: resume).
    """
    have = job.part.stat().st_size
    saved = _read_json(job.part_meta)
    try:
        resp = _open(job.url, timeout, start=have, if_range=_if_range(saved))
    except urllib.error.HTTPError as exc:
        if exc.code != 416:
            raise
        size = _unsatisfiable_size(exc)
        exc.close()
        if size is None or size == have:
            return True
        _discard_part(job)
        raise _Transient(f"the server's file has {size} bytes, the partial one {have}; starting again") from None
    with resp:
        first, length, _ = _span(resp, have)
        if first:
            raise _Transient(f"connection closed after {have} bytes, before the end of the file; resuming")
        if length is not None and length != have:
            raise _Transient(f"connection closed after {have} of {length} bytes")
        return length is not None


def _npy_head_attempt(job: _Job, run: _Run, out: Path, prog: _Progress) -> tuple[int, bool]:
    """One attempt to write the header and first `limit` rows of the remote .npy to `out`.

    Returns (rows written, whether that is every row). The first request asks for a byte range
    sized for Google's layout; a server that ignores Range sends everything, and we stop reading
    (and close) once we have enough. A range that proves too short (wider rows, longer header) is
    followed by a request for the rest, with If-Range so that it comes from the same file.
    """
    limit, timeout = run.limit, run.timeout
    assert limit is not None  # _download_one fetches only the head of a .npy download with a limit
    pace = _Pace(job.url)
    head = bytearray()  # the remote header, until it is complete
    need = NPY_HEADER_GUESS + limit * NPY_ROW_GUESS  # remote bytes we want; exact once the header is parsed
    pos = 0  # remote bytes consumed so far
    rows = None  # (rows written, every row?) once the header is parsed
    tags = None  # the validators of the first response; every later one must carry the same
    prog.done = 0
    with open(out, "wb") as fh:
        while pos < need:
            with _open(job.url, timeout, start=pos, end=need - 1, if_range=_if_range(tags) if pos else None) as resp:
                first, length, total = _span(resp, pos)
                if tags is None:
                    tags = _validators(resp.headers)
                elif not _same_file(tags, _validators(resp.headers)):
                    raise _Transient("the remote file changed during the download; starting again")
                got = 0
                while first + got < pos:  # a 200 to a follow-up request starts again at byte 0
                    chunk = pace.read(resp, min(CHUNK, pos - first - got))
                    if not chunk:
                        break
                    got += len(chunk)
                while first + got == pos < need:
                    chunk = pace.read(resp, min(CHUNK, need - pos))
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
                        raise _Bad(f"is a bad .npy: implausible header of {size} bytes")
                    if size is None or len(head) < size:
                        need = max(need, size or 0)  # a header longer than guessed: read all of it
                        continue
                    shape, dtype, row_bytes = _npy_layout(bytes(head[:size]))
                    n = min(limit, shape[0])
                    rows = (n, n == shape[0])
                    need = size + n * row_bytes
                    _plausible(job.fmt, need, f".npy header: {n:,} rows of {row_bytes:,} bytes")
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
                if total is None:  # no size stated: a cut connection, or a short file (retries tell)
                    raise _Transient(f"the body ended after {first + got} bytes, the header needs {need}")
                if first + got >= total:  # we have the whole remote file, and it is short
                    raise _Bad(f"is a bad .npy: it ends after {first + got} bytes, its header needs {need}")
    if rows is None:
        raise _Bad("is a bad .npy: its header never ended")
    return rows


# ---------------------------------------------------------------------------------------- one file

def _satisfied(job: _Job, limit: int | None, reporter: Reporter | None = None) -> tuple[bool, int | None]:
    """(whether the file on disk already answers this request, its drawings if known).

    A file is only ever renamed into place whole, but one put there by hand, or by an older doodle
    that trusted a cut-off body, may not be: its content is checked too, and `reporter` told why not.
    """
    if not job.path.is_file():
        return False, None
    meta = _read_json(job.sidecar)
    if meta is None and job.sidecar.exists():
        return False, None  # an unreadable sidecar: we cannot tell what the file holds, so fetch it again
    if meta is not None:
        if meta.get("bytes") != job.path.stat().st_size:
            return False, None  # the sidecar describes a replacement that never got renamed into place
        had = meta.get("max_drawings")
        if not (had is None or (limit is not None and limit <= had)):
            return False, None
    try:
        _check_file(job.path, job.fmt)
    except _Bad as bad:
        if reporter is not None:
            reporter.log(f"{job.path} {bad}: fetching it again")
        return False, None
    return True, meta.get("drawings") if meta else None


def _record(job: _Job, src: Path, limit: int | None, drawings: int, stopped: bool) -> int:
    """Write the sidecar for the data in `src` (about to be renamed into place); returns its size.

    The sidecar goes first so that a crash before the rename leaves a sidecar whose byte count
    does not match the old file, which `_satisfied` treats as "fetch again".
    """
    size = src.stat().st_size
    fsutil.write_json(job.sidecar, {"url": job.url, "bytes": size,
                                    "max_drawings": limit if stopped else None, "drawings": drawings})
    return size


def _fetch_stream(job: _Job, run: _Run, prog: _Progress) -> tuple[str, int, int]:
    """Stream (or resume) into the .part, check it, rename it into place: (status, bytes, drawings)."""
    limit = run.limit
    if limit is not None and job.ndjson and job.part.exists():
        lines, cut = _lines_in(job.part, stop=limit)
        if lines >= limit:  # an interrupted bigger download already holds enough: copy, keep the .part
            try:
                with fsutil.atomic_path(job.path) as tmp:
                    with open(job.part, "rb") as fh:
                        tmp.write_bytes(fh.read(cut))
                    _check_ndjson(tmp)
                    size = _record(job, tmp, limit, limit, stopped=True)
                return "resumed", size, limit
            except _Bad:
                _discard_part(job)  # not drawings after all: fetch them
    state: dict = {}

    def attempt():
        try:
            _stream_attempt(job, run, prog, state)
            if not state["confirmed"]:
                state["confirmed"] = _confirm_end(job, run.timeout)
            state["rows"] = _check_file(job.part, job.fmt)
        except _Bad as bad:
            if bad.cut and not state["confirmed"]:  # no stated size: maybe cut off, maybe the server's file
                raise _Transient(f"what the server sent {bad}, and it stated no size") from None
            _discard_part(job)
            raise _Fatal(f"{job.url}: what the server sent {bad}; check the base URL, or try again later") from None

    try:
        _retrying(attempt, job, prog, run)
    except (_Stalled, _Disk) as err:  # the bytes so far are good: say where they wait
        raise type(err)(f"{err}{_kept(job)}") from None
    except BaseException:  # Ctrl-C included
        _kept(job)
        raise
    drawings = state["lines"] if job.ndjson else state["rows"]
    size = _record(job, job.part, limit, drawings, state["stopped"])
    os.replace(job.part, job.path)
    job.part_meta.unlink(missing_ok=True)
    return ("resumed" if state.get("resumed") else "downloaded"), size, drawings


def _kept(job: _Job) -> str:
    """After a fetch ended: remove a .part that can never be resumed (nothing to resume it by);
    otherwise say where its bytes wait ("" when there is none)."""
    if not job.part.exists():
        return ""
    if not _if_range(_read_json(job.part_meta)):  # the next run would discard it: do it now
        _discard_part(job)
        return ""
    return f"; {_human(job.part.stat().st_size)} so far kept in {job.part} (run again to resume, or delete it)"


def _fetch_npy_head(job: _Job, run: _Run, prog: _Progress) -> tuple[str, int, int]:
    """Fetch the first `limit` rows of a .npy into a temp file, check it, and rename it into place."""
    with fsutil.atomic_path(job.path, suffix=".npy") as tmp:
        try:
            n, whole = _retrying(lambda: _npy_head_attempt(job, run, tmp, prog), job, prog, run)
            _check_npy(tmp)
        except _Bad as bad:
            raise _Fatal(f"{job.url}: what the server sent {bad}; check the base URL") from None
        size = _record(job, tmp, run.limit, n, stopped=not whole)
    return "downloaded", size, n


@contextlib.contextmanager
def _locked(job: _Job, reporter: Reporter, stop: threading.Event):
    """Hold the exclusive lock on `.<name>.lock` while the file is fetched, waiting while another process has it
    (fsutil.locked; the lock file goes on release). The lock dies with its process, kill -9 included."""
    def waiting(holder: str) -> None:
        reporter.log(f"{job.fmt}/{job.name}: another doodle download (pid {holder}) is fetching it; waiting for it")

    try:
        with fsutil.locked(job.lock, wait=True, on_wait=waiting, stop=stop, unlink=True):
            yield
    except fsutil.Stopped:
        raise _Stopped from None


def _temporaries(folder: Path) -> list[str]:
    """The temporary files (`*.tmp`) in `folder`, listed once per run: what killed runs may have left."""
    return [entry.name for entry in os.scandir(folder) if entry.name.endswith(".tmp")]


def _clean_temporaries(job: _Job, temporaries: list[str]) -> None:
    """Remove what a killed run left of this file's atomic writes (we hold its lock: nobody is writing them)."""
    mine = (f".{job.name}.", f"..{job.name}.")  # the data file's temporaries; its sidecar's
    for name in temporaries:
        if name.startswith(mine):
            (job.path.parent / name).unlink(missing_ok=True)
    if not job.part.exists():
        job.part_meta.unlink(missing_ok=True)


def _download_one(job: _Job, run: _Run) -> DownloadResult:
    t0 = time.perf_counter()

    def result(status, size, drawings, error=None, unreachable=False):
        return DownloadResult(job.word, job.fmt, job.path, status, size, drawings, time.perf_counter() - t0,
                              error, job.url, unreachable)

    if not run.force:
        ok, drawings = _satisfied(job, run.limit)  # no lock needed: complete files are only renamed into place
        if ok:
            return result("skipped", job.path.stat().st_size, drawings)
    if run.outage:  # another file already spent its retries on a server that cannot be reached
        return result("failed", 0, None, f"{job.url}: {run.outage}", unreachable=True)
    prog = _Progress(run.reporter, f"{job.fmt}/{job.word}", job.word, run.overall, run.stop)
    fetch = _fetch_npy_head if job.fmt == "numpy_bitmap" and run.limit is not None else _fetch_stream
    try:
        with _locked(job, run.reporter, run.stop):
            _clean_temporaries(job, run.temporaries)
            if run.force:
                _discard_part(job)  # force means from scratch, not from an old partial
            else:  # another process may have fetched it while we waited for the lock
                ok, drawings = _satisfied(job, run.limit, run.reporter)
                if ok:
                    return result("skipped", job.path.stat().st_size, drawings)
            status, size, drawings = fetch(job, run, prog)
    except _Unreachable as err:
        return result("failed", 0, None, str(err), unreachable=True)
    except _Fatal as err:
        return result("failed", 0, None, str(err))
    except OSError as err:  # the disk (lock, rename, sidecar), not the network
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

    `jobs` files are fetched at once (parallel connections): small limited fetches are
    latency-bound, not bandwidth-bound. With several files the reporter also gets one overall task
    (key OVERALL, unit "files"; see `_Overall`). On Ctrl-C every worker stops at its next chunk,
    keeping its .part for the next run. A server that stalls or sends more than a file can hold
    fails that file (see STALL_WINDOW, MAX_BYTES); one that cannot be reached fails every file with
    `unreachable` set, after one file's retries.
    """
    if isinstance(words, str):
        words = [words]
    extension(fmt)
    words = _check_words(words)
    limit = _whole_number(max_drawings, "max_drawings", "(or None for whole files)") \
        if max_drawings is not None else None
    _whole_number(jobs, "jobs", "(files fetched at once)")
    if retries < 0:
        raise DoodleError(f"retries must be 0 or more, got {retries}")
    base = resolve_base_url(base_url)
    folder = Path(data_dir) / fmt
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DoodleError(f"cannot create data folder {folder}: {err.strerror or err}") from None
    # The first file that finds the server unreachable (after its retries) says why in run.outage; the
    # others then fail at once with that reason instead of retrying it (345 files offline: ~8 s, not ~11 min).
    run = _Run(limit, force, timeout, retries, backoff, reporter, _Overall(reporter, len(words)),
               threading.Event(), _temporaries(folder))

    def one(w: str) -> DownloadResult:
        job = _Job(w, fmt, remote_url(base, fmt, w), local_path(data_dir, fmt, w))
        res = _download_one(job, run)
        run.overall.finished(res)
        return res

    try:
        if jobs == 1 or len(words) == 1:
            return [one(w) for w in words]
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(jobs, len(words)))
        try:
            return list(pool.map(one, words))  # results in the order asked
        except BaseException:  # Ctrl-C: stop the running files at their next chunk, start no more
            run.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        run.overall.end()


def _whole_number(value, name: str, hint: str) -> int:
    """`value` as an int of at least 1 (numpy ints too, not floats, strings or bools), else a DoodleError."""
    try:
        n = operator.index(value)
    except TypeError:
        n = 0
    if isinstance(value, bool) or n < 1:
        raise DoodleError(f"{name} must be a whole number of at least 1 {hint}, got {value!r}")
    return n


def ensure_downloaded(words: Sequence[str], fmt: str = "simplified", data_dir: str | os.PathLike = "data",
                      base_url: str | None = None, max_drawings: int | None = None, force: bool = False,
                      retries: int = 4, backoff: float = 0.5, timeout: float = 30.0,
                      reporter: Reporter = NULL_REPORTER, jobs: int = 4,
                      offline_hint: str = OFFLINE_HINT) -> list[Path]:
    """Like `download`, for pipelines: the local paths, or one DoodleError saying each cause of failure
    once (with the files it hit), and `offline_hint` when the server could not be reached."""
    results = download(words, fmt=fmt, data_dir=data_dir, base_url=base_url, max_drawings=max_drawings,
                       force=force, retries=retries, backoff=backoff, timeout=timeout, reporter=reporter, jobs=jobs)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        causes: dict[str, list[DownloadResult]] = {}
        for r in failed:
            causes.setdefault(r.reason or "", []).append(r)
        head = f"could not download {len(failed)} of {len(results)} files"
        if len(causes) == 1 and len(failed) > 1:  # one cause: the files, then the cause
            message = f"{head} ({_names([r.word for r in failed])}): {failed[0].reason}"
        else:
            shown: list[str] = []
            for reason, rows in list(causes.items())[:2]:
                if len(rows) == 1:
                    assert rows[0].error is not None  # a failed result always says why
                    shown.append(rows[0].error)
                else:
                    shown.append(f"{reason} ({_names([r.word for r in rows])})")
            if len(causes) > 2:
                shown.append(f"and {len(causes) - 2} other causes")
            message = f"{head}: {'; '.join(shown)}"
        hint = f"; {offline_hint}" if any(r.unreachable for r in failed) else ""
        raise DoodleError(message + hint, exit_code=1)  # 1, not 2: the network failed, not the user
    return [r.path for r in results]


def _names(words: list[str], shown: int = 3) -> str:
    """'a, b, c and 7 more'."""
    more = f" and {len(words) - shown} more" if len(words) > shown else ""
    return ", ".join(words[:shown]) + more
