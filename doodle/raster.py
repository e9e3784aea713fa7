"""Strokes -> Google's 28x28 bitmaps: their cairo `vector_to_raster`, redone with numpy in batches.

Geometry (quickdraw-dataset issue #19), fixed by a RasterSpec: the 256-unit source box gets `padding` on
each side plus half a line on each side and is scaled to `size` pixels; each drawing's box [0, max] is
centred in it; every stroke is a polyline `line_width` units wide with round caps and joins, painted
white OVER black.

How pixels are covered the way cairo covers them: every pixel row is cut into SUBROWS horizontal sample
lines (cairo's scan converter uses 15) and a stroke covers an exact x-interval set on each line; a
pixel's coverage is the covered length in it, averaged over its lines. The stroke is cut into chains,
runs of segments whose y never turns back. A chain meets every sample line in one interval (its pen is
convex and it crosses each height once), so that interval's ends are the min and max over the pieces
on the line: each point's pen (a 12-gon at 28x28) and each segment's two straight sides, a side only
on the lines between its tangent points. Those envelopes are two scatters (`np.minimum.at` /
`np.maximum.at`) into one array of chain lines. The chains of a stroke that share a line are merged
exactly: a union of intervals is the union of [lo_(i), hi_(i)] with both ends sorted separately (the
count of intervals over x is the same), so a min/max network sorts them and piece i, from
max(lo_(i), hi_(i-1)) to hi_(i), covers what the pieces before it do not. Pieces are spread over pixel
columns with a difference array; strokes are composited per pixel. doodle.rasterref keeps the slower,
more literal renderer this one is tested against (one capsule per segment per line, merged by a sort).

What mattered against Google's own renders (mean |error| over the 570 shared pairs, in 0..255 units):
cairo's round pen is a regular polygon (12 vertices at 28x28), not a circle: 0.18 -> 0.09; device
coordinates rounded to cairo's 1/256 pixel: 0.093 -> 0.085; exactly 15 sample lines per row at mid-line
heights (16 lines: 0.16, 8: 0.27, 5: 0.47, lines at k/15 instead of (k + 0.5)/15: 1.04, exact areas:
0.135); each stroke composited over the others (summing or taking the max of strokes: 0.7). This
renderer's pen widths are exact where the reference looks them up in a 4,096-step table and skips lines
within 1/1000 pixel of a cap's tip: 0.082. What did not help: rounding each composite step to 8 bits
like an ARGB32 surface, and the exact tangent points cairo adds to caps and joins (0.090).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from doodle import heap
from doodle.errors import DoodleError
from doodle.progress import NULL_REPORTER, Reporter

SOURCE_SIDE = 256.0  # Google's box; simplified coordinates run 0..255
PADDING = 16.0  # Google's padding around the box, in drawing units (vector_to_raster's default)
SUBROWS = 15  # sample lines per pixel row: cairo's tor scan converter (GRID_Y)
TOLERANCE = 0.1  # cairo's default flattening tolerance (device pixels): sets the pen's vertex count
GRID = 256 * SUBROWS  # heights in 1/3840 pixel are exact: cairo's 1/256-pixel points, lines at (k + 0.5) / 15
QBITS = 10  # x in 1/1024 pixel (float32) while lines are merged
MAX_COORD = 1e5  # larger coordinates are surely a mistake, and would overflow float32 pixel maths
CHUNK_PIXELS = 50_000  # drawings per chunk = this / size**2: small enough that the per-line arrays stay in cache
NETWORK = 4  # up to this many chains sharing a stroke row are merged by a min/max network, more by a sort

# Settings that draw no usable bitmap (model.json edited by hand, a mistyped config): see RasterSpec.problem.
MAX_SIZE = 4096  # pixels per side
MAX_LINE_WIDTH = SOURCE_SIDE / 2  # drawing units: a wider pen paints most of the box, whatever is drawn
MIN_BOX = 0.25  # the 256-unit box must span this share of the image side, or every drawing is one small blob
MIN_PEN = 1 / SUBROWS  # pixels: a thinner pen can fall between the sample lines, and its strokes vanish


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class RasterSpec:
    """How strokes become bitmaps: the image side in pixels, pen width and padding in drawing units (256 per box)."""

    size: int = 28
    line_width: float = 16.0
    padding: float = PADDING

    def __post_init__(self) -> None:
        found = RasterSpec.problem(self.size, self.line_width, self.padding)
        if found:
            raise DoodleError(f"raster {found[0]} {found[1]}")
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "line_width", float(self.line_width))
        object.__setattr__(self, "padding", float(self.padding))

    @staticmethod
    def problem(size, line_width, padding) -> tuple[str, str] | None:
        """(field, what is wrong with it) when these settings draw no usable bitmap; None when they do.

        The bounds are relative to the image, so they hold at any size: the pen must be at least 1/15
        pixel wide (thinner strokes fall between the sample lines and vanish; 0 or 5e-324 would divide by
        zero) and at most half the 256-unit box (128: wider, it paints the box white whatever is drawn);
        padding and pen together must leave the box a quarter of the image side (2 * padding + line_width
        <= 768: beyond that every drawing shrinks to the same blob in the middle)."""
        if not _is_int(size) or not 1 <= size <= MAX_SIZE:
            return "size", f"must be a whole number from 1 to {MAX_SIZE} (got {_show(size)})"
        if not _is_number(line_width) or line_width <= 0:
            return "line_width", f"must be a positive number (got {_show(line_width)})"
        if not _is_number(padding) or padding < 0:
            return "padding", f"must be a number >= 0 (got {_show(padding)})"
        if line_width > MAX_LINE_WIDTH:
            return "line_width", (f"must be at most {MAX_LINE_WIDTH:g}, half the 256-unit drawing box "
                                  f"(got {_show(line_width)})")
        margin = (1 / MIN_BOX - 1) * SOURCE_SIDE
        if 2 * padding + line_width > margin:
            return "padding", (f"and line_width must leave the drawing a quarter of the image: 2 * padding + "
                               f"line_width <= {margin:g} (got padding {_show(padding)})")
        if line_width * size < MIN_PEN * (SOURCE_SIDE + 2 * padding + line_width):
            least = MIN_PEN * (SOURCE_SIDE + 2 * padding) / (size - MIN_PEN) if size > MIN_PEN else math.inf
            return "line_width", (f"must draw a pen at least 1/{SUBROWS} pixel wide, >= {least:.3g} at size {size} "
                                  f"(got {_show(line_width)}): thinner strokes fall between the sample lines")
        return None

    @classmethod
    def from_dict(cls, data) -> RasterSpec:
        """model.json's "raster" entry -> spec; a DoodleError naming the key when it is missing or unusable."""
        if not isinstance(data, dict):
            raise DoodleError("'raster' must be a mapping of size, line_width and padding")
        for key in ("size", "line_width", "padding"):
            if key not in data:
                raise DoodleError(f"'raster' lacks '{key}'")
        found = cls.problem(data["size"], data["line_width"], data["padding"])
        if found:
            raise DoodleError(f"'raster' {found[0]} {found[1]}")
        return cls(data["size"], data["line_width"], data["padding"])

    def to_dict(self) -> dict:
        """The spec as model.json keeps it."""
        return {"size": self.size, "line_width": self.line_width, "padding": self.padding}

    @classmethod
    def resolve(cls, spec: RasterSpec | None, size=None, line_width=None, padding=None) -> RasterSpec:
        """A spec, or one made from keyword settings (defaults for the ones not given), never both."""
        if spec is None:
            given = {"size": size, "line_width": line_width, "padding": padding}
            return cls(**{k: v for k, v in given.items() if v is not None})
        if not isinstance(spec, RasterSpec):
            raise TypeError(f"spec must be a RasterSpec, got {type(spec).__name__}; pass size= as a keyword")
        if (size, line_width, padding) != (None, None, None):
            raise TypeError("give a RasterSpec or size/line_width/padding keywords, not both")
        return spec


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    """A finite int or float (NaN, infinities and ints too big for a float are not)."""
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _show(value) -> str:
    """A value for a message, short whatever it is (a 5,000-digit integer from a damaged file)."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python converts to text
        return "a huge number"
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- input


def _strokes_of(drawing, index: int):
    """The stroke list of one drawing (a list of [xs, ys(, ts)] or a dict with a "drawing" key)."""
    if isinstance(drawing, dict):
        if "drawing" not in drawing:
            raise DoodleError(f"drawing {index}: dict has no 'drawing' key; pass the ndjson record or its strokes")
        drawing = drawing["drawing"]
    if not isinstance(drawing, (list, tuple)):
        raise DoodleError(f"drawing {index}: expected a list of strokes [xs, ys], got {type(drawing).__name__}")
    return drawing


def flatten(drawings, base: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drawings -> (xs, ys) of all points, points per stroke, strokes per drawing; `base` numbers errors."""
    strokes = [_strokes_of(d, base + i) for i, d in enumerate(drawings)]
    per_drawing = np.fromiter((len(s) for s in strokes), dtype=np.int64, count=len(strokes))
    flat = list(itertools.chain.from_iterable(strokes))
    try:
        nx = np.fromiter(map(len, map(itemgetter(0), flat)), dtype=np.int64, count=len(flat))
        ny = np.fromiter(map(len, map(itemgetter(1), flat)), dtype=np.int64, count=len(flat))
    except (TypeError, IndexError, KeyError) as err:
        raise _malformed(strokes, base, err) from None
    if not np.array_equal(nx, ny):
        bad = int(np.flatnonzero(nx != ny)[0])
        raise DoodleError(f"{_where(per_drawing, bad, base)}: xs and ys have different lengths "
                          f"({nx[bad]} vs {ny[bad]})")
    try:  # straight from the lists, no intermediate list (a third of the time of np.array(list(...)))
        total = int(nx.sum())
        xs = np.fromiter(itertools.chain.from_iterable(map(itemgetter(0), flat)), np.float64, count=total)
        ys = np.fromiter(itertools.chain.from_iterable(map(itemgetter(1), flat)), np.float64, count=total)
    except (TypeError, ValueError, IndexError, KeyError, OverflowError) as err:
        raise _malformed(strokes, base, err) from None
    drawing_of_stroke = np.repeat(np.arange(len(per_drawing)), per_drawing)
    points = np.bincount(drawing_of_stroke, nx, minlength=len(per_drawing))
    empty = np.flatnonzero(points == 0)
    if len(empty):
        raise DoodleError(f"drawing {base + empty[0]} has no points: nothing to rasterize (drop empty drawings)")
    sane = (np.abs(xs) <= MAX_COORD) & (np.abs(ys) <= MAX_COORD)  # False for nan too
    if not sane.all():
        stroke = int(np.searchsorted(np.cumsum(nx), np.flatnonzero(~sane)[0], side="right"))
        raise DoodleError(f"{_where(per_drawing, stroke, base)}: coordinates must be finite numbers within "
                          f"+-{MAX_COORD:g} (simplified drawings use 0..255)")
    if (nx == 0).any():  # an empty stroke draws nothing; dropping it keeps every stroke >= 1 point
        per_drawing = np.bincount(drawing_of_stroke[nx > 0], minlength=len(per_drawing))
        nx = nx[nx > 0]
    return xs, ys, nx, per_drawing


