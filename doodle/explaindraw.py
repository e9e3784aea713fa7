"""The pictures of doodle.explain (Pillow only): one drawing's explanation, and what the first layer learned.

Every map uses one diverging scale: red argues for the class (or raises the unit), blue against, white
neither, each map scaled to its own largest magnitude, which its colour key states. Panels carry a title
and a one-line caption, so the picture reads without the README.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from doodle.report import GRID, INK, MUTED, WHITE, text_height, text_width, typeface, wrap

# Diverging scale (ColorBrewer RdBu, reversed): -1 = dark blue, 0 = near white, +1 = dark red.
_RDBU = np.array([(33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240), (247, 247, 247),
                  (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43)], dtype=np.float64)
DIVERGING = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_RDBU)), _RDBU[:, ch])
                      for ch in range(3)], axis=1).round().astype(np.uint8)  # (256, 3): index 128 ~ white

TILE = 196  # px side of a 28x28 map (7 px per pixel)
COLUMN = 270  # px per panel column: the tile and its caption
PAD = 22
_INK_SHADE = 0.45  # how dark the drawing's ink shows under a map (0: not at all, 1: black)
_SOURCE_SIDE, _SOURCE_MARGIN = 256.0, 28.0  # the strokes' 0..255 box, and a margin around it on screen
_STROKE_ROWS = 14  # strokes listed in the picture (the largest effects); all of them are in --json


def diverging(values: npt.ArrayLike, vmax: float) -> np.ndarray:
    """(..., 3) uint8 colours of values on the diverging scale, +-vmax at its ends."""
    t = np.clip(np.asarray(values, dtype=np.float64) / (vmax or 1.0), -1.0, 1.0)
    return DIVERGING[np.round((t + 1.0) * 127.5).astype(np.intp)]


def _scale(values) -> float:
    """The magnitude a map is scaled to: its largest absolute value (1 for an all-zero map)."""
    m = float(np.max(np.abs(values))) if np.size(values) else 0.0
    return m if m > 0 else 1.0


def _upscale(rgb: np.ndarray, side: int = TILE) -> Image.Image:
    """(S, S, 3) colours -> a side x side image of whole blocks, one per pixel (no smoothing: each is one input)."""
    k = max(1, side // rgb.shape[0])
    return Image.fromarray(np.repeat(np.repeat(rgb, k, axis=0), k, axis=1).astype(np.uint8))


def bitmap_tile(bitmap: np.ndarray, side: int = TILE) -> Image.Image:
    """The network's input as it sees it, dark ink on white."""
    ink = 255 - np.asarray(bitmap, dtype=np.uint8)
    return _upscale(np.repeat(ink[..., None], 3, axis=2), side)


def heat_tile(values: np.ndarray, bitmap: np.ndarray | None, vmax: float, side: int = TILE) -> Image.Image:
    """A diverging map over the drawing: the map's colours multiplied onto the ink shown in light grey."""
    rgb = diverging(values, vmax).astype(np.float64)  # (S, S, 3)
    if bitmap is not None:
        rgb *= (1.0 - _INK_SHADE * np.asarray(bitmap, dtype=np.float64) / 255.0)[..., None]
    return _upscale(rgb.round(), side)


def strokes_tile(strokes: list, colours: list[tuple] | None = None, side: int = TILE, numbers: bool = True,
                 width: int = 4) -> Image.Image:
    """The strokes as drawn (0..255 box, centred like the rasterizer centres them), numbered at their start;
    with colours, each stroke in its colour over a grey outline (so a white one still shows)."""
    img = Image.new("RGB", (side, side), WHITE)
    draw = ImageDraw.Draw(img)
    xs = [v for s in strokes for v in s[0]]
    ys = [v for s in strokes for v in s[1]]
    k = side / (_SOURCE_SIDE + 2 * _SOURCE_MARGIN)
    ox = _SOURCE_MARGIN + (_SOURCE_SIDE - 1 - max(xs)) / 2  # centre the drawing's box [0, max]
    oy = _SOURCE_MARGIN + (_SOURCE_SIDE - 1 - max(ys)) / 2

    def points(s):
        return [((x + ox) * k, (y + oy) * k) for x, y in zip(s[0], s[1])]

    for i, s in enumerate(strokes):
        pts = points(s)
        if colours is not None:
            _polyline(draw, pts, (120, 120, 120), width + 2)
        _polyline(draw, pts, INK if colours is None else colours[i], width)
    if numbers:
        small = typeface(11)
        for i, s in enumerate(strokes):
            x, y = points(s)[0]
            label = str(i + 1)
            w, h = text_width(label, small), text_height(small)
            draw.rectangle((x - w / 2 - 2, y - h / 2 - 2, x + w / 2 + 2, y + h / 2 + 1), fill=WHITE, outline=MUTED)
            draw.text((x, y), label, fill=INK, font=small, anchor="mm")
    return img


