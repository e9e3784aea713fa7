"""`doodle play`: a local web page to draw on while the network guesses, as in Quick, Draw!

The browser sends strokes, never pixels. The server checks them as every drawing is checked
(`doodle.strokes.check_strokes`) and turns them into the model's input by `doodle predict`'s own path
(`doodle.inputs.to_bitmaps`: Google's raw -> simplified recipe, then `rasterize` with the model's raster
settings), then the model. So a drawing made here means what a Quick, Draw! drawing meant in training,
and the API's probabilities equal `doodle predict` on the same ndjson.

API (JSON in, JSON out; errors are `{"error": "..."}` with 400, 413 for a drawing over a limit, 503 when
busy, 500 for a broken model; 507 for a full disk on a save):
  GET  /api/model                  run name, categories, raster settings, limits, and "confidence": the
                                   calibrated probability from which the page says "I see X" (see info())
  POST /api/predict[?top_k=N][&explain=1]
                                   {"drawing": [[xs, ys, ts], ...], "format": "raw"|"simplified"}
                                   -> {"top": [{"category", "probability"}], "bitmap": 28 rows of 0..255}
                                   with explain=1 also "why": the top guess's "category", its "saliency"
                                   (28 rows of d log p / d pixel, doodle.explain) and their largest magnitude
                                   "scale", and per stroke of the request its contribution to p (p minus p
                                   without it; null for a stroke without points) in "strokes" (null when
                                   re-rendering the drawing once per stroke would pass MAX_ATTRIBUTION)
  POST /api/save                   {"drawing": raw strokes with times, "word": category}
                                   -> appends Google's raw record to <save-dir>/<word>.ndjson
  GET  /api/teach                  whether a word can be taught here: {"state": "preparing"|"ready"|
                                   "unavailable", "reason"}; the first call starts the preparation
  POST /api/teach                  {"word": a new word, "drawings": [raw drawings with times, ...]} -> the
                                   drawings appended to <save-dir>/<word>.ndjson, the word taught
                                   (doodle.teach), the new run folder written beside the model's and
                                   served from then on: {"run", "path", "categories", "seconds", "held_out"};
                                   409 while another word is being taught
The page itself is doodle/static/ (index.html, play.css, play.js), served from that folder only.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from doodle import fsutil
from doodle.categories import file_name_problem, show_word
from doodle.checkpoint import load_model, resolve_model_path
from doodle.errors import DoodleError
from doodle.explain import why
from doodle.inputs import Drawing, to_bitmap
from doodle.metrics import confidence_rule
from doodle.predict import probabilities, top_categories
from doodle.progress import NULL_REPORTER, Reporter
from doodle.simplify import TooMuchWork
from doodle.strokes import (
    MAX_COORD,
    BadInput,
    Limits,
    check_numbers,
    check_strokes,
    decode_line,
    finish_strokes,
)
from doodle.teach import Teacher

STATIC_DIR = Path(__file__).with_name("static")
MAX_BODY = 1_000_000  # bytes per request: 20,000 points of raw JSON take ~0.5 MB
MAX_STROKES = 1_000  # per drawing; Quick, Draw! drawings have a few dozen at most
# The checks every drawing passes (doodle.strokes: points, coordinates, ink), plus a stroke limit of our own.
LIMITS = Limits(strokes=MAX_STROKES)
RUNNING = 2  # drawings simplified, drawn and guessed at once: more only share the same cores
# A "why?" renders the drawing again without each stroke: strokes x points (simplified) re-drawn at most, or
# the stroke attribution is left out. A long Quick, Draw! drawing (40 strokes, 1,000 points) is 40,000.
MAX_ATTRIBUTION = 200_000
WAITING = 16  # requests that may wait for a turn; any beyond are refused with a 503 at once
TEACH_DRAWINGS = (2, 20)  # drawings a word is taught from: one left out must leave one; more add little
MAX_TEACH_BODY = 20 * MAX_BODY  # a teaching request carries up to 20 drawings
LOOPBACK_NAMES = ("localhost",)
_SAVE_STATUS = {errno.ENOSPC: 507, errno.EDQUOT: 507}  # a full disk is the one storage error worth its own code
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
          ".ico": "image/x-icon"}
# The page needs nothing from anywhere else; say so to the browser.
_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; "
                                       "frame-ancestors 'none'; form-action 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a one-line reason for the JSON body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------
# Strokes -> the model's input


def parse_json(body: bytes):
    """Request bytes -> JSON value, decoded as an ndjson line is (doodle.strokes.decode_line)."""
    try:
        return decode_line(body)
    except BadInput as exc:
        raise ApiError(400, f"body: {exc}") from None


def check_drawing(drawing, fmt: str = "raw", need_times: bool = False) -> tuple[list, bool]:
    """Validate a request's drawing: (its non-empty strokes, whether they are simplified already).

    The checks are the ones every drawing passes (`doodle.strokes.check_strokes`, with LIMITS); the API adds
    its own rule for times: a stroke's `ts` are milliseconds, and a save needs them (it writes them).
    413 for a drawing over a limit, 400 for anything else.
    """
    try:
        strokes, simplified = check_strokes(drawing, fmt, LIMITS)
        for i, stroke in enumerate(drawing, 1):
            if need_times and len(stroke) != 3:
                raise BadInput(f"stroke {i} is not [xs, ys, ts] (times in ms)")
            if len(stroke) == 3:
                check_numbers(stroke[2], f"stroke {i} t", 0, MAX_COORD)
                if len(stroke[2]) != len(stroke[0]):
                    raise BadInput(f"stroke {i} has {len(stroke[0])} x but {len(stroke[2])} t values")
    except BadInput as exc:
        raise ApiError(413 if exc.too_big else 400, str(exc)) from None
    return strokes, simplified


class WorkGate:
    """At most `running` heavy jobs at once and `waiting` more in line; any beyond are refused at once, so a
    flood of costly drawings queues a little and then gets 503s instead of exhausting memory and CPU."""

    def __init__(self, running: int = RUNNING, waiting: int = WAITING):
        self.capacity = running + waiting
        self._turns = threading.BoundedSemaphore(running)
        self._line = threading.BoundedSemaphore(self.capacity)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for a turn (blocking this worker thread), or ApiError 503 when the line is full."""
        if not self._line.acquire(blocking=False):
            raise ApiError(503, f"busy: {self.capacity} drawings are already being guessed; try again in a moment")
        try:
            with self._turns:
                yield
        finally:
            self._line.release()