def _malformed(strokes, base: int, err: Exception) -> DoodleError:
    return DoodleError(f"{_culprit(strokes, base)}: every stroke must be [xs, ys] lists of numbers ({err})")


def _where(per_drawing, stroke: int, base: int) -> str:
    drawing = int(np.searchsorted(np.cumsum(per_drawing), stroke, side="right"))
    return f"drawing {base + drawing}, stroke {stroke - int(np.sum(per_drawing[:drawing]))}"


def _culprit(strokes, base: int) -> str:
    """Where the first malformed stroke is (only called once something failed)."""
    for i, d in enumerate(strokes):
        for j, s in enumerate(d):
            try:
                ok = len(s) >= 2 and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                         for v in itertools.chain(s[0], s[1]))
            except TypeError:
                ok = False
            if not ok:
                return f"drawing {base + i}, stroke {j}"
    return "input"


# ---------------------------------------------------------------- geometry


def geometry(spec: RasterSpec):
    """(scale, shift, radius): device = (user + centring offset + shift) * scale; radius in pixels."""
    total_padding = 2.0 * spec.padding + spec.line_width
    scale = spec.size / (SOURCE_SIDE + total_padding)
    return scale, total_padding / 2.0, spec.line_width / 2.0 * scale


def pen_vertices(radius: float) -> int:
    """How many vertices cairo gives a round pen of this radius in pixels (cairo-pen.c)."""
    if TOLERANCE >= radius:
        return 4
    n = math.ceil(2 * math.pi / math.acos(1 - TOLERANCE / radius))
    return max(4, n + n % 2)


