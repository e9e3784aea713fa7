"""Stroke loading: Quick, Draw! ndjson (simplified or raw) -> validated drawings in Google's simplified
coordinates, plus Google's raw -> simplified recipe and the numpy_bitmap loader.

A drawing is a list of strokes `[xs, ys]` of python ints in 0..255, aligned to the top-left corner. Raw
strokes `[xs, ys, ts]` (float canvas coordinates, milliseconds) go through `simplify_raw`, which matches
Google's own simplified files bit for bit on 5,526 of the 5,528 shared raw/simplified pairs
(`bench/simplify.py`).
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import orjson

from doodle.errors import DoodleError

RDP_EPSILON = 2.0  # Google's Ramer-Douglas-Peucker tolerance, in 0..255 units
RESAMPLE_STEP = 1.0  # Google resamples every stroke at 1-pixel spacing before RDP
MAX_COORD = 1e9  # canvas coordinates are pixels; anything bigger is corrupt (and would overflow scaling)
RAW_BATCH = 64  # raw drawings simplified together: numpy calls are shared, ~3x faster than one by one
MAX_POINTS = 20_000  # per drawing: real ones have at most ~1,200 (raw); rasterising costs ~10 KB of memory a point
MAX_LINE_BYTES = 8_000_000  # one drawing's line: 20,000 raw points take ~1 MB; longer lines are refused unparsed
MAX_PROBLEMS = 20  # LoadStats keeps the first few bad lines, enough to show a pattern
_STRICT_HINT = "fix the line or run without --strict"
_decode = json.JSONDecoder().decode  # str -> object; json.loads(bytes) would sniff the encoding per line


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


class _BadRecord(ValueError):
    """One record is unusable; the message is the reason, without the place."""


# ---------------------------------------------------------------------------------------------
# Google's raw -> simplified recipe


def rdp(points: np.ndarray, epsilon: float) -> np.ndarray:
    """Ramer-Douglas-Peucker on an (n, 2) array: the kept rows, in order (ends always kept)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"rdp expects an (n, 2) array, got shape {points.shape}")
    xy = points.astype(np.float64)
    if not np.isfinite(xy).all():
        raise ValueError("rdp: points must be finite")
    if len(points) < 3:
        return points.copy()
    last = np.array([len(points) - 1])
    keep = _rdp_keep(xy[:, 0].copy(), xy[:, 1].copy(), np.array([0]), last, float(epsilon))
    return points[keep]


def _rdp_keep(px: np.ndarray, py: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float) -> np.ndarray:
    """Which points (px, py) survive RDP, for the polylines lo[i]..hi[i] (inclusive) all at once.

    Level by level rather than recursively: every open interval of every stroke is split in the same
    numpy pass, so a batch costs ~depth passes instead of one pass per kept point. The split point is
    the first farthest point (perpendicular distance to the infinite chord line; distance to the end
    point when the chord is degenerate), exactly as a recursive RDP with `argmax` would choose.
    """
    keep = np.zeros(len(px), dtype=bool)
    keep[lo] = True
    keep[hi] = True
    while True:
        inner = hi - lo - 1  # interior points per open interval
        open_ = inner > 0
        lo, hi, inner = lo[open_], hi[open_], inner[open_]
        if lo.size == 0:
            return keep
        ax, ay = px[lo], py[lo]  # (k,) chord start
        dx, dy = px[hi] - ax, py[hi] - ay  # (k,) chord vector
        length = np.sqrt(dx ** 2 + dy ** 2)
        first = np.cumsum(inner) - inner  # where each interval's interior starts in the flat arrays
        owner = np.repeat(np.arange(lo.size), inner)  # (m,) interval of each interior point
        idx = np.arange(owner.size) + np.repeat(lo + 1 - first, inner)  # (m,) point index
        sx, sy = px[idx] - ax[owner], py[idx] - ay[owner]  # (m,) relative to the chord start
        dist = np.abs(dx[owner] * sy - dy[owner] * sx)
        degenerate = length == 0
        if degenerate.any():
            flat = degenerate[owner]
            dist[flat] = np.sqrt(sx[flat] ** 2 + sy[flat] ** 2)
            length = np.where(degenerate, 1.0, length)
        dist /= length[owner]
        top = np.maximum.reduceat(dist, first)  # (k,) farthest distance per interval
        hits = np.flatnonzero(dist == top[owner])
        firsts = hits[np.r_[True, owner[hits[1:]] != owner[hits[:-1]]]]  # first farthest per interval
        split = top > eps
        mid = idx[firsts][split]
        keep[mid] = True
        lo, hi = np.concatenate([lo[split], mid]), np.concatenate([mid, hi[split]])


