"""Built-in offline data: the eight simple-shape Quick, Draw! categories, drawn procedurally.

Without network a new user still sees the whole pipeline work, and tests get fast deterministic data.
Each drawing imitates how people draw the shape in Quick, Draw! (measured on the shared sample: stroke
counts, start points, directions, aspect, unclosed or overshooting outlines, shapes abandoned half-way
because the game recognised them early), then goes through Google's simplification (align top-left,
scale to 255, Ramer-Douglas-Peucker with epsilon 2.0), so records look like Google's simplified ndjson.
`bench/synthetic.py` checks how well a model trained only on these recognises the real drawings.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable, Iterable

import ndjson
import numpy as np

from doodle.categories import SYNTHETIC_SHAPES as SHAPES
from doodle.categories import local_path
from doodle.errors import DoodleError
from doodle.fsutil import atomic_path
from doodle.progress import NULL_REPORTER, Reporter
from doodle.simplify import fit_box, rdp_keep

_STEP = 4.0  # spacing of the dense pen path (Google resamples at 1; with RDP at eps 2 coarser hardly matters)
_R = 100.0  # drawings are made about 2 * _R units wide, close to the final 0..255 scale
_CHUNK = 512  # drawings simplified together: one vectorised RDP pass per chunk
_EPOCH = np.datetime64("2017-01-01T00:00:00", "us")  # Quick, Draw!'s data was collected in 2017

Strokes = list[np.ndarray]  # each (m, 2) float pen positions, x right, y down


# ---------------------------------------------------------------------------------------------
# Pen-path helpers


def _trace(keys: np.ndarray, bows: np.ndarray) -> np.ndarray:
    """Dense path through key points (k, 2); side j bows sideways by bows[j] times its length -> (m, 2)."""
    d = keys[1:] - keys[:-1]  # (k-1, 2)
    counts = np.maximum(np.ceil(np.hypot(d[:, 0], d[:, 1]) / _STEP).astype(np.int64), 1)
    side = np.repeat(np.arange(len(d)), counts)
    t = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) / counts[side]
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)  # (k-1, 2), as long as the side: bow is relative
    pts = keys[side] + t[:, None] * d[side] + (np.sin(np.pi * t) * bows[side])[:, None] * normal[side]
    return np.vstack([pts, keys[-1:]])


def _smooth(path: np.ndarray, span: float) -> np.ndarray:
    """Round corners the way a quick hand does: moving average over `span` units of path, ends kept in place."""
    width = int(span / _STEP) | 1  # odd, so the average stays centred
    if width < 3 or len(path) < width:
        return path
    kernel = np.full(width, 1.0 / width)
    pad = width // 2
    padded = np.pad(path, ((pad, pad), (0, 0)), mode="edge")
    out = np.stack([np.convolve(padded[:, 0], kernel, "valid"), np.convolve(padded[:, 1], kernel, "valid")], 1)
    out[0], out[-1] = path[0], path[-1]
    return out


def _wobble_params(rng: np.random.Generator, warp: float, tremor: float) -> np.ndarray:
    """Random wobble of one drawing, as a (21,) row for `_wobble` (which applies many drawings' rows at once).

    warp: three plane waves of displacement over the page (wavelength 150-500 units), so sides bow and
    wobble together and separate strokes still meet; tremor: a small wiggle along the pen's path
    (wavelength 40-100 units) that makes RDP keep a few extra points, as it does for real hands.
    """
    k = rng.normal(size=(3, 2))
    k *= (2 * np.pi / rng.uniform(150.0, 500.0, size=3) / np.hypot(k[:, 0], k[:, 1]))[:, None]  # (3, 2)
    return np.concatenate([
        k.ravel(),  # [0:6] wave vectors
        rng.uniform(0, 2 * np.pi, size=3),  # [6:9] their phases
        rng.normal(0.0, warp, size=6),  # [9:15] displacement (x, y) of each wave
        rng.uniform(2 * np.pi / 100, 2 * np.pi / 40, size=2),  # [15:17] tremor frequency in x, y
        rng.uniform(0, 2 * np.pi, size=2),  # [17:19] tremor phase
        rng.normal(0.0, tremor, size=2),  # [19:21] tremor amplitude
    ])


def _wobble(pts: np.ndarray, did: np.ndarray, pos: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Apply each drawing's wobble to its points: pts (P, 2), did (P,) drawing, pos (P,) index along it."""
    p = params[did]  # (P, 21)
    k = p[:, 0:6].reshape(-1, 3, 2)
    waves = np.sin(np.einsum("pj,pij->pi", pts, k) + p[:, 6:9])  # (P, 3)
    out = pts + np.einsum("pi,pij->pj", waves, p[:, 9:15].reshape(-1, 3, 2))
    out += p[:, 19:21] * np.sin(p[:, 15:17] * (pos * _STEP)[:, None] + p[:, 17:19])
    return out


def _affine(strokes: Strokes, rng: np.random.Generator, log_aspect: float, aspect_sd: float, rot_deg_sd: float,
            shear_sd: float = 0.05) -> Strokes:
    """Uneven width/height (log-normal around exp(log_aspect)), a slight slant and rotation, as people draw."""
    ax = np.exp(rng.normal(log_aspect, aspect_sd))
    th = np.radians(rng.normal(0.0, rot_deg_sd))
    c, s = np.cos(th), np.sin(th)
    m = np.array([[c, -s], [s, c]]) @ np.array([[ax, rng.normal(0.0, shear_sd)], [0.0, 1.0]])
    return [p @ m.T for p in strokes]


def _choice(rng: np.random.Generator, table: dict):
    """One key of `table`, drawn with the table's values as (unnormalised) weights."""
    u = rng.random() * sum(table.values())
    for key, weight in table.items():  # noqa: B007 (the key the loop stops at is the answer)
        u -= weight
        if u < 0:
            break
    return key


def _outline(rng: np.random.Generator, verts: np.ndarray, *, n_strokes: int, drop: int = 0,
             close_mean: float = 0.02, close_sd: float = 0.06, bow_mean: float = 0.0, bow_sd: float = 0.03,
             lift_sd: float = 3.0, natural: float = 0.0) -> Strokes:
    """Draw a closed polygon (vertices in drawing order) as people do.

    The last `drop` sides are left out (the game often guessed the shape before the player finished);
    a complete outline overshoots its start or stops short of it by `close` times a side;
    sides are split over `n_strokes` strokes whose ends don't quite meet; with probability `natural`
    each stroke is redrawn left-to-right / top-to-bottom, as multi-stroke drawers tend to.
    """
    k = len(verts)
    keys = verts[np.r_[np.arange(k), 0]]  # (k+1, 2): k sides back to the start
    n_sides = k - drop
    keys = keys[: n_sides + 1].copy()
    if drop == 0:
        close = rng.normal(close_mean, close_sd)
        if close > 0:  # carry on past the start, along the first side
            keys = np.vstack([keys, keys[0] + close * (keys[1] - keys[0])])
        else:  # stop short of the start
            keys[-1] = keys[-1] + close * (keys[-1] - keys[-2])
    bows = rng.normal(bow_mean, bow_sd, size=len(keys) - 1)
    n_strokes = min(n_strokes, n_sides)
    cuts: np.ndarray | list[int] = []
    if n_strokes > 1:
        cuts = np.sort(rng.choice(np.arange(1, n_sides), size=n_strokes - 1, replace=False))
    bounds = [0, *cuts, len(keys) - 1]
    strokes = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = keys[a:b + 1].copy()
        bow = bows[a:b].copy()
        if n_strokes > 1:
            # pen lifted: each piece starts and ends a little off the corner
            part[0] += rng.normal(0.0, lift_sd, 2)
            part[-1] += rng.normal(0.0, lift_sd, 2)
            span = part[-1] - part[0]
            backwards = span[0] < 0 if abs(span[0]) > abs(span[1]) else span[1] < 0
            if backwards and rng.random() < natural:
                part, bow = part[::-1].copy(), -bow[::-1]
        strokes.append(_trace(part, bow))
    return strokes


def _regular(rng: np.random.Generator, k: int, start_deg: float, r_sd: float, ang_sd_deg: float) -> np.ndarray:
    """k vertices around a circle, clockwise on screen from angle `start_deg` (0 = right, 90 = down), jittered."""
    ang = np.radians(start_deg + 360.0 / k * np.arange(k) + rng.normal(0.0, ang_sd_deg, k))
    r = _R * (1.0 + rng.normal(0.0, r_sd, k))
    return np.stack([r * np.cos(ang), r * np.sin(ang)], 1)


def _start_at(rng: np.random.Generator, verts: np.ndarray, corner: tuple[float, float], p_corner: float,
              p_clockwise: float) -> np.ndarray:
    """Reorder clockwise vertices so drawing starts near `corner` (a direction, e.g. (-1, -1) top-left) with
    probability p_corner (else anywhere), going clockwise on screen with probability p_clockwise."""
    if rng.random() < p_corner:
        start = int(np.argmax(verts @ np.asarray(corner, dtype=float)))
    else:
        start = int(rng.integers(len(verts)))
    order = np.roll(np.arange(len(verts)), -start)
    if rng.random() >= p_clockwise:
        order = np.r_[order[0], order[1:][::-1]]
    return verts[order]


# ---------------------------------------------------------------------------------------------
# The eight shapes. Each returns dense strokes; figures in comments come from the shared real sample.


def _circle(rng: np.random.Generator) -> Strokes:
    """Mostly one stroke from near the top, 80% counter-clockwise, closing with a small overshoot or gap."""
    if rng.random() < 0.05:  # two arcs, each from the top down one side
        left = np.linspace(-np.pi / 2, -3 * np.pi / 2, 60) + rng.normal(0, 0.1)
        right = np.linspace(-np.pi / 2, np.pi / 2, 60) + rng.normal(0, 0.1)
        return [_R * np.stack([np.cos(t), np.sin(t)], 1) + rng.normal(0, 4, 2) for t in (left, right)]
    t0 = -np.pi / 2 + rng.normal(0.35, 0.6)
    turn = -1.0 if rng.random() < 0.8 else 1.0  # -1: counter-clockwise on screen (y down)
    sweep = 2 * np.pi * (1.0 + np.clip(rng.normal(0.03, 0.05), -0.06, 0.25))
    m = int(sweep * _R / _STEP)
    t = t0 + turn * np.linspace(0.0, sweep, m)
    u = np.linspace(0.0, 1.0, m)
    a = rng.normal(0.0, [0.04, 0.03, 0.02])  # lopsided, egg and lemon shapes
    ph = rng.uniform(0, 2 * np.pi, 3)
    # many real circles are squarish (a superellipse, |x|^p + |y|^p = 1, p from 2 up to ~3.2)
    p = 2.0 + min(abs(rng.normal(0.0, 0.5)), 1.2)
    tilt = t + rng.normal(0.0, 0.15)
    r = _R * (np.abs(np.cos(tilt)) ** p + np.abs(np.sin(tilt)) ** p) ** (-1.0 / p)
    r *= (1.0 + a[0] * np.cos(2 * t + ph[0]) + a[1] * np.cos(3 * t + ph[1]) + a[2] * np.cos(4 * t + ph[2])
          + rng.normal(0.0, 0.025) * u)  # drifting radius: the end misses the start
    return [np.stack([r * np.cos(t), r * np.sin(t)], 1)]


def _square(rng: np.random.Generator) -> Strokes:
    """One stroke from the top-left corner (85%), else 2 to 4; 65% go down the left side first."""
    verts = _R * (np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) + rng.normal(0, 0.05, (4, 2)))
    verts = _start_at(rng, verts, (-1.0, -1.2), 0.8, 0.35)
    n = _choice(rng, {1: 85, 2: 5, 3: 3, 4: 7})
    strokes = _outline(rng, verts, n_strokes=n, close_mean=0.02, close_sd=0.05, bow_sd=0.025, natural=0.7)
    if rng.random() < 0.25:
        strokes = [_smooth(p, rng.uniform(10, 30)) for p in strokes]
    return strokes