def starts(counts):
    """Start offsets of consecutive groups of the given sizes."""
    out = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


@functools.lru_cache(maxsize=4)
def _pen_table(radius: float) -> tuple[int, np.ndarray]:
    """(lowest, (256, span) float32): the pen's half-width (1/1024 px) on each line it crosses.

    A pen centred at height m/256 px crosses the lines k whose offset n = 256 k + 128 - 15 m (in 1/3840
    px) has |n| < radius * 3840; the first one's offset is lowest + phase (phase 0..255), entry [phase, t]
    is the t-th line from there. The pen is a regular polygon with a vertex at angle 0, so its half-width
    is piecewise linear in the height, exact here. -inf marks lines past the pen (neutral for min/max)."""
    n = pen_vertices(radius)
    angles = 2 * np.pi * np.arange(n // 4 + 1) / n
    angles = angles[angles <= np.pi / 2 + 1e-12]
    reach = radius * GRID
    lowest = math.floor(-reach) + 1
    span = math.ceil((reach - lowest) / 256) + 1
    offset = lowest + np.arange(256)[:, None] + 256 * np.arange(span)[None, :]  # (256, span)
    half = np.interp(np.abs(offset) / GRID, np.sin(angles) * radius, np.cos(angles) * radius) * (1 << QBITS)
    half[np.abs(offset) >= reach] = -np.inf
    return lowest, half.astype(np.float32)


_RAMP = [np.arange(1 << 16)]


def _ramp(n: int) -> np.ndarray:
    """0, 1, .., n-1 (a view of a kept array: chunk after chunk needs the same ones)."""
    if len(_RAMP[0]) < n:
        _RAMP[0] = np.arange(2 * n)
    return _RAMP[0][:n]


_TILES: dict[int, np.ndarray] = {}


def _tile(n: int, reps: int) -> np.ndarray:
    """0, 1, .., n-1 repeated reps times (a view of a kept array)."""
    kept = _TILES.get(n)
    if kept is None or len(kept) < n * reps:
        kept = _TILES[n] = np.tile(np.arange(n), max(2 * reps, 4096))
    return kept[:n * reps]


# ---------------------------------------------------------------- rendering


def _chains(my, nx):
    """Cut strokes into chains whose y never turns back: (first point, last point) of each, segments' chain.

    A point where the direction turns ends one chain and starts the next; level segments join the chain
    they are in; a one-point stroke is a chain of one point."""
    stroke_start = starts(nx)
    last = np.zeros(len(my), bool)
    last[stroke_start + nx - 1] = True
    a = np.flatnonzero(~last)  # segment a -> a + 1
    dy = my[a + 1] - my[a]
    first = np.zeros(len(a), bool)
    first[starts(nx - 1)[nx > 1]] = True
    keep = np.where((dy != 0) | first, np.arange(len(a)), 0)
    np.maximum.accumulate(keep, out=keep)  # each segment's direction is its last non-level one's
    direction = np.sign(dy[keep])
    new = first.copy()
    new[1:] |= direction[1:] != direction[:-1]
    chain_first = np.flatnonzero(new)
    dots = stroke_start[nx == 1]
    p_start = np.concatenate((a[chain_first], dots))
    p_end = np.concatenate((np.append(a[chain_first[1:] - 1], a[-1:]) + 1 if len(a) else a, dots))
    return a, dy, np.cumsum(new) - 1, p_start, p_end


def render_flat(xs, ys, nx, per_drawing, spec: RasterSpec) -> np.ndarray:
    """Flat drawings (see `flatten`) -> (drawings, size, size) uint8."""
    size = spec.size
    scale, shift, r = geometry(spec)
    n_drawings, n_strokes = len(per_drawing), len(nx)
    out = np.zeros((n_drawings, size, size), np.uint8)
    if n_strokes == 0:
        return out
    n_lines, q1 = size * SUBROWS, float(1 << QBITS)

    # Device coordinates in 1/256 pixel, as cairo keeps them. Each drawing's box [0, max] is centred in
    # the 256 box (Google's offset ignores the minimum).
    drawing_of_stroke = np.repeat(np.arange(n_drawings), per_drawing)
    points = np.bincount(drawing_of_stroke, nx, minlength=n_drawings).astype(np.int64)
    first = starts(points)
    off_x = np.repeat((SOURCE_SIDE - np.maximum.reduceat(xs, first)) / 2.0 + shift, points)
    off_y = np.repeat((SOURCE_SIDE - np.maximum.reduceat(ys, first)) / 2.0 + shift, points)
    mx = np.rint((xs + off_x) * (scale * 256))
    my = np.rint((ys + off_y) * (scale * 256))
    a, dyi, seg_chain, p_start, p_end = _chains(my, nx)
    chain_stroke = np.repeat(np.arange(n_strokes), nx)[p_start]

    # Chain lines: the pixel rows each chain's pens reach, 15 lines each, chain after chain.
    pen_count = p_end - p_start + 1
    pen0 = starts(pen_count)
    n_pens = int(pen_count.sum())
    pen_chain = np.repeat(np.arange(len(p_start)), pen_count)
    pen_point = _ramp(n_pens) + np.repeat(p_start - pen0, pen_count)
    lowest, table = _pen_table(r)
    span = table.shape[1]
    m15 = (SUBROWS * my[pen_point]).astype(np.int64)
    k0 = (m15 + (lowest - 128 + 255)) // 256  # first line of each pen
    phase = 256 * k0 + (128 - lowest) - m15
    kmin = np.maximum(np.minimum.reduceat(k0, pen0), 0)
    kmax = np.minimum(np.maximum.reduceat(k0, pen0) + (span - 1), n_lines - 1)
    rmin = kmin // SUBROWS
    c_rows = np.maximum(kmax // SUBROWS - rmin + 1, 0)
    c_q = SUBROWS * (starts(c_rows) - rmin)  # chain line of (chain, line k) = c_q[chain] + k
    n_cl = SUBROWS * int(c_rows.sum())
    # x of each chain line's interval, 1/1024 px; lines after n_cl catch pens of chains off the image
    left = np.full(n_cl + SUBROWS, np.inf, np.float32)
    right = np.full(n_cl + SUBROWS, -np.inf, np.float32)

    # Pens: every point of every chain (a turning point is in both of its chains).
    half = np.take(table, phase, axis=0).ravel()  # (pens * span,)
    x = np.repeat((mx[pen_point] * 4).astype(np.float32), span)
    pen_left, pen_right = x - half, x + half
    line = np.repeat(k0, span) + _tile(span, n_pens)
    if k0.min() < 0 or k0.max() + span > n_lines:  # pens across the image's top or bottom edge
        outside = (line < 0) | (line >= n_lines)
        pen_left[outside], pen_right[outside] = np.inf, -np.inf
        np.clip(line, np.repeat(kmin[pen_chain], span), np.repeat(np.maximum(kmax, kmin)[pen_chain], span), out=line)
    line += np.repeat(c_q[pen_chain], span)
    np.minimum.at(left, line, pen_left)
    np.maximum.at(right, line, pen_right)

    # Sides: the segment moved r along its normal, between its tangent points (y0 + r ux .. y1 + r ux
    # for the left side, y0 - r ux .. for the right; y0 <= y1).
    if len(a):
        flip = dyi < 0
        pa, pb = a + flip, a + ~flip
        x0, y0 = mx[pa] * (1 / 256), my[pa] * (1 / 256)
        dx, dy = mx[pb] * (1 / 256) - x0, np.abs(dyi) * (1 / 256)
        steep = dy > 0  # level segments have no sides between their pens
        inv = r / np.where(steep, np.hypot(dx, dy), 1.0)
        rux, ruy, slope = dx * inv, dy * inv, dx / np.where(steep, dy, 1.0)
        y_from = np.concatenate((y0 + rux, y0 - rux))  # (2 * segments,): left sides, then right
        x_from = np.concatenate((x0 - ruy, x0 + ruy))
        slope, chain = np.concatenate((slope, slope)), np.concatenate((seg_chain, seg_chain))
        k_lo = np.maximum(np.ceil(y_from * SUBROWS - 0.5), kmin[chain]).astype(np.int64)
        k_hi = np.minimum(np.floor((y_from + np.concatenate((dy, dy))) * SUBROWS - 0.5), kmax[chain])
        count = np.where(np.concatenate((steep, steep)), np.maximum(k_hi.astype(np.int64) - k_lo + 1, 0), 0)
        first = starts(count)
        j = _ramp(int(count.sum()))  # line k = k_lo + j - first; x = x_from + slope ((k + 0.5) / 15 - y_from)
        x = np.repeat((x_from + slope * ((k_lo - first + 0.5) / SUBROWS - y_from)) * q1, count)
        x += np.repeat(slope * (q1 / SUBROWS), count) * j
        x = x.astype(np.float32)
        line = np.repeat(c_q[chain] + k_lo - first, count) + j
        n_left = int(count[:len(a)].sum())
        np.minimum.at(left, line[:n_left], x[:n_left])
        np.maximum.at(right, line[n_left:], x[n_left:])

    # Stroke rows ("slots"): the rows each stroke's chains reach.
    n_cr = int(c_rows.sum())
    left, right = left[:n_cl], right[:n_cl]
    np.clip(left, 0, size * q1, out=left)
    np.clip(right, 0, size * q1, out=right)
    np.minimum(left, right, out=left)  # a line nothing covers: an empty interval
    s_rmin = np.full(n_strokes, size, np.int64)
    np.minimum.at(s_rmin, chain_stroke, np.where(c_rows > 0, rmin, size))
    s_rmax = np.full(n_strokes, -1, np.int64)
    np.maximum.at(s_rmax, chain_stroke, np.where(c_rows > 0, rmin + c_rows - 1, -1))
    s_rows = np.maximum(s_rmax - s_rmin + 1, 0)
    slot0 = starts(s_rows)
    n_slots = int(s_rows.sum())
    if n_slots == 0:
        return out
    cr_slot = _ramp(n_cr) + np.repeat(slot0[chain_stroke] - s_rmin[chain_stroke] + rmin - starts(c_rows), c_rows)
    lo, hi, slot = _merge(left.reshape(n_cr, SUBROWS), right.reshape(n_cr, SUBROWS), cr_slot, n_slots)

    # Spread each piece [lo, hi) over columns: steps[slot, column] counts the lines whose piece starts
    # (+1) or ends (-1) there, a running sum over columns counts the lines covering a column whole, and
    # each end adds its fraction of a column. Two sums in one bincount: steps * 2**26 + fractions.
    width, big = size + 2, float(1 << 26)
    cs, ce = np.floor(lo * np.float32(1 / q1)), np.floor(hi * np.float32(1 / q1))
    bins = n_slots * width
    cover = np.bincount(cs.astype(np.intp) + slot * width, (cs * np.float32(q1) - lo).astype(np.float64) + big,
                        minlength=bins)
    cover += np.bincount(ce.astype(np.intp) + slot * width, (hi - ce * np.float32(q1)).astype(np.float64) - big,
                         minlength=bins)
    cover = cover.reshape(n_slots, width)
    steps = np.rint(cover * (1 / big))
    cover -= steps * big
    for col in range(1, size):  # the running sum: np.cumsum costs ~10x more per element here
        steps[:, col] += steps[:, col - 1]
    cover += steps * q1  # (slots, width): coverage * 15 * 1024

    # Composite: each stroke lets 1 - coverage of what is below show through (alpha_out = a + b - a*b).
    slot_stroke = np.repeat(np.arange(n_strokes), s_rows)
    target = drawing_of_stroke[slot_stroke] * size + s_rmin[slot_stroke] + _ramp(n_slots) - slot0[slot_stroke]
    order = np.argsort(target, kind="stable")
    clear = 1.0 - cover[order, :size] * (1.0 / (SUBROWS * q1))  # (slots, size), by output row
    target = target[order]
    bounds = np.flatnonzero(np.diff(target, prepend=-1))
    out.reshape(-1, size)[target[bounds]] = np.rint(255.0 - np.multiply.reduceat(clear, bounds, axis=0) * 255.0)
    return out


def _merge(left, right, cr_slot, n_slots):
    """Chain rows (rows, 15) -> disjoint pieces (lo, hi, slot), one per chain line: each stroke line's union.

    Chain rows are taken by the number of chains in their stroke row: alone, their lines are pieces as
    they are; up to NETWORK, both ends go through a min/max sorting network, line by line; beyond, the
    ends are sorted by (stroke line, x)."""
    chains_in = np.bincount(cr_slot, minlength=n_slots)[cr_slot]
    order = np.argsort(chains_in * n_slots + cr_slot, kind="stable")  # chain rows by (chains, stroke row)
    counts = np.bincount(chains_in)
    lo_out = np.empty(left.shape, np.float32)  # (rows, 15): pieces written in place, group after group
    hi_out = np.empty(left.shape, np.float32)
    at = 0
    for m in np.flatnonzero(counts):
        if m > NETWORK:
            lo_out, hi_out = lo_out.ravel(), hi_out.ravel()
            lo_out[at * SUBROWS:], hi_out[at * SUBROWS:], slot = _merge_sorted(left, right, cr_slot, order[at:])
            return lo_out, hi_out, np.concatenate((np.repeat(cr_slot[order[:at]], SUBROWS), slot))
        rows = order[at:at + counts[m]]
        if m == 1:
            np.take(left, rows, axis=0, out=lo_out[at:at + len(rows)])
            np.take(right, rows, axis=0, out=hi_out[at:at + len(rows)])
            at += len(rows)
            continue
        lo = list(left[rows].reshape(-1, m, SUBROWS).transpose(1, 0, 2))  # m x (stroke rows, 15)
        hi = list(right[rows].reshape(-1, m, SUBROWS).transpose(1, 0, 2))
        for i in range(m - 1):  # bubble network
            for j in range(m - 1 - i):
                lo[j], lo[j + 1] = np.minimum(lo[j], lo[j + 1]), np.maximum(lo[j], lo[j + 1])
                hi[j], hi[j + 1] = np.minimum(hi[j], hi[j + 1]), np.maximum(hi[j], hi[j + 1])
        groups = len(rows) // m
        piece_lo = lo_out[at:at + len(rows)].reshape(m, groups, SUBROWS)  # piece j of stroke line g: [j, g]
        piece_hi = hi_out[at:at + len(rows)].reshape(m, groups, SUBROWS)
        piece_lo[0], piece_hi[0] = lo[0], hi[0]
        for j in range(1, m):
            np.maximum(lo[j], hi[j - 1], out=piece_lo[j])
            piece_hi[j] = hi[j]
        order[at:at + len(rows)] = rows.reshape(groups, m).T.ravel()  # the chain row whose slot each row has
        at += len(rows)
    return lo_out.ravel(), hi_out.ravel(), np.repeat(cr_slot[order], SUBROWS)


def _merge_sorted(left, right, cr_slot, rows):
    """_merge for many chains per stroke row (scribbles): both ends sorted by (stroke line, x), 1/1024 px."""
    line = np.repeat(cr_slot[rows] * SUBROWS, SUBROWS) + _tile(SUBROWS, len(rows))
    lo = (line << 32) | left[rows].ravel().astype(np.int64)
    hi = (line << 32) | right[rows].ravel().astype(np.int64)
    lo.sort()
    hi.sort()
    before = np.empty_like(hi)
    before[0] = -1
    before[1:] = hi[:-1]
    covered = np.where((before >> 32) == (hi >> 32), before & 0xFFFFFFFF, 0)
    return (np.maximum(lo & 0xFFFFFFFF, covered).astype(np.float32), (hi & 0xFFFFFFFF).astype(np.float32),
            (hi >> 32) // SUBROWS)


# ---------------------------------------------------------------- public


def rasterize(drawing, spec: RasterSpec | None = None, *, size: int | None = None, line_width: float | None = None,
              padding: float | None = None) -> np.ndarray:
    """One simplified drawing -> (size, size) uint8, white ink (255) on black (0)."""
    spec = RasterSpec.resolve(spec, size, line_width, padding)
    return render_flat(*flatten([drawing]), spec)[0]


def chunk_size(spec: RasterSpec) -> int:
    """Drawings per chunk: CHUNK_PIXELS of bitmap, so the per-line arrays stay in cache."""
    return max(1, CHUNK_PIXELS // (spec.size * spec.size))


def rasterize_many(drawings, spec: RasterSpec, reporter: Reporter = NULL_REPORTER) -> np.ndarray:
    """Many drawings -> (N, size, size) uint8 in this process, a chunk at a time, with "raster" progress.

    doodle.rasterpool.rasterize_batch is this or, for large jobs, the same on worker processes; what
    renders a few drawings (predict) calls this and never imports the pool's machinery."""
    heap.keep_freed_memory()  # chunk after chunk reuses the same memory (1.5x faster, see doodle.heap)
    n = len(drawings)
    out = np.zeros((n, spec.size, spec.size), np.uint8)
    chunk = chunk_size(spec)
    reporter.start("raster", "rasterizing", total=n, unit="drawings")
    try:
        for i in range(0, n, chunk):
            out[i:i + chunk] = render_flat(*flatten(drawings[i:i + chunk], base=i), spec)
            reporter.update("raster", advance=min(chunk, n - i))
    finally:
        reporter.end("raster")
    return out
