"""`doodle export`: the ONNX graph against `doodle predict` (ONNX's reference evaluator and onnxruntime, for every
activation, with and without batch norm and test-time augmentation, and a quickdraw16-sized network), the web
folder's weights read back as its page reads them, quantization, `doodle evaluate` on an exported folder, and every
refusal (a damaged run, an unknown format, a folder that is not an earlier export, a missing onnx) in one line with
nothing half-written left behind."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURE as QUICKDRAW
from conftest import REPO
from typer.testing import CliRunner

from doodle import export as ex
from doodle.checkpoint import load_model, save_model
from doodle.cli import app as cli_app
from doodle.errors import DoodleError
from doodle.evaluate import evaluate
from doodle.nn import MLP
from doodle.pixels import to_float
from doodle.predict import predict
from doodle.raster import rasterize
from doodle.strokes import read_records

onnx = pytest.importorskip("onnx", reason="ONNX export tests need onnx (pip install -e '.[test]')")

RASTER = {"size": 28, "line_width": 16.0, "padding": 16.0}
CLASSES = ["airplane", "alarm clock", "apple", "banana", "bicycle", "cat", "dog", "eye", "house", "star"]
QD16_CLASSES = ["airplane", "alarm clock", "apple", "banana", "bicycle", "bird", "book", "cat", "diamond", "dog", "eye",
                "fish", "flower", "house", "rainbow", "train"]
# Every committed drawing: Google's raw strokes (simplified by doodle on the way), Google's simplified ones, and the
# raw drawings of doodle play's fixture.
RAW_FILES = [*sorted((QUICKDRAW / "full" / "raw").glob("*.ndjson")), REPO / "tests" / "fixtures" / "play" /
             "raw_shapes.ndjson"]
FIXTURE_FILES = [*RAW_FILES, *sorted((QUICKDRAW / "full" / "simplified").glob("*.ndjson"))]
TOLERANCE = 1e-5


def fixture_bitmaps(files=FIXTURE_FILES) -> np.ndarray:
    """(N, 28, 28) uint8: every drawing of the files as `doodle predict` prepares it (read_records -> rasterize)."""
    out = []
    for path in files:
        with open(path, "rb") as fh:
            out += [rasterize(rec["drawing"], **RASTER) for _, rec, err in read_records(fh, str(path)) if not err]
    return np.stack(out)


def make_run(folder: Path, hidden=(48, 24), activation="relu", norm="none", tta="none", classes=CLASSES,
             temperature=1.3, seed=0) -> Path:
    """A run folder of an untrained network whose outputs are spread like a trained one's: batch norm's running
    statistics come from the fixture's drawings, its gain and shift are random."""
    init = "glorot" if activation in ("tanh", "sigmoid") else "he"
    model = MLP([784, *hidden, len(classes)], activation=activation, norm=norm, tta=tta, init=init, seed=seed)
    if norm == "batch":
        rng = np.random.default_rng(seed)
        for layer in model.norms:
            layer.params["gain"][:] = rng.uniform(0.5, 1.5, layer.params["gain"].shape)
            layer.params["bias"][:] = rng.normal(0.0, 0.3, layer.params["bias"].shape)
        x = to_float(fixture_bitmaps(RAW_FILES[:2]))
        for _ in range(40):  # momentum 0.9: the initial statistics fade to 1.5%
            model.forward(x, train=True)
    meta = {"classes": list(classes), "layer_sizes": model.layer_sizes, "activation": activation, "norm": norm,
            "tta": tta, "raster": RASTER, "temperature": temperature}
    save_model(folder, model, meta)
    return folder


def doodle_probabilities(run: Path, bitmaps: np.ndarray) -> np.ndarray:
    """doodle's own prediction for bitmaps: the run's model.predict_proba, calibrated, with its TTA, which is what
    `doodle predict` prints for the drawings they come from (test_fixture_bitmaps_give_what_doodle_predict_prints)."""
    return load_model(run)[0].predict_proba(bitmaps)


