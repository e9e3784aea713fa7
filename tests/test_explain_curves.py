"""Training made visible: every run draws its learning curves as epochs end, and `doodle evaluate --report`
includes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from doodle import report
from doodle.evaluate import evaluate
from doodle.runs import read_metrics
from doodle.train import train

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data.per_category=60", "train.epochs=3", "model.hidden=[16]"]


def colour_count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    return int(np.all(np.asarray(image.convert("RGB")) == colour, axis=2).sum())


def test_a_run_draws_its_curves_as_each_epoch_ends(tmp_path, monkeypatch):
    drawn = []
    real = report.write_curves

    def spy(path, history, total_epochs=None):
        drawn.append((Path(path).name, [row["epoch"] for row in history], total_epochs))
        return real(path, history, total_epochs)

    monkeypatch.setattr(report, "write_curves", spy)
    res = train(REPO / "configs" / "offline.yaml", SMALL, data_dir=tmp_path / "data", out=tmp_path / "run", workers=1)
    assert drawn == [("curves.png", [1], 3), ("curves.png", [1, 2], 3), ("curves.png", [1, 2, 3], 3)]
    with Image.open(Path(res.run) / "curves.png") as im:
        assert im.format == "PNG"
        assert colour_count(im, report.TRAIN_COLOUR) > 50 and colour_count(im, report.VAL_COLOUR) > 50

    rows = read_metrics(Path(res.run), json.loads((Path(res.run) / "model.json").read_text())["run_id"])
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    summary = evaluate(res.run, report_dir=tmp_path / "report")
    assert str(tmp_path / "report" / "curves.png") in summary["report"]
    with Image.open(tmp_path / "report" / "curves.png") as im:
        assert im.size == Image.open(Path(res.run) / "curves.png").size


def test_curves_without_validation_and_of_a_run_in_progress():
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 0.5 + 0.1 * e, "val_loss": None,
                "val_accuracy": None, "lr": 0.01 * (1 - e / 10)} for e in (1, 2, 3)]
    im = report.render_curves(history, total_epochs=10)
    assert colour_count(im, report.TRAIN_COLOUR) > 50 and colour_count(im, report.VAL_COLOUR) == 0
    assert colour_count(im, report.LR_COLOUR) > 20
    one = report.render_curves(history[:1], total_epochs=1)  # a single epoch is a dot, not nothing
    assert colour_count(one, report.TRAIN_COLOUR) > colour_count(report.render_curves([], 1), report.TRAIN_COLOUR)


def test_damaged_rows_draw_nothing_where_they_are_not_numbers():
    rows = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": "x", "val_accuracy": None, "lr": 0.1},
            {"epoch": "2", "train_loss": 0.5}, {"epoch": 10 ** 9}, [1, 2], {"epoch": 3, "train_loss": float("nan"),
                                                                         "train_accuracy": True, "lr": 0.05}]
    im = report.render_curves(rows, total_epochs="80")
    assert im.width > 900 and colour_count(im, report.TRAIN_COLOUR) > 0


def test_a_better_epoch_draws_higher_on_the_accuracy_panel():
    def lowest_val_pixel(acc):
        rows = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": acc,
                 "lr": 0.01}, {"epoch": 2, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0,
                               "val_accuracy": acc, "lr": 0.01}]
        a = np.asarray(report.render_curves(rows, 2))[:, 400:700]  # the accuracy panel
        ys = np.flatnonzero(np.all(a == report.VAL_COLOUR, axis=2).any(axis=1))
        return ys.min()

    assert lowest_val_pixel(0.9) < lowest_val_pixel(0.6)  # higher accuracy, nearer the top of the image


def test_nice_ticks_are_round_evenly_spaced_and_inside():
    for lo, hi in ((0, 1), (1, 80), (0, 0.002), (0.4, 1.0), (0, 1.7)):
        ticks = report.nice_ticks(lo, hi)
        steps = np.diff(ticks)
        assert 3 <= len(ticks) <= 7 and lo - 1e-12 <= ticks[0] and ticks[-1] <= hi + 1e-12, (lo, hi, ticks)
        assert np.allclose(steps, steps[0])
        mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
        assert any(np.isclose(mantissa, m) for m in (1, 2, 5)), (lo, hi, ticks)
    assert report.nice_ticks(3, 3) == [3]
