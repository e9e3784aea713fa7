"""Picture reports: the files appear, are real PNGs of sensible size, and show what they claim to show."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from doodle import metrics, report
from doodle.categories import CATEGORIES
from doodle.errors import DoodleError

NAMES = ["airplane", "alarm clock", "apple", "banana", "bicycle", "bird", "book", "cat", "diamond", "dog"]


def fake_run(n=200, c=10, seed=0, accuracy=0.7):
    """Probabilities that are right about `accuracy` of the time, their labels and drawings."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    guess = np.where(rng.random(n) < accuracy, y, rng.integers(0, c, size=n))
    probs = rng.dirichlet(np.ones(c), size=n).astype(np.float32) * 0.5
    probs[np.arange(n), guess] += 0.5
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return probs, y, probs.argmax(1), images


def open_png(path):
    with Image.open(path) as im:
        im.verify()  # raises on a truncated or corrupt file
    im = Image.open(path)
    assert im.format == "PNG"
    return im.convert("RGB")


def luminance(im, xy):
    r, g, b = im.getpixel(xy)
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_write_report_files(tmp_path):
    probs, y, pred, images = fake_run()
    summary = metrics.summarize(probs, y, NAMES)
    out = tmp_path / "report" / "nested"  # created on demand
    paths = report.write_report(out, summary, images, y, pred, NAMES, probs=probs)
    assert paths == [out / "confusion.png", out / "misclassified.png", out / "reliability.png", out / "summary.json"]
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "misclassified.png", "reliability.png",
                                                     "summary.json"]  # no temp files
    for path in paths[:3]:
        w, h = open_png(path).size
        assert 400 <= w <= 2500 and 300 <= h <= 2500, (path.name, w, h)
    assert json.loads((out / "summary.json").read_text()) == summary


def test_without_images_no_grid(tmp_path):
    probs, y, pred, _ = fake_run()
    paths = report.write_report(tmp_path, metrics.summarize(probs, y, NAMES), None, y, pred, NAMES)
    assert [p.name for p in paths] == ["confusion.png", "reliability.png", "summary.json"]
    assert not (tmp_path / "misclassified.png").exists()


def test_reliability_bars_follow_accuracy():
    # two bins: (0.5, 0.6] all wrong, (0.9, 1.0] all right; the bar of the second reaches the top
    probs = np.array([[0.55, 0.45]] * 4 + [[0.95, 0.05]] * 4)
    y = np.array([1] * 4 + [0] * 4)
    bins = metrics.calibration_bins(probs, y, bins=10)
    im = report.render_reliability(bins, "t", size=560).convert("RGB")
    left, top, plot = 70, 50, 560 - 70 - 20
    blue = tuple(int(v) for v in report._BLUES[5])
    x_right = int(left + 0.975 * plot)  # middle of the last bin
    x_wrong = int(left + 0.575 * plot)
    assert im.getpixel((x_right, int(top + 0.5 * plot))) == blue  # accuracy 1: filled half-way up and beyond
    assert im.getpixel((x_wrong, int(top + 0.9 * plot))) != blue  # accuracy 0: no bar


def cell_pixel(im, i, j, inset=3):
    """A pixel near the top-left corner of cell (row i, column j), clear of the centred count."""
    left, top, cell = im.info["matrix_box"]
    return (left + j * cell + inset, top + i * cell + inset)