def predict_probabilities(run: Path, files=FIXTURE_FILES) -> np.ndarray:
    """What `doodle predict` prints for the files, every class, as (N, C) in class order."""
    results, meta = predict([str(p) for p in files], run, top_k=len(load_model(run)[1]["classes"]))
    index = {c: i for i, c in enumerate(meta["classes"])}
    out = np.zeros((len(results), len(index)))
    for i, r in enumerate(results):
        assert "top" in r, r
        for t in r["top"]:
            out[i, index[t["category"]]] = t["probability"]
    return out


def agreement(expected: np.ndarray, got: np.ndarray) -> tuple[float, int]:
    """(max |probability difference|, drawings with the same top-1 class)."""
    return float(np.abs(expected - got).max()), int((expected.argmax(1) == got.argmax(1)).sum())


# ---------------------------------------------------------------- ONNX: the same probabilities as doodle predict


@pytest.fixture(scope="module")
def bitmaps() -> np.ndarray:
    return fixture_bitmaps()


@pytest.fixture(scope="module")
def pixels(bitmaps) -> np.ndarray:
    return to_float(bitmaps)


def test_fixture_bitmaps_give_what_doodle_predict_prints(tmp_path, bitmaps):
    """`doodle predict` on the fixture's ndjson files prints model.predict_proba of these bitmaps, to the bit: the
    other tests compare exports with that."""
    run = make_run(tmp_path / "run", norm="batch", tta="flip_shift")
    printed = predict_probabilities(run)
    assert len(printed) == len(bitmaps) > 300
    assert np.array_equal(printed, doodle_probabilities(run, bitmaps).astype(np.float64))


@pytest.mark.parametrize("tta", ["none", "flip_shift"])
@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_onnx_gives_doodle_predicts_probabilities(tmp_path, bitmaps, pixels, activation, norm, tta, record_property):
    run = make_run(tmp_path / "run", activation=activation, norm=norm, tta=tta, seed=len(activation))
    expected = doodle_probabilities(run, bitmaps)  # (315, 10): the fixture's drawings, as `doodle predict` prints them
    assert expected.shape == (len(pixels), 10) and expected.max(axis=1).min() < 0.9  # spread, not one-hot
    model, meta = load_model(run)
    proto = ex.build_onnx(model, meta)
    data = proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    for runtime in ("reference", "onnxruntime"):
        if runtime == "onnxruntime":
            pytest.importorskip("onnxruntime")
        worst, same = agreement(expected, ex.onnx_probabilities(data, pixels, runtime))
        record_property(f"{runtime}_max_abs_diff", worst)
        assert worst <= TOLERANCE and same == len(expected), (runtime, worst, same)


@pytest.mark.parametrize("tta", ["shift", "flip"])
def test_onnx_other_tta_views(tmp_path, pixels, tta):
    model, meta = load_model(make_run(tmp_path / "run", norm="batch", tta=tta))
    got = ex.onnx_probabilities(ex.build_onnx(model, meta).SerializeToString(), pixels, "reference")
    worst, same = agreement(model.predict_proba(pixels), got)
    assert worst <= TOLERANCE and same == len(pixels)


def test_onnx_quickdraw16_sized_network(tmp_path, bitmaps, pixels, record_property):
    """784-1024-512-16, batch norm, 10 views: the shipped quickdraw16 network's shape."""
    run = make_run(tmp_path / "run", hidden=(1024, 512), norm="batch", tta="flip_shift", classes=QD16_CLASSES,
                   temperature=0.87, seed=3)
    res = ex.export(run, "onnx", tmp_path / "qd16.onnx")
    assert [c["check"] for c in res["checks"]][:2] == ["onnx.checker", "onnx.reference"]
    assert all(c["passed"] is not False for c in res["checks"])
    expected = doodle_probabilities(run, bitmaps)
    for runtime in ("reference", "onnxruntime"):
        if runtime == "onnxruntime":
            pytest.importorskip("onnxruntime")
        worst, same = agreement(expected, ex.onnx_probabilities(tmp_path / "qd16.onnx", pixels, runtime))
        record_property(f"{runtime}_max_abs_diff", worst)
        assert worst <= TOLERANCE and same == len(expected), (runtime, worst, same)


