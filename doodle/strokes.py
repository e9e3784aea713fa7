"""Quick, Draw! records -> validated drawings in Google's simplified frame: ndjson files (simplified or raw,
one drawing a line), the checks every drawing passes wherever it comes from, and numpy_bitmap files.

A drawing is a list of strokes `[xs, ys]` of python ints in 0..255, aligned to the top-left corner. Raw
strokes `[xs, ys(, ts)]` (canvas coordinates, milliseconds) go through Google's recipe (`doodle.simplify`).
`check_strokes` is the one validation core: ndjson lines, `doodle predict` on stdin and the play API's
JSON all pass it, so a drawing is refused for the same reason, in the same words, wherever it is sent.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import orjson

from doodle.errors import DoodleError
from doodle.simplify import MAX_INK, TooMuchWork, ink, ink_problem, simplify_raw, simplify_raw_batch

MAX_COORD = 1e9  # canvas coordinates are pixels; anything bigger is corrupt (and would overflow scaling)
RAW_BATCH = 64  # raw drawings simplified together: numpy calls are shared, ~3x faster than one by one
MAX_POINTS = 20_000  # per drawing: real ones have at most ~1,200 (raw); rasterising costs ~10 KB of memory a point
MAX_LINE_BYTES = 8_000_000  # one drawing's line: 20,000 raw points take ~1 MB; longer lines are refused unparsed
MAX_PROBLEMS = 20  # LoadStats keeps the first few bad lines, enough to show a pattern


class _Form(NamedTuple):
    """How one form of drawing is read (see check_strokes)."""

    rows: tuple[int, ...]  # rows a stroke may have
    shape: str  # the same in words
    types: frozenset  # number types
    lo: float
    hi: float


FORMS = {"raw": _Form((2, 3), "[xs, ys] or [xs, ys, ts]", frozenset({int, float}), -MAX_COORD, MAX_COORD),
         "simplified": _Form((2,), "[xs, ys]", frozenset({int}), 0, 255)}
_SEGMENT_INK = 255.0 * math.sqrt(2.0)  # the most ink one segment can hold in the 0..255 box
_STRICT_HINT = "fix the line or run without --strict"
_decode = json.JSONDecoder().decode  # str -> object; json.loads(bytes) would sniff the encoding per line


@dataclass(frozen=True)
class Limits:
    """How much one drawing may hold. Files and the play API share these; the API tightens `strokes`."""

    points: int = MAX_POINTS
    strokes: int | None = None  # files: none of their own (points and ink bound the work)
    ink: float = MAX_INK  # stroke length in the 0..255 box (doodle.simplify.ink): bounds the work, not the points


FILE_LIMITS = Limits()


@dataclass
class LoadStats:
    """What happened while reading one ndjson file; `lines` counts non-blank lines read."""

    path: str
    lines: int = 0
    kept: int = 0
    filtered: int = 0
    skipped: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, reason), first MAX_PROBLEMS

    def add_problem(self, line: int, reason: str) -> None:
        """Count a skipped line and remember why (the first MAX_PROBLEMS only)."""
        self.skipped += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((line, reason))

    def summary(self) -> str:
        """One line: 'cat.ndjson: 998 drawings, 2 bad lines skipped (line 17: ...)'."""
        parts = [f"{Path(self.path).name}: {self.kept} drawing{'' if self.kept == 1 else 's'}"]
        if self.filtered:
            parts.append(f"{self.filtered} filtered out")
        if self.skipped:
            line, reason = self.problems[0]
            bad = f"{self.skipped} bad line{'' if self.skipped == 1 else 's'} skipped"
            parts.append(f"{bad} (line {line}: {reason})")
        return ", ".join(parts)


class BadInput(ValueError):
    """One record or drawing is unusable. The message is the reason, without the place (the caller knows
    it: a file and line, or a request); `too_big` says it broke a limit rather than the format."""

    def __init__(self, reason: str, too_big: bool = False):
        super().__init__(reason)
        self.too_big = too_big


# ---------------------------------------------------------------------------------------------
# Drawings: the one validation core


def check_strokes(drawing, form: str | None = None, limits: Limits = FILE_LIMITS) -> tuple[list, bool]:
    """Validate a drawing; returns (its non-empty strokes, whether they are already simplified). BadInput if not.

    Strokes are `[xs, ys]` or `[xs, ys, ts]` (times are not read here). `form` says how the numbers are read:
    "simplified" wants [xs, ys] integers in 0..255 (Google's simplified files); "raw" takes any canvas
    numbers (to be simplified); None (ndjson files) calls [xs, ys] integers in 0..255 simplified and
    anything else raw. Every drawing must fit `limits`: points, strokes, and ink, the work it would cost.
    """
    if form is not None and (type(form) is not str or form not in FORMS):  # a JSON body may send any value
        raise BadInput(f"format must be 'raw' or 'simplified', got {_short_json(form)}")
    rows_ok, shape, types, lo, hi = FORMS[form or "raw"]
    if type(drawing) is not list:
        raise BadInput("'drawing' is not a list of strokes")
    if limits.strokes is not None and len(drawing) > limits.strokes:
        raise BadInput(f"drawing has {len(drawing):,} strokes, over the limit of {limits.strokes:,}", too_big=True)
    rows: set[int] = set()
    columns: list[list] = []
    points = 0
    for i, stroke in enumerate(drawing, 1):
        if type(stroke) is not list or len(stroke) not in rows_ok:
            raise BadInput(f"stroke {i} is not {shape}")
        xs, ys = stroke[0], stroke[1]
        if type(xs) is not list or type(ys) is not list:
            raise BadInput(f"stroke {i} {'x' if type(xs) is not list else 'y'} is not a list of numbers")
        if len(xs) != len(ys):
            raise BadInput(f"stroke {i} has {len(xs)} x but {len(ys)} y values")
        rows.add(len(stroke))
        columns += (xs, ys)
        points += len(xs)
    if points > limits.points:  # before any numpy work: memory stays proportional to the input
        raise BadInput(f"drawing has {points:,} points, over the limit of {limits.points:,} per drawing (real "
                       "drawings have at most a few thousand)", too_big=True)
    if not points:
        raise BadInput("empty drawing (no points)")
    # One pass over every number of the drawing (C-speed: a 300 MB file holds ~10^8 of them); the
    # per-stroke walk that names the culprit only runs when something is wrong.
    values = list(chain.from_iterable(columns))
    kinds = set(map(type, values))
    try:
        numeric = kinds <= types and (float not in kinds or all(map(math.isfinite, values)))
    except OverflowError:  # an int too big for a float beside the floats: _culprit names it
        numeric = False
    low, high = (min(values), max(values)) if numeric else (0, 0)
    if not numeric or low < lo or high > hi:
        _culprit(columns, lo, hi, integers=types == {int})
    strokes = [stroke for stroke in drawing if stroke[0]]  # empty strokes carry nothing
    simplified = form == "simplified" or (form is None and rows == {2} and kinds == {int} and low >= 0
                                          and high <= 255)
    # The ink is worth measuring only when the points could hold more than the budget (few drawings do).
    if (points - len(strokes)) * _SEGMENT_INK > limits.ink:
        used = float(ink([strokes], fit=not simplified)[0])
        if used > limits.ink:
            raise BadInput(ink_problem(used, limits.ink), too_big=True)
    return strokes, simplified


def check_numbers(values, what: str, lo: float, hi: float, integers: bool = False) -> None:
    """Every value a finite number (an integer with `integers`) in lo..hi; BadInput naming `what` if not."""
    if type(values) is not list:
        raise BadInput(f"{what} is not a list of numbers")
    for v in values:
        if type(v) is not int and (integers or type(v) is not float):  # bool is an int subclass: refused too
            raise BadInput(f"{what} has {_short_json(v)}, not {'an integer' if integers else 'a number'}")
        if type(v) is float and not math.isfinite(v):
            raise BadInput(f"{what} has {_short_json(v)}, not a finite number")
        if not lo <= v <= hi:  # exact for ints of any size (a float conversion would overflow on them)
            raise BadInput(f"{what} has {str(v)[:40]}, outside {lo:g}..{hi:g}")


def _culprit(columns: list, lo: float, hi: float, integers: bool) -> None:
    """Name the first bad number of a drawing (only called once the drawing failed its fast check)."""
    for i, column in enumerate(columns):
        check_numbers(column, f"stroke {i // 2 + 1} {'xy'[i % 2]}", lo, hi, integers)


def _short_json(v) -> str:
    """A value as a short JSON snippet for a message (never the whole of a big one)."""
    if isinstance(v, (list, dict)):
        return "[...]" if isinstance(v, list) else "{...}"
    return json.dumps(v[:40] if isinstance(v, str) else v)[:40]


# ---------------------------------------------------------------------------------------------
# Records


def _check_record(obj) -> dict:
    """Field checks and the drawing's checks; the drawing is not yet simplified."""
    if isinstance(obj, list):  # a bare drawing, e.g. piped into `doodle predict`
        obj = {"drawing": obj}
    if not isinstance(obj, dict):
        raise BadInput(f"expected a JSON object with a 'drawing', got {type(obj).__name__}")
    if "drawing" not in obj:
        raise BadInput("no 'drawing' field")
    word, country = obj.get("word"), obj.get("countrycode")  # optional fields: None when missing
    recognized, key_id = obj.get("recognized"), obj.get("key_id")
    if word is not None and not isinstance(word, str):
        raise BadInput("'word' is not a string")
    if country is not None and not isinstance(country, str):
        raise BadInput("'countrycode' is not a string")
    if recognized is not None and not isinstance(recognized, bool):
        raise BadInput("'recognized' is not true or false")
    if isinstance(key_id, int) and not isinstance(key_id, bool):
        key_id = str(key_id)
    elif key_id is not None and not isinstance(key_id, str):
        raise BadInput("'key_id' is not a string")
    strokes, simplified = check_strokes(obj["drawing"])
    return {"word": word, "countrycode": country, "recognized": recognized, "key_id": key_id,
            "drawing": strokes, "_simplified": simplified}


def parse_drawing(obj, where: str) -> dict:
    """Validate and normalise one decoded record (or a bare list of strokes); DoodleError names `where`.

    Returns {word, countrycode, recognized, key_id, drawing} with the drawing in simplified coordinates.
    """
    try:
        return _finish(_check_record(obj))
    except (BadInput, DoodleError) as err:
        raise DoodleError(f"{where}: {err}") from None


def finish_strokes(strokes: list, simplified: bool) -> list:
    """Checked strokes (`check_strokes`) -> [xs, ys] strokes in Google's simplified frame."""
    return [[st[0], st[1]] for st in strokes] if simplified else simplify_raw(strokes)


def _finish(record: dict) -> dict:
    """Turn a checked record into the public form: simplified drawing, no private keys."""
    record["drawing"] = finish_strokes(record["drawing"], record.pop("_simplified"))
    return record


def _finish_batch(records: list[dict]) -> list[dict]:
    """`_finish` for many records, simplifying their raw drawings in one batch. A record whose drawing would
    cost too much to simplify keeps its reason under "_problem" (the batch is redone without it: rare)."""
    raw = [r for r in records if not r["_simplified"]]
    while raw:
        try:
            simplified = simplify_raw_batch([r["drawing"] for r in raw])
        except TooMuchWork as exc:
            raw.pop(exc.index)["_problem"] = str(exc)
            continue
        for r, drawing in zip(raw, simplified):
            r["drawing"] = drawing
            r["_simplified"] = True
        break
    return [r if "_problem" in r else _finish(r) for r in records]


# ---------------------------------------------------------------------------------------------
# Files


def _open(path) -> tuple[Path, BinaryIO]:
    """Open an ndjson file for binary line reading; DoodleError naming it if that is impossible."""
    path = Path(path)
    if path.is_dir():
        raise DoodleError(f"{path}: is a directory, expected an .ndjson file")
    try:
        return path, open(path, "rb")
    except FileNotFoundError:
        raise DoodleError(f"{path}: no such file; download it first (doodle download) or check the path") from None
    except OSError as err:
        raise DoodleError(f"{path}: cannot read ({err.strerror or err})") from None


def decode_line(text: bytes):
    """One ndjson line (bytes) -> its JSON value; BadInput saying why when it is not JSON.

    orjson is the fast path (~3x json's speed). A line it refuses goes through json too, which names
    NaN, infinities and huge integers as values the record check then rejects with a precise reason;
    either way a line nested too deeply or with a 400-digit number is a bad line, never a crash.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return _decode(text.decode("utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise BadInput(f"malformed JSON ({_json_reason(err)})") from None
    except RecursionError:
        raise BadInput("malformed JSON (nested too deeply)") from None


def _checked_lines(fh) -> Iterator[tuple[int, dict | None, str | None]]:
    """(1-based line, checked record or None, reason or None) for each non-blank line of a binary stream.

    A UTF-8 byte order mark on the first line (files saved by some Windows editors) is ignored.
    """
    for number, text in enumerate(fh, 1):
        if isinstance(text, str):  # a text stream (e.g. io.StringIO): same bytes as from a file
            text = text.encode("utf-8", "surrogateescape")
        if number == 1 and text.startswith(codecs.BOM_UTF8):
            text = text[len(codecs.BOM_UTF8):]
        if not text.strip():
            continue
        if len(text) > MAX_LINE_BYTES:  # decoding it would take ~10x its size in memory
            yield number, None, f"line of {len(text) / 1e6:.1f} MB, over the limit of {MAX_LINE_BYTES / 1e6:.0f} MB " \
                                "for one drawing"
            continue
        try:
            yield number, _check_record(decode_line(text)), None
        except BadInput as err:
            yield number, None, str(err)


def read_records(stream, name: str) -> Iterator[tuple[str, dict | None, str | None]]:
    """("name:line", drawing record or None, error or None) per non-blank line of an ndjson stream
    (binary, or text): what `doodle predict` shows one result for. Records are as `iter_drawings` gives them."""
    for number, record, reason in _checked_lines(stream):
        where = f"{name}:{number}"
        if reason is not None:
            yield where, None, f"{where}: {reason}"
            continue
        assert record is not None  # _checked_lines gives a record whenever it gives no reason
        record["line"] = number
        try:
            yield where, _finish(record), None
        except DoodleError as err:
            yield where, None, f"{where}: {err}"


def iter_drawings(path, *, recognized_only: bool = False, countrycodes: Collection[str] | None = None,
                  limit: int | None = None, strict: bool = False, stats: LoadStats | None = None,
                  stream=None) -> Iterator[dict]:
    """Stream drawings from a simplified or raw ndjson file (or from an open `stream`, which `path` then
    names, e.g. '<stdin>'), one line at a time.

    Each item: {word, countrycode, recognized, key_id, line, drawing} with the drawing in simplified
    coordinates. Bad lines are skipped and counted in `stats` (or raise DoodleError with `strict`);
    `limit` counts kept drawings; lines removed by the filters count as `filtered`. Raw lines are
    simplified RAW_BATCH at a time (same result, twice the speed), so they arrive in small bursts.
    """
    path, fh = (path, contextlib.nullcontext(stream)) if stream is not None else _open(path)
    stats = stats if stats is not None else LoadStats(str(path))
    if isinstance(countrycodes, str):  # "US" means ["US"], not {"U", "S"}
        countrycodes = [countrycodes]
    wanted = None if countrycodes is None else {c.upper() for c in countrycodes}
    pending: list[dict] = []  # checked records, in file order, waiting for their raw batch

    def flush():
        for record in _finish_batch(pending):
            if "_problem" in record:
                if strict:
                    raise DoodleError(f"{path}:{record['line']}: {record['_problem']}; {_STRICT_HINT}")
                stats.add_problem(record["line"], record["_problem"])
                continue
            stats.kept += 1
            yield record
        pending.clear()

    with fh as lines:
        if limit is not None and limit <= 0:
            return
        for number, record, reason in _checked_lines(lines):
            stats.lines += 1
            if reason is not None:
                if strict:
                    yield from flush()  # the good lines before it still arrive first
                    raise DoodleError(f"{path}:{number}: {reason}; {_STRICT_HINT}") from None
                stats.add_problem(number, reason)
                continue
            assert record is not None  # _checked_lines gives a record whenever it gives no reason
            if (recognized_only and record["recognized"] is not True) or (
                    wanted is not None and (record["countrycode"] or "").upper() not in wanted):
                stats.filtered += 1
                continue
            record["line"] = number
            pending.append(record)
            full = limit is not None and stats.kept + len(pending) >= limit
            if full or len(pending) >= RAW_BATCH or (len(pending) == 1 and record["_simplified"]):
                yield from flush()
            if limit is not None and stats.kept >= limit:
                return
        yield from flush()


def _json_reason(err: ValueError) -> str:
    """A short reason for a JSON failure, without the position noise for bytes decoding errors."""
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at column {err.colno}"
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(err).split("\n")[0][:80]


def load_drawings(path, **kwargs) -> tuple[list[dict], LoadStats]:
    """All of `iter_drawings(path, **kwargs)` as a list, with its LoadStats."""
    stats = kwargs.pop("stats", None) or LoadStats(str(path))
    return list(iter_drawings(path, stats=stats, **kwargs)), stats


def load_bitmaps(path, limit: int | None = None) -> np.ndarray:
    """Google numpy_bitmap .npy -> (N, 28, 28) uint8 view (memory-mapped, nothing copied)."""
    path = Path(path)
    if path.is_dir():
        raise DoodleError(f"{path}: is a directory, expected a numpy_bitmap .npy file")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DoodleError(f"{path}: no such file; download it first (doodle download) or check the path") from None
    except (ValueError, OSError, EOFError) as err:
        reason = str(err).split("\n")[0][:120] or type(err).__name__
        raise DoodleError(f"{path}: not a valid .npy file ({reason}); delete it and download it again") from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()  # an .npz archive holds its file open
        raise DoodleError(f"{path}: not a single .npy array; expected Google's numpy_bitmap format")
    if arr.dtype != np.uint8:
        raise DoodleError(f"{path}: dtype {arr.dtype}, expected uint8 (Google's numpy_bitmap format)")
    if arr.ndim == 2 and arr.shape[1] == 784:
        arr = arr.reshape(-1, 28, 28)  # (N, 784) -> (N, 28, 28), still a view of the map
    elif not (arr.ndim == 3 and arr.shape[1:] == (28, 28)):
        raise DoodleError(f"{path}: shape {arr.shape}, expected (N, 784) or (N, 28, 28) uint8 bitmaps")
    return arr if limit is None else arr[:max(limit, 0)]
