"""Picture reports (Pillow only): for an evaluation a confusion heat map, a grid of mistakes, a reliability diagram
and the summary as JSON; for a run its learning curves (drawn as each epoch ends)."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from doodle.errors import DoodleError
from doodle.fsutil import atomic_path, write_text
from doodle.metrics import confusion_matrix

# Sequential colour scale (matplotlib's "Blues" anchors): 0 = near white, 1 = dark blue, so the
# eye reads "darker = more drawings" and an empty cell looks empty.
_BLUES = np.array(
    [
        (247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214),
        (66, 146, 198), (33, 113, 181), (8, 81, 156), (8, 48, 107),
    ],
    dtype=np.float64,
)
_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_BLUES)), _BLUES[:, ch]) for ch in range(3)], axis=1
).round().astype(np.uint8)  # (256, 3) fraction*255 -> RGB

WHITE = (255, 255, 255)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
GRID = (225, 225, 225)

# Heat-map cell size in pixels: about 720 px of matrix, but never so small that a label is unreadable.
_CELL_MIN, _CELL_MAX, _MATRIX_PX = 10, 44, 720
_MIN_TINT = 24  # LUT index of the lightest nonzero cell
_TILE_SCALE = 4  # a 28x28 drawing shown at 112x112
_TILE_PAD = 10
_CAPTION_LINES = 3


@functools.lru_cache(maxsize=None)
def typeface(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` px (cached: loading it is not free and we ask often); a Pillow built
    without FreeType has only its fixed-size bitmap font."""
    return ImageFont.load_default(size=size)


def text_width(text: str, font) -> int:
    return math.ceil(font.getlength(text))


def text_height(font) -> int:
    left, top, right, bottom = font.getbbox("Hg")
    return bottom


def save_png(image: Image.Image, path: Path) -> Path:
    # The temporary name ends in .tmp, so Pillow cannot infer the format from it.
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")  # optimize=True doubles the time for ~2% smaller files
    return path


def _rotated_labels(labels: list[str], pitch: int, font, width: int, align_right: bool) -> Image.Image:
    """Labels stacked one per `pitch` px, then turned 90 degrees so they read upwards."""
    strip = Image.new("RGB", (width, pitch * len(labels)), WHITE)
    draw = ImageDraw.Draw(strip)
    for i, label in enumerate(labels):
        x = width - text_width(label, font) if align_right else 0
        draw.text((x, i * pitch + pitch / 2), label, fill=INK, font=font, anchor="lm")
    return strip.rotate(90, expand=True)