def test_onnx_says_how_to_prepare_a_drawing(tmp_path):
    run = make_run(tmp_path / "run", norm="batch", tta="flip_shift", temperature=1.25)
    proto = onnx.load(ex.export(run, "onnx", tmp_path / "m.onnx")["out"])
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == CLASSES and json.loads(props["raster"]) == RASTER
    assert float(props["temperature"]) == 1.25 and props["tta"] == "flip_shift"
    assert len(json.loads(props["tta_views"])) == 10
    assert props["doodle_version"] == proto.producer_version and proto.producer_name == "doodle"
    assert all(s in proto.doc_string for s in ("float32 [N, 784]", "/ 255", "inside the graph"))
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    ops = {n.op_type for n in proto.graph.node}
    assert {"MatMul", "BatchNormalization", "Relu", "Softmax", "Pad", "Slice", "ReduceSum"} <= ops
    assert proto.opset_import[0].version == ex.OPSET


# ---------------------------------------------------------------- the web folder's weights


def test_web_export_float32_is_the_model_to_the_bit(tmp_path, pixels):
    run = make_run(tmp_path / "run", activation="leaky_relu", norm="batch", tta="flip_shift")
    res = ex.export(run, "web", tmp_path / "site")
    site = tmp_path / "site"
    assert {Path(f["path"]).name for f in res["files"]} == {*ex.PAGE_FILES, *ex.CORE_SCRIPTS, ex.PAGE_SCRIPT,
                                                            ex.NETWORK_JSON, ex.WEIGHTS_BIN}
    assert res["bytes"] == sum(p.stat().st_size for p in site.iterdir())
    assert res["checks"][0]["max_abs_diff"] == 0.0
    model, _ = load_model(run)
    back, meta = ex.load_web(site)
    for name, array in model.state_dict().items():
        assert np.array_equal(back.state_dict()[name], array), name
    assert np.array_equal(back.predict_proba(pixels), model.predict_proba(pixels))
    assert meta["classes"] == CLASSES and meta["raster"] == RASTER and back.temperature == model.temperature
    html = (site / "index.html").read_text()
    assert "/static/" not in html and html.index("strokes.js") < html.index("network.js") < html.index("play.js")
    assert ex.is_web_export(site) and not ex.is_web_export(run) and not ex.is_web_export(None)


def test_quantized_weights(tmp_path):
    run = make_run(tmp_path / "run", hidden=(256, 128), norm="batch")
    model, _ = load_model(run)
    sizes = {}
    for q in ("float32", "float16", "int8"):
        ex.export(run, "web", tmp_path / q, quantize=None if q == "float32" else q)
        sizes[q] = (tmp_path / q / ex.WEIGHTS_BIN).stat().st_size
        back, meta = ex.load_web(tmp_path / q)
        assert meta["weights"] == q
        for layer in model.dense:
            w, got = layer.params["W"], back.state_dict()[f"{layer.name}.W"]
            if q == "float16":
                assert np.array_equal(got, w.astype(np.float16).astype(np.float32))
            elif q == "int8":  # per output unit: off by at most half a step of that unit's scale
                step = np.abs(w).max(axis=0) / 127
                assert (np.abs(got - w) <= step / 2 * 1.001 + 1e-12).all()
                assert len(np.unique(got[:, 0])) <= 255
        assert np.array_equal(back.state_dict()["norm0.var"], model.state_dict()["norm0.var"])  # float32 as is
    assert 0.49 < sizes["float16"] / sizes["float32"] < 0.51
    assert 0.25 < sizes["int8"] / sizes["float32"] < 0.27  # + a float32 scale per unit and the norms