def _triangle(rng: np.random.Generator) -> Strokes:
    """Apex up, anywhere above the base; 1 to 3 strokes from the bottom-left or the apex, often crossing at the end."""
    apex_x = np.clip(rng.normal(0.0, 0.4), -1.15, 1.15)
    verts = _R * (np.array([[apex_x, -1.0], [1.0, 1.0], [-1.0, 1.0]]) + rng.normal(0, 0.04, (3, 2)))
    start = _choice(rng, {0: 50, 2: 40, 1: 10})  # apex, bottom-left, bottom-right
    order = np.roll(np.arange(3), -start)
    if rng.random() < 0.5:
        order = np.r_[order[0], order[1:][::-1]]
    n = _choice(rng, {1: 60, 2: 20, 3: 20})
    strokes = _outline(rng, verts[order], n_strokes=n, close_mean=0.05, close_sd=0.1, bow_sd=0.07, natural=0.5)
    if rng.random() < 0.3:
        strokes = [_smooth(p, rng.uniform(10, 28)) for p in strokes]
    return strokes


def _hexagon(rng: np.random.Generator) -> Strokes:
    """Corners left and right (80%) or top and bottom; long from corner to corner; half of them unfinished."""
    verts = _regular(rng, 6, rng.normal(0.0, 4.0), 0.05, 6.0)  # corners left and right
    verts[:, 0] *= np.exp(rng.normal(0.1, 0.12))  # people draw them longer from corner to corner
    if rng.random() < 0.2:
        verts = verts[:, ::-1] * [1.0, -1.0]  # a quarter turn: corners at top and bottom, still clockwise
    verts = _start_at(rng, verts, (-0.6, -1.0), 0.6, 0.5)
    drop = _choice(rng, {1: 35, 2: 35, 3: 20, 4: 10}) if rng.random() < 0.5 else 0
    n = _choice(rng, {1: 55, 2: 12, 3: 10, 4: 5, 5: 5, 6: 13})
    out = _outline(rng, verts, n_strokes=n, drop=drop, close_mean=0.0, close_sd=0.08, bow_sd=0.05, natural=0.5)
    if rng.random() < 0.15:
        out = [_smooth(p, rng.uniform(8, 20)) for p in out]
    return out