def _polyline(draw: ImageDraw.ImageDraw, pts: list, colour, width: int) -> None:
    """A stroke with round ends (a single point is a dot)."""
    if len(pts) > 1:
        draw.line(pts, fill=colour, width=width, joint="curve")
    r = width / 2
    for x, y in (pts[0], pts[-1]):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def colour_key(vmax: float, width: int = TILE, low: str = "against", high: str = "for") -> Image.Image:
    """The diverging scale as a bar with its numbers (-vmax, 0, +vmax) and what its two ends mean."""
    small = typeface(11)
    img = Image.new("RGB", (width, 42), WHITE)
    ramp = diverging(np.linspace(-vmax, vmax, width), vmax)  # (width, 3)
    img.paste(Image.fromarray(np.repeat(ramp[None], 10, axis=0)), (0, 0))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width - 1, 9), outline=MUTED)
    draw.text((0, 13), f"-{_num(vmax)}", fill=MUTED, font=small)
    draw.text((width / 2, 13), "0", fill=MUTED, font=small, anchor="mt")
    draw.text((width, 13), f"+{_num(vmax)}", fill=MUTED, font=small, anchor="rt")
    draw.text((0, 27), f"<- {low}", fill=INK, font=small)
    draw.text((width, 27), f"{high} ->", fill=INK, font=small, anchor="rt")
    return img


def _num(v: float) -> str:
    """A magnitude with three significant digits, without a wall of zeros."""
    return f"{v:.2e}" if v < 1e-3 else f"{v:.3g}"


class _Canvas:
    """A white page on which panels are placed on a grid of columns, each with a title, a tile and a caption."""

    def __init__(self, width: int, height: int):
        self.img = Image.new("RGB", (width, height), WHITE)
        self.draw = ImageDraw.Draw(self.img)

    def text(self, xy, text: str, size: int = 13, fill=INK, **kw) -> None:
        self.draw.text(xy, text, fill=fill, font=typeface(size), **kw)

    def panel(self, x: int, y: int, title: str, tile: Image.Image, caption: str, key: Image.Image | None = None,
              width: int = COLUMN) -> int:
        """Title, tile (framed), key and caption from (x, y); returns the y below the panel."""
        self.text((x, y), title, 14)
        y += 22
        self.img.paste(tile, (x, y))
        self.draw.rectangle((x - 1, y - 1, x + tile.width, y + tile.height), outline=GRID)
        y += tile.height + 6
        if key is not None:
            self.img.paste(key, (x, y))
            y += key.height + 2
        for line in wrap(caption, typeface(12), width - 12, 3):
            self.text((x, y), line, 12, MUTED)
            y += 15
        return y


def _bars(rows: list[tuple[str, float, str]], width: int, vmax: float, diverge: bool) -> Image.Image:
    """Labelled horizontal bars: (label, value, text after the bar). diverge: bars grow left (blue) or right
    (red) from a middle line; else from the left in blue."""
    font = typeface(12)
    label_w = max([text_width(r[0], font) for r in rows] + [10]) + 8
    note_w = max([text_width(r[2], font) for r in rows] + [10]) + 6
    bar_w = max(40, width - label_w - note_w)
    pitch = 20
    img = Image.new("RGB", (width, pitch * len(rows) + 4), WHITE)
    draw = ImageDraw.Draw(img)
    mid = label_w + bar_w / 2 if diverge else label_w
    for i, (label, value, note) in enumerate(rows):
        y = i * pitch + 3
        draw.text((0, y + 7), label, fill=INK, font=font, anchor="lm")
        reach = (bar_w / 2 if diverge else bar_w) * min(abs(value) / (vmax or 1.0), 1.0)
        colour = tuple(int(c) for c in diverging(value, vmax)) if diverge else (66, 146, 198)
        x0, x1 = (mid, mid + reach) if value >= 0 else (mid - reach, mid)
        draw.rectangle((x0, y, max(x1, x0 + 1), y + 13), fill=colour, outline=(120, 120, 120) if diverge else None)
        draw.text((label_w + bar_w + 6, y + 7), note, fill=INK, font=font, anchor="lm")
    if diverge:
        draw.line([(mid, 0), (mid, img.height)], fill=MUTED)
    return img


