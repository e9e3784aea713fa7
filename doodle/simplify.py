"""Google's raw -> simplified recipe: align and scale into the 0..255 box, resample at 1-unit spacing,
Ramer-Douglas-Peucker at epsilon 2, round. It matches Google's own simplified files bit for bit on 5,526
of the 5,528 shared raw/simplified pairs (`bench/simplify.py`).

A drawing is a list of strokes `[xs, ys(, ts)]`; the recipe trusts that its numbers are finite (the ndjson
records and the play API check them in `doodle.strokes`). Its cost grows with a drawing's ink, the length
of its strokes in the box, so the ink is measured (`ink`) and bounded (MAX_INK) before any of it is spent.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from doodle.errors import DoodleError

RDP_EPSILON = 2.0  # Google's Ramer-Douglas-Peucker tolerance, in 0..255 units
RESAMPLE_STEP = 1.0  # Google resamples every stroke at 1-unit spacing before RDP
# Ink per drawing (units of stroke length in the 0..255 box): the longest of the 13,800 shared drawings runs
# ~36,000, the median ~1,000. At the limit a drawing takes ~0.1 s and ~10 MB to simplify; 20,000 points
# zig-zagging corner to corner would run 7.2 million (3 s, 470 MB).
MAX_INK = 100_000
# Points Ramer-Douglas-Peucker may visit per drawing, summed over its levels: real drawings need at most ~440,000
# (23 levels); a zig-zag of equal peaks inside the ink budget would need ~200 million (4 s).
MAX_RDP_WORK = 4_000_000


class TooMuchWork(DoodleError):
    """A drawing would cost too much to simplify: `index` is its place in the batch, the message says why."""

    def __init__(self, index: int, reason: str):
        super().__init__(reason)
        self.index = index


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


def _rdp_keep(px: np.ndarray, py: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float,
              group: np.ndarray | None = None, budget: float = np.inf) -> np.ndarray:
    """Which points (px, py) survive RDP, for the polylines lo[i]..hi[i] (inclusive) all at once.

    Level by level rather than recursively: every open interval of every stroke is split in the same
    numpy pass, so a batch costs ~depth passes instead of one pass per kept point. The split point is
    the first farthest point (perpendicular distance to the infinite chord line; distance to the end
    point when the chord is degenerate), exactly as a recursive RDP with `argmax` would choose.
    With `group` (the drawing of each polyline), TooMuchWork names the first drawing whose levels have
    visited more than `budget` points: ties can put every split next to an end, ~n levels deep.
    """
    keep = np.zeros(len(px), dtype=bool)
    keep[lo] = True
    keep[hi] = True
    group = np.zeros(len(lo), dtype=np.int64) if group is None else group  # (k,) drawing of each interval
    spent = np.zeros(int(group.max(initial=0)) + 1)  # (D,) points visited so far
    while True:
        inner = hi - lo - 1  # interior points per open interval
        open_ = inner > 0
        lo, hi, inner, group = lo[open_], hi[open_], inner[open_], group[open_]
        if lo.size == 0:
            return keep
        spent += np.bincount(group, inner, minlength=len(spent))
        if spent.max() > budget:
            raise TooMuchWork(int(np.argmax(spent > budget)), f"drawing is too intricate to simplify: "
                              f"Ramer-Douglas-Peucker would visit more than {budget:,.0f} points (real drawings "
                              "need at most ~440,000)")
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
        group = np.concatenate([group[split], group[split]])


def simplify_raw(strokes) -> list[list[list[int]]]:
    """Raw strokes [xs, ys(, ts)] -> Google's simplified strokes [xs, ys] of ints in 0..255.

    Google's recipe: align to the top-left (min 0), scale uniformly so the largest value is 255,
    resample every stroke at 1-pixel spacing, Ramer-Douglas-Peucker with epsilon 2.0, round to ints
    (half to even). Single points (and strokes of one repeated point) come out as two equal points.
    Strokes with no points are dropped.
    """
    return simplify_raw_batch([strokes])[0]


def simplify_raw_batch(drawings, max_ink: float = MAX_INK) -> list[list[list[list[int]]]]:
    """`simplify_raw` for many drawings at once: same results, far fewer numpy calls per drawing.

    The work is bounded per drawing, and TooMuchWork (with the drawing's index) refuses one that would cost
    more: its ink (see `ink`) over `max_ink`, before any resampling (the cost grows with the ink, not with
    the points: 20,000 points zig-zagging across the box would make 7 million samples); or RDP visiting
    more than MAX_RDP_WORK points.
    """
    x, y, sizes, per_drawing = _flatten(drawings)
    if not per_drawing:
        return []
    stroke_start = np.cumsum(sizes) - sizes  # (S,)
    drawing_start, owner = _owners(sizes, per_drawing)
    x, y = fit_box(x, y, drawing_start, owner)
    used = _ink(x, y, stroke_start, sizes, owner, len(per_drawing))  # (D,)
    over = np.flatnonzero(used > max_ink)
    if len(over):
        raise TooMuchWork(int(over[0]), ink_problem(float(used[over[0]]), max_ink))
    qx, qy, lo, hi = _resample(x, y, stroke_start, sizes)  # 0..255
    stroke_drawing = np.repeat(np.arange(len(per_drawing)), per_drawing)  # (S,)
    keep = _rdp_keep(qx, qy, lo, hi, RDP_EPSILON, stroke_drawing, MAX_RDP_WORK)
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


def ink(drawings, fit: bool = True) -> np.ndarray:
    """(D,) each drawing's ink: the length of its strokes in Google's 0..255 box, fitted to it first as the
    recipe does (`fit`, for raw strokes) or as they are (simplified strokes).

    It is what a drawing costs: resampling makes one point per unit of ink, and rasterizing ~size/17 sample
    lines per unit (15 per pixel row), so the budget MAX_INK bounds both, whatever the number of points.
    """
    x, y, sizes, per_drawing = _flatten(drawings)
    if not per_drawing:
        return np.zeros(0)
    drawing_start, owner = _owners(sizes, per_drawing)
    if fit:
        x, y = fit_box(x, y, drawing_start, owner)
    return _ink(x, y, np.cumsum(sizes) - sizes, sizes, owner, len(per_drawing))


def ink_problem(used: float, max_ink: float = MAX_INK) -> str:
    """The one wording of a drawing over the ink budget."""
    return (f"drawing's strokes run {used:,.0f} units through Google's 256-unit box, over the limit of "
            f"{max_ink:,.0f} (the longest real drawings run ~36,000)")


def _flatten(drawings) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Drawings -> (x, y) (P,) of all their points end to end, (S,) points per non-empty stroke, strokes per
    drawing."""
    xs, ys, sizes, per_drawing = [], [], [], []
    for strokes in drawings:
        count = 0
        for i, stroke in enumerate(strokes, 1):
            try:
                x, y = stroke[0], stroke[1]
                n = len(x)
                if len(y) != n:
                    raise DoodleError(f"stroke {i} has {n} x but {len(y)} y values")
            except (TypeError, IndexError, KeyError):
                raise DoodleError(f"stroke {i} is not [xs, ys] or [xs, ys, ts]") from None
            if n:
                xs.append(x)
                ys.append(y)
                sizes.append(n)
                count += 1
        if count == 0:
            raise DoodleError("empty drawing (no points)")
        per_drawing.append(count)
    try:  # one conversion for the whole batch: per-stroke np.asarray calls would dominate
        x = np.array(list(chain.from_iterable(xs)), dtype=np.float64)  # (P,) every raw point
        y = np.array(list(chain.from_iterable(ys)), dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise DoodleError("stroke coordinates must be plain finite numbers") from None
    if x.ndim != 1 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DoodleError("stroke coordinates must be plain finite numbers")
    return x, y, np.array(sizes, dtype=np.int64), per_drawing


def _owners(sizes: np.ndarray, per_drawing: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(D,) first point of each drawing and (P,) the drawing of each point; sizes (S,) are points per stroke."""
    strokes = np.array(per_drawing)  # (D,)
    first_stroke = np.cumsum(strokes) - strokes  # (D,)
    drawing_start = (np.cumsum(sizes) - sizes)[first_stroke]
    return drawing_start, np.repeat(np.arange(len(strokes)), np.add.reduceat(sizes, first_stroke))


def _ink(x: np.ndarray, y: np.ndarray, stroke_start: np.ndarray, sizes: np.ndarray, owner: np.ndarray,
         n: int) -> np.ndarray:
    """(n,) length of each drawing's strokes; x, y (P,) hold the points of all of them end to end."""
    seg = np.sqrt(np.diff(x) ** 2 + np.diff(y) ** 2)  # (P-1,) includes bogus jumps between strokes
    jumps = (stroke_start + sizes - 1)[:-1]  # the last point of every stroke but the final one
    seg[jumps] = 0.0
    return np.bincount(owner[:-1], seg, minlength=n)


def fit_box(x: np.ndarray, y: np.ndarray, drawing_start: np.ndarray,
            owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