def render_confusion(confusion: np.ndarray, class_names: list[str], title: str) -> Image.Image:
    """Heat map of the row-normalised (C, C) confusion matrix, names on both axes, counts when they fit.

    `image.info["matrix_box"]` is (left, top, cell): where the matrix starts and each cell's size in px.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    c = len(class_names)
    cell = int(np.clip(_MATRIX_PX // c, _CELL_MIN, _CELL_MAX))
    label_font = typeface(int(np.clip(cell - 2, 8, 14)))
    count_font = typeface(int(np.clip(cell // 3, 8, 13)))
    title_font, axis_font = typeface(18), typeface(14)

    support = confusion.sum(axis=1, keepdims=True)  # (C, 1)
    frac = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)  # (C, C)
    # A share of 1 in 300 would be indistinguishable from nothing, so every nonzero cell gets at least a
    # light tint, and an empty cell is pure white.
    shade = np.where(confusion > 0, np.maximum(np.round(frac * 255), _MIN_TINT), 0).astype(np.intp)  # (C, C)
    colours = _LUT[shade]  # (C, C, 3)
    colours[confusion == 0] = WHITE
    block = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)  # (C*cell, C*cell, 3)
    if cell >= 14:  # grid lines help read a small matrix; on a large one they would be all there is
        block[cell - 1 :: cell, :] = GRID
        block[:, cell - 1 :: cell] = GRID
    side = c * cell

    label_w = max(text_width(name, label_font) for name in class_names)
    pad = 12
    title_h = text_height(title_font) + 2 * text_height(axis_font) + 3 * pad
    left = pad + text_height(axis_font) + pad + label_w + 6
    top = title_h
    bar_w = 16
    right = pad + bar_w + 6 + text_width("100%", axis_font) + pad
    bottom = 6 + label_w + pad + text_height(axis_font) + pad
    width = max(left + side + right, pad + text_width(title, title_font) + pad)
    image = Image.new("RGB", (width, top + side + bottom), WHITE)
    image.paste(Image.fromarray(block), (left, top))
    draw = ImageDraw.Draw(image)

    # Titles.
    draw.text((pad, pad), title, fill=INK, font=title_font)
    note = "rows: true class, columns: predicted class; colour: share of the row"
    if cell >= 28:
        note += "; numbers: drawings"
    draw.text((pad, pad + text_height(title_font) + pad // 2), note, fill=MUTED, font=axis_font)

    # Row labels (true class) right-aligned against the matrix; column labels (predicted) read upwards below it.
    for i, name in enumerate(class_names):
        y = top + i * cell + cell / 2
        draw.text((left - 6, y), name, fill=INK, font=label_font, anchor="rm")
    image.paste(_rotated_labels(class_names, cell, label_font, label_w, align_right=True), (left, top + side + 6))
    axis_w = text_width("true class", axis_font)
    axis_true = _rotated_labels(["true class"], text_height(axis_font) + 4, axis_font, axis_w, align_right=False)
    image.paste(axis_true, (pad, top + max(0, side // 2 - axis_true.height // 2)))
    x_title = (left + side / 2, top + side + 6 + label_w + pad)
    draw.text(x_title, "predicted class", fill=INK, font=axis_font, anchor="mt")

    # Counts in cells, only when the largest one fits with a margin.
    widest = text_width(str(int(confusion.max(initial=0))), count_font)
    if cell >= 28 and widest <= cell - 6:
        for i, j in zip(*np.nonzero(confusion)):
            fill = WHITE if frac[i, j] > 0.5 else INK
            xy = (left + j * cell + (cell - 1) / 2, top + i * cell + (cell - 1) / 2)
            draw.text(xy, str(int(confusion[i, j])), fill=fill, font=count_font, anchor="mm")

    # Colour bar: what a shade means, 0% at the bottom.
    bar_x, bar_h = left + side + pad, min(side, 240)
    ramp = _LUT[np.linspace(255, 0, bar_h).round().astype(np.intp)]  # (bar_h, 3)
    image.paste(Image.fromarray(np.repeat(ramp[:, None, :], bar_w, axis=1)), (bar_x, top))
    draw.rectangle((bar_x, top, bar_x + bar_w - 1, top + bar_h - 1), outline=MUTED)
    for value, y in (("100%", top), ("50%", top + bar_h / 2), ("0%", top + bar_h - 1)):
        draw.text((bar_x + bar_w + 6, y), value, fill=INK, font=axis_font, anchor="lm")
    image.info["matrix_box"] = (left, top, cell)
    return image


def wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` px; words longer than a line are cut; the last line gets an ellipsis."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if text_width(candidate, font) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while text_width(word, font) > width:  # a single over-long word: hard-cut it
            cut = max(1, next(n for n in range(len(word), 0, -1) if text_width(word[:n], font) <= width))
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and text_width(last + "...", font) > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "..."]
    return lines


def _as_images(images, n: int) -> np.ndarray:
    """(N, S, S) uint8 white-on-black from (N, S, S) or flat (N, S*S), uint8 or floats in 0..1."""
    images = np.asarray(images)
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise DoodleError(f"images must be (N, 28, 28) or (N, 784), got shape {images.shape}")
        images = images.reshape(len(images), side, side)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or len(images) != n:
        raise DoodleError(f"images must be {n} square drawings, (N, 28, 28) or (N, 784), got shape {images.shape}")
    if images.dtype != np.uint8:
        scale = 255.0 if images.size and float(images.max()) <= 1.0 else 1.0
        images = np.clip(images * scale, 0, 255).round().astype(np.uint8)
    return images


def misclassified_order(y_true, y_pred, probs=None) -> np.ndarray:
    """Indices of the wrong predictions, most confident first when probs are given (the most telling mistakes)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = np.flatnonzero(y_true != y_pred)  # (M,) in data order
    if probs is None:
        return wrong
    conf = np.asarray(probs)[wrong, y_pred[wrong]]  # (M,) probability given to the wrong class
    return wrong[np.argsort(-conf, kind="stable")]


