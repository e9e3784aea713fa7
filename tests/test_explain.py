"""`doodle explain`: the input gradient checked three ways (finite differences of the predict path in float64, the
hand-written backward's dX, the graph), the same preprocessing and probabilities as `doodle predict`, stroke
attribution through the real raster path, the pictures, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from doodle import explaindraw
from doodle.checkpoint import load_model
from doodle.cli import app
from doodle.explain import (
    explain,
    explain_drawing,
    input_gradients,
    log_odds,
    log_probability,
    read_drawing,
    stroke_contributions,
    view_transpose,
    without_each_stroke,
)
from doodle.inputs import Drawing, to_bitmap
from doodle.nn import MLP, softmax
from doodle.pixels import TTA, to_float, tta_views
from doodle.predict import predict
from doodle.raster import rasterize

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "quickdraw"
runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def small_model(activation: str, tta: str, side: int = 6) -> MLP:
    """A float64 network with batch norm (running statistics set away from 0 and 1) and a temperature."""
    model = MLP([side * side, 10, 7, 4], activation=activation, norm="batch", tta=tta, dtype=np.float64, seed=3)
    rng = np.random.default_rng(5)
    for norm in model.norms:
        norm.buffers["mean"][:] = rng.normal(0, 0.3, norm.buffers["mean"].shape)
        norm.buffers["var"][:] = rng.uniform(0.5, 2.0, norm.buffers["var"].shape)
        norm.params["gain"][:] = rng.normal(1, 0.3, norm.params["gain"].shape)
    model.temperature = 1.3
    return model


def log_p_by_predict(model: MLP, x: np.ndarray) -> np.ndarray:
    """log p (N, C) from the predict path (predict_logits: test-time views averaged), independently in float64."""
    z = model.predict_logits(x) / model.temperature
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("tta", ["none", "flip_shift"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_input_gradient_equals_central_differences_of_the_predict_path(activation, tta):
    model = small_model(activation, tta)
    x = np.random.default_rng(1).uniform(0, 1, (1, 36))
    h = 1e-6
    for score, f in ((log_probability(2), lambda lp: lp[0, 2]), (log_odds(2, 0), lambda lp: lp[0, 2] - lp[0, 0])):
        grad, logp = input_gradients(model, x, score)
        np.testing.assert_allclose(logp, log_p_by_predict(model, x), rtol=1e-12, atol=1e-12)
        numeric = np.empty(36)
        for i in range(36):
            up, down = x.copy(), x.copy()
            up[0, i] += h
            down[0, i] -= h
            numeric[i] = (f(log_p_by_predict(model, up)) - f(log_p_by_predict(model, down))) / (2 * h)
        assert np.abs(grad[0]).max() > 1e-3  # a real gradient, not zeros on both sides
        err = np.abs(grad[0] - numeric).max() / np.abs(numeric).max()
        assert err < 1e-7, err


@pytest.mark.parametrize("tta", ["none", "flip_shift"])
def test_graph_input_gradient_equals_the_hand_written_backward_dx(tta):
    model = small_model("relu", tta)
    x = np.random.default_rng(2).uniform(0, 1, (3, 36))
    y = np.array([0, 3, 1])
    graph, _ = input_gradients(model, x, log_probability(y))
    # By hand: d sum_i log p_yi / d mean-logits = (onehot - p) / T; each view's logits get 1/V of it.
    views = TTA[tta] or [(False, 0, 0)]
    stacked = np.concatenate(list(tta_views(x, views)))  # (V*N, P)
    logits = model.forward(stacked)
    p = softmax(logits.reshape(len(views), 3, -1).mean(axis=0) / model.temperature)
    dmean = (np.eye(4)[y] - p) / model.temperature
    dx = model.backward(np.tile(dmean / len(views), (len(views), 1)), input_grad=True)  # (V*N, P)
    manual = sum(view_transpose(g, v) for g, v in zip(dx.reshape(len(views), 3, -1), views))
    np.testing.assert_allclose(graph, manual, rtol=1e-10, atol=1e-13)


def test_view_transpose_is_the_transpose_of_each_view():
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(2, 25)), rng.normal(size=(2, 25))
    for view in TTA["flip_shift"]:
        (v,) = tta_views(x, [view])
        assert np.isclose(np.sum(v * g), np.sum(x * view_transpose(g, view)))  # <Ax, g> = <x, A^T g>


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A small run with batch norm, test-time views and a fitted temperature: explanations must go its way."""
    from doodle.train import train

    root = tmp_path_factory.mktemp("explain-run")
    res = train(REPO / "configs" / "offline.yaml", ["data.per_category=120", "train.epochs=2", "model.hidden=[32]",
                                                    "model.norm=batch", "model.tta=flip_shift"],
                data_dir=root / "data", out=root / "run", workers=1)
    return Path(res.run)