def _octagon(rng: np.random.Generator) -> Strokes:
    """Mostly flat top; corners cut unevenly off a square; about 45% unfinished."""
    q = np.clip(rng.normal(0.42, 0.08), 0.2, 0.65)
    verts = _R * (np.array([[-q, -1], [q, -1], [1, -q], [1, q], [q, 1], [-q, 1], [-1, q], [-1, -q]])
                  + rng.normal(0.0, 0.06, (8, 2)))
    if rng.random() < 0.2:  # pointy top
        c, s = np.cos(np.pi / 8), np.sin(np.pi / 8)
        verts = verts @ np.array([[c, -s], [s, c]]).T
    verts = _start_at(rng, verts, (-0.6, -1.0), 0.65, 0.5)
    drop = int(rng.integers(1, 5)) if rng.random() < 0.45 else 0
    n = _choice(rng, {1: 70, 2: 6, 3: 5, 4: 4, 8: 15})
    out = _outline(rng, verts, n_strokes=n, drop=drop, close_mean=0.0, close_sd=0.08, bow_sd=0.05, natural=0.5)
    if rng.random() < 0.15:
        out = [_smooth(p, rng.uniform(8, 20)) for p in out]
    return out


def _star(rng: np.random.Generator) -> Strokes:
    """Five-pointed: one-stroke pentagram, an outline of ten points, a pentagram in pieces, or two triangles."""
    kind = _choice(rng, {"pentagram": 55, "outline": 27, "pieces": 12, "david": 6})
    if kind == "david":
        up = _regular(rng, 3, -90.0, 0.05, 4.0)
        down = _regular(rng, 3, 90.0, 0.05, 4.0)
        return [_trace(t[[0, 1, 2, 0]], rng.normal(0, 0.03, 3)) for t in (up, down)]
    outer = _regular(rng, 5, -90.0 + rng.normal(0.0, 5.0), 0.08, 5.0)
    if kind == "outline":
        inner = _regular(rng, 5, -54.0, 0.1, 5.0) * rng.uniform(0.35, 0.6)
        verts = np.empty((10, 2))
        verts[0::2], verts[1::2] = outer, inner
        verts = _start_at(rng, verts, (0.0, -1.0), 0.5, 0.6)
        # sides curve inwards (a starfish) or out a little; sign of the bow follows the drawing direction
        x, y = verts[:, 0], verts[:, 1]
        turn = np.sign(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))  # > 0: clockwise on screen
        return _outline(rng, verts, n_strokes=1, close_mean=0.02, close_sd=0.05,
                        bow_mean=turn * rng.uniform(-0.02, 0.1), bow_sd=0.04)
    # Pentagram: every second point, begun at the bottom-left, left or top point, rarely elsewhere.
    start = _choice(rng, {3: 40, 4: 25, 0: 20, 1: 8, 2: 7})
    step = 2 if rng.random() < 0.75 else 3
    verts = outer[(start + step * np.arange(5)) % 5]
    n = 1 if kind == "pentagram" else int(rng.integers(2, 6))
    return _outline(rng, verts, n_strokes=n, close_mean=0.03, close_sd=0.06, bow_sd=0.05, lift_sd=5.0)