def render_misclassified(
    images: np.ndarray, y_true, y_pred, class_names: list[str], probs=None, max_examples: int = 64
) -> Image.Image:
    """Grid of the wrongly predicted drawings (most confident mistakes first), dark on white, captioned."""
    images = _as_images(images, len(y_true))
    wrong = misclassified_order(y_true, y_pred, probs)  # (M,)
    conf = None if probs is None else np.asarray(probs)[wrong, y_pred[wrong]]  # (M,) p of the wrong class
    shown = wrong[: max(int(max_examples), 0)]

    header_font, caption_font = typeface(18), typeface(12)
    pad = _TILE_PAD
    side = images.shape[1] * _TILE_SCALE
    tile_w = max(side, 150)
    line_h = text_height(caption_font) + 3
    tile_h = side + 6 + _CAPTION_LINES * line_h
    header_h = text_height(header_font) + 2 * pad

    if len(shown) == 0:
        message = f"No misclassified drawings: all {len(y_true)} predictions are correct."
        image = Image.new("RGB", (max(480, text_width(message, header_font) + 2 * pad), 2 * header_h), WHITE)
        ImageDraw.Draw(image).text((pad, pad), message, fill=INK, font=header_font)
        return image

    cols = min(8, len(shown))
    rows = math.ceil(len(shown) / cols)
    header = f"Misclassified drawings: {len(shown)} of {len(wrong)} shown"
    header += ", most confident first" if probs is not None else ""
    width = max(pad + cols * (tile_w + pad), text_width(header, header_font) + 2 * pad)
    image = Image.new("RGB", (width, header_h + rows * (tile_h + pad) + pad), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), header, fill=INK, font=header_font)

    # Dark ink on white, enlarged by whole pixels (NEAREST) so one sees exactly what the model saw.
    ink = 255 - images[shown]  # (K, S, S)
    big = np.repeat(np.repeat(ink, _TILE_SCALE, axis=1), _TILE_SCALE, axis=2)  # (K, side, side)
    for slot, (index, drawing) in enumerate(zip(shown, big)):
        row, col = divmod(slot, cols)
        x0 = pad + col * (tile_w + pad)
        y0 = header_h + row * (tile_h + pad)
        xi = x0 + (tile_w - side) // 2
        image.paste(Image.fromarray(drawing, mode="L").convert("RGB"), (xi, y0))
        draw.rectangle((xi - 1, y0 - 1, xi + side, y0 + side), outline=GRID)
        caption = f"{class_names[y_true[index]]} -> {class_names[y_pred[index]]}"
        if conf is not None:
            caption += f" (p={conf[slot]:.2f})"
        for line_no, line in enumerate(wrap(caption, caption_font, tile_w, _CAPTION_LINES)):
            xy = (x0 + tile_w / 2, y0 + side + 6 + line_no * line_h)
            draw.text(xy, line, fill=INK, font=caption_font, anchor="mt")
    return image