def render_explanation(e) -> Image.Image:
    """The picture of a doodle.explain.Explanation: what the network saw and guessed, which pixels and which
    strokes mattered, and what separates the guess from the runner-up."""
    name, other = e.classes[e.target], e.classes[e.other]
    p, q = float(e.probabilities[e.target]), float(e.probabilities[e.other])
    strokes = e.strokes is not None
    c = _Canvas(2 * PAD + 3 * COLUMN, 1600)  # cropped to what was drawn
    question = f"Why did the network guess '{name}'?" if e.target_source == "top guess" else \
        f"What in this drawing speaks for '{name}'?"
    c.text((PAD, 14), question, 22)
    views = "no test-time views" if e.tta == "none" else f"test-time views: {e.tta}"
    c.text((PAD, 46), f"p('{name}') = {p:.1%}, runner-up '{other}' {q:.1%} (calibrated, T = {e.temperature:.2f}; "
                      f"{views}, as doodle predict)", 13, MUTED)
    c.text((PAD, 64), f"drawing: {e.input}    model: {e.model}", 12, MUTED)
    y0 = 96
    xs = [PAD + k * COLUMN for k in range(3)]

    # Row 1: what it saw, and what it guessed.
    if strokes:
        b0 = c.panel(xs[0], y0, "1. As drawn", strokes_tile(e.strokes),
                     "the strokes in the order drawn, each numbered at its start")
    else:
        note = Image.new("RGB", (TILE, TILE), WHITE)
        for i, line in enumerate(wrap("no strokes came with this input (an image or a bitmap): the network reads "
                                      "only the pixels on the right", typeface(12), TILE - 16, 4)):
            ImageDraw.Draw(note).text((8, 70 + 16 * i), line, fill=MUTED, font=typeface(12))
        b0 = c.panel(xs[0], y0, "1. As drawn", note, "an image's ink is traced into lines and rendered like strokes")
    source = "strokes" if strokes else "image or bitmap"
    b1 = c.panel(xs[1], y0, "2. As the network sees it", bitmap_tile(e.bitmap),
                 f"{e.bitmap.shape[0]}x{e.bitmap.shape[1]} pixels rendered from the {source}: the network's only input")
    top = e.top(5)
    bars = _bars([(t["category"][:18], t["probability"], f"{t['probability']:.1%}") for t in top], COLUMN - 20,
                 max(t["probability"] for t in top), diverge=False)
    b2 = c.panel(xs[2], y0, "3. Its guesses", bars,
                 "the five most probable classes (probabilities of all classes add up to 100%)")

    # Row 2: which pixels mattered.
    y1 = max(b0, b1, b2) + 24
    s_max, g_max, d_max = _scale(e.saliency), _scale(e.gradient_x_input), _scale(e.difference)
    b0 = c.panel(xs[0], y1, f"4. Saliency for '{name}'", heat_tile(e.saliency, e.bitmap, s_max),
                 f"d log p('{name}') / d pixel: red, more ink here raises p('{name}'); blue, it lowers it",
                 colour_key(s_max))
    b1 = c.panel(xs[1], y1, "5. Gradient x input", heat_tile(e.gradient_x_input, e.bitmap, g_max),
                 f"saliency times the ink: red ink argues for '{name}', blue ink against; blank paper counts zero",
                 colour_key(g_max))
    b2 = c.panel(xs[2], y1, f"6. '{name}' rather than '{other}'", heat_tile(e.difference, e.bitmap, d_max),
                 f"d [log p('{name}') - log p('{other}')] / d pixel: red favours '{name}', blue '{other}'",
                 colour_key(d_max, low=other[:14], high=name[:14]))

    # Row 3: which strokes mattered.
    y2 = max(b0, b1, b2) + 24
    if e.contributions is None:
        c.text((PAD, y2), "Stroke attribution needs strokes: this input has none of the pen's (an image or a "
                          "bitmap), so only the pixel views are shown.", 13, MUTED)
        return c.img.crop((0, 0, c.img.width, y2 + 20 + PAD))
    contrib = np.asarray(e.contributions, dtype=np.float64)
    c_max = _scale(contrib)
    colours = [tuple(int(v) for v in diverging(d, c_max)) for d in contrib]
    b0 = c.panel(xs[0], y2, "7. Strokes by contribution", strokes_tile(e.strokes, colours, width=6),
                 f"each stroke coloured by how much p('{name}') falls when the drawing is rendered without it",
                 colour_key(c_max, low="lowers", high="raises"))
    shown = np.sort(np.argsort(-np.abs(contrib), kind="stable")[:_STROKE_ROWS])  # the largest effects, in order
    listed = [(f"stroke {i + 1}", float(contrib[i]), f"{contrib[i]:+.3f} (without: {e.without[i]:.1%})")
              for i in shown]
    c.text((xs[1], y2), f"8. What each stroke adds to p('{name}')", 14)
    table = _bars(listed, 2 * COLUMN - 30, c_max, diverge=True)
    c.img.paste(table, (xs[1], y2 + 22))
    y = y2 + 28 + table.height
    more = f"; the {len(contrib) - len(shown)} strokes with the smallest effects are in --json" \
        if len(contrib) > len(shown) else ""
    for line in wrap(f"p('{name}') with every stroke ({p:.1%}) minus p('{name}') with the drawing rendered again "
                     f"without that stroke{more}", typeface(12), 2 * COLUMN - 30, 3):
        c.text((xs[1], y), line, 12, MUTED)
        y += 15
    return c.img.crop((0, 0, c.img.width, max(b0, y) + PAD))