def _line(rng: np.random.Generator) -> Strokes:
    """Mostly horizontal and left to right; some vertical or diagonal; a few with a hook or drawn twice."""
    kind = _choice(rng, {"horizontal": 70, "vertical": 12, "diagonal": 18})
    deg = {"horizontal": 0.0, "vertical": 90.0, "diagonal": rng.choice([-1, 1]) * rng.uniform(20, 70)}[kind]
    th = np.radians(deg + rng.normal(0.0, 4.0))
    d = np.array([np.cos(th), np.sin(th)]) * _R
    a, b = -d, d
    if rng.random() < (0.15 if kind == "horizontal" else 0.3):
        a, b = b, a
    keys, bows = np.stack([a, b]), np.array([rng.normal(0.0, 0.03)])
    if rng.random() < 0.12:  # the pen flicks back at one end
        back = np.radians(rng.choice([-1, 1]) * rng.uniform(100, 160))
        c, s = np.cos(back), np.sin(back)
        hook = np.array([[c, -s], [s, c]]) @ (b - a) * rng.uniform(0.04, 0.15)
        keys, bows = (np.vstack([keys, b + hook]), np.r_[bows, 0.0]) if rng.random() < 0.7 else (
            np.vstack([a + hook, keys]), np.r_[0.0, bows])
    strokes = [_trace(keys, bows)]
    if rng.random() < 0.1:  # a second go: extends the first or runs beside it
        shift = rng.normal(0.0, 6.0, 2) + (b - a) * rng.choice([0.0, 0.7])
        strokes.append(_trace(np.stack([a, b]) * rng.uniform(0.3, 1.0) + shift, np.array([rng.normal(0, 0.02)])))
    return strokes


