"""The CLI end to end through typer's CliRunner: download from a loopback server, train, evaluate and
predict; exit codes and one-line errors for user mistakes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import helpers
from helpers import cli as run

WORDS = ["apple", "banana", "eye"]  # in the committed fixture as 40 simplified drawings, bitmaps and sketches


def one_line_error(result, fragment: str, code: int = 2):
    helpers.one_line_error(result, fragment, code, alone=False)


def test_categories():
    res = run("categories")
    assert res.exit_code == 0
    names = res.stdout.splitlines()
    assert len(names) == 345 and names[0] == "aircraft carrier" and "The Eiffel Tower" in names
    assert json.loads(run("categories", "--json").stdout) == names


def test_download_from_loopback(tmp_path, static_server, quickdraw_dir):
    res = run("download", "apple", "alarm clock", "--max-drawings", 7, "--data-dir", tmp_path, "--base-url",
              static_server, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["status"] for r in rows] == ["downloaded", "downloaded"]
    got = (tmp_path / "simplified" / "alarm clock.ndjson").read_text().splitlines()
    src = (quickdraw_dir / "full" / "simplified" / "alarm clock.ndjson").read_text().splitlines()
    assert got == src[:7]
    again = json.loads(run("download", "apple", "--max-drawings", 7, "--data-dir", tmp_path, "--base-url",
                           static_server, "--json").stdout)
    assert again[0]["status"] == "skipped"


def test_download_mistakes_are_one_line(tmp_path, static_server):
    one_line_error(run("download", "aple", "--data-dir", tmp_path, "--base-url", static_server), "apple")
    one_line_error(run("download", "apple", "--format", "svg", "--data-dir", tmp_path), "svg")
    one_line_error(run("download", "--data-dir", tmp_path), "name at least one category")
    assert not any(tmp_path.rglob("*.ndjson"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, static_server):
    """A real run: 3 categories x 40 drawings downloaded over loopback, rasterised and trained."""
    root = tmp_path_factory.mktemp("cli")
    cfg = root / "tiny.yaml"
    cfg.write_text(
        "data:\n"
        f"  categories: [{', '.join(WORDS)}]\n"
        "  per_category: 40\n"
        "  val_fraction: 0.15\n"
        "  test_fraction: 0.2\n"
        f"  base_url: {static_server}\n"
        "model:\n  hidden: [64]\n"
        "train:\n  epochs: 6\n  batch_size: 32\n  lr: 0.003\n")
    res = run("train", "--config", cfg, "--data-dir", root / "data", "--out", root / "run", "--json")
    assert res.exit_code == 0, res.output
    return root, json.loads(res.stdout)


def test_train_json_and_run_folder(trained):
    root, out = trained
    for key in ("run", "classes", "layer_sizes", "batch_size", "val_accuracy", "test_accuracy", "epochs",
                "samples_per_second"):
        assert key in out
    assert out["classes"] == WORDS and out["layer_sizes"] == [784, 64, 3] and out["epochs"] == 6
    assert out["samples_per_second"] > 0
    assert 0.4 < out["test_accuracy"] <= 1.0  # 3 classes: well above chance after 6 epochs
    assert len((root / "run" / "metrics.jsonl").read_text().splitlines()) == 6
    cache = list((root / "data" / "cache" / "simplified").glob("*.npy"))
    assert len(cache) == 3 and all(np.load(p).shape == (40, 28, 28) for p in cache)


def test_evaluate_reproduces_test_split(trained):
    root, out = trained
    res = run("evaluate", "--model", root / "run", "--data-dir", root / "data", "--json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["n"] == 3 * 8 and s["accuracy"] == pytest.approx(out["test_accuracy"])
    for key in ("top3_accuracy", "map3", "per_class", "confusion"):
        assert key in s
    # MAP@3 from the model's own probabilities on the same split, computed independently
    from doodle.checkpoint import load_model
    from doodle.evaluate import test_split_bitmaps

    model, meta = load_model(root / "run")
    split = test_split_bitmaps(root / "run", meta, root / "data")
    probs = model.predict_proba(split.x)
    truth = np.array([meta["classes"].index(label) for label in split.labels])
    rank = (probs > probs[np.arange(len(truth)), truth][:, None]).sum(axis=1) + 1
    assert s["map3"] == pytest.approx(np.mean(np.where(rank <= 3, 1.0 / rank, 0.0)))
    assert s["map3"] < 1.0 and s["accuracy"] < s["map3"]  # some misses, ranked second or third
    table = run("evaluate", "--model", root / "run", "--data-dir", root / "data")
    assert table.exit_code == 0 and "MAP@3" in table.stdout and "confusion matrix" in table.stdout


def test_evaluate_min_accuracy_gates(trained):
    root, out = trained
    base = ("evaluate", "--model", root / "run", "--data-dir", root / "data", "--json")
    acc = out["test_accuracy"]
    assert acc < 1.0  # this seeded run misses a few, so a gate above it must fail
    assert run(*base, "--min-accuracy", acc).exit_code == 0
    res = run(*base, "--min-accuracy", min(1.0, acc + 0.01))
    one_line_error(res, "below --min-accuracy", code=1)
    assert json.loads(res.stdout)["accuracy"] == pytest.approx(acc)  # the JSON is still printed


def test_evaluate_on_files_reports_unknown_categories(trained, quickdraw_dir, tmp_path):
    root, _ = trained
    files = [quickdraw_dir / "full" / "simplified" / f"{w}.ndjson" for w in ("apple", "cat")]
    res = run("evaluate", "--model", root / "run", *files, "--json", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    n_apple, n_cat = (sum(1 for line in f.read_text().splitlines() if line.strip()) for f in files)
    assert s["n"] == n_apple and s["unknown_categories"] == {"cat": n_cat}
    assert (tmp_path / "rep" / "confusion.png").is_file() and (tmp_path / "rep" / "misclassified.png").is_file()


def test_compare_models(trained):
    root, _ = trained
    res = run("evaluate", "--model", root / "run", "--model", root / "run", "--data-dir", root / "data")
    assert res.exit_code == 0 and "model comparison" in res.stdout


def test_predict_images_ndjson_and_stdin(trained, quickdraw_dir, tmp_path):
    root, _ = trained
    sketch = sorted((quickdraw_dir / "sketches" / "apple").iterdir())[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    lines = (quickdraw_dir / "full" / "simplified" / "eye.ndjson").read_text().splitlines()[:2]
    res = run("predict", sketch, bad, "-", "--model", root / "run", "--json", "--top-k", 2,
              input="\n".join(lines + ["{oops"]) + "\n")
    assert res.exit_code == 1, res.output  # a failure in the batch -> non-zero, the others still predicted
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["input"] for r in rows] == [str(sketch), str(bad), "<stdin>:1", "<stdin>:2", "<stdin>:3"]
    for r in rows[0:1] + rows[2:4]:
        assert len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"]
        assert {t["category"] for t in r["top"]} <= set(WORDS)
    assert "error" in rows[1] and "error" in rows[4]
    assert str(bad) in rows[1]["error"]


def test_predict_table_and_latest_run(trained, quickdraw_dir, tmp_path, monkeypatch):
    root, _ = trained
    monkeypatch.chdir(tmp_path)
    sketch = sorted((quickdraw_dir / "sketches" / "banana").iterdir())[0]
    one_line_error(run("predict", sketch), "no trained model found")
    (tmp_path / "runs").mkdir()
    shutil.copytree(root / "run", tmp_path / "runs" / "latest")
    res = run("predict", sketch)
    assert res.exit_code == 0, res.output
    name, guesses = res.stdout.splitlines()  # the path is longer than its column: the guesses go below it
    assert name == str(sketch) and len(guesses.split("%")) == 4 and "runs/latest" in res.stderr


def test_predict_errors(trained, tmp_path):
    root, _ = trained
    one_line_error(run("predict", tmp_path / "missing.png", "--model", root / "run"), "missing.png", code=1)
    one_line_error(run("predict", "x.png", "--model", tmp_path / "nope"), "no such model")
    damaged = tmp_path / "damaged"
    shutil.copytree(root / "run", damaged)
    (damaged / "model.npz").write_bytes(b"PK\x03\x04 truncated")
    one_line_error(run("predict", "x.png", "--model", damaged), "corrupted model weights")


def test_train_config_mistakes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.1\n  epoch: 3\n")
    one_line_error(run("train", "--config", bad, "--data-dir", tmp_path), "did you mean 'epochs'")
    one_line_error(run("train", "--config", tmp_path / "none.yaml"), "config file not found")
    one_line_error(run("train", "--set", "train.lr=abc", "--data-dir", tmp_path), "train.lr must be a number")


def test_gradcheck_command():
    res = run("gradcheck", "--set", "model.hidden=[8]", "--set", "data.image_size=8", "--max-entries", 5, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["passed"] and out["layer_sizes"] == [64, 8, 10]
    assert set(out["worst"]) == set(out["tolerances"]) == {"manual_vs_graph", "manual_vs_numeric", "graph_vs_numeric"}
    assert all(out["worst"][k] < out["tolerances"][k] for k in out["worst"])
    assert set(out["errors"]) == {"dense0.W", "dense0.b", "dense1.W", "dense1.b", "input"}


def test_gradcheck_fails_loudly_on_a_wrong_backward(monkeypatch):
    from doodle.nn import ReLU

    monkeypatch.setattr(ReLU, "backward", lambda self, dout: dout)  # forgets the mask
    res = run("gradcheck", "--set", "model.hidden=[8]", "--set", "data.image_size=8", "--max-entries", 5)
    assert res.exit_code == 1
    assert "manual vs graph" in res.stderr and "manual vs finite diff." in res.stderr and "FAIL" in res.stdout


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_graph_command_draws_the_loss_graph_and_the_weight_slice(tmp_path, norm):
    base = ("--set", "data.source=synthetic", "--set", "data.categories=[circle, star]", "--set",
            "data.per_category=40", "--set", "model.hidden=[16]", "--set", f"model.norm={norm}", "--data-dir", tmp_path)
    res = run("train", *base, "--set", "train.epochs=1", "--out", tmp_path / "run", "--json")
    assert res.exit_code == 0, res.output
    res = run("graph", "--model", tmp_path / "run", "--out", tmp_path / "g.svg", "--slice", "1:3:0", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["network"] == str(tmp_path / "run")  # the run, not the norm's running statistics
    assert doc["label_source"] == "drawing" and doc["label"] in ("circle", "star") and doc["nodes"] > 15
    svg = (tmp_path / "g.svg").read_text()
    for op in ("matmul", "relu", "exp", "log", "pick", "mean"):
        assert f">{op}" in svg, op
    assert doc["slice"]["weight"] == "dense1.W[3, 0]" and (tmp_path / "g.slice.svg").is_file()
    dot = run("graph", "--model", tmp_path / "run", "--out", tmp_path / "g.dot", "--format", "dot")
    assert dot.exit_code == 0 and (tmp_path / "g.dot").read_text().startswith("digraph")
    assert "matmul" in dot.stdout  # the terminal tree
    bad = run("graph", "--model", tmp_path / "run", "--slice", "1:x", "--out", tmp_path / "h.svg")
    assert bad.exit_code == 2 and "LAYER:ROW:COL" in bad.stderr
    for missing in ("nowhere.ndjson", "nowhere.png"):
        gone = run("graph", tmp_path / missing, "--model", tmp_path / "run", "--out", tmp_path / "h.svg")
        assert gone.exit_code == 2 and gone.stderr == f"error: {tmp_path / missing}: no such file or folder; check " \
                                                      "the path\n"


def test_download_synthetic_then_offline_train_and_resume(tmp_path):
    res = run("download", "--synthetic", "circle", "star", "--max-drawings", 40, "--data-dir", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["word"] for r in rows] == ["circle", "star"]
    assert len((tmp_path / "synthetic" / "star.ndjson").read_text().splitlines()) == 40
    base = ("--set", "data.source=synthetic", "--set", "data.categories=[circle, star]", "--set",
            "data.per_category=40", "--set", "model.hidden=[16]", "--data-dir", tmp_path)
    res = run("train", *base, "--set", "train.epochs=2", "--out", tmp_path / "run", "--check-gradients", "--json")
    assert res.exit_code == 0, res.output
    assert "gradient check" in res.stdout  # the check's table comes first, then the JSON line
    assert json.loads(res.stdout.strip().splitlines()[-1])["epochs"] == 2
    again = run("train", "--resume", tmp_path / "run", "--set", "train.epochs=3", "--data-dir", tmp_path, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["epochs"] == 3
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    one_line_error(run("train", *base, "--out", tmp_path / "run"), "already holds a run")