def render_units(u) -> Image.Image:
    """The picture of a doodle.explain.Units: the most important first-layer units' templates, and a template
    per class, each on its own diverging scale."""
    side, per_row, gap = 112, 8, 14
    cols = min(per_row, max(len(u.units), len(u.classes), 1))
    width = PAD * 2 + cols * (side + gap)
    unit_rows = -(-len(u.units) // per_row)
    class_rows = -(-len(u.classes) // per_row)
    cell_h = side + 38
    head = 130
    height = head + unit_rows * cell_h + 110 + class_rows * cell_h + 70
    c = _Canvas(max(width, 900), height)
    c.text((PAD, 14), "What the network learned", 22)
    c.text((PAD, 46), f"model: {u.model}; measured on {u.drawings:,} held-out test drawings", 12, MUTED)
    y = 72
    total = float(u.importance.sum()) or 1.0
    c.text((PAD, y), f"The {len(u.units)} most important of the first hidden layer's {len(u.importance)} units", 15)
    y += 22
    for line in wrap(f"Each tile: the 784 weights into the unit (times batch norm's scale, where there is one), "
                     f"red pixels raise the unit, blue lower it. Importance: {u.IMPORTANCE}; the share is of all "
                     f"units' importance.", typeface(12), c.img.width - 2 * PAD, 3):
        c.text((PAD, y), line, 12, MUTED)
        y += 15
    y = head
    for k, (unit, t) in enumerate(zip(u.units, u.templates)):
        x = PAD + (k % per_row) * (side + gap)
        yy = y + (k // per_row) * cell_h
        c.img.paste(heat_tile(t, None, _scale(t), side), (x, yy))
        c.draw.rectangle((x - 1, yy - 1, x + side, yy + side), outline=GRID)
        c.text((x, yy + side + 4), f"unit {unit}", 12)
        c.text((x, yy + side + 19), f"importance {u.importance[unit]:.3g} ({u.importance[unit] / total:.1%})", 10,
               MUTED)
    y += unit_rows * cell_h + 16
    c.text((PAD, y), "What each class responds to", 15)
    y += 22
    for line in wrap(f"Each tile: the {u.CLASS_TEMPLATE}. Up to "
                     f"{max(u.class_counts)} drawings per class.", typeface(12), c.img.width - 2 * PAD, 4):
        c.text((PAD, y), line, 12, MUTED)
        y += 15
    y += 8
    for k, (name, t) in enumerate(zip(u.classes, u.class_templates)):
        x = PAD + (k % per_row) * (side + gap)
        yy = y + (k // per_row) * cell_h
        c.img.paste(heat_tile(t, None, _scale(t), side), (x, yy))
        c.draw.rectangle((x - 1, yy - 1, x + side, yy + side), outline=GRID)
        c.text((x, yy + side + 4), name[:18], 12)
        c.text((x, yy + side + 19), f"{u.class_counts[k]} drawings", 10, MUTED)
    y += class_rows * cell_h + 4
    c.img.paste(colour_key(1.0, 240, low="lowers", high="raises").crop((0, 0, 240, 10)), (PAD, y))
    c.text((PAD + 250, y - 2), "blue lowers, white no effect, red raises; each tile scaled to its own largest "
                               "value", 12, MUTED)
    return c.img.crop((0, 0, c.img.width, y + 10 + PAD))