def _zigzag(rng: np.random.Generator) -> Strokes:
    """One stroke of 3 to 12 sides, mostly left to right; a quarter go down the page (stacked Z's)."""
    k = int(rng.integers(4, 18))  # vertices
    vertical = rng.random() < 0.25  # sides run across, the zigzag goes down the page
    spacing = 2 * _R / (k - 1)
    # teeth from flat (0.6) to spiky (4); stacked Z's are wide
    height = spacing * np.exp(rng.normal(np.log(3.0 if vertical else 2.8), 0.5))
    x = np.linspace(-_R, _R, k) + rng.normal(0, 0.12 * spacing, k)
    y = np.where(np.arange(k) % 2 == 0, 0.0, height) + rng.normal(0, 0.1 * height, k)
    if rng.random() < 0.5:  # first side goes up
        y = -y
    keys = np.stack([x, y], 1)
    if vertical:
        keys = keys[:, ::-1].copy()
    path = _trace(keys, rng.normal(0.0, 0.04, k - 1))
    if rng.random() < 0.3:  # rounded peaks, like a wave
        path = _smooth(path, rng.uniform(10, 30))
    return [path]


# word -> (drawer, log aspect mean, log aspect sd, rotation sd in degrees, warp amplitude, tremor amplitude);
# people draw squares, hexagons and octagons a little wider than tall (median width/height 1.06 to 1.2)
_DRAWERS: dict[str, tuple[Callable[[np.random.Generator], Strokes], float, float, float, float, float]] = {
    "circle": (_circle, 0.0, 0.1, 20.0, 3.0, 0.5),
    "square": (_square, 0.08, 0.18, 4.0, 3.0, 0.5),
    "triangle": (_triangle, 0.06, 0.3, 6.0, 3.0, 0.6),
    "hexagon": (_hexagon, 0.0, 0.1, 5.0, 3.0, 0.5),
    "octagon": (_octagon, 0.05, 0.12, 5.0, 3.0, 0.5),
    "star": (_star, 0.03, 0.12, 6.0, 4.0, 0.8),
    "line": (_line, 0.0, 0.0, 0.0, 2.5, 0.6),
    "zigzag": (_zigzag, 0.0, 0.1, 5.0, 3.0, 0.6),
}


