"""Users' sketch images -> the 28x28 form the model trained on (Google's render of simplified strokes).

A user's pen can be any width on any canvas, but Google drew every drawing with the same 16-unit pen in a
255-unit box. So the image is turned back into strokes and rendered by the same `rasterize` as the training
data: ink map (background = the border's colour) -> crop and scale so the ink's longer side is `_WORK_SIDE` px
-> threshold -> thin to 1-px centre lines (Zhang-Suen in Euclidean distance order, so the skeleton follows
where the user's pen centre went) -> chains of skeleton pixels as polylines, free ends pushed out to the
pen's last centre -> align top-left and scale so the pen centres' box spans 255 (Google's raw -> simplified
recipe) -> `rasterize`. Measured on the shared sketches: 4.3/255 mean pixel error against Google's renders
of the same drawings, where cropping and resizing the image scores 23/255 (bench/images.py).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from doodle.errors import DoodleError
from doodle.raster import rasterize
from doodle.simplify import rdp_keep

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")

_MIN_CONTRAST = 0.1  # below this (of full scale) between ink and background the image counts as blank
_MASK_LEVEL = 0.5  # ink level that counts as pen when thresholding the working image
_WORK_SIDE = 256  # working resolution: the ink's longer side, ~1 px per unit of Google's 0..255 box
_RDP_EPS = 0.5  # working px; chains are straightened only below what a 16-unit pen could show
_TIP_REACH = 2.0  # tips may grow by up to this many pen radii (thinning stops short of a round cap's centre)
_GROW = 1.5  # when shrinking by more than this, first widen lines by ~this many working px (1-px pencils)
_MAX_WORK_PIXELS = 4_000_000  # bigger photos are box-reduced first: a 12 MP phone photo needs no more


# --- loading: any image -> ink map -------------------------------------------------------------------------------


def _name(source) -> str:
    """What to call the input in a one-line error message."""
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "image"
    if isinstance(source, np.ndarray):
        return f"array of shape {source.shape}"
    return str(source)


def _bomb_message(name: str, err: Exception | int) -> str:
    """One line for an image over Pillow's decompression-bomb limit (kept as our hard limit)."""
    found = re.search(r"\((\d+) pixels\)", str(err)) if isinstance(err, Exception) else None
    pixels = err if isinstance(err, int) else int(found.group(1)) if found else None
    size = f"{pixels:,} pixels" if pixels else "too many pixels"
    return (f"{name}: image is too large to open safely ({size}; Pillow's limit is "
            f"{Image.MAX_IMAGE_PIXELS:,}); shrink it to a few hundred pixels and retry")