def test_doodle_evaluate_scores_an_exported_folder(tmp_path, play_model):
    """float32 scores exactly like the run; int8 is scored with the weights its page uses, on the run's test split."""
    ex.export(play_model, "web", tmp_path / "f32")
    ex.export(play_model, "web", tmp_path / "i8", quantize="int8")
    base = evaluate(play_model)
    same = evaluate(tmp_path / "f32")
    assert same["model"] == str(tmp_path / "f32") and same["n"] == base["n"]
    assert same["accuracy"] == base["accuracy"] and same["nll"] == base["nll"]
    res = CliRunner().invoke(cli_app, ["evaluate", "--model", str(tmp_path / "i8"), "--json"])
    assert res.exit_code == 0, res.output
    quantized = json.loads(res.stdout)
    assert quantized["n"] == base["n"] and abs(quantized["accuracy"] - base["accuracy"]) <= 0.02
    assert quantized["nll"] != base["nll"]  # really the int8 weights
    on_data = evaluate(tmp_path / "i8", [QUICKDRAW / "full" / "simplified" / "star.ndjson"])
    assert on_data["n"] > 0 and on_data["data"] == [str(QUICKDRAW / "full" / "simplified" / "star.ndjson")]


# ---------------------------------------------------------------- the command, and every refusal in one line


def run_cli(*args):
    return CliRunner().invoke(cli_app, ["export", *map(str, args)])