def _draw(word: str, rng: np.random.Generator) -> tuple[Strokes, np.ndarray]:
    """Dense pen strokes for one drawing of `word` (unnormalised, not yet wobbled) and its wobble row."""
    drawer, log_aspect, aspect_sd, rot_sd, warp, tremor = _DRAWERS[word]
    strokes = drawer(rng)
    if aspect_sd or rot_sd:
        strokes = _affine(strokes, rng, log_aspect, aspect_sd, rot_sd)
    return strokes, _wobble_params(rng, warp, tremor)


# ---------------------------------------------------------------------------------------------
# Google's simplification, vectorised over many drawings


def _simplify(drawings: list[Strokes], wobble: np.ndarray | None = None) -> list[list[list[list[int]]]]:
    """Dense float drawings (and their wobble rows, (D, 21)) -> Google's simplified strokes [[xs], [ys]], ints 0..255.

    Everything runs on all drawings at once: the points of every stroke of every drawing end to end.
    """
    strokes = [p for d in drawings for p in d]
    n_strokes = np.array([len(d) for d in drawings])  # (D,)
    lengths = np.array([len(p) for p in strokes])  # (S,)
    first = np.cumsum(lengths) - lengths  # (S,) where each stroke begins
    d_first = first[np.cumsum(n_strokes) - n_strokes]  # (D,) where each drawing begins
    did = np.repeat(np.arange(len(drawings)), np.add.reduceat(lengths, np.cumsum(n_strokes) - n_strokes))  # (P,)
    pts = np.vstack(strokes)  # (P, 2)
    if wobble is not None:
        pts = _wobble(pts, did, np.arange(len(pts)) - d_first[did], wobble)
    px, py = fit_box(pts[:, 0], pts[:, 1], d_first, did)
    keep = rdp_keep(px, py, first, np.r_[first[1:], len(pts)] - 1)
    # RDP may drop an extreme point: re-align and re-scale the kept points so every record spans 0..255
    kept_did = did[keep]
    kept_len = np.add.reduceat(keep, first)  # (S,) points left in each stroke
    kept_starts = np.searchsorted(kept_did, np.arange(len(drawings)))
    qx, qy = fit_box(px[keep], py[keep], kept_starts, kept_did)
    xs, ys = np.rint(qx).astype(np.int64).tolist(), np.rint(qy).astype(np.int64).tolist()
    out, i, s = [], 0, 0
    for count in n_strokes.tolist():
        drawing = []
        for length in kept_len[s:s + count].tolist():
            drawing.append([xs[i:i + length], ys[i:i + length]])
            i += length
        s += count
        out.append(drawing)
    return out


