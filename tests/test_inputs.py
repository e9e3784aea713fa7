"""doodle.inputs, the front door: every kind of input reaches the model by one path, folders and their labels,
one wording of each error whatever the command, the play API refusing exactly what ndjson lines refuse, and
the ink budget in predict and evaluate."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from typer.testing import CliRunner

from doodle.cli import app as cli_app
from doodle.errors import DoodleError
from doodle.evaluate import evaluate
from doodle.images import image_to_bitmap
from doodle.inputs import Drawing, entries, labelled, to_bitmap, to_bitmaps
from doodle.play import make_app
from doodle.predict import predict
from doodle.raster import rasterize
from doodle.simplify import simplify_raw
from doodle.strokes import read_records

RASTER = {"size": 28, "line_width": 16.0, "padding": 16.0}
SMALL = {"size": 16, "line_width": 24.0, "padding": 8.0}  # another model's settings: the path must follow them
RAW = [[[10.5, 60.25, 110.0, 300.0], [5.0, 80.0, 55.5, 105.0], [0, 16, 32, 48]], [[40.0, 40.0], [200.0, 10.0]]]
ZIGZAG = [[[0.0, 1e9] * 10_000, [0.0, 1e9] * 10_000]]  # 20,000 points corner to corner: 7.2 million units of ink


def lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def inputs_dir(quickdraw_dir, tmp_path):
    """apple.ndjson (3 simplified lines), eye.npy (3 rows), a sketch image, sub-folders of sketches."""
    src = quickdraw_dir / "full"
    (tmp_path / "apple.ndjson").write_text("".join((src / "simplified" / "apple.ndjson").read_text()
                                                   .splitlines(keepends=True)[:3]))
    np.save(tmp_path / "eye.npy", np.load(src / "numpy_bitmap" / "eye.npy")[:3])
    sketches = sorted((quickdraw_dir / "sketches" / "banana").iterdir())
    shutil.copy(sketches[0], tmp_path / "banana.png")
    for word in ("apple", "banana"):
        (tmp_path / "sketches" / word).mkdir(parents=True)
        for p in sorted((quickdraw_dir / "sketches" / word).iterdir())[:2]:
            shutil.copy(p, tmp_path / "sketches" / word / p.name)
    return tmp_path


@pytest.mark.parametrize("raster", [RASTER, SMALL], ids=["28px", "16px"])
def test_every_kind_of_input_reaches_the_model_by_one_path(inputs_dir, raster):
    stdin = io.StringIO(json.dumps({"word": "z", "drawing": RAW}) + "\n")
    npy_raster = raster if raster["size"] == 28 else None
    args = [inputs_dir / "apple.ndjson", inputs_dir / "banana.png", "-"] + ([inputs_dir / "eye.npy"] * bool(npy_raster))
    found = entries(args, raster, stdin=stdin)
    names = [e.name for e in found]
    assert names[:5] == [f"{inputs_dir / 'apple.ndjson'}:{i}" for i in (1, 2, 3)] + [str(inputs_dir / "banana.png"),
                                                                                      "<stdin>:1"]
    assert all(e.error is None and e.bitmap.shape == (raster["size"],) * 2 for e in found)
    settings_ = dict(size=raster["size"], line_width=raster["line_width"], padding=raster["padding"])
    apples = [json.loads(t)["drawing"] for t in (inputs_dir / "apple.ndjson").read_text().splitlines()]
    for e, strokes in zip(found, apples):
        assert e.word == "apple" and e.drawing.strokes == strokes and e.drawing.line == int(e.name.split(":")[-1])
        assert np.array_equal(e.bitmap, rasterize(strokes, **settings_))
    image, piped = found[3], found[4]
    assert image.word is None and np.array_equal(image.bitmap, image_to_bitmap(inputs_dir / "banana.png", **settings_))
    assert piped.word == "z" and np.array_equal(piped.bitmap, rasterize(simplify_raw(RAW), **settings_))
    assert np.array_equal(to_bitmap(piped.drawing, raster), piped.bitmap)
    if npy_raster:
        rows = np.load(inputs_dir / "eye.npy").reshape(-1, 28, 28)
        assert [e.name for e in found[5:]] == [f"{inputs_dir / 'eye.npy'}[{i}]" for i in range(3)]
        assert all(e.word == "eye" and e.drawing is None for e in found[5:])
        assert np.array_equal(np.stack([e.bitmap for e in found[5:]]), rows)


def test_labelled_data_keeps_bitmaps_and_labels_in_step(inputs_dir):
    data = labelled([inputs_dir / "eye.npy", inputs_dir / "apple.ndjson", inputs_dir / "eye.npy"], RASTER)
    assert data.labels == ["eye"] * 3 + ["apple"] * 3 + ["eye"] * 3 and data.problems == []
    rows = np.load(inputs_dir / "eye.npy").reshape(-1, 28, 28)
    apples = [Drawing(json.loads(t)["drawing"]) for t in (inputs_dir / "apple.ndjson").read_text().splitlines()]
    assert np.array_equal(data.x, np.concatenate([rows, to_bitmaps(apples, RASTER), rows]))
    piped = labelled(["-"], RASTER, stdin=io.BytesIO(json.dumps({"word": "z", "drawing": RAW}).encode()))
    assert piped.labels == ["z"] and np.array_equal(piped.x[0], rasterize(simplify_raw(RAW)))


def test_folders_label_images_by_the_folder_they_are_in(inputs_dir):
    (inputs_dir / "notes.txt").write_text("not an input")
    (inputs_dir / ".DS_Store").write_bytes(b"\0\0")
    (inputs_dir / "sketches" / "banana" / "._hidden.png").write_bytes(b"AppleDouble")
    found = entries([inputs_dir / "sketches"], RASTER)
    assert [(e.word, e.name.rsplit("/", 2)[-2]) for e in found] == [("apple", "apple")] * 2 + [("banana", "banana")] * 2
    assert all(e.error is None for e in found)
    data = labelled([inputs_dir], RASTER)  # its own files first (the image labelled by the folder), then sub-folders
    assert data.labels == ["apple"] * 3 + [inputs_dir.name] + ["eye"] * 3
    assert data.problems == []
    (inputs_dir / "empty").mkdir()
    with pytest.raises(DoodleError, match=r"empty: nothing to read in this folder; give a folder of \.ndjson"):
        labelled([inputs_dir / "empty"], RASTER)


def test_labelled_counts_what_it_cannot_use_one_line_per_file(tmp_path):
    path = lines(tmp_path / "mixed.ndjson", [{"word": "a", "drawing": RAW}, {"drawing": RAW}, {"drawing": RAW},
                                             {"word": "b", "drawing": "oops"}])
    (tmp_path / "blank.ndjson").write_text("\n\n")
    (tmp_path / "alone.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    data = labelled([path, tmp_path / "blank.ndjson", tmp_path / "alone.png"], RASTER)
    assert data.labels == ["a"] and data.problems == [
        "mixed.ndjson: 3 drawings, 1 bad line skipped (line 4: 'drawing' is not a list of strokes)",
        f"{path}: 2 drawings without a 'word' label skipped (line 2, ...)",
        f"{tmp_path / 'blank.ndjson'}: no drawings (no non-blank line); give one drawing per line",
        f"{tmp_path / 'alone.png'}: no label; put images in a folder named after their category"]
    with pytest.raises(DoodleError, match=r"mixed.ndjson:4: 'drawing' is not a list of strokes; fix the line"):
        labelled([path], RASTER, strict=True)


# ---------------------------------------------------------------- one wording of each error, whatever the command


def test_each_mistake_reads_the_same_in_predict_evaluate_and_graph(play_model, tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    lines(tmp_path / "bad.ndjson", [{"word": "circle", "drawing": [[[0, 1], [0, True]]]}])
    np.save(tmp_path / "wide.npy", np.zeros((2, 28, 28), np.uint8))
    cases = {tmp_path / "nowhere.png": f"{tmp_path / 'nowhere.png'}: no such file or folder; check the path",
             tmp_path / "x.csv": f"{tmp_path / 'x.csv'}: unsupported input; give images (.png",
             tmp_path / "bad.ndjson": f"{tmp_path / 'bad.ndjson'}:1: stroke 1 y has true, not a number"}
    runner = CliRunner()
    for arg, message in cases.items():
        said = []
        for command in (["predict", arg], ["evaluate", arg, "--strict"], ["graph", arg, "--out", tmp_path / "g.svg"]):
            res = runner.invoke(cli_app, [*map(str, command), "--model", str(play_model)])
            assert res.exit_code in (1, 2) and "Traceback" not in res.output, res.output
            (line,) = [t for t in res.stderr.splitlines() if t.startswith("error:")]
            said.append(line.removesuffix("; fix the line or run without --strict"))
        assert said[0] == said[1] == said[2] and said[0].startswith(f"error: {message}"), said


# ---------------------------------------------------------------- the play API refuses what an ndjson line refuses

good_number = st.one_of(st.integers(0, 255), st.floats(-1e3, 1e3, allow_nan=False))
bad_number = st.one_of(st.integers(-10 ** 30, 10 ** 30), st.booleans(), st.none(), st.text(max_size=2),
                       st.sampled_from([float("nan"), float("inf"), 1e300, -2e9, [1]]))
FLAWS = ("number", "ragged", "stroke shape", "drawing shape", "no points")


@st.composite
def drawings(draw):
    """A well-formed drawing (raw or simplified numbers, with or without times), half the time with one flaw."""
    strokes = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 6))
        xs = draw(st.lists(good_number, min_size=n, max_size=n))
        ys = draw(st.lists(good_number, min_size=n, max_size=n))
        strokes.append([xs, ys] + ([list(range(0, 16 * n, 16))] if draw(st.booleans()) else []))
    flaw = draw(st.sampled_from((None,) * len(FLAWS) + FLAWS))
    stroke = draw(st.sampled_from(strokes))
    if flaw == "number":
        row = stroke[draw(st.integers(0, 1))]
        row[draw(st.integers(0, len(row) - 1))] = draw(bad_number)
    elif flaw == "ragged":
        stroke[1] = stroke[1][1:]
    elif flaw == "stroke shape":
        strokes[strokes.index(stroke)] = draw(st.sampled_from([stroke[0], [stroke[0]], stroke + [[], []],
                                                               {"x": stroke[0]}, [stroke[0], 5]]))
    elif flaw == "no points":
        strokes = [[[], []] for _ in strokes]
    return draw(st.sampled_from(["strokes", 7, {"d": strokes}])) if flaw == "drawing shape" else strokes


@pytest.fixture(scope="module")
def api(play_model, tmp_path_factory):
    return TestClient(make_app(play_model, tmp_path_factory.mktemp("mine")))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawings())
def test_the_play_api_and_ndjson_lines_take_and_refuse_the_same_drawings(api, drawing):
    body = json.dumps({"drawing": drawing})  # NaN and Infinity as the JSON tokens Python writes for them
    ((where, record, error),) = read_records(io.BytesIO(body.encode()), "d")
    res = api.post("/api/predict", content=body, headers={"Content-Type": "application/json"})
    if error is not None:
        assert res.status_code in (400, 413) and res.json() == {"error": error.removeprefix("d:1: ")}
    else:  # the API reads the drawing as raw (its default format): Google's recipe, then the model's raster
        assert res.status_code == 200, res.text
        assert res.json()["bitmap"] == rasterize(simplify_raw(drawing), **RASTER).tolist()


# ---------------------------------------------------------------- the ink budget in predict and evaluate


def test_predict_and_evaluate_refuse_a_drawing_over_the_ink_budget_like_any_bad_line(play_model, tmp_path):
    path = lines(tmp_path / "circle.ndjson", [{"word": "circle", "drawing": RAW}, {"word": "circle", "drawing": ZIGZAG},
                                              {"word": "circle", "drawing": RAW}])
    results, _ = predict([str(path)], play_model)
    assert ["top" in r for r in results] == [True, False, True]
    assert results[1]["error"].startswith(f"{path}:2: drawing's strokes run 7,2") and "over the limit of 100,000" \
        in results[1]["error"]
    res = CliRunner().invoke(cli_app, ["predict", str(path), "--model", str(play_model), "--json"])
    assert res.exit_code == 1 and "Traceback" not in res.output and "over the limit of 100,000" in res.stderr
    summary = evaluate(play_model, [path])
    assert summary["n"] == 2 and summary["problems"][0].startswith(
        "circle.ndjson: 2 drawings, 1 bad line skipped (line 2: drawing's strokes run 7,2")
    res = CliRunner().invoke(cli_app, ["evaluate", str(path), "--model", str(play_model), "--strict"])
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {path}:2: drawing's strokes run")


def test_predict_takes_npy_rows_and_folders_too(inputs_dir, play_model):
    results, _ = predict([str(inputs_dir / "eye.npy"), str(inputs_dir / "sketches")], play_model, top_k=2)
    assert [r["input"] for r in results[:3]] == [f"{inputs_dir / 'eye.npy'}[{i}]" for i in range(3)]
    assert len(results) == 7 and all(len(r["top"]) == 2 and "error" not in r for r in results)