def _open(source) -> Image.Image:
    """Path or PIL image -> fully loaded PIL image; every failure becomes a one-line DoodleError."""
    name = _name(source)
    if isinstance(source, (Image.Image, np.ndarray)):
        shape = source.size if isinstance(source, Image.Image) else source.shape[:2]
        if Image.MAX_IMAGE_PIXELS and shape[0] * shape[1] > Image.MAX_IMAGE_PIXELS:
            raise DoodleError(_bomb_message(name, int(shape[0] * shape[1])))
        if isinstance(source, Image.Image):
            source.load()
            return source
        try:
            return Image.fromarray(source)
        except (TypeError, ValueError) as err:
            raise DoodleError(f"{name}: not an image ({err}); pass (H, W) or (H, W, 3|4) uint8") from None
    if not isinstance(source, (str, os.PathLike)):
        raise DoodleError(f"{source!r:.60}: expected an image file path or a PIL image, got {type(source).__name__}")
    try:
        # Pillow only warns between 1x and 2x its pixel limit; we keep its limit as the hard limit.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(Path(source)) as im:
                im.load()  # Image.open is lazy: truncation and corrupt data only show up here
                return im
    except FileNotFoundError:
        raise DoodleError(f"{name}: no such file; check the path") from None
    except IsADirectoryError:
        raise DoodleError(f"{name}: is a directory, not an image file") from None
    except PermissionError:
        raise DoodleError(f"{name}: permission denied; make the file readable") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DoodleError(_bomb_message(name, err)) from None
    except UnidentifiedImageError:
        raise DoodleError(f"{name}: not an image Pillow can read; use one of {', '.join(IMAGE_SUFFIXES)}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as err:
        reason = str(err).split("\n")[0] or type(err).__name__
        raise DoodleError(f"{name}: unreadable or truncated image ({reason}); re-export it") from None


def _colours(im: Image.Image) -> np.ndarray:
    """PIL image -> (C, H, W) uint8 colour planes, transparency flattened onto a backdrop that reads as background."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):  # 16-bit or float grayscale
        grey = np.asarray(im, dtype=np.float32)
        top = 65535.0 if im.mode.startswith("I;16") or grey.max() > 255 else 255.0
        if im.mode == "F":
            top = max(float(grey.max()), 1.0)
        return np.rint(np.clip(grey * np.float32(255 / top), 0, 255)).astype(np.uint8)[None]
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))  # (H, W, 4)
        if rgba[..., 3].min() < 250:
            # Transparent pixels carry arbitrary colour (often black): put the drawing on a backdrop that
            # contrasts with its opaque pixels, so the transparent area is background whatever the ink colour.
            alpha = rgba[..., 3].astype(np.float32) / np.float32(255)  # (H, W)
            rgb = rgba[..., :3].astype(np.float32)
            lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)  # (H, W)
            opaque = float((lum * alpha).sum() / max(float(alpha.sum()), 1e-6))
            backdrop = np.float32(255 if opaque < 127.5 else 0)
            flat = rgb * alpha[..., None] + backdrop * (1 - alpha[..., None])
            return np.rint(flat).astype(np.uint8).transpose(2, 0, 1)
        return rgba[..., :3].transpose(2, 0, 1)
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L"))[None]
    return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def _reduce(im: Image.Image) -> Image.Image:
    """Box-reduce a huge photo by an integer factor so the rest stays fast (thin lines fade but survive)."""
    factor = math.ceil(math.sqrt(im.width * im.height / _MAX_WORK_PIXELS))
    if factor < 2:
        return im
    if im.mode.startswith("I;16"):
        im = im.convert("I")
    elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        im = im.convert("RGBA" if "transparency" in im.info or "A" in im.mode else "RGB")
    return im.reduce(factor)


def _edge(planes: np.ndarray, width: int) -> np.ndarray:
    """(C, H, W) -> (C, N) the pixels within `width` of the image's edge (corners counted twice: harmless)."""
    c = len(planes)
    return np.concatenate([planes[:, :width].reshape(c, -1), planes[:, -width:].reshape(c, -1),
                           planes[:, :, :width].reshape(c, -1), planes[:, :, -width:].reshape(c, -1)], axis=1)


def _median_u8(values: np.ndarray) -> int:
    """Median of uint8 values by counting (no sort)."""
    counts = np.cumsum(np.bincount(values, minlength=256))
    return int(np.searchsorted(counts, (counts[-1] + 1) // 2))


# np.quantile and np.median import numpy.ma on their first call (~10 ms of `doodle predict`'s start-up):
# these two give their very floats without it.


def _quantile_u8(values: np.ndarray, q: float) -> float:
    """np.quantile(values, q) of whole numbers in 0..255, by counting: numpy's 'linear' rule and rounding."""
    counts = np.cumsum(np.bincount(values.ravel(), minlength=256))  # (256,) how many are <= each value
    n = int(counts[-1])
    virtual = (n - 1) * q  # numpy's virtual index, then its _lerp of the neighbours
    lo = math.floor(virtual)
    a, b = (int(np.searchsorted(counts, k + 1)) for k in (min(lo, n - 1), min(lo + 1, n - 1)))
    t, d = virtual - lo, b - a
    return float(b - d * (1 - t) if t >= 0.5 else a + d * t)


def _median(values: np.ndarray) -> float:
    """np.median(values) of a 1-D float array: the middle value, or the float mean of the middle two."""
    k = values.size // 2
    if values.size % 2:
        return float(np.partition(values, k)[k])
    return float(np.mean(np.partition(values, [k - 1, k])[k - 1:k + 1]))


def _ink_levels(path_or_image) -> tuple[np.ndarray, np.ndarray]:
    """Image -> ((H, W) uint8 contrast with the background, (256,) float32 table from contrast to ink)."""
    name = _name(path_or_image)
    im = _open(path_or_image)
    try:
        im = _reduce(ImageOps.exif_transpose(im))  # phone photos are stored sideways plus an EXIF rotation
        planes = _colours(im)  # (C, H, W)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError) as err:  # odd modes, broken EXIF
        raise DoodleError(f"{name}: cannot decode image ({err}); re-export it as PNG") from None
    # The background is the median colour of a band round the edge (wide enough that a frame line drawn
    # round the canvas or a drawing touching an edge does not win); ink is whatever differs from it, in any
    # channel, so dark-on-light, light-on-dark and coloured pens all read as ink.
    band = _edge(planes, max(2, min(planes.shape[1:]) // 16))  # (C, pixels)
    background = np.array([_median_u8(c) for c in band], np.uint8)  # (C,)
    border = _edge(planes, 2)  # the outermost pixels: their spread is the paper's own noise
    contrast = np.zeros(planes.shape[1:], np.uint8)  # (H, W)
    for plane, bg in zip(planes, background):
        np.maximum(contrast, np.where(plane > bg, plane - bg, bg - plane), out=contrast)
    counts = np.bincount(contrast.ravel(), minlength=256)  # (256,)
    top = int(np.flatnonzero(counts)[-1])
    if top < _MIN_CONTRAST * 255:
        raise DoodleError(f"{name}: the image is blank (no ink found); draw something dark on light or light on dark")
    # Full ink = the pen's typical contrast (not the single most extreme pixel, which JPEG ringing inflates);
    # the noise floor = what the border itself varies by (paper grain, JPEG noise), capped for ink at the edge.
    strong = np.cumsum(counts[top // 2:])
    pen = top // 2 + int(np.searchsorted(strong, 0.75 * strong[-1]))
    noise = np.abs(border.astype(np.int16) - background[:, None]).max(axis=0)
    floor = min(_quantile_u8(noise, 0.95), 0.25 * pen)
    table = np.clip((np.arange(256, dtype=np.float32) - np.float32(floor)) / np.float32(max(pen - floor, 1)), 0, 1)
    return contrast, table


def load_ink(path_or_image) -> np.ndarray:
    """Image file, PIL image or array -> (H, W) float32 ink map in [0, 1]: 1 = pen, 0 = background."""
    contrast, table = _ink_levels(path_or_image)
    return table[contrast]


# --- thinning: Zhang-Suen in distance order, with two 256-entry lookup tables ----------------------------------


def _zhang_suen_tables() -> tuple[np.ndarray, np.ndarray]:
    """Which 8-neighbourhoods (bit k = neighbour P2+k, clockwise from north) may be deleted in each sub-step."""
    codes = np.arange(256)
    p = [(codes >> k) & 1 for k in range(8)]  # P2 (N), P3 (NE), P4 (E), ... P9 (NW)
    count = sum(p)
    transitions = sum((p[k] == 0) & (p[(k + 1) % 8] == 1) for k in range(8))
    base = (count >= 2) & (count <= 6) & (transitions == 1)
    n, e, s, w = p[0], p[2], p[4], p[6]
    first = base & (n * e * s == 0) & (e * s * w == 0)
    second = base & (n * e * w == 0) & (n * s * w == 0)
    return first.astype(bool), second.astype(bool)


_ZS_TABLES = _zhang_suen_tables()
# (dy, dx) of neighbour bit k, in the same clockwise order as the tables
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _run_distance(grid: np.ndarray) -> np.ndarray:
    """(H, W) bool with a False frame -> (H, W) int distance along each row to the nearest False pixel."""
    idx = np.arange(grid.shape[1])
    left = np.maximum.accumulate(np.where(grid, -1, idx), axis=1)
    right = np.minimum.accumulate(np.where(grid, grid.shape[1], idx)[:, ::-1], axis=1)[:, ::-1]
    return np.minimum(idx - left, right - idx)


def distance_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) float32 Euclidean distance from each pixel to the nearest background pixel."""
    grid = np.pad(mask, 1)  # a background frame, so every row and column has some
    across = _run_distance(grid)  # (H+2, W+2)
    # d^2 = min over k of (k^2 + row distance k rows away); the best k is below d <= min(row, column) run
    reach = int(np.minimum(across, _run_distance(grid.T).T).max()) + 1
    g2 = across.astype(np.float32) ** 2
    d2 = g2.copy()
    for k in range(1, min(reach, grid.shape[0])):
        kk = np.float32(k * k)
        np.minimum(d2[k:], g2[:-k] + kk, out=d2[k:])
        np.minimum(d2[:-k], g2[k:] + kk, out=d2[:-k])
    return np.sqrt(d2[1:-1, 1:-1])


def thin(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool -> (its 1-px skeleton, (H, W) float32 distance map), by Zhang-Suen in distance order.

    Plain Zhang-Suen peels a layer off every side per pass, which cuts sharp corners of thick strokes and
    stops short of their ends; peeling only what lies within 1, then 2, 3, ... px of the edge (Euclidean)
    leaves the skeleton on the distance map's ridge, i.e. on the pen's centre line. A pixel whose neighbours
    all go in the same sub-step is kept, so a 2x2 dot (which plain Zhang-Suen erases) still leaves a dot.
    Works on flat indices of the pixels in play only, so each pass costs ~ the drawing's outline, not its box.
    """
    h, w = mask.shape
    dist = distance_map(mask)
    stride = w + 2
    grid = np.pad(mask, 1).astype(np.uint8).ravel()  # (H+2)*(W+2), with a background frame
    offsets = np.array([dy * stride + dx for dy, dx in _NEIGHBOURS])  # (8,)
    ys, xs = np.nonzero(mask)
    order = np.argsort(dist[ys, xs], kind="stable")
    pixels = ((ys + 1) * stride + xs + 1)[order]  # flat ids, nearest the edge first
    levels = dist[ys, xs][order]

    def codes(ids):
        nb = grid[ids[:, None] + offsets]  # (n, 8)
        return (nb << np.arange(8, dtype=np.uint8)).sum(axis=1, dtype=np.uint8) if len(ids) else nb[:, 0]

    level = 1.0
    while len(pixels):
        ready = pixels[:np.searchsorted(levels, level, side="right")]
        alive = ready[grid[ready] == 1]
        changed = True
        while changed:
            changed = False
            for table in _ZS_TABLES:
                gone = alive[table[codes(alive)]]
                if not len(gone):
                    continue
                grid[gone] = 0
                lonely = gone[codes(gone) == 0]
                grid[lonely] = 1  # its neighbours all went too: keep it as the dot
                if len(lonely) < len(gone):
                    changed = True
                    alive = alive[grid[alive] == 1]
        if len(ready) == len(pixels):
            break
        level += 1.0
    skeleton = grid.reshape(h + 2, w + 2)[1:-1, 1:-1].astype(bool)
    return skeleton, dist


# --- skeleton -> polylines ----------------------------------------------------------------------------------------


def _trace(skel: np.ndarray) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """(H, W) bool skeleton -> (chains as lists of pixel ids, (n, 2) float (x, y) per pixel, (n,) degree).

    The chains together walk every skeleton edge once, each running between ends/junctions (or round a loop).
    """
    ys, xs = np.nonzero(skel)
    n = len(ys)
    index = np.full((skel.shape[0] + 2, skel.shape[1] + 2), -1, np.int64)
    index[ys + 1, xs + 1] = np.arange(n)

    def at(dy, dx):
        return index[ys + 1 + dy, xs + 1 + dx]

    # Edges to E, S, SE, SW (each undirected edge once). A diagonal step is dropped when an L-shaped pair of
    # orthogonal steps joins the same two pixels: the pen covers it anyway, and it would make false junctions.
    e, se, s, sw, w = at(0, 1), at(1, 1), at(1, 0), at(1, -1), at(0, -1)
    pairs = [(e >= 0, e), (s >= 0, s),
             ((se >= 0) & (e < 0) & (s < 0), se),
             ((sw >= 0) & (w < 0) & (s < 0), sw)]
    src = np.concatenate([np.nonzero(ok)[0] for ok, _ in pairs])
    dst = np.concatenate([nb[ok] for ok, nb in pairs])
    adjacency: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(src.tolist(), dst.tolist()):
        adjacency[a].append(b)
        adjacency[b].append(a)
    used: set[tuple[int, int]] = set()

    def walk(start: int, nxt: int) -> list[int]:
        path = [start]
        prev, cur = start, nxt
        while True:
            used.add((prev, cur) if prev < cur else (cur, prev))
            path.append(cur)
            if len(adjacency[cur]) != 2:
                return path
            a, b = adjacency[cur]
            step = b if a == prev else a
            if ((cur, step) if cur < step else (step, cur)) in used:
                return path
            prev, cur = cur, step

    # Walk from ends and junctions first so chains run between them, then whatever is left (closed loops).
    chains = []
    for i in sorted(range(n), key=lambda i: len(adjacency[i]) == 2):
        if not adjacency[i]:
            chains.append([i])  # an isolated pixel: a dot
            continue
        for j in adjacency[i]:
            if ((i, j) if i < j else (j, i)) not in used:
                chains.append(walk(i, j))
    degree = np.fromiter(map(len, adjacency), np.int64, count=n)
    return chains, np.stack([xs, ys], axis=1).astype(np.float64), degree


def _extend_tips(chains: list[list[int]], coords: np.ndarray, degree: np.ndarray, mask: np.ndarray,
                 radius: float) -> list[np.ndarray]:
    """Chains -> (k, 2) point arrays, each free end pushed on to where the pen's centre must have stopped.

    Thinning eats into a round cap, so skeleton tips stop short of the pen's last position by up to its
    radius: walk on along the tip's direction while the ink still reaches `radius` further.
    """
    lines = [coords[c] for c in chains]
    tips = [(k, end) for k, c in enumerate(chains) if len(c) > 1
            for end in (0, -1) if degree[c[end]] == 1]
    if not tips:
        return lines
    back = max(2, int(round(radius)))
    tip = np.array([lines[k][end] for k, end in tips])  # (T, 2)
    before = np.array([lines[k][min(back, len(lines[k]) - 1) if end == 0 else -1 - min(back, len(lines[k]) - 1)]
                       for k, end in tips])
    direction = tip - before
    direction /= np.maximum(np.hypot(direction[:, 0], direction[:, 1]), 1e-9)[:, None]
    steps = np.arange(0.0, _TIP_REACH * radius + 0.01, 0.5)  # (S,)
    probe = tip[:, None, :] + (steps[None, :, None] + radius) * direction[:, None, :]  # (T, S, 2)
    px = np.rint(probe).astype(np.int64)
    h, w = mask.shape
    inside = (px[..., 0] >= 0) & (px[..., 0] < w) & (px[..., 1] >= 0) & (px[..., 1] < h)
    inside[inside] = mask[px[..., 1][inside], px[..., 0][inside]]
    # steps still inked before the first gap; the last of those is how far the centre went on
    reach = np.cumprod(inside, axis=1).sum(axis=1)  # (T,)
    for (k, end), t, start, dirn in zip(tips, reach, tip, direction):
        if t > 1:
            line = lines[k].copy()
            line[end] = start + steps[t - 1] * dirn
            lines[k] = line
    return lines


def _rdp_each(lines: list[np.ndarray], eps: float) -> list[np.ndarray]:
    """Ramer-Douglas-Peucker on every (n, 2) line at once: the points simplify.rdp keeps of each, in one
    level-by-level pass over all of them (one pass per line took 40% of preparing an image)."""
    ends = np.cumsum([len(line) for line in lines])  # (L,)
    starts = ends - [len(line) for line in lines]
    pts = np.concatenate(lines)  # (P, 2)
    keep = rdp_keep(pts[:, 0].copy(), pts[:, 1].copy(), starts, ends - 1, eps)
    return [pts[a:b][keep[a:b]] for a, b in zip(starts, ends)]


def _join(chains: list[tuple[int, int, np.ndarray]]) -> list[np.ndarray]:
    """Chains (start node, end node, points) -> one polyline per connected piece, by a depth-first tour.

    Inside one stroke the pen is a union (cairo strokes each path once), across strokes it composites, so
    many short chains meeting at a junction would glow there. The tour walks each chain out and back;
    retracing adds no ink under a union.
    """
    incident: dict[int, list[tuple[int, bool]]] = {}
    for c, (a, b, _) in enumerate(chains):
        incident.setdefault(a, []).append((c, True))
        incident.setdefault(b, []).append((c, False))
    visited = [False] * len(chains)
    strokes = []
    for c0, (root, _, first) in enumerate(chains):
        if visited[c0]:
            continue
        pieces = [first[:1]]
        last_forward = 0
        stack = [(root, iter(incident[root]))]
        back: list[np.ndarray] = []
        while stack:
            node, options = stack[-1]
            for c, forward in options:
                if visited[c]:
                    continue
                visited[c] = True
                a, b, pts = chains[c]
                pts = pts if forward else pts[::-1]
                pieces.append(pts[1:])
                last_forward = len(pieces)
                back.append(pts[::-1][1:])
                stack.append((b if forward else a, iter(incident[b if forward else a])))
                break
            else:
                stack.pop()
                if back:
                    pieces.append(back.pop())
        strokes.append(np.concatenate(pieces[:max(last_forward, 1)]))
    return strokes


# --- the whole pipeline -----------------------------------------------------------------------------------------


def _widen(a: np.ndarray, grow: int) -> np.ndarray:
    """(H, W) -> the max over each pixel's (2*grow+1)^2 square, as two 1-D passes (a separable max filter)."""
    h, w = a.shape
    p = np.pad(a, grow)
    across = p[:, :w].copy()
    for i in range(1, 2 * grow + 1):
        np.maximum(across, p[:, i:i + w], out=across)
    out = across[:h].copy()
    for i in range(1, 2 * grow + 1):
        np.maximum(out, across[i:i + h], out=out)
    return out


def image_strokes(path_or_image) -> list[list[list[float]]]:
    """Image -> strokes in Google's simplified frame (top-left aligned, max extent 255): the pen's centre lines."""
    name = _name(path_or_image)
    contrast, table = _ink_levels(path_or_image)  # (H, W), (256,)
    solid = (table > _MASK_LEVEL)[contrast]  # (H, W)
    rows = np.flatnonzero(solid.any(axis=1))
    cols = np.flatnonzero(solid.any(axis=0))
    if len(rows) == 0:
        raise DoodleError(f"{name}: the image is blank (no solid ink found); draw with a darker pen")
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    shrink = max(bottom - top, right - left) / _WORK_SIDE  # source px per working px
    grow = int(_GROW * shrink) // 2 if shrink > _GROW else 0
    if grow:
        # A 1-px pencil line on a big canvas would fade below the threshold when shrunk: widen every line by
        # a max filter first (the skeleton does not care, and the ink box grows by exactly `grow` a side).
        h, w = contrast.shape
        top, left = max(top - grow, 0), max(left - grow, 0)
        bottom, right = min(bottom + grow, h), min(right + grow, w)
        contrast = _widen(contrast[top:bottom, left:right], grow)
        solid = (table > _MASK_LEVEL)[contrast]
        rows = np.flatnonzero(solid.any(axis=1))
        cols = np.flatnonzero(solid.any(axis=0))
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    scale = _WORK_SIDE / max(bottom - top, right - left)
    size = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
    crop = Image.fromarray(table[contrast[top:bottom, left:right]])
    work = np.asarray(crop.resize(size, Image.Resampling.BILINEAR))  # (h, w), longer side _WORK_SIDE
    mask = work > _MASK_LEVEL
    skeleton, dist = thin(mask)
    chains, coords, degree = _trace(skeleton)
    if not chains:
        raise DoodleError(f"{name}: the image is blank (no solid ink found); draw with a darker pen")
    radius = _median(dist[skeleton])  # the pen's radius in working px: distance from ridge to edge
    lines = _extend_tips(chains, coords, degree, mask, radius)
    strokes = _join([(c[0], c[-1], line) for c, line in zip(chains, _rdp_each(lines, _RDP_EPS))])
    # A round pen puts ink exactly `radius` beyond its centre line, so the pen centres' box is the ink box
    # inset by the radius; the skeleton's own box is a little short wherever thinning rounded a corner.
    low = np.full(2, radius - 0.5)  # pixel centres sit at integer coordinates, the ink box starts at -0.5
    high = np.maximum(np.array(mask.shape[::-1]) - 0.5 - radius, low)
    extent = float((high - low).max())
    # A lone blot thins to a pixel or two; stretching that to 255 would draw a bar. Keep it one dot.
    factor = 255.0 / extent if extent >= max(1.0, 0.1 * radius) else 0.0
    return [np.clip((s - low) * factor, 0, (high - low) * factor).T.tolist() for s in strokes]


def image_to_bitmap(path_or_image, size: int = 28, line_width: float = 16.0, padding: float = 16.0) -> np.ndarray:
    """Image -> (size, size) uint8, white ink on black, as `rasterize` draws the same drawing's strokes."""
    return rasterize(image_strokes(path_or_image), size=size, line_width=line_width, padding=padding)