# ---------------------------------------------------------------------------------------------
# Public API


def _check(word: str, n: int, seed: int) -> None:
    """DoodleError for a word we cannot draw or a count / seed that is not a non-negative integer."""
    if word not in _DRAWERS:
        raise DoodleError(f"no synthetic shape {word!r}: choose one of {', '.join(SHAPES)}")
    for name, v in (("drawing count", n), ("seed", seed)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise DoodleError(f"synthetic {name} must be a non-negative integer, got {v!r}")


def _salt(word: str) -> int:
    """A stable per-word number (crc32, not hash(): that changes between runs) so words draw independently."""
    return zlib.crc32(word.encode("utf-8"))


def _rng(seed: int, word: str, i: int) -> np.random.Generator:
    """Drawing i's own generator: drawings never share random state, hence the prefix property."""
    return np.random.default_rng([seed, _salt(word), i])


def generate(word: str, n: int, seed: int = 0) -> list[dict]:
    """`n` drawings of `word` as Google-style simplified records; generate(w, n, s) is a prefix of
    generate(w, n+k, s)."""
    _check(word, n, seed)
    return [rec for lo in range(0, int(n), _CHUNK) for rec in _records(word, lo, min(int(n), lo + _CHUNK), int(seed))]


def _records(word: str, lo: int, hi: int, seed: int) -> list[dict]:
    """Records lo..hi-1 of `word`: each drawing has its own generator, so any slice can be made alone."""
    wid = SHAPES.index(word)
    rngs = [_rng(seed, word, i) for i in range(lo, hi)]
    # the first draw of each generator dates the drawing
    stamps = [_EPOCH + np.timedelta64(int(r.integers(0, 180 * 86400 * 10**6)), "us") for r in rngs]
    drawn = [_draw(word, r) for r in rngs]
    drawings = _simplify([d[0] for d in drawn], np.stack([d[1] for d in drawn])) if drawn else []
    return [{
        "word": word,
        "countrycode": "ZZ",
        "timestamp": str(stamp).replace("T", " ")[:25] + " UTC",
        "recognized": True,
        "key_id": f"9{wid}{seed:04d}{i:010d}",  # numeric like Google's; unique per (word, seed, i)
        "drawing": drawing,
    } for i, stamp, drawing in zip(range(lo, hi), stamps, drawings)]


def write_synthetic(data_dir, words: Iterable[str] = SHAPES, n: int = 1000, seed: int = 0,
                    reporter: Reporter = NULL_REPORTER) -> list[Path]:
    """Write <data_dir>/synthetic/<word>.ndjson (n drawings each, atomically); returns the paths."""
    words = [words] if isinstance(words, str) else list(words)
    for w in words:
        _check(w, n, seed)
    n, seed = int(n), int(seed)
    paths = []
    for w in words:
        path = local_path(data_dir, "synthetic", w)
        key = f"synthetic:{w}"
        reporter.start(key, f"drawing {w}", total=n, unit="drawings")
        try:
            with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                out = ndjson.writer(fh, separators=(",", ":"))
                for lo in range(0, n, _CHUNK):
                    for rec in _records(w, lo, min(n, lo + _CHUNK), seed):
                        out.writerow(rec)
                    reporter.update(key, completed=min(n, lo + _CHUNK))
        finally:
            reporter.end(key)
        paths.append(path)
    return paths