def render_reliability(bins: list[dict], title: str, size: int = 560) -> Image.Image:
    """Reliability diagram: accuracy per confidence bin as bars against the diagonal of perfect calibration,
    the gap to the diagonal shaded, and below it how many drawings each bin holds, on an axis of counts.

    `image.info["count_ticks"]` is [(count, y in px)] of that axis's labelled ticks."""
    font, small = typeface(16), typeface(12)
    left, top, right, bottom = 70, 50, 20, 150
    plot = size - left - right  # square plot area
    strip_top, strip_h = top + plot + 44, 60  # the histogram of counts
    img = Image.new("RGB", (left + plot + right, top + plot + bottom), WHITE)
    draw = ImageDraw.Draw(img)
    draw.text((left, 16), title, fill=INK, font=font)

    def px(vx: float, vy: float) -> tuple[float, float]:
        return left + vx * plot, top + (1 - vy) * plot

    for k in range(11):  # grid and ticks every 0.1
        v = k / 10
        draw.line([px(v, 0), px(v, 1)], fill=GRID)
        draw.line([px(0, v), px(1, v)], fill=GRID)
        draw.text((px(v, 0)[0], top + plot + 6), f"{v:.1f}", fill=MUTED, font=small, anchor="mt")
        draw.text((left - 8, px(0, v)[1]), f"{v:.1f}", fill=MUTED, font=small, anchor="rm")
    # The count axis runs from 0 to a round number at or above the fullest bin, in 1, 2 or 5 times a power of ten.
    most = max(max(b["count"] for b in bins), 1)
    raw = most / 3
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ceiling = step * math.ceil(most / step)
    ticks = [(c, strip_top + strip_h * (1 - c / ceiling)) for c in range(0, ceiling + 1, step)]
    for count, y in ticks:
        draw.line([(left, y), (left + plot, y)], fill=GRID)
        draw.line([(left - 4, y), (left, y)], fill=INK)
        draw.text((left - 8, y), f"{count:,}", fill=MUTED, font=small, anchor="rm")
    for b in bins:
        if not b["count"]:
            continue
        x0, x1 = px(b["lo"], 0)[0] + 1, px(b["hi"], 0)[0] - 1
        draw.rectangle([x0, px(0, b["accuracy"])[1], x1, top + plot], fill=tuple(_BLUES[5].astype(int)))
        lo, hi = sorted((b["accuracy"], b["confidence"]))
        draw.rectangle([x0, px(0, hi)[1], x1, px(0, lo)[1]], outline=(200, 60, 60), width=2)  # the gap
        draw.rectangle([x0, strip_top + strip_h * (1 - b["count"] / ceiling), x1, strip_top + strip_h], fill=MUTED)
    draw.line([(left, strip_top), (left, strip_top + strip_h)], fill=INK)
    draw.line([px(0, 0), px(1, 1)], fill=INK, width=1)  # perfect calibration
    draw.rectangle([left, top, left + plot, top + plot], outline=INK)
    draw.text((left + plot / 2, top + plot + 22), "confidence (top-1 probability)", fill=INK, font=small, anchor="mt")
    draw.text((left, strip_top + strip_h + 10), "bars: accuracy per bin; red: gap to the diagonal; grey: drawings "
              "per bin", fill=MUTED, font=small)
    for text, middle in (("accuracy", top + plot // 2), ("drawings", strip_top + strip_h // 2)):
        label = _rotated_labels([text], 20, small, text_width(text, small) + 4, align_right=False)
        img.paste(label, (8, middle - label.height // 2))
    img.info["count_ticks"] = ticks
    return img


def _summary_json(summary: dict) -> str:
    """Indented JSON with each confusion-matrix row on one line (345 x 345 counts one per line is unreadable)."""
    matrix = summary.get("confusion", {}).get("matrix") if isinstance(summary.get("confusion"), dict) else None
    if not matrix:
        return json.dumps(summary, indent=2) + "\n"
    token = uuid.uuid4().hex  # a placeholder no class name can collide with
    doc = {**summary, "confusion": {**summary["confusion"], "matrix": [f"{token}{i}" for i in range(len(matrix))]}}
    text = json.dumps(doc, indent=2)
    text = re.sub(f'"{token}(\\d+)"', lambda m: json.dumps(matrix[int(m[1])]), text)
    return text + "\n"


def write_report(
    out_dir: str | os.PathLike,
    summary: dict,
    images: np.ndarray | None,
    y_true,
    y_pred,
    class_names,
    probs=None,
    max_examples: int = 64,
) -> list[Path]:
    """Write confusion.png, misclassified.png (if images are given), reliability.png (if the summary has
    calibration bins) and summary.json into out_dir; return paths."""
    names = [str(name) for name in class_names]
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise DoodleError(
            f"true and predicted labels must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}"
        )
    if probs is not None:
        probs = np.asarray(probs)
        if probs.shape != (len(y_true), len(names)):
            raise DoodleError(f"probabilities must have shape {(len(y_true), len(names))}, got {probs.shape}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    confusion = confusion_matrix(y_true, y_pred, len(names))  # (C, C) also validates the labels
    n = len(y_true)
    accuracy = summary.get("accuracy", np.trace(confusion) / n if n else 0.0)
    title = f"Confusion matrix (row-normalised): {n} drawings, {len(names)} classes, accuracy {100 * accuracy:.1f}%"
    written = [save_png(render_confusion(confusion, names, title), out / "confusion.png")]
    if images is not None:
        grid = render_misclassified(images, y_true, y_pred, names, probs, max_examples)
        written.append(save_png(grid, out / "misclassified.png"))
    if summary.get("calibration"):
        title = f"Reliability: ECE {100 * summary['ece']:.1f}%, NLL {summary['nll']:.3f}"
        written.append(save_png(render_reliability(summary["calibration"], title), out / "reliability.png"))
    write_text(out / "summary.json", _summary_json(summary))
    written.append(out / "summary.json")
    return written


# --- learning curves -----------------------------------------------------------------------------------------

CURVES_PNG = "curves.png"
TRAIN_COLOUR, VAL_COLOUR, LR_COLOUR = (33, 113, 181), (230, 85, 13), (90, 90, 90)
_MAX_EPOCHS = 100_000  # a larger epoch number in metrics.jsonl is damage, not a run to draw


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round numbers (steps of 1, 2 or 5 times a power of ten) covering lo..hi."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_label(v: float, step: float) -> str:
    """A tick's number with as many decimals as its step needs (scientific for tiny learning rates)."""
    if v != 0 and (abs(v) < 1e-3 or step < 1e-3):
        return f"{v:.0e}".replace("e-0", "e-")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{v:.{decimals}f}"


def _plot(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str, xmax: int,
          series: list[tuple[list, tuple, bool]], ylim: tuple[float, float], best: int | None) -> None:
    """One panel: axes in box (left, top, right, bottom), lines of (values per epoch, colour, dotted), the best
    epoch as a vertical line. Values are None where an epoch has none (no validation split)."""
    small, title_font = typeface(12), typeface(14)
    left, top, right, bottom = box
    lo, hi = ylim
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5

    def px(epoch: float, v: float) -> tuple[float, float]:
        return (left + (epoch - 1) / max(xmax - 1, 1) * (right - left), bottom - (v - lo) / (hi - lo) * (bottom - top))

    draw.text((left, top - 24), title, fill=INK, font=title_font)
    yt = nice_ticks(lo, hi)
    for v in yt:
        if lo <= v <= hi:
            y = px(1, v)[1]
            draw.line([(left, y), (right, y)], fill=GRID)
            draw.text((left - 6, y), _tick_label(v, yt[1] - yt[0] if len(yt) > 1 else 1.0), fill=MUTED, font=small,
                      anchor="rm")
    for e in nice_ticks(1, xmax, 6):
        if 1 <= e <= xmax and float(e).is_integer():
            x = px(e, lo)[0]
            draw.line([(x, bottom), (x, bottom + 4)], fill=MUTED)
            draw.text((x, bottom + 6), str(int(e)), fill=MUTED, font=small, anchor="mt")
    draw.text(((left + right) / 2, bottom + 22), "epoch", fill=MUTED, font=small, anchor="mt")
    if best is not None:
        x = px(best, lo)[0]
        for y in range(top, bottom, 8):  # dashed
            draw.line([(x, y), (x, min(y + 4, bottom))], fill=(160, 160, 160))
    for values, colour, dotted in series:
        points = [px(e, v) for e, v in enumerate(values, 1) if v is not None]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2, joint="curve")
        for x, y in points if dotted or len(points) == 1 else ():
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    draw.rectangle(box, outline=INK)


def render_curves(history: list[dict], total_epochs: int | None = None, title: str = "Learning curves") -> Image.Image:
    """Training and validation loss and accuracy per epoch, and the learning rate, as three panels side by side.

    history: metrics.jsonl rows (epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr); the epoch axis
    runs to total_epochs (the run's plan) so a run in progress shows how far it has come."""
    def epoch(v) -> bool:
        return type(v) is int and 0 < v <= _MAX_EPOCHS

    rows = sorted((r for r in history if isinstance(r, dict) and epoch(r.get("epoch"))), key=lambda r: r["epoch"])
    total_epochs = total_epochs if epoch(total_epochs) else None
    xmax = max([total_epochs or 1, 2] + [r["epoch"] for r in rows])
    by_epoch = {r["epoch"]: r for r in rows}

    def number(v):  # a hand-edited or damaged row draws nothing where it is not a finite number
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    def column(key: str) -> list:
        return [number(by_epoch[e].get(key)) if e in by_epoch else None for e in range(1, xmax + 1)]

    def finite(values):
        return [v for v in values if v is not None]

    losses = finite(column("train_loss") + column("val_loss"))
    lrs = finite(column("lr"))
    val = {e: number(r.get("val_accuracy")) for e, r in by_epoch.items() if number(r.get("val_accuracy")) is not None}
    score = val or {e: number(r.get("train_accuracy")) for e, r in by_epoch.items()
                    if number(r.get("train_accuracy")) is not None}
    best = max(score, key=lambda e: (score[e], -e)) if score else None

    panel, gap, left_pad, top_pad = 260, 80, 70, 96
    width = left_pad + 3 * panel + 2 * gap + 30
    height = top_pad + panel + 90
    img = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(img)
    draw.text((left_pad - 50, 14), title, fill=INK, font=typeface(18))
    done = f"{len(rows)} of {xmax} epochs" if total_epochs and len(rows) < total_epochs else f"{len(rows)} epochs"
    best_note = f"; grey dashes: the best epoch ({best}), the one kept" if best is not None else ""
    draw.text((left_pad - 50, 40), f"{done}{best_note}", fill=MUTED, font=typeface(13))
    boxes = [(left_pad + k * (panel + gap), top_pad, left_pad + k * (panel + gap) + panel, top_pad + panel)
             for k in range(3)]
    _plot(draw, boxes[0], "loss (cross-entropy)", xmax,
          [(column("train_loss"), TRAIN_COLOUR, False), (column("val_loss"), VAL_COLOUR, True)],
          (0.0, max(losses, default=1.0) * 1.05), best)
    accs = finite(column("train_accuracy") + column("val_accuracy"))
    _plot(draw, boxes[1], "accuracy (top-1)", xmax,
          [(column("train_accuracy"), TRAIN_COLOUR, False), (column("val_accuracy"), VAL_COLOUR, True)],
          (math.floor(min(accs, default=0.0) * 10) / 10, 1.0), best)
    _plot(draw, boxes[2], "learning rate (at each epoch's end)", xmax, [(column("lr"), LR_COLOUR, False)],
          (0.0, max(lrs, default=1.0) * 1.05), best)
    legend_y = top_pad + panel + 56
    x = left_pad
    legend = [("training (augmented batches, dropout on)", TRAIN_COLOUR, False)]
    if val:
        legend.append(("validation (held out, no test-time views)", VAL_COLOUR, True))
    for label, colour, dotted in legend:
        draw.line([(x, legend_y), (x + 28, legend_y)], fill=colour, width=2)
        if dotted:
            draw.ellipse((x + 11, legend_y - 3, x + 17, legend_y + 3), fill=colour)
        draw.text((x + 36, legend_y), label, fill=INK, font=typeface(12), anchor="lm")
        x += 40 + text_width(label, typeface(12)) + 30
    return img


def write_curves(path: str | os.PathLike, history: list[dict], total_epochs: int | None = None) -> Path:
    """Draw the learning curves of `history` (metrics.jsonl rows) to path (PNG, replaced atomically)."""
    return save_png(render_curves(history, total_epochs), Path(path))