@pytest.fixture
def drawings(tmp_path) -> Path:
    """Three real drawings of shapes the run knows (a circle, a hexagon, a one-stroke circle)."""
    lines = []
    for word in ("circle", "hexagon"):
        lines.append((FIXTURE / "full" / "simplified" / f"{word}.ndjson").read_text().splitlines()[0])
    path = tmp_path / "shapes.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_same_bitmap_and_probabilities_as_predict(run_dir, drawings, tmp_path):
    model, meta = load_model(run_dir)
    assert model.tta == "flip_shift" and model.temperature != 1.0 and model.norm == "batch"
    image = sorted((FIXTURE / "sketches" / "apple").glob("*.png"))[0]
    for source in (str(drawings), str(image)):
        expl = explain(source, out=tmp_path / "e.png", model_path=run_dir)
        result = predict([source], model_path=run_dir, top_k=8)[0][0]  # the first drawing, as explain takes
        by_name = {t["category"]: t["probability"] for t in result["top"]}
        # The same numbers, up to float32 round-off (BLAS sums a batch of two drawings in another order).
        assert {c: float(p) for c, p in zip(expl.classes, expl.probabilities)} == pytest.approx(by_name, abs=1e-6)
        drawing = read_drawing(source, meta["raster"])
        assert np.array_equal(expl.bitmap, drawing.bitmap)
    # The graph's log-probabilities are predict's too (float32 round-off).
    _, logp = input_gradients(model, expl.bitmap.reshape(1, -1) / 255.0, log_probability(expl.target))
    np.testing.assert_allclose(np.exp(logp[0]), expl.probabilities, atol=2e-6)
    first = json.loads(drawings.read_text().splitlines()[0])
    assert np.array_equal(read_drawing(str(drawings), meta["raster"]).bitmap,
                          rasterize(first["drawing"], **{k: meta["raster"][k] for k in ("size", "line_width",
                                                                                         "padding")}))


def test_stroke_attribution_rerasterizes_without_each_stroke(run_dir):
    model, meta = load_model(run_dir)
    r = {k: meta["raster"][k] for k in ("size", "line_width", "padding")}
    strokes = json.loads((FIXTURE / "full" / "simplified" / "star.ndjson").read_text().splitlines()[0])["drawing"]
    strokes = strokes + [[[10, 60], [200, 230]]]  # a stray line, so there are at least two strokes
    without = without_each_stroke(strokes, meta["raster"])
    for i in range(len(strokes)):  # the front door's bitmap of each, bit for bit
        assert np.array_equal(without[i], to_bitmap(Drawing(strokes[:i] + strokes[i + 1:]), meta["raster"]))
    assert not without_each_stroke(strokes[:1], meta["raster"]).any()  # nothing left: a blank canvas
    p = model.predict_proba(rasterize(strokes, **r)[None])[0]
    c = int(p.argmax())
    contrib, p_without = stroke_contributions(model, strokes, meta["raster"], c, float(p[c]))
    np.testing.assert_allclose(p_without, model.predict_proba(without)[:, c])
    np.testing.assert_allclose(contrib, p[c] - p_without, rtol=1e-6)