# ---------------------------------------------------------------------------------------------
# Saving


def raw_record(word: str, drawing: list, recognized: bool) -> dict:
    """A record in Google's raw ndjson format (countrycode ZZ: unknown)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    return {"key_id": str(10 ** 15 + secrets.randbelow(9 * 10 ** 15)), "word": word, "countrycode": "ZZ",
            "timestamp": stamp, "recognized": bool(recognized), "drawing": drawing}


def append_line(path: Path, line: bytes) -> None:
    """Append one line atomically: one write on an O_APPEND descriptor, under an exclusive lock, synced.

    A crash can only lose this line, never tear an earlier one; a file left without its final newline
    by an earlier crash gets one first, so the new record starts on its own line. A write that fails or
    falls short (disk full), or cannot be synced, is cut back off and raised as OSError: the file never
    ends in half a record, and a failed save has written nothing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    # The data file itself is the lock (fsutil.locked, waiting its turn): appends from other processes queue.
    with fsutil.locked(path, wait=True, note_pid=False, flags=os.O_RDWR | os.O_APPEND) as fd:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            if os.write(fd, line) != len(line):
                raise OSError(errno.ENOSPC, "disk full (short write)")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)
            raise
    if created:  # the new name must survive a crash too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ---------------------------------------------------------------------------------------------
# The app