def one_line_error(res, code: int = 2) -> str:
    assert res.exit_code == code, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_cli_json_says_what_was_written(tmp_path):
    run = make_run(tmp_path / "run", tta="flip_shift")
    res = run_cli("--model", run, "--format", "onnx", "--out", tmp_path / "m.onnx", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["format"] == "onnx" and doc["tta"] == "flip_shift" and doc["tta_views"] == 10 and doc["tta_included"]
    assert doc["files"] == [{"path": str(tmp_path / "m.onnx"), "bytes": (tmp_path / "m.onnx").stat().st_size}]
    assert [c["check"] for c in doc["checks"]][:2] == ["onnx.checker", "onnx.reference"]
    res = run_cli("--model", run, "-f", "web", "-o", tmp_path / "site", "--quantize", "float16")
    assert res.exit_code == 0, res.output
    assert "weights.bin" in res.stdout and "float16" in res.stdout and "http.server" in res.stdout


def test_refusals_are_one_line_and_leave_nothing(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    assert "unknown export format 'pdf'" in one_line_error(run_cli("--model", run, "-f", "pdf"))
    assert "--quantize" in one_line_error(run_cli("--model", run, "-f", "web", "--quantize", "int4",
                                                  "-o", tmp_path / "w"))
    assert "--format web" in one_line_error(run_cli("--model", run, "-f", "onnx", "--quantize", "int8",
                                                    "-o", tmp_path / "m.onnx"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    assert "not an earlier doodle web export" in one_line_error(run_cli("--model", run, "-f", "web", "-o",
                                                                        tmp_path / "notes"))
    assert "not an earlier doodle ONNX export" in one_line_error(run_cli("--model", run, "-f", "onnx", "-o",
                                                                         tmp_path / "notes" / "mine.txt"))
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("model.json", "model.npz"):
        (damaged / name).write_bytes((run / name).read_bytes())
    (damaged / "model.npz").write_bytes((run / "model.npz").read_bytes()[:300])
    assert "corrupted model weights" in one_line_error(run_cli("--model", damaged, "-f", "onnx", "-o",
                                                               tmp_path / "d.onnx"))

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    assert 'pip install "doodle[export]"' in one_line_error(run_cli("--model", run, "-f", "onnx", "-o",
                                                                    tmp_path / "x.onnx"))
    assert not (tmp_path / "d.onnx").exists() and not (tmp_path / "x.onnx").exists()


def test_an_export_replaces_an_earlier_one_and_a_failed_one_changes_nothing(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    ex.export(run, "web", tmp_path / "site")
    ex.export(run, "onnx", tmp_path / "m.onnx")
    first = (tmp_path / "m.onnx").read_bytes()
    ex.export(run, "web", tmp_path / "site", quantize="int8")  # an earlier export is replaced whole
    assert ex.load_web(tmp_path / "site")[1]["weights"] == "int8"
    monkeypatch.setattr(ex, "CHECK_TOLERANCE", -1.0)  # every comparison now fails
    with pytest.raises(DoodleError, match="export check failed, nothing written"):
        ex.export(run, "onnx", tmp_path / "m.onnx")
    with pytest.raises(DoodleError, match="export check failed, nothing written"):
        ex.export(run, "onnx", tmp_path / "new.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == first and not (tmp_path / "new.onnx").exists()
    monkeypatch.setattr(ex, "load_web", lambda folder: (_ for _ in ()).throw(DoodleError("read back failed")))
    with pytest.raises(DoodleError, match="read back failed"):
        ex.export(run, "web", tmp_path / "site")
    with pytest.raises(DoodleError, match="read back failed"):
        ex.export(run, "web", tmp_path / "other")
    assert ex.is_web_export(tmp_path / "site") and not (tmp_path / "other").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "run", "site"]  # no temporaries left


def test_a_damaged_export_is_a_one_line_error(tmp_path):
    run = make_run(tmp_path / "run")
    ex.export(run, "web", tmp_path / "site")
    weights = tmp_path / "site" / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(DoodleError, match="does not match network.json"):
        ex.load_web(tmp_path / "site")
    desc = json.loads((tmp_path / "site" / "network.json").read_text())
    desc["layers"] = desc["layers"][:-1]
    (tmp_path / "site" / "network.json").write_text(json.dumps(desc))
    res = CliRunner().invoke(cli_app, ["evaluate", "--model", str(tmp_path / "site")])
    assert "network.json" in one_line_error(res)
    ex.export(run, "web", tmp_path / "site")
    desc = json.loads((tmp_path / "site" / "network.json").read_text())
    desc["raster"]["size"] = 0
    (tmp_path / "site" / "network.json").write_text(json.dumps(desc))
    with pytest.raises(DoodleError, match="network.json: 'raster' size"):
        ex.load_web(tmp_path / "site")


def test_exports_walk_the_models_own_layers():
    """One table entry per layer class of doodle.nn, and a layer the table lacks is refused by name."""
    from doodle import nn

    classes = {c for c in vars(nn).values() if isinstance(c, type) and issubclass(c, nn.Layer) and c is not nn.Layer}
    assert classes == set(ex.LAYERS)

    class Odd(nn.Layer):
        pass

    odd = Odd()
    odd.name = "odd0"
    with pytest.raises(DoodleError, match="does not know the layer odd0"):
        ex.layer_export(odd)


def test_the_exported_page_has_no_teach_mode_and_a_changed_page_is_refused():
    """Teaching needs doodle play's server: the exported page leaves teach.js out, and its Teach button stays
    hidden (teach.js is what shows it). A page whose script tags are not the expected ones is refused, not
    exported with a script it cannot load."""
    static = (ex.STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert ex.TEACH_SCRIPT in static and 'id="mode-teach"' in static
    page = ex.page_html(static)
    assert ex.TEACH_SCRIPT not in page and "/static/" not in page
    assert re.search(r'<button id="mode-teach"[^>]* hidden', page)
    assert page.index(ex.PAGE_SCRIPT) < page.index('src="play.js"')
    for damaged in (static.replace('src="/static/play.js"', 'src="/static/game.js"'),
                    static.replace(f"{ex.TEACH_SCRIPT}\" defer></script>\n", f"{ex.TEACH_SCRIPT}\" defer></script>")):
        with pytest.raises(DoodleError, match="not the script tags an exported page is made from"):
            ex.page_html(damaged)