def test_explanation_json_and_picture(run_dir, drawings, tmp_path):
    res = run("explain", drawings, "--model", run_dir, "--out", tmp_path / "why.png", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["class_source"] == "top guess" and doc["class"] == doc["top"][0]["category"]
    assert doc["runner_up"]["category"] == doc["top"][1]["category"]
    assert len(doc["saliency"]) == 28 and all(len(row) == 28 for row in doc["saliency"])
    assert np.abs(np.array(doc["saliency"])).max() > 0
    ink = np.array(doc["gradient_x_input"]) != 0
    assert ink.any() and not ink.all()  # gradient x input lives on the ink only
    strokes = json.loads(drawings.read_text().splitlines()[0])["drawing"]
    assert [s["stroke"] for s in doc["strokes"]] == list(range(1, len(strokes) + 1))
    for s in doc["strokes"]:
        assert s["contribution"] == pytest.approx(doc["probability"] - s["probability_without"], abs=1e-6)
    with Image.open(tmp_path / "why.png") as im:
        assert im.format == "PNG" and im.width > 600 and im.height > 600
    other = doc["top"][2]["category"]
    res = run("explain", "-", "--model", run_dir, "--class", other, "--out", tmp_path / "other.png",
              input=drawings.read_text())
    assert res.exit_code == 0, res.output
    assert f"'{other}' (--class)" in res.stdout and "<stdin>:1" in res.stdout and "stroke" in res.stdout


def test_an_image_gets_the_pixel_views_only(run_dir, tmp_path):
    image = sorted((FIXTURE / "sketches" / "apple").glob("*.png"))[0]
    res = run("explain", image, "--model", run_dir, "--out", tmp_path / "img.png")
    assert res.exit_code == 0, res.output
    assert "stroke attribution needs strokes" in res.stdout
    res = run("explain", image, "--model", run_dir, "--out", tmp_path / "img.png", "--json")
    assert json.loads(res.stdout)["strokes"] is None


@pytest.mark.parametrize("args, fragment", [
    (["--class", "unicorn"], "--class 'unicorn': the network knows circle, square"),
    (["--out", "why.svg"], "give a name ending in .png"),
    (["--units"], "--units explains the network, not a drawing"),
])
def test_bad_options_are_one_line_errors(run_dir, drawings, tmp_path, args, fragment):
    res = run("explain", drawings, "--model", run_dir, *args)
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and fragment in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_bad_inputs_are_one_line_errors(run_dir, tmp_path):
    (tmp_path / "empty.ndjson").write_text('{"word": "circle", "drawing": []}\n')
    (tmp_path / "blank.ndjson").write_text("\n\n")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "sketch.txt").write_text("a cat")
    cases = [
        ([tmp_path / "empty.ndjson", "--model", run_dir], "empty.ndjson:1: empty drawing"),
        ([tmp_path / "blank.ndjson", "--model", run_dir], "blank.ndjson: no drawings"),
        (["-", "--model", run_dir], "<stdin>: no drawings"),
        ([tmp_path / "nowhere.ndjson", "--model", run_dir], "nowhere.ndjson: no such file or folder"),
        ([tmp_path / "sketch.txt", "--model", run_dir], "unsupported input"),
        ([tmp_path / "empty.ndjson", "--model", tmp_path / "notarun"], "notarun: not a doodle model"),
        (["--model", run_dir], "give a DRAWING to explain"),
    ]
    for args, fragment in cases:
        res = run("explain", *args, "--out", tmp_path / "x.png", input="")
        assert res.exit_code == 2 and fragment in res.stderr, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "x.png").exists()


