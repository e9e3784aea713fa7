"""Evaluation inputs: ndjson, numpy_bitmap .npy and image folders, labelled and prepared like training data;
unknown categories counted, not dropped; and a whole offline train -> evaluate -> predict cycle."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from doodle.errors import DoodleError
from doodle.evaluate import evaluate
from doodle.inputs import labelled
from doodle.predict import predict
from doodle.raster import rasterize
from doodle.train import train

RASTER = {"size": 28, "line_width": 16.0, "padding": 16.0}


def test_ndjson_inputs_are_rasterised_like_training(quickdraw_dir):
    path = quickdraw_dir / "full" / "simplified" / "apple.ndjson"
    data = labelled([path], RASTER)
    first = json.loads(path.read_text().splitlines()[0])
    assert data.labels[0] == "apple" and data.x.dtype == np.uint8
    assert np.array_equal(data.x[0], rasterize(first["drawing"]))


def test_npy_label_from_file_name(quickdraw_dir, tmp_path):
    src = np.load(quickdraw_dir / "full" / "numpy_bitmap" / "eye.npy")[:10]
    np.save(tmp_path / "eye.npy", src)
    data = labelled([tmp_path / "eye.npy"], RASTER)
    assert data.labels == ["eye"] * 10 and np.array_equal(data.x.reshape(10, -1), src)
    with pytest.raises(DoodleError, match="28x28 but the model expects 64x64"):
        labelled([tmp_path / "eye.npy"], dict(RASTER, size=64))


def test_image_folders_one_per_category(quickdraw_dir, tmp_path):
    for word in ("apple", "banana"):
        (tmp_path / word).mkdir()
        for p in sorted((quickdraw_dir / "sketches" / word).iterdir())[:3]:
            shutil.copy(p, tmp_path / word / p.name)
    (tmp_path / "banana" / "notes.txt").write_text("not an image")
    (tmp_path / "banana" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    data = labelled([tmp_path], RASTER)
    assert data.labels == ["apple"] * 3 + ["banana"] * 3
    assert len(data.problems) == 1 and "broken.png" in data.problems[0]


def test_missing_and_unsupported_inputs(tmp_path):
    with pytest.raises(DoodleError, match="no such file or folder"):
        labelled([tmp_path / "nope.ndjson"], RASTER)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DoodleError, match="unsupported input"):
        labelled([tmp_path / "x.csv"], RASTER)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """configs/offline.yaml, shrunk: synthetic shapes, no network at all."""
    from pathlib import Path

    root = tmp_path_factory.mktemp("offline")
    cfg = Path(__file__).resolve().parents[1] / "configs" / "offline.yaml"
    res = train(cfg, ["data.per_category=150", "train.epochs=4", "model.hidden=[64]"], data_dir=root / "data",
                out=root / "run")
    return root, res


def test_offline_cycle_learns_shapes(offline_run, quickdraw_dir):
    root, res = offline_run
    assert (root / "data" / "synthetic" / "circle.ndjson").is_file()
    assert res.test_accuracy > 0.6  # 8 classes, chance is 12.5%
    summary = evaluate(root / "run", data_dir=root / "data")
    assert summary["n"] == 8 * 15 and summary["accuracy"] == pytest.approx(res.test_accuracy)
    # the real Quick, Draw! shapes: scored, with the other categories reported as unknown
    real = [quickdraw_dir / "full" / "simplified" / f"{w}.ndjson" for w in ("circle", "square", "cat")]
    s = evaluate(root / "run", real)
    assert set(s["unknown_categories"]) == {"cat"} and s["n"] > 0
    assert set(s["per_class"]) == set(res.classes)


def test_offline_predict_ndjson(offline_run, tmp_path):
    root, res = offline_run
    lines = (root / "data" / "synthetic" / "star.ndjson").read_text().splitlines()[:5]
    f = tmp_path / "stars.ndjson"
    f.write_text("\n".join(lines) + "\n")
    results, meta = predict([str(f)], model_path=root / "run", top_k=8)
    assert [r["input"] for r in results] == [f"{f}:{i}" for i in range(1, 6)]
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 8 and probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
    assert sum(r["top"][0]["category"] == "star" for r in results) >= 3


def test_predict_blank_and_inverted_images(offline_run, tmp_path):
    root, _ = offline_run
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 300), 255).save(blank)
    results, _ = predict([str(blank)], model_path=root / "run")
    assert "error" in results[0] and "blank.png" in results[0]["error"]
    # a white-on-black circle and the same circle black-on-white get the same prediction
    img = Image.new("L", (400, 400), 0)
    from PIL import ImageDraw

    ImageDraw.Draw(img).ellipse((80, 60, 330, 320), outline=255, width=14)
    img.save(tmp_path / "dark.png")
    Image.eval(img, lambda v: 255 - v).save(tmp_path / "light.png")
    results, _ = predict([str(tmp_path / "dark.png"), str(tmp_path / "light.png")], model_path=root / "run")
    assert results[0]["top"][0]["category"] == results[1]["top"][0]["category"]
    assert results[0]["top"][0]["probability"] == pytest.approx(results[1]["top"][0]["probability"], abs=1e-3)


def test_data_with_no_usable_drawing_says_so(offline_run, tmp_path):
    root, _ = offline_run
    bad = tmp_path / "bad.ndjson"
    bad.write_text("{broken\n")
    with pytest.raises(DoodleError, match=r"no usable drawings in .*bad.ndjson \(bad.ndjson: 0 drawings, 1 bad line"):
        evaluate(root / "run", [bad])


def test_calibration_is_applied_unless_asked_not_to(tmp_path):
    from test_train import blobs, config

    from doodle.checkpoint import load_model
    from doodle.evaluate import evaluate
    from doodle.predict import predict
    from doodle.train import fit

    ds = blobs(size=28)  # numpy_bitmap files are 28x28
    # the plain recipe (no flips, no TTA), whose probabilities on these blobs stay short of certain
    fit(config("train.epochs=6", "train.lr=0.05", "data.image_size=28", "augment.flip=0", "model.tta=none"), ds,
        tmp_path / "run")
    t = load_model(tmp_path / "run")[0].temperature
    assert t != 1.0
    np.save(tmp_path / "square.npy", ds.x[ds.y == 1])
    cal = evaluate(tmp_path / "run", [tmp_path / "square.npy"])
    raw = evaluate(tmp_path / "run", [tmp_path / "square.npy"], calibrated=False)
    assert cal["temperature"] == t and raw["temperature"] == 1.0
    assert cal["accuracy"] == raw["accuracy"] and cal["nll"] != raw["nll"]
    line = json.dumps({"word": "square", "drawing": [[[0, 100], [0, 100]]]})

    p_cal = predict(["-"], tmp_path / "run", stdin=io.StringIO(line))[0][0]["top"]
    p_raw = predict(["-"], tmp_path / "run", stdin=io.StringIO(line), calibrated=False)[0][0]["top"]
    assert [r["category"] for r in p_cal] == [r["category"] for r in p_raw]
    assert p_cal[0]["probability"] != p_raw[0]["probability"]


def test_test_time_augmentation_reaches_evaluate_predict_and_play(tmp_path):
    from test_train import blobs, config

    from doodle.checkpoint import load_model
    from doodle.metrics import negative_log_likelihood
    from doodle.predict import probabilities
    from doodle.train import fit

    ds = blobs(size=28)
    fit(config("train.epochs=3", "data.image_size=28", "model.tta=flip_shift"), ds, tmp_path / "run")
    model = load_model(tmp_path / "run")[0]
    assert model.tta == "flip_shift"
    x = np.random.default_rng(1).integers(0, 120, (20, 28, 28), dtype=np.uint8)  # unsure inputs: moderate probabilities
    np.save(tmp_path / "triangle.npy", x)
    summary = evaluate(tmp_path / "run", [tmp_path / "triangle.npy"])
    assert summary["tta"] == "flip_shift"
    probs = model.predict_proba(x)
    model.tta = "none"
    plain = model.predict_proba(x)
    assert np.abs(probs - plain).max() > 1e-3  # the views change the numbers, so agreement below means something
    assert summary["nll"] == pytest.approx(negative_log_likelihood(probs, np.full(20, 2)), rel=1e-6)
    drawing = [[[0, 100, 200], [0, 100, 0]]]
    line = json.dumps({"word": "triangle", "drawing": drawing})
    top = predict(["-"], tmp_path / "run", stdin=io.StringIO(line))[0][0]["top"]
    bitmap = rasterize(drawing, size=28, line_width=16.0, padding=16.0)[None]
    model.tta = "flip_shift"
    p = probabilities(model, bitmap, "run")[0]  # doodle play's path
    assert [r["probability"] for r in top] == pytest.approx(sorted(p, reverse=True)[:3], rel=1e-6)
    model.tta = "none"
    assert not np.allclose(probabilities(model, bitmap, "run")[0], p, rtol=1e-2, atol=0)  # far beyond the 1e-6 above