def simplify_raw(strokes) -> list[list[list[int]]]:
    """Raw strokes [xs, ys(, ts)] -> Google's simplified strokes [xs, ys] of ints in 0..255.

    Google's recipe: align to the top-left (min 0), scale uniformly so the largest value is 255,
    resample every stroke at 1-pixel spacing, Ramer-Douglas-Peucker with epsilon 2.0, round to ints
    (half to even). Single points (and strokes of one repeated point) come out as two equal points.
    Strokes with no points are dropped.
    """
    return simplify_raw_batch([strokes])[0]


def simplify_raw_batch(drawings) -> list[list[list[list[int]]]]:
    """`simplify_raw` for many drawings at once: same results, far fewer numpy calls per drawing."""
    xs, ys, sizes, per_drawing = [], [], [], []
    for strokes in drawings:
        count = 0
        for i, stroke in enumerate(strokes, 1):
            try:
                x, y = stroke[0], stroke[1]
                n = len(x)
                if len(y) != n:
                    raise DoodleError(f"stroke {i}: {n} x but {len(y)} y values")
            except (TypeError, IndexError, KeyError):
                raise DoodleError(f"stroke {i}: expected [xs, ys] or [xs, ys, ts]") from None
            if n:
                xs.append(x)
                ys.append(y)
                sizes.append(n)
                count += 1
        if count == 0:
            raise DoodleError("cannot simplify an empty drawing (no points)")
        per_drawing.append(count)
    if not per_drawing:
        return []
    try:  # one conversion for the whole batch: per-stroke np.asarray calls would dominate
        x = np.array(list(chain.from_iterable(xs)), dtype=np.float64)  # (P,) every raw point
        y = np.array(list(chain.from_iterable(ys)), dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise DoodleError("stroke coordinates must be plain numbers") from None
    if x.ndim != 1 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DoodleError("drawing has non-finite or nested coordinates; expected plain finite numbers")
    sizes = np.array(sizes)  # (S,) points per stroke
    stroke_start = np.cumsum(sizes) - sizes  # (S,)
    drawing_start = stroke_start[np.cumsum(per_drawing) - per_drawing]  # (D,) first point of each drawing
    owner = np.repeat(np.arange(len(per_drawing)), np.add.reduceat(sizes, np.cumsum(per_drawing) - per_drawing))
    x, y = fit_box(x, y, drawing_start, owner)
    qx, qy, lo, hi = _resample(x, y, stroke_start, sizes)  # 0..255
    keep = _rdp_keep(qx, qy, lo, hi, RDP_EPSILON)
    kx = np.rint(qx[keep]).astype(np.int64).tolist()  # rint: half to even, like Google's rounding
    ky = np.rint(qy[keep]).astype(np.int64).tolist()
    ends = np.cumsum(keep)[hi].tolist()  # kept points up to each stroke's end
    result, s, begin = [], 0, 0
    for count in per_drawing:
        out = []
        for end in ends[s:s + count]:
            out.append([kx[begin:end], ky[begin:end]])
            begin = end
        result.append(out)
        s += count
    return result


def fit_box(x: np.ndarray, y: np.ndarray, drawing_start: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Align each drawing to the top-left (min 0) and scale it uniformly so its larger side spans 0..255.

    x, y (P,) hold the points of many drawings end to end; drawing_start (D,) is where each begins and
    owner (P,) the drawing of each point.
    """
    x = x - np.minimum.reduceat(x, drawing_start)[owner]
    y = y - np.minimum.reduceat(y, drawing_start)[owner]
    extent = np.maximum(np.maximum.reduceat(x, drawing_start), np.maximum.reduceat(y, drawing_start))  # (D,)
    extent = np.where(extent > 0, extent, np.inf)[owner]  # a lone dot scales to 0, not NaN
    # v * 255 / extent, in that order: it rounds like Google's (the x.5 cases land the same way).
    return x * 255.0 / extent, y * 255.0 / extent


def rdp_keep(px: np.ndarray, py: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float = RDP_EPSILON) -> np.ndarray:
    """Which points survive Ramer-Douglas-Peucker, for the polylines px/py[lo[i]..hi[i]] (inclusive) all at once."""
    return _rdp_keep(px, py, lo, hi, float(eps))


def _resample(px: np.ndarray, py: np.ndarray, start: np.ndarray, size: np.ndarray):
    """Strokes px/py[start[i]:start[i]+size[i]] -> points every RESAMPLE_STEP along each, plus its end.

    Returns the resampled x, y (Q,) and each stroke's first and last index in them. The arithmetic
    mirrors Google's: lengths summed from 0 within each stroke, samples at t = 0, 1, 2, ..., and the
    blend (1-u)*a + u*b (not a + u*(b-a)). All of it matters: drawings are full of exact ties (a flat
    stroke parallel to the chord) and these last-bit differences decide which tied point RDP keeps.
    A single point, or a stroke of one repeated point, becomes two equal points.
    """
    n = len(px)
    seg = np.sqrt(np.diff(px) ** 2 + np.diff(py) ** 2)  # (P-1,) includes bogus jumps between strokes
    last = start + size - 1  # (S,) each stroke's last point
    # Running length at each point, summed left to right from 0 within its stroke (one cumsum per
    # stroke: a global cumsum minus an offset would round differently).
    cum = np.concatenate([piece for a, b in zip(start.tolist(), last.tolist())
                          for piece in (np.zeros(1), np.cumsum(seg[a:b]))])  # (P,)
    inside = np.ones(n, dtype=bool)
    inside[last] = False  # point g has a segment g -> g+1 of its own stroke
    seg_len = np.zeros(n)
    seg_len[inside] = seg[inside[:-1]]
    # Samples t = 0, 1, ... < total land on segment g when cum[g] <= t < cum[g+1]: there are
    # ceil(cum[g+1]) - ceil(cum[g]) of them (none on zero-length segments).
    ceil = np.ceil(cum)
    count = np.zeros(n, dtype=np.int64)
    count[inside] = (ceil[1:] - ceil[:-1])[inside[:-1]]
    dots = start[cum[last] == 0]
    count[dots] = 1  # a dot keeps its first point (u = 0), then its end
    stroke = np.repeat(np.arange(len(start)), size)  # (P,) stroke of each point
    g = np.repeat(np.arange(n), count)  # (T,) segment of each sample
    samples = np.bincount(stroke[g], minlength=len(start))  # (S,)
    t = np.arange(g.size) - np.repeat(np.cumsum(samples) - samples, samples)  # 0, 1, 2, ... per stroke
    u = (t - cum[g]) / np.where(seg_len[g] > 0, seg_len[g], 1.0)
    h = np.where(inside[g], g + 1, g)
    # Each stroke's samples, then its exact end point (it anchors RDP's first chord).
    out_first = np.cumsum(samples + 1) - (samples + 1)
    out_last = out_first + samples
    pos = np.arange(g.size) + np.repeat(np.arange(len(start)), samples)  # one end row per earlier stroke
    qx, qy = np.empty(g.size + len(start)), np.empty(g.size + len(start))
    qx[pos] = (1.0 - u) * px[g] + u * px[h]
    qy[pos] = (1.0 - u) * py[g] + u * py[h]
    qx[out_last], qy[out_last] = px[last], py[last]
    return qx, qy, out_first, out_last


# ---------------------------------------------------------------------------------------------
# Records


def _check_numbers(values: list, what: str) -> None:
    """Find what is wrong with one coordinate list (only called once the drawing failed its check)."""
    for v in values:
        if type(v) not in (int, float):
            raise _BadRecord(f"{what} has a non-numeric value {_short_json(v)}")
        if type(v) is float and not math.isfinite(v):
            raise _BadRecord(f"{what} has a non-finite number (NaN or infinity)")
        if abs(v) > MAX_COORD:  # exact for ints of any size (math.isfinite would overflow on them)
            raise _BadRecord(f"{what} has a coordinate of magnitude over {MAX_COORD:.0e}")


def _short_json(v) -> str:
    """A value as a short JSON snippet for a message (never the whole of a big one)."""
    if isinstance(v, (list, dict)):
        return "[...]" if isinstance(v, list) else "{...}"
    return json.dumps(v[:40] if isinstance(v, str) else v)[:40]


def _check_record(obj) -> dict:
    """Field checks; the drawing is checked for shape and numbers but not yet simplified."""
    if isinstance(obj, list):  # a bare drawing, e.g. piped into `doodle predict`
        obj = {"drawing": obj}
    if not isinstance(obj, dict):
        raise _BadRecord(f"expected a JSON object with a 'drawing', got {type(obj).__name__}")
    if "drawing" not in obj:
        raise _BadRecord("no 'drawing' field")
    word, country = obj.get("word"), obj.get("countrycode")  # optional fields: None when missing
    recognized, key_id = obj.get("recognized"), obj.get("key_id")
    if word is not None and not isinstance(word, str):
        raise _BadRecord("'word' is not a string")
    if country is not None and not isinstance(country, str):
        raise _BadRecord("'countrycode' is not a string")
    if recognized is not None and not isinstance(recognized, bool):
        raise _BadRecord("'recognized' is not true or false")
    if isinstance(key_id, int) and not isinstance(key_id, bool):
        key_id = str(key_id)
    elif key_id is not None and not isinstance(key_id, str):
        raise _BadRecord("'key_id' is not a string")
    drawing = obj["drawing"]
    if not isinstance(drawing, list):
        raise _BadRecord("'drawing' is not a list of strokes")
    rows, columns, points = set(), [], 0
    for i, stroke in enumerate(drawing, 1):
        if type(stroke) is not list or len(stroke) not in (2, 3):
            raise _BadRecord(f"stroke {i} is not [xs, ys] or [xs, ys, ts]")
        xs, ys = stroke[0], stroke[1]
        if type(xs) is not list or type(ys) is not list:
            raise _BadRecord(f"stroke {i} {'x' if type(xs) is not list else 'y'} is not a list of numbers")
        if len(xs) != len(ys):
            raise _BadRecord(f"stroke {i} has {len(xs)} x but {len(ys)} y values")
        rows.add(len(stroke))
        columns += (xs, ys)
        points += len(xs)
    if points > MAX_POINTS:  # before any numpy work: memory stays proportional to the line
        raise _BadRecord(f"drawing has {points:,} points, over the limit of {MAX_POINTS:,} per drawing "
                         "(real drawings have at most a few thousand)")
    # One pass over every number of the drawing (C-speed: a 300 MB file holds ~10^8 of them); the
    # per-stroke walk that names the culprit only runs when something is wrong.
    values = list(chain.from_iterable(columns))
    if not values:
        raise _BadRecord("empty drawing (no points)")
    kinds = set(map(type, values))
    try:
        numeric = kinds <= {int, float} and (float not in kinds or all(map(math.isfinite, values)))
    except OverflowError:  # an int too big for a float beside the floats: _check_numbers names it
        numeric = False
    low, high = (min(values), max(values)) if numeric else (0, 0)
    if not numeric or low < -MAX_COORD or high > MAX_COORD:
        for i, column in enumerate(columns):
            _check_numbers(column, f"stroke {i // 2 + 1} {'xy'[i % 2]}")
    # Raw strokes carry times; 2-row strokes with floats or values outside 0..255 are raw too
    # (canvas coordinates without times), so they get aligned and scaled like Google's.
    simplified = rows == {2} and kinds == {int} and low >= 0 and high <= 255
    return {"word": word, "countrycode": country, "recognized": recognized, "key_id": key_id,
            "drawing": drawing, "_simplified": simplified}


def parse_drawing(obj, where: str) -> dict:
    """Validate and normalise one decoded record (or a bare list of strokes); DoodleError names `where`.

    Returns {word, countrycode, recognized, key_id, drawing} with the drawing in simplified coordinates.
    """
    try:
        record = _check_record(obj)
    except _BadRecord as err:
        raise DoodleError(f"{where}: {err}") from None
    return _finish(record)


def _finish(record: dict) -> dict:
    """Turn a checked record into the public form: simplified drawing, no private keys."""
    if record.pop("_simplified"):
        record["drawing"] = [[st[0], st[1]] for st in record["drawing"] if st[0]]  # empty strokes carry nothing
    else:
        record["drawing"] = simplify_raw(record["drawing"])
    return record


def _finish_batch(records: list[dict]) -> list[dict]:
    """`_finish` for many records, simplifying their raw drawings in one batch."""
    raw = [r for r in records if not r["_simplified"]]
    for r, drawing in zip(raw, simplify_raw_batch([r["drawing"] for r in raw])):
        r["drawing"] = drawing
        r["_simplified"] = True
    return [_finish(r) for r in records]


# ---------------------------------------------------------------------------------------------
# Files


def _open(path) -> tuple[Path, object]:
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
    """One ndjson line (bytes) -> its JSON value; _BadRecord saying why when it is not JSON.

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
        raise _BadRecord(f"malformed JSON ({_json_reason(err)})") from None
    except RecursionError:
        raise _BadRecord("malformed JSON (nested too deeply)") from None


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
        except _BadRecord as err:
            yield number, None, str(err)


def read_records(stream, name: str) -> Iterator[tuple[str, dict | None, str | None]]:
    """("name:line", drawing record or None, error or None) per non-blank line of an ndjson stream
    (binary, or text): what `doodle predict` shows one result for. Drawings are in simplified coordinates."""
    for number, record, reason in _checked_lines(stream):
        where = f"{name}:{number}"
        if reason is not None:
            yield where, None, f"{where}: {reason}"
            continue
        try:
            yield where, _finish(record), None
        except DoodleError as err:
            yield where, None, f"{where}: {err}"


def iter_drawings(path, *, recognized_only: bool = False, countrycodes: Collection[str] | None = None,
                  limit: int | None = None, strict: bool = False,
                  stats: LoadStats | None = None) -> Iterator[dict]:
    """Stream drawings from a simplified or raw ndjson file, one line at a time.

    Each item: {word, countrycode, recognized, key_id, line, drawing} with the drawing in simplified
    coordinates. Bad lines are skipped and counted in `stats` (or raise DoodleError with `strict`);
    `limit` counts kept drawings; lines removed by the filters count as `filtered`. Raw lines are
    simplified RAW_BATCH at a time (same result, twice the speed), so they arrive in small bursts.
    """
    path, fh = _open(path)
    stats = stats if stats is not None else LoadStats(str(path))
    if isinstance(countrycodes, str):  # "US" means ["US"], not {"U", "S"}
        countrycodes = [countrycodes]
    wanted = None if countrycodes is None else {c.upper() for c in countrycodes}
    pending: list[dict] = []  # checked records, in file order, waiting for their raw batch

    def flush():
        for record in _finish_batch(pending):
            stats.kept += 1
            yield record
        pending.clear()

    with fh:
        if limit is not None and limit <= 0:
            return
        for number, record, reason in _checked_lines(fh):
            stats.lines += 1
            if reason is not None:
                if strict:
                    yield from flush()  # the good lines before it still arrive first
                    raise DoodleError(f"{path}:{number}: {reason}; {_STRICT_HINT}") from None
                stats.add_problem(number, reason)
                continue
            if (recognized_only and record["recognized"] is not True) or (
                    wanted is not None and (record["countrycode"] or "").upper() not in wanted):
                stats.filtered += 1
                continue
            record["line"] = number
            pending.append(record)
            full = limit is not None and stats.kept + len(pending) >= limit
            if full or len(pending) >= RAW_BATCH or (len(pending) == 1 and record["_simplified"]):
                yield from flush()
            if full:
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