@pytest.mark.parametrize("c", [10, 345])
def test_perfect_diagonal_is_darker_on_the_diagonal(c):
    names = NAMES if c == 10 else list(CATEGORIES)
    im = report.render_confusion(np.eye(c, dtype=np.int64) * 20, names, "perfect")
    for i in range(0, c, max(1, c // 10)):
        j = (i + 1) % c
        diag = luminance(im, cell_pixel(im, i, i))
        off = luminance(im, cell_pixel(im, i, j))
        assert off == pytest.approx(255)  # an empty cell is white
        assert diag < 100 < off, (i, diag, off)


def test_heat_map_is_row_normalised():
    # Rows with very different counts but the same shares must have the same colours.
    cm = np.array([[300, 100, 0], [3, 1, 0], [0, 2, 2]])
    im = report.render_confusion(cm, ["a", "b", "c"], "shares")
    assert im.getpixel(cell_pixel(im, 0, 0)) == im.getpixel(cell_pixel(im, 1, 0))
    assert im.getpixel(cell_pixel(im, 0, 1)) == im.getpixel(cell_pixel(im, 1, 1))
    lum = [luminance(im, cell_pixel(im, *cell)) for cell in ((0, 0), (2, 1), (0, 1))]
    assert lum[0] < lum[1] < lum[2]
    assert im.getpixel(cell_pixel(im, 2, 0)) == (255, 255, 255)


def test_345_classes_still_produced(tmp_path):
    probs, y, pred, images = fake_run(n=3000, c=345, seed=1)
    summary = metrics.summarize(probs, y, CATEGORIES)
    paths = report.write_report(tmp_path, summary, images, y, pred, CATEGORIES, probs=probs, max_examples=16)
    w, h = open_png(paths[0]).size
    assert 345 * report._CELL_MIN <= w <= 5000 and 345 * report._CELL_MIN <= h <= 5000
    assert open_png(paths[1]).size[1] < 1000  # 16 examples: two rows of eight


def test_misclassified_order_most_confident_first():
    y = np.array([0, 1, 2, 0, 1])
    pred = np.array([1, 1, 0, 2, 0])  # wrong at 0, 2, 3, 4
    probs = np.zeros((5, 3))
    probs[[0, 2, 3, 4], [1, 0, 2, 0]] = [0.5, 0.9, 0.6, 0.5]
    assert report.misclassified_order(y, pred).tolist() == [0, 2, 3, 4]
    assert report.misclassified_order(y, pred, probs).tolist() == [2, 3, 0, 4]  # ties keep data order


def test_grid_shows_only_mistakes_enlarged_dark_on_white():
    n = 40
    y = np.arange(n) % 4
    pred = y.copy()
    wrong = np.arange(0, n, 3)  # 14 mistakes
    pred[wrong] = (y[wrong] + 1) % 4
    images = np.full((n, 28, 28), 128, dtype=np.uint8)  # correct drawings: grey, must not appear
    images[wrong] = 255  # mistakes: solid white ink -> solid black squares once inverted
    im = report.render_misclassified(images.reshape(n, 784), y, pred, ["a", "b", "c", "d"], max_examples=10)
    px = np.asarray(im)
    assert np.count_nonzero((px == 0).all(axis=2)) == 10 * 112 * 112  # 10 shown, each 28 px x 4
    assert np.count_nonzero((px == 127).all(axis=2)) == 0
    assert (px[0, 0] == 255).all()  # white paper


def test_no_mistakes_grid_says_so(tmp_path):
    probs, y, _, images = fake_run(n=50)
    pred = y.copy()
    summary = metrics.summarize(probs, y, NAMES)
    paths = report.write_report(tmp_path, summary, images, y, pred, NAMES, probs=probs)
    im = open_png(tmp_path / "misclassified.png")
    assert tmp_path / "misclassified.png" in paths
    px = np.asarray(im)
    assert im.size[1] < 112  # a message, no tiles
    assert np.count_nonzero(px.sum(axis=2) < 300) > 50  # but some text is drawn


def test_wrap_fits_width_and_ellipsises():
    font = report.typeface(12)
    lines = report.wrap("The Great Wall of China -> animal migration (p=0.83)", font, 150, 3)
    assert 2 <= len(lines) <= 3
    assert all(report.text_width(line, font) <= 150 for line in lines)
    assert " ".join(lines) == "The Great Wall of China -> animal migration (p=0.83)"
    short = report.wrap("a " * 200, font, 60, 2)
    assert len(short) == 2 and short[-1].endswith("...")
    cut = report.wrap("x" * 80, font, 40, 50)  # one word wider than the line is hard-cut
    assert "".join(cut) == "x" * 80 and all(report.text_width(part, font) <= 40 for part in cut)


def test_bad_inputs_raise_doodle_error(tmp_path):
    probs, y, pred, images = fake_run(n=20)
    summary = metrics.summarize(probs, y, NAMES)
    with pytest.raises(DoodleError, match="images must be"):
        report.write_report(tmp_path, summary, images[:5], y, pred, NAMES)
    with pytest.raises(DoodleError, match="equal length"):
        report.write_report(tmp_path, summary, images, y, pred[:3], NAMES)
    with pytest.raises(DoodleError, match="probabilities"):
        report.write_report(tmp_path, summary, images, y, pred, NAMES, probs=probs[:, :3])


@pytest.mark.parametrize("counts, ticks", [([7, 0, 3], [0, 5, 10]), ([1, 0, 1], [0, 1]),
                                           ([1234, 300, 5], [0, 500, 1000, 1500])])
def test_reliability_counts_have_a_labelled_axis(counts, ticks):
    # Bins of (0.5, 0.6], (0.6, 0.7], (0.7, 0.8] holding `counts` drawings: the grey histogram below the
    # diagram gets an axis of round counts from 0 to at least the fullest bin, and each bar's height reads on it.
    bins = [{"lo": 0.5 + k / 10, "hi": 0.6 + k / 10, "count": c, "confidence": 0.55 + k / 10, "accuracy": 0.5}
            for k, c in enumerate(counts)]
    im = report.render_reliability(bins, "t", size=560).convert("RGB")
    drawn = im.info["count_ticks"]
    assert [c for c, _ in drawn] == ticks
    (_, y0), (c1, y1) = drawn[0], drawn[-1]
    assert y1 < y0  # counts go up
    left, plot = 70, 560 - 70 - 20
    px = np.asarray(im)
    for k, count in enumerate(counts):
        column = px[int(y1) - 2:int(y0) + 1, int(left + (0.55 + k / 10) * plot)]  # through the middle of bin k
        grey = np.flatnonzero((column == report.MUTED).all(axis=1))
        if count == 0:
            assert len(grey) == 0
            continue
        top = int(y1) - 2 + grey[0]
        assert top == pytest.approx(y0 + (y1 - y0) * count / c1, abs=1.5), (count, top)
    for _, y in drawn:  # a label left of each tick: dark text pixels between the left edge and the axis
        assert (px[int(y) - 4:int(y) + 5, 30:left - 6].sum(axis=2) < 500).any()
