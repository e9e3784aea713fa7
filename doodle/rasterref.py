"""The reference renderer: doodle's first imitation of cairo, one capsule per segment and sample line.

doodle itself draws with doodle.raster; this slower, more literal renderer stays as the yardstick the
tests and bench/raster.py hold the new one against (same spec, same flat input, bitmaps within a pixel
level or so). Its measured fidelity to Google's renders is 0.085/255 mean over the 570 shared pairs.

How it covers pixels: every pixel row is cut into SUBROWS horizontal sample lines; on each line a capsule
(one segment grown by the pen) covers one x-interval. The intervals of one stroke are merged with a sort
(a stroke is the union of its capsules, composited over the strokes before it) and spread over pixel
columns with a difference array.
"""

from __future__ import annotations

import functools

import numpy as np

from doodle.raster import SOURCE_SIDE, SUBROWS, RasterSpec, geometry, pen_vertices, starts

FIXED = 256.0  # cairo rounds device coordinates to 1/256 pixel
QBITS = 10  # interval ends are kept in 1/1024 pixel
PROFILE_STEPS = 4096  # resolution of the pen half-width table (error < 1e-3 pixel)
EDGE = 1e-3  # pixels: lines closer than this to a cap's very top or bottom are skipped (float32 safety)


@functools.lru_cache(maxsize=16)
def _pen_profile(radius: float) -> np.ndarray:
    """Half-width of cairo's polygonal pen, (PROFILE_STEPS + 1,) float32, entry i at height (i + 0.5) / STEPS.

    Heights are in units of the radius. The pen has vertices at angles 2*pi*i/n, so its half-width is
    piecewise linear between them. The last entry is 0: lines beyond the pen's top get an empty interval.
    """
    n = pen_vertices(radius)
    angles = 2 * np.pi * np.arange(n // 4 + 1) / n
    angles = angles[angles <= np.pi / 2 + 1e-12]
    heights, widths = np.sin(angles), np.cos(angles)
    t = (np.arange(PROFILE_STEPS) + 0.5) / PROFILE_STEPS
    half = np.interp(t, heights, widths, right=0.0) * radius
    return np.append(half, 0.0).astype(np.float32)


def _segments(xs, ys, nx, per_drawing, scale: float, shift: float):
    """Flat points -> segments in device pixels, in stroke order: x0, y0, x1, y1 (y0 <= y1), stroke index."""
    n_drawings, n_strokes = len(per_drawing), len(nx)
    points = np.bincount(np.repeat(np.arange(n_drawings), per_drawing), nx, minlength=n_drawings).astype(np.int64)
    first = starts(points)
    # Centre each drawing's box [0, max] in the 256 box (Google's offset ignores the minimum). cairo keeps
    # device coordinates in 24.8 fixed point; half a quantum more makes the int64 cast of interval ends
    # in _union round rather than truncate.
    off_x = np.repeat((SOURCE_SIDE - np.maximum.reduceat(xs, first)) / 2.0 + shift, points)
    off_y = np.repeat((SOURCE_SIDE - np.maximum.reduceat(ys, first)) / 2.0 + shift, points)
    X = np.rint((xs + off_x) * (scale * FIXED)) / FIXED + 0.5 / (1 << QBITS)
    Y = np.rint((ys + off_y) * (scale * FIXED)) / FIXED
    # Each point joins the next one of its stroke; a one-point stroke is a zero-length segment, which the
    # round caps turn into a dot.
    last = np.zeros(len(xs), bool)
    last[np.cumsum(nx) - 1] = True
    single = np.zeros(len(xs), bool)
    single[starts(nx)[nx == 1]] = True
    a = np.flatnonzero(~last | single)
    b = a + ~last[a]
    stroke = np.repeat(np.arange(n_strokes), nx)[a]
    flip = Y[a] > Y[b]
    a, b = np.where(flip, b, a), np.where(flip, a, b)
    return X[a], Y[a], X[b], Y[b], stroke


def _intervals(x0, y0, x1, y1, k_lo, count, r: float, size: int):
    """Where each sample line crosses each capsule: (lo, hi) in 1/quantum pixel, (lines,) float32 each.

    A capsule's left boundary, bottom to top, is the first pen's arc up to height y0 + r*ux, a straight
    side, then the second pen's arc; the right boundary likewise with y0 - r*ux. Per-line maths is
    float32 in heights relative to the segment's ends, so it stays exact enough at any size.
    """
    quantum = 1 << QBITS
    dx, dy = x1 - x0, y1 - y0
    length = np.hypot(dx, dy)
    dot = length == 0
    safe = np.where(dot, 1.0, length)
    ux = np.where(dot, 0.0, dx / safe)
    uy = np.where(dot, 1.0, dy / safe)
    slope = np.where(uy > 1e-9, ux / np.maximum(uy, 1e-9), 0.0)  # dx/dy along the sides

    def per_line(v):
        return np.repeat(v.astype(np.float32), count)

    j = np.arange(int(count.sum()), dtype=np.int32)
    j -= np.repeat(starts(count).astype(np.int32), count)  # line index within its segment
    d0 = j.astype(np.float32) * np.float32(1.0 / SUBROWS) + per_line((k_lo + 0.5) / SUBROWS - y0)
    del j
    d1 = d0 - per_line(dy)
    profile = _pen_profile(r) * np.float32(quantum)
    inv, top = np.float32(PROFILE_STEPS / r), np.float32(PROFILE_STEPS)
    h0 = profile[np.minimum(np.abs(d0) * inv, top).astype(np.int32)]
    h1 = profile[np.minimum(np.abs(d1) * inv, top).astype(np.int32)]
    X0, X1, rux = per_line(x0 * quantum), per_line(x1 * quantum), per_line(r * ux)
    t = per_line(slope * quantum) * d0
    side = per_line((x0 - r * uy - slope * r * ux) * quantum)
    side += t
    lo = np.where(d0 < rux, X0 - h0, np.where(d1 > rux, X1 - h1, side))
    side = per_line((x0 + r * uy + slope * r * ux) * quantum)
    side += t
    np.negative(rux, out=rux)
    hi = np.where(d0 < rux, X0 + h0, np.where(d1 > rux, X1 + h1, side))
    if (np.minimum(x0, x1) < r).any() or (np.maximum(x0, x1) > size - r).any():
        np.clip(lo, 0, size * quantum, out=lo)
        np.clip(hi, 0, size * quantum, out=hi)
    np.maximum(hi, lo, out=hi)
    return lo, hi


def _union(group, lo, hi, xbits: int):
    """Merge the intervals of each group: (group << xbits | start, group << xbits | end) per run, int64.

    (group, start, end) are packed into one int64 and sorted; a running max of the ends finds where a
    new run begins. Groups never mix: they sit in the higher bits.
    """
    mask = (1 << xbits) - 1
    packed = (group << (2 * xbits)) | (lo.astype(np.int64) << xbits) | hi.astype(np.int64)
    # Each segment's lines arrive in ascending groups, so the array is a few thousand sorted runs: the
    # stable sort (timsort for int64) merges them about 6x faster than quicksort (the result is the same).
    packed.sort(kind="stable")
    start = packed >> xbits
    end = (start & ~mask) | (packed & mask)
    del packed
    np.maximum.accumulate(end, out=end)
    new = np.empty(len(start), bool)
    new[0] = True
    np.greater(start[1:], end[:-1], out=new[1:])
    first = np.flatnonzero(new)
    return start[first], end[np.append(first[1:] - 1, len(end) - 1)]


def render_flat(xs, ys, nx, per_drawing, spec: RasterSpec) -> np.ndarray:
    """Flat drawings (see doodle.raster.flatten) -> (drawings, size, size) uint8."""
    (scale, shift, r), size = geometry(spec), spec.size
    out = np.zeros((len(per_drawing), size, size), np.uint8)
    if len(nx) == 0:
        return out
    n_drawings, n_strokes = len(per_drawing), len(nx)
    x0, y0, x1, y1, seg_stroke = _segments(xs, ys, nx, per_drawing, scale, shift)

    # Sample lines y = (k + 0.5) / SUBROWS that cross each capsule (at k / SUBROWS: 1.0/255 worse).
    n_lines = size * SUBROWS
    k_lo = np.clip(np.ceil((y0 - r + EDGE) * SUBROWS - 0.5), 0, n_lines).astype(np.int64)
    k_hi = np.clip(np.floor((y1 + r - EDGE) * SUBROWS - 0.5), -1, n_lines - 1).astype(np.int64)
    count = np.maximum(k_hi - k_lo + 1, 0)

    # Slots: the pixel rows each stroke touches, numbered stroke by stroke. A sample line's group,
    # slot * SUBROWS + line within the row, is what its intervals are merged within.
    seg_first = starts(np.bincount(seg_stroke, minlength=n_strokes))
    hit = count > 0
    k_min = np.minimum.reduceat(np.where(hit, k_lo, n_lines), seg_first)
    k_max = np.maximum.reduceat(np.where(hit, k_hi, -1), seg_first)
    row0 = k_min // SUBROWS
    rows = np.where(k_max >= k_min, k_max // SUBROWS - row0 + 1, 0)  # (strokes,)
    slot0 = starts(rows)
    n_slots = int(rows.sum())
    if n_slots == 0:
        return out
    lo, hi = _intervals(x0, y0, x1, y1, k_lo, count, r, size)  # (lines,) each
    group = np.repeat(((slot0 - row0) * SUBROWS)[seg_stroke] + k_lo, count)
    group += np.arange(len(group)) - np.repeat(starts(count), count)
    quantum = 1 << QBITS
    xbits = (size * quantum).bit_length()
    run_start, run_end = _union(group, lo, hi, xbits)  # (runs,) each
    del group, lo, hi

    # Slots renumbered by (drawing, row, stroke), so the strokes covering one output row sit together.
    drawing_of_stroke = np.repeat(np.arange(n_drawings), per_drawing)
    slot_stroke = np.repeat(np.arange(n_strokes), rows)
    target = drawing_of_stroke[slot_stroke] * size + row0[slot_stroke] + np.arange(n_slots) - slot0[slot_stroke]
    order = np.lexsort((slot_stroke, target))
    rank = np.empty(n_slots, np.int64)
    rank[order] = np.arange(n_slots)

    # Spread each run [s, e) over columns: coverage_j = clip(e - j, 0, 1) - clip(s - j, 0, 1), which is
    # the cumsum of -1 at floor(e) and +1 at floor(s), plus each end's fractional part at its own column;
    # each sample line weighs 1 / SUBROWS of its pixel row.
    mask = (1 << xbits) - 1
    width = size + 1
    cell_row = rank[(run_start >> xbits) // SUBROWS] * width
    q = np.concatenate((run_end & mask, run_start & mask))
    cells = np.concatenate((cell_row, cell_row)) + (q >> QBITS)
    sign = np.repeat(np.array([1.0 / SUBROWS, -1.0 / SUBROWS]), len(cell_row))
    bins = n_slots * width
    cover = np.bincount(cells, -sign, minlength=bins).reshape(n_slots, width)
    np.cumsum(cover, axis=1, out=cover)
    sign *= 1.0 / quantum
    cover += np.bincount(cells, sign * (q & (quantum - 1)), minlength=bins).reshape(n_slots, width)

    # Composite: each stroke lets 1 - coverage of what is below show through (alpha_out = a + b - a*b).
    clear = 1.0 - cover[:, :size]  # (slots, size), in rank order
    target = target[order]
    bounds = np.flatnonzero(np.diff(target, prepend=-1))
    through = np.multiply.reduceat(clear, bounds, axis=0)  # (output rows touched, size)
    out.reshape(-1, size)[target[bounds]] = np.rint(255.0 - through * 255.0)
    return out