def test_units_draws_the_most_important_units_and_a_template_per_class(run_dir, tmp_path):
    res = run("explain", "--units", "--model", run_dir, "--out", tmp_path / "units.png", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["hidden_units"] == 32 and len(doc["units"]) == 16
    imp = [u["importance"] for u in doc["units"]]
    assert imp == sorted(imp, reverse=True) and imp[0] > 0 and sum(u["share"] for u in doc["units"]) <= 1 + 1e-9
    assert [c["category"] for c in doc["classes"]][:2] == ["circle", "square"]
    assert all(c["drawings"] > 0 for c in doc["classes"]) and doc["drawings"] >= sum(c["drawings"]
                                                                                      for c in doc["classes"])
    assert "outgoing weights" in doc["importance"] and "saliency" in doc["class_template"]
    with Image.open(tmp_path / "units.png") as im:
        assert im.format == "PNG" and im.width >= 900


def test_unit_importance_and_templates_follow_the_weights(run_dir):
    from doodle.explain import first_hidden, unit_importance, unit_templates

    model, _ = load_model(run_dir)
    x = np.random.default_rng(0).uniform(0, 1, (5, 784)).astype(np.float32)
    a = first_hidden(model, x)  # (5, 32) after batch norm and ReLU
    norm = model.norms[0]
    pre = (x @ model.dense[0].params["W"] - norm.buffers["mean"]) / np.sqrt(norm.buffers["var"] + norm.eps)
    np.testing.assert_allclose(a, np.maximum(pre * norm.params["gain"] + norm.params["bias"], 0), rtol=1e-4,
                               atol=1e-5)
    out_norm = np.linalg.norm(model.dense[1].params["W"], axis=1)
    np.testing.assert_allclose(unit_importance(model, x), np.abs(a).mean(axis=0) * out_norm, rtol=1e-5)
    bitmaps = np.random.default_rng(1).integers(0, 256, (1500, 28, 28), dtype=np.uint8)  # made float a batch at a time
    assert np.array_equal(unit_importance(model, bitmaps), unit_importance(model, to_float(bitmaps)))
    # A template is the unit's response to each pixel: (x + e_i) changes the pre-norm unit by template[i].
    t = unit_templates(model)
    np.testing.assert_allclose(t, model.dense[0].params["W"] * norm.params["gain"] / np.sqrt(norm.buffers["var"]
                                                                                             + norm.eps), rtol=1e-5)


def test_diverging_colours_red_for_blue_against_white_nothing():
    red, white, blue = explaindraw.diverging(np.array([1.0, 0.0, -1.0]), 1.0).astype(int)
    assert red[0] > 150 > red[2] and blue[2] > 150 > blue[0] and white.min() > 240
    tile = np.asarray(explaindraw.heat_tile(np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([[0, 0], [255, 0]]), 1.0,
                                            side=4)).astype(int)
    assert tile[0, 0, 0] > tile[0, 0, 2] and tile[0, 3, 2] > tile[0, 3, 0]  # red for, blue against
    assert tile[3, 0].max() < tile[3, 3].min()  # ink shows through where the map is zero


def test_explain_drawing_without_strokes_skips_the_attribution(run_dir, drawings):
    model, meta = load_model(run_dir)
    drawing = read_drawing(str(drawings), meta["raster"])
    e = explain_drawing(model, meta, drawing, attribute=False)
    assert e.contributions is None and e.to_json()["strokes"] is None
    np.testing.assert_allclose(e.gradient_x_input, e.saliency * drawing.bitmap / 255.0, rtol=1e-6, atol=1e-12)


def test_the_terminal_output_fits_80_columns(run_dir, drawings, tmp_path, monkeypatch):
    from rich.cells import cell_len

    from doodle import cli_output

    monkeypatch.setattr(cli_output.out, "width", 80)
    for args in (["explain", drawings, "--model", run_dir, "--out", tmp_path / "a.png"],
                 ["explain", "--units", "--model", run_dir, "--out", tmp_path / "u.png"]):
        res = run(*args)
        assert res.exit_code == 0, res.output
        assert all(cell_len(line) <= 80 for line in res.stdout.splitlines()), res.stdout
        assert "picture:" in res.stdout