class Player:
    """The loaded model and the save folder behind the API (plain methods, no web framework)."""

    def __init__(self, model_path: str | Path | None, save_dir: str | Path, reporter: Reporter = NULL_REPORTER):
        self.run_dir = resolve_model_path(model_path)
        self.model, self.meta = load_model(self.run_dir)
        self.classes: list[str] = list(self.meta["classes"])
        self.raster: dict = self.meta["raster"]
        self.save_dir = Path(save_dir)
        self.gate = WorkGate()
        self.reporter = reporter
        self._lock = threading.Lock()  # one forward pass at a time: layers keep per-call caches
        self.teacher = Teacher(self.run_dir, self.model, self.meta)
        self._teaching = threading.Lock()  # one word taught at a time
        self._taught_word: str | None = None  # the word being taught, for the refusal of a second one
        self._preparing: threading.Thread | None = None
        self._prepare_once = threading.Lock()

    def info(self) -> dict:
        metrics = self.meta.get("metrics") or {}
        return {"run": self.run_dir.name, "path": str(self.run_dir), "save_dir": str(self.save_dir),
                "categories": self.classes,
                "raster": self.raster, "test_accuracy": metrics.get("test_accuracy"),
                "limits": {"body_bytes": MAX_BODY, "points": LIMITS.points, "strokes": LIMITS.strokes,
                           "ink": LIMITS.ink},
                "taught": [t["word"] for t in self.meta.get("taught", [])],  # their probabilities are uncalibrated
                "confidence": confidence_rule(metrics)}

    def _drawing(self, strokes: list, simplified: bool) -> tuple[Drawing, np.ndarray]:
        """Checked strokes -> (the drawing, the (S, S) uint8 bitmap the model sees), by predict's path (call it
        within a gate turn)."""
        try:
            drawing = Drawing(finish_strokes(strokes, simplified), source="request")
        except TooMuchWork as exc:  # within the ink budget, but Ramer-Douglas-Peucker would go on too long
            raise ApiError(413, str(exc)) from None
        return drawing, to_bitmap(drawing, self.raster)

    def _guess(self, strokes: list, simplified: bool,
               explain: bool = False) -> tuple[np.ndarray, np.ndarray, dict | None]:
        """Checked strokes -> ((S, S) uint8 bitmap, (C,) probabilities, with `explain` the "why?" of the top guess
        (doodle.explain.why) else None), by predict's own path, one turn of the gate."""
        with self.gate.turn():
            drawing, bitmap = self._drawing(strokes, simplified)
            try:
                with self._lock:
                    p = probabilities(self.model, bitmap[None], self.run_dir)[0]
                    reason = None
                    if explain:  # strokes x points is the work of re-rendering once per stroke
                        work = len(drawing.strokes) * sum(len(st[0]) for st in drawing.strokes)
                        reason = why(self.model, self.raster, bitmap, drawing.strokes, p, self.run_dir,
                                     work <= MAX_ATTRIBUTION)
            except DoodleError as exc:  # the model, not the drawing, is at fault
                raise ApiError(500, str(exc)) from None
        return bitmap, p, reason

    def predict(self, body, top_k: str | None, explain: str | None = None) -> dict:
        """Top guesses and the bitmap for one drawing; with explain=1, the top guess's "why?" too."""
        k = _top_k(top_k, len(self.classes))
        if explain not in (None, "0", "1"):
            raise ApiError(400, f"explain must be 0 or 1, got {explain[:20]!r}")
        drawing = _field(body, "drawing")
        strokes, simplified = check_drawing(drawing, _field(body, "format", "raw"))
        bitmap, p, reason = self._guess(strokes, simplified, explain == "1")
        result = {"top": top_categories(p, self.classes, k), "bitmap": bitmap.tolist()}
        if reason is not None:
            if reason["strokes"] is not None:  # back onto the request's strokes: check_drawing kept those with points
                given = iter(reason["strokes"])
                reason["strokes"] = [next(given) if len(stroke[0]) else None for stroke in drawing]
            result["why"] = {"category": self.classes[reason.pop("class")], **reason}
        return result

    def save(self, body) -> dict:
        """Append the drawing to <save_dir>/<word>.ndjson; `recognized` is whether the model's top guess is `word`.

        Everything that can fail happens before the append, so a save either succeeds and says so or writes nothing.
        """
        word = _field(body, "word")
        if _field(body, "format", "raw") != "raw":
            raise ApiError(400, "save takes raw drawings: strokes [xs, ys, ts] in canvas pixels and milliseconds")
        if not isinstance(word, str) or word not in self.classes:
            raise ApiError(400, f"unknown word {json.dumps(word)[:60]}; this model knows: {', '.join(self.classes)}")
        if (problem := file_name_problem(word)) is not None:  # load_model refuses such names; still, never trust one
            raise ApiError(400, f"the word {show_word(word)} {problem}, so it cannot name a file")
        strokes, _ = check_drawing(_field(body, "drawing"), "raw", need_times=True)
        _, p, _ = self._guess(strokes, False)
        top = top_categories(p, self.classes, 1)
        record = raw_record(word, strokes, recognized=top[0]["category"] == word)
        path = self.save_dir / f"{word}.ndjson"
        result = {"saved": str(path), "key_id": record["key_id"], "recognized": record["recognized"],
                  "word": word, "top": top}
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        json.dumps(result, allow_nan=False)  # the answer must be sendable before anything is written
        try:
            append_line(path, line)
        except OSError as exc:
            raise ApiError(_SAVE_STATUS.get(exc.errno or 0, 500),
                           f"{path}: cannot save ({exc.strerror or exc}); nothing was written") from None
        return result

    # ---- teach mode: a new word from a few drawings (doodle.teach)

    def teach_status(self) -> dict:
        """Whether a word can be taught here; the first call starts computing the known classes' features
        (a few seconds, in the background: requests go on being answered)."""
        with self._prepare_once:
            if self._preparing is None:
                self._preparing = threading.Thread(target=self.teacher.prepare, name="doodle-teach-prepare",
                                                   daemon=True)
                self._preparing.start()
        if self._preparing.is_alive():
            return {"state": "preparing", "reason": None}
        problem = self.teacher.prepare()  # done: returns at once
        return {"state": "unavailable" if problem else "ready", "reason": problem}

    def teach(self, body) -> dict:
        """Save the drawings under the word, teach it, write its run folder and serve the taught model."""
        if not self._teaching.acquire(blocking=False):
            raise ApiError(409, f"already learning {show_word(self._taught_word)}: wait until it is learned, "
                                "then teach the next word")
        try:
            word, drawings = _field(body, "word"), _field(body, "drawings")
            self._taught_word = word if isinstance(word, str) else None
            if (problem := file_name_problem(word)) is not None:
                raise ApiError(400, f"the word {show_word(word)} {problem}, so it cannot name a file")
            if word in self.classes:
                raise ApiError(400, f"this model already knows {show_word(word)}: teach it a word it does not know")
            lo, hi = TEACH_DRAWINGS
            if type(drawings) is not list or not lo <= len(drawings) <= hi:
                raise ApiError(400, f"'drawings' must be a list of {lo} to {hi} drawings of {show_word(word)}")
            checked = []
            for i, drawing in enumerate(drawings, 1):
                try:
                    checked.append(check_drawing(drawing, "raw", need_times=True)[0])
                except ApiError as exc:
                    raise ApiError(exc.status, f"drawing {i}: {exc}") from None
            with self.gate.turn():
                bitmaps = np.stack([self._drawing(strokes, False)[1] for strokes in checked])
            if (problem := self.teacher.prepare()) is not None:  # before anything is saved
                raise ApiError(503, f"cannot teach here: {problem}")
            records = [raw_record(word, strokes, recognized=False) for strokes in checked]
            path = self.save_dir / f"{word}.ndjson"
            try:  # the drawings are kept whatever happens next, as every drawing made here is
                for record in records:
                    append_line(path, (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode())
            except OSError as exc:
                raise ApiError(_SAVE_STATUS.get(exc.errno or 0, 500),
                               f"{path}: cannot save ({exc.strerror or exc}); nothing was taught") from None
            taught = self.teacher.teach(word, bitmaps, path, [r["key_id"] for r in records])
            with self._lock:
                self.model, self.meta, self.run_dir = taught.model, taught.meta, taught.run_dir
                self.classes = list(taught.meta["classes"])
            self.reporter.log(f"taught {word!r} from {len(records)} drawings in {taught.seconds:.1f} s "
                              f"({taught.held_out[0]} of {taught.held_out[1]} recognised when left out): "
                              f"{taught.run_dir}")
            return {"word": word, "run": taught.run_dir.name, "path": str(taught.run_dir),
                    "categories": self.classes, "seconds": taught.seconds, "saved": str(path),
                    "held_out": {"recognised": taught.held_out[0], "drawings": taught.held_out[1]}}
        finally:
            self._taught_word = None
            self._teaching.release()


def _field(body, name: str, default=None):
    """body[name]; a field given as null counts as not given (its default, or a 400 without one)."""
    if not isinstance(body, dict):
        raise ApiError(400, f"body must be a JSON object with a '{name}' field")
    value = body.get(name)
    if value is None and default is None:
        raise ApiError(400, f"missing '{name}'")
    return default if value is None else value


def _top_k(value: str | None, n_classes: int) -> int:
    if value is None:
        return min(5, n_classes)
    try:
        k = int(value)
    except ValueError:
        raise ApiError(400, f"top_k must be a whole number, got {value[:20]!r}") from None
    if k < 1:
        raise ApiError(400, f"top_k must be at least 1, got {k}")
    return min(k, n_classes)


async def read_body(request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` (Content-Length or
    bytes counted while streaming a chunked body), so a huge body is never read whole."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        # Also what keeps other web sites out: a cross-site JSON POST needs a CORS preflight we never grant.
        raise ApiError(415, "send the body as JSON with the header Content-Type: application/json")
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise ApiError(400, f"bad Content-Length {length[:20]!r}")
    if length is not None and int(length) > limit:
        raise ApiError(413, f"body over the {limit:,}-byte limit")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"body over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class _HostGuard:
    """Starlette's TrustedHostMiddleware (Host parsing, IPv6, ports) answering a refusal in the API's own
    form, {"error": ...} with 400, instead of its plain-text body."""

    def __init__(self, app, allowed_hosts: list[str]):
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        self.app, self.allowed = app, list(allowed_hosts)
        self.guard = TrustedHostMiddleware(self._passed, allowed_hosts=self.allowed, www_redirect=False)

    async def _passed(self, scope, receive, send):
        scope["doodle.host_ok"] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope, receive, send):
        from starlette.datastructures import Headers
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            await self.guard(scope, receive, send)
            return

        async def answer(message):
            if scope.get("doodle.host_ok"):
                await send(message)
            elif message["type"] == "http.response.start":  # the guard's refusal: ours instead, body and all
                host = Headers(scope=scope).get("host", "")
                await JSONResponse({"error": f"this server answers only for {', '.join(self.allowed)}, not for "
                                             f"Host {host[:100]!r}"}, status_code=400)(scope, receive, send)

        await self.guard(scope, receive, answer)


def make_app(model_path: str | Path | None = None, save_dir: str | Path = "data/mine",
             allowed_hosts: list[str] | None = None, reporter: Reporter = NULL_REPORTER):
    """The Starlette app: the page (doodle/static) and the JSON API over one loaded model.

    `allowed_hosts` (e.g. ["127.0.0.1", "localhost"]) refuses requests for any other Host header, which
    stops a DNS-rebinding web site from talking to a loopback server.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route

    player = Player(model_path, save_dir, reporter)
    # Served names are fixed when the app starts: a request can only ever name one of these files.
    files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}

    def static(name: str):
        if name not in files:
            raise HTTPException(404, "no such file")
        return FileResponse(files[name], media_type=_TYPES[files[name].suffix], headers=_HEADERS)

    async def index(request):
        return static("index.html")

    async def asset(request):
        return static(request.path_params["name"])

    async def model_info(request):
        return JSONResponse(player.info())

    def timed(fn, limit: int = MAX_BODY):
        async def endpoint(request):
            raw = await read_body(request, limit)
            t0 = time.perf_counter()
            result = await run_in_threadpool(fn, raw, request)  # parsing too: the event loop stays free
            ms = (time.perf_counter() - t0) * 1000
            return JSONResponse(result, headers={"Server-Timing": f"{fn.__name__};dur={ms:.2f}"})
        return endpoint

    def predict(raw, request):
        return player.predict(parse_json(raw), request.query_params.get("top_k"), request.query_params.get("explain"))

    def save(raw, request):
        return player.save(parse_json(raw))

    def teach(raw, request):
        return player.teach(parse_json(raw))

    async def teach_status(request):
        return JSONResponse(await run_in_threadpool(player.teach_status))

    async def api_error(request, exc: ApiError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    async def doodle_error(request, exc: DoodleError):  # a drawing the recipe or the rasterizer refuses
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def memory_error(request, exc: MemoryError):
        return JSONResponse({"error": "the server ran out of memory for this request; try again in a moment"},
                            status_code=503, headers={"Retry-After": "1"})

    async def server_error(request, exc: Exception):  # a bug: still JSON, and uvicorn logs the traceback
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, status_code=500)

    routes = [Route("/", index), Route("/static/{name}", asset), Route("/api/model", model_info),
              Route("/api/predict", timed(predict), methods=["POST"]),
              Route("/api/save", timed(save), methods=["POST"]),
              Route("/api/teach", teach_status, methods=["GET"]),
              Route("/api/teach", timed(teach, MAX_TEACH_BODY), methods=["POST"])]
    middleware = [Middleware(_HostGuard, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    handlers = {ApiError: api_error, DoodleError: doodle_error, HTTPException: http_error,
                MemoryError: memory_error, Exception: server_error}
    # Starlette types each handler as taking any Exception, though it gets only its key's class (a known limit of
    # Starlette's annotations: Kludex/starlette#1142, #2403)
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)  # type: ignore[arg-type]
    app.state.player = player
    return app


# ---------------------------------------------------------------------------------------------
# Serving


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int):
    """A listening socket on host:port (port 0: any free one); DoodleError when that is impossible."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise DoodleError(f"--host {host}: unknown host ({exc.strerror}); use e.g. 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    # Naming the protocol matters: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
    # without it every answer on a kept-alive connection waits ~40 ms for Nagle and the delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise DoodleError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port, "
                          "or --port 0 for any free one") from None
    return sock


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def url_of(sock) -> str:
    """The socket's URL on this machine (loopback when it listens on every interface)."""
    host, port = sock.getsockname()[:2]
    if ipaddress.ip_address(host).is_unspecified:  # 0.0.0.0 opens nothing in some browsers
        host = "::1" if ":" in host else "127.0.0.1"
    return _url(host, port)


_PROBES = {4: ("192.0.2.1", "10.255.255.254", "172.31.255.254", "192.168.255.254"), 6: ("2001:db8::1", "fd00::1")}


def lan_urls(sock) -> list[str]:
    """URLs other devices can open when the socket listens on every interface (0.0.0.0, ::); else none."""
    import socket

    host, port = sock.getsockname()[:2]
    if not ipaddress.ip_address(host).is_unspecified:
        return []
    versions = [4] if sock.family == socket.AF_INET else \
        [6] if sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) else [6, 4]  # "::" takes IPv4 too
    found = set()
    # Connecting a UDP socket sends nothing: it only asks the kernel which of this machine's addresses
    # would reach a destination. One of each private range (and a documentation address for the
    # default route) finds the address on every network this machine has a route to; no DNS involved.
    for version in versions:
        for probe in _PROBES[version]:
            with contextlib.suppress(OSError), socket.socket({4: socket.AF_INET, 6: socket.AF_INET6}[version],
                                                             socket.SOCK_DGRAM) as udp:
                udp.connect((probe, 9))
                found.add(udp.getsockname()[0])
    ips = sorted({ipaddress.ip_address(a.split("%")[0]) for a in found}, key=lambda ip: (ip.version, ip))
    return [_url(str(ip), port) for ip in ips
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)]


def _can_open_browser() -> bool:
    """A graphical browser is likely: without a display, webbrowser would start a text browser in this terminal."""
    import sys

    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _server(app):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an app with uvicorn in a background thread (tests, scripts); yields its base URL, no final slash."""
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise DoodleError(f"the server on {url_of(sock)} did not start")
        yield url_of(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def serve(model_path: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          save_dir: str | Path = "data/mine", open_browser: bool = True, reporter: Reporter = NULL_REPORTER,
          on_ready: Callable[[dict], None] | None = None) -> None:
    """Serve the page until Ctrl-C (which returns normally). `on_ready(info)` gets the URL, the model and
    its categories once the port is open."""
    loopback = is_loopback(host)
    allowed = ["127.0.0.1", "localhost", "::1", "[::1]"] if loopback else None
    app = make_app(model_path, save_dir, allowed_hosts=allowed, reporter=reporter)
    sock = bind(host, port)
    url, lan = url_of(sock), lan_urls(sock)
    if not loopback:
        reporter.log(f"warning: --host {host}: other machines can use the model and save drawings")
    if on_ready is not None:
        on_ready(dict(app.state.player.info(), url=url, lan_urls=lan))
    if open_browser:
        if _can_open_browser():
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        else:
            reporter.log(f"no display to open a browser on: open {url} yourself")
    server = _server(app)
    try:
        server.run(sockets=[sock])  # on Ctrl-C it finishes the requests in flight, then stops
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the signal it caught once it has shut down; stopping is the normal end
    finally:
        sock.close()
