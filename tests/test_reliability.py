"""Hostile inputs and interruptions (issue 11): every case ends in a clean one-line error or the right result,
never a traceback or a silently wrong answer, and nothing complete on disk is lost.

The bad inputs are generated here (no committed corpus). Runs use the built-in synthetic shapes, 8x8
bitmaps and a one-hidden-layer network of 8 units, so a whole training takes milliseconds.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from doodle import fsutil
from doodle.checkpoint import load_model
from doodle.cli import app
from doodle.config import MAX_NODES, SCHEMA, load_config
from doodle.dataset import load_dataset
from doodle.errors import DoodleError
from doodle.evaluate import evaluate
from doodle.predict import predict
from doodle.progress import Reporter
from doodle.strokes import MAX_POINTS, LoadStats, iter_drawings, read_records
from doodle.synthetic import write_synthetic
from doodle.runs import LAST_NPZ
from doodle.train import fit, train
from test_train import InterruptAt

runner = CliRunner()
WORDS = ["circle", "square", "star"]
TINY = ("data.source=synthetic", f"data.categories=[{', '.join(WORDS)}]", "data.per_category=60",
        "data.image_size=8", "model.hidden=[8]", "model.dropout=0.25", "train.epochs=3", "train.batch_size=16",
        "train.lr=0.01")


def cli(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def sets(*overrides):
    return [arg for o in (*TINY, *overrides) for arg in ("--set", o)]


def one_line_error(result, fragment: str, code: int = 2, after_progress: bool = False):
    """Exit `code`, one non-blank stderr line `error: ...` containing `fragment` (after the epoch table
    when `after_progress`, alone otherwise), no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if after_progress:
        assert sum(line.startswith("error:") for line in lines) == 1, result.stderr
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


class Logs(Reporter):
    def __init__(self):
        self.lines = []

    def log(self, message):
        self.lines.append(message)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_synthetic(root, words=WORDS, n=60, seed=0)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(None, TINY, data_dir=data_dir, out=run)
    return run


def copy_run(run_dir, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(run_dir, dst)
    return dst


# ---------------------------------------------------------------------------------------------
# Bad ndjson lines: skipped and counted by train and evaluate, refused under --strict, one result each in predict

GOOD = {"word": "circle", "countrycode": "US", "recognized": True, "key_id": "1",
        "drawing": [[[10, 100, 200], [20, 120, 30]]]}


def _line(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


BAD_LINES = {  # name -> (line bytes, words in the reason)
    "400-digit coordinate": (b'{"word": "circle", "drawing": [[[1' + b"0" * 400 + b', 2], [1, 2]]]}', ", outside -1e"),
    "5000-digit coordinate": (b'{"word": "circle", "drawing": [[[1' + b"0" * 5000 + b', 2], [1, 2]]]}', "malformed"),
    "nested 100,000 deep": (b'{"word": "circle", "drawing": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                            "nested too deeply"),
    "integer beyond 64 bits": (b'{"word": "circle", "drawing": [[[18446744073709551616, 2], [1, 2]]]}',
                               ", outside -1e"),
    "NaN literal": (b'{"word": "circle", "drawing": [[[0, NaN], [0, 1]]]}', "not a finite number"),
    "1e999": (b'{"word": "circle", "drawing": [[[0, 1e999], [0, 1]]]}', "not a finite number"),
    "too many points": (_line(drawing=[[list(range(200)) * (MAX_POINTS // 200 + 1)] * 2]), "points, over the limit"),
    "a 9 MB line": (_line(pad="x" * 9_000_000), "MB, over the limit of 8 MB"),
    "not UTF-8": (b'{"word": "circ\xffle", "drawing": [[[0, 1], [0, 1]]]}', "not UTF-8"),
    "truncated line": (_line()[:-7], "malformed JSON"),
    "huge non-numeric value": (_line(drawing=[[[0, "x" * 100_000], [0, 1]]]), "not a number"),
}


def _bad_file(path: Path, bom: bool = True) -> Path:
    """A good line (with a UTF-8 BOM in front), every bad line, a good line."""
    lines = [_line(key_id="first"), *(text for text, _ in BAD_LINES.values()), _line(key_id="last")]
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")
    return path


def test_every_bad_line_is_skipped_and_counted_with_its_reason(tmp_path):
    stats = LoadStats("bad")
    kept = list(iter_drawings(_bad_file(tmp_path / "bad.ndjson"), stats=stats))
    assert [d["key_id"] for d in kept] == ["first", "last"]  # the BOM did not spoil the first line
    assert stats.skipped == len(BAD_LINES) and stats.kept == 2
    for (line, reason), (name, (_, words)) in zip(stats.problems, BAD_LINES.items()):
        assert words in reason, (name, reason)
        assert len(reason) < 200, name  # the reason never quotes a huge value


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_strict_refuses_each_bad_line_naming_it(tmp_path, name):
    path = tmp_path / "one.ndjson"
    path.write_bytes(_line() + b"\n" + BAD_LINES[name][0] + b"\n")
    with pytest.raises(DoodleError, match=rf"one.ndjson:2: .*{BAD_LINES[name][1]}") as err:
        list(iter_drawings(path, strict=True))
    assert len(str(err.value)) < 300


def test_predict_gives_one_result_per_line_and_says_why(run_dir, tmp_path):
    results, _ = predict([str(_bad_file(tmp_path / "bad.ndjson"))], model_path=run_dir)
    assert len(results) == len(BAD_LINES) + 2
    assert "top" in results[0] and "top" in results[-1]
    for r, (name, (_, words)) in zip(results[1:-1], BAD_LINES.items()):
        assert words in r["error"] and r["error"].startswith(f"{tmp_path / 'bad.ndjson'}:"), (name, r)


def test_predict_cli_on_bad_lines_exits_1_without_traceback(run_dir, tmp_path):
    res = cli("predict", _bad_file(tmp_path / "bad.ndjson"), "--model", run_dir, "--json")
    assert res.exit_code == 1 and "Traceback" not in res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert sum("top" in r for r in rows) == 2 and sum("error" in r for r in rows) == len(BAD_LINES)


def test_evaluate_scores_the_good_lines_and_reports_the_bad(run_dir, tmp_path):
    s = evaluate(run_dir, [_bad_file(tmp_path / "circle.ndjson")])
    assert s["n"] == 2 and f"{len(BAD_LINES)} bad lines skipped" in s["problems"][0]
    res = cli("evaluate", "--model", run_dir, tmp_path / "circle.ndjson", "--strict")
    one_line_error(res, "circle.ndjson:2:")


def test_training_skips_bad_lines_and_strict_refuses_them_even_from_the_cache(tmp_path):
    data = tmp_path / "data"
    paths = write_synthetic(data, words=WORDS, n=60, seed=0)
    lines = paths[0].read_bytes().splitlines(keepends=True)  # bad lines among the first 60 drawings
    paths[0].write_bytes(b"".join(lines[:10] + [text + b"\n" for text, _ in BAD_LINES.values()] + lines[10:]))
    cfg = load_config(None, TINY)
    for attempt in range(2):  # the first load builds the cache, the second reads it: same warning
        logs = Logs()
        ds = load_dataset(cfg, data, logs)
        assert ds.counts == [60, 60, 60]
        assert any(f"{len(BAD_LINES)} bad lines skipped" in m for m in logs.lines), (attempt, logs.lines)
    with pytest.raises(DoodleError, match=r"circle.ndjson:11: .*outside .*run without --strict"):
        load_dataset(load_config(None, [*TINY, "data.strict=true"]), data)


def test_predict_empty_blank_and_bom_ndjson(run_dir, tmp_path):
    (tmp_path / "empty.ndjson").write_bytes(b"")
    (tmp_path / "blank.ndjson").write_bytes(b"\n  \n\n")
    (tmp_path / "bom.ndjson").write_bytes(b"\xef\xbb\xbf" + _line() + b"\n")
    res = cli("predict", tmp_path / "empty.ndjson", "--model", run_dir, "--json")
    one_line_error(res, "empty.ndjson: no drawings", code=1)
    res = cli("predict", tmp_path / "blank.ndjson", "--model", run_dir, "--json")
    one_line_error(res, "blank.ndjson: no drawings", code=1)
    res = cli("predict", tmp_path / "bom.ndjson", "-", "--model", run_dir, "--json",
              input=b"\xef\xbb\xbf" + _line() + b"\n")
    assert res.exit_code == 0, res.output
    assert [len(json.loads(line)["top"]) for line in res.stdout.splitlines()] == [3, 3]
    res = cli("predict", "-", "--model", run_dir, "--json", input="")
    one_line_error(res, "<stdin>: no drawings", code=1)


def test_read_records_accepts_text_streams():
    got = list(read_records(io.StringIO("\ufeff" + _line().decode() + "\n{oops\n"), "s"))
    assert got[0][0] == "s:1" and got[0][2] is None and got[1][1] is None and "malformed" in got[1][2]


# ---------------------------------------------------------------------------------------------
# Configs


def _cfg_file(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, where, fragment", [
    ("train:\n  epochs: 2\n  batch_size: 64\n  epochs: 15\n", ":4:", "duplicate key 'epochs' (first on line 2)"),
    ("train:\n  epochs: 2\nmodel:\n  hidden: [8]\ntrain:\n  batch_size: 256\n", ":5:", "duplicate key 'train'"),
    ("train: {lr: 0.1, lr: 0.2}\n", ":1:", "duplicate key 'lr'"),
    ("model:\n  hidden: &a [1, 2]\nx: &b [*a, *a]\ny: [*b, *b, *b]\ntrain: &t {epochs: *t}\n", ":5:",
     "recursive alias"),
    ("model:\n  hidden: " + "[" * 1000 + "]" * 1000 + "\n", "c.yaml:", "nested too deeply"),
    ("train:\n  seed: 1" + "0" * 5000 + "\n", "c.yaml:", "unreadable value"),
])
def test_config_file_mistakes(tmp_path, text, where, fragment):
    with pytest.raises(DoodleError) as err:
        load_config(_cfg_file(tmp_path, text))
    assert where in str(err.value) and fragment in str(err.value), str(err.value)


def test_alias_bomb_is_refused_fast_and_small(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = "bomb:\n" + "\n".join(f"  {line}" for line in lines) + "\nmodel:\n  hidden: *a8\n"
    assert len(text) < 1200
    t = time.perf_counter()
    with pytest.raises(DoodleError, match=f"expand to over {MAX_NODES:,} items") as err:
        load_config(_cfg_file(tmp_path, text))
    # A hang guard, not a speed target: the expanded bomb would take minutes and gigabytes.
    assert time.perf_counter() - t < 10 and len(str(err.value)) < 300
    # Nested but within the limit: the value is wrong, and the message shows only its start.
    text = "model:\n  hidden: &a [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]]\ntrain:\n  lr: *a\n"
    with pytest.raises(DoodleError, match=r"model.hidden must be a list .*\(got \[\[1, 2, 3, 4, 5, 6, \.\.\.\]") as err:
        load_config(_cfg_file(tmp_path, text))
    assert len(str(err.value)) < 300


NUMBER_KEYS = [f"{sec}.{k}" for sec, keys in SCHEMA.items() for k, key in keys.items()
               if isinstance(key.default, float) or key.default is None and k == "clip_norm"]


@pytest.mark.parametrize("key", NUMBER_KEYS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused_for_every_number_key(key, value, tmp_path):
    with pytest.raises(DoodleError, match=rf"--set {key}={value}: {key} must be a finite number"):
        load_config(None, [f"{key}={value}"])
    sec, name = key.split(".")
    with pytest.raises(DoodleError, match=rf"c.yaml: {key} must be a finite number"):
        load_config(_cfg_file(tmp_path, f"{sec}:\n  {name}: {value}\n"))


def test_nan_via_set_is_a_clean_cli_error(tmp_path):
    for key in ("data.val_fraction", "augment.rotate", "train.clip_norm", "augment.probability",
                "train.momentum"):
        one_line_error(cli("train", "--set", f"{key}=.nan", "--data-dir", tmp_path), f"{key} must be a finite")
    assert not (tmp_path / "runs").exists() and not list(tmp_path.iterdir())


def test_scientific_notation_is_a_number_in_files_and_set(tmp_path):
    cfg = load_config(_cfg_file(tmp_path, "train:\n  lr: 1e-3\n  min_lr: 5E-6\n  weight_decay: 1.5e-4\n"),
                      ["train.clip_norm=1e1", "augment.scale=5e-2"])
    assert (cfg["train"]["lr"], cfg["train"]["min_lr"], cfg["train"]["weight_decay"]) == (0.001, 5e-6, 0.00015)
    assert (cfg["train"]["clip_norm"], cfg["augment"]["scale"]) == (10.0, 0.05)
    with pytest.raises(DoodleError, match="train.epochs must be a whole number"):
        load_config(None, ["train.epochs=1e3"])  # a float is still not a whole number


def test_huge_integers_are_refused_without_overflow():
    for key in ("train.seed", "data.per_category", "train.lr", "train.clip_norm"):
        with pytest.raises(DoodleError, match=f"{key} must be a"):
            load_config(None, [f"{key}=1{'0' * 400}"])


def test_huge_values_never_fill_a_message(tmp_path):
    for overrides in (["data.categories=[cat, " + "x" * 1_000_000 + "]"], ["x" * 1_000_000],
                      ["train." + "x" * 1_000_000 + "=1"]):
        t = time.perf_counter()
        with pytest.raises(DoodleError) as err:
            load_config(None, overrides)
        # A hang guard, not a speed target: quadratic work on a megabyte would take minutes.
        assert len(str(err.value)) < 600 and time.perf_counter() - t < 10, str(err.value)[:300]


def test_config_with_bom_and_unreadable_config(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbftrain:\n  epochs: 4\n")
    assert load_config(path)["train"]["epochs"] == 4
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(DoodleError, match="config file not found"):
        load_config(tmp_path / "dir.yaml")


# ---------------------------------------------------------------------------------------------
# Models


def _edit_meta(run, **changes):
    meta = json.loads((run / "model.json").read_text())
    meta.update(changes)
    (run / "model.json").write_text(json.dumps(meta))


def _edit_weights(run, **arrays):
    with np.load(run / "model.npz") as f:
        state = {k: f[k] for k in f.files}
    state.update(arrays)
    with open(run / "model.npz", "wb") as fh:
        np.savez(fh, **state)


MODEL_DAMAGE = {  # name -> (how, words in the error)
    "NaN weight": (lambda r: _edit_weights(r, **{"dense1.b": np.array([np.nan, 0, 0], np.float32)}),
                   "holds NaN or infinity"),
    "infinite weight": (lambda r: _edit_weights(r, **{"dense0.W": np.full((64, 8), np.inf, np.float32)}),
                        "holds NaN or infinity"),
    "layer sizes differ from the arrays": (lambda r: _edit_meta(r, layer_sizes=[64, 16, 3]), "expected (64, 16)"),
    "raster size differs from the input": (lambda r: _edit_meta(r, raster={"size": 28, "line_width": 16.0,
                                                                           "padding": 16.0}), "makes 784 inputs"),
    "classes differ from the output": (lambda r: _edit_meta(r, classes=["circle", "square"]), "2 classes"),
    "absurd layer size": (lambda r: _edit_meta(r, layer_sizes=[64, 10 ** 12, 3]), "expected (64, 1000000000000)"),
    "unknown activation": (lambda r: _edit_meta(r, activation="swish"), "unknown activation"),
    "layer sizes not numbers": (lambda r: _edit_meta(r, layer_sizes=["64", 8, 3]), "layer_sizes"),
    "raster without size": (lambda r: _edit_meta(r, raster={}), "'raster'"),
    "classes not a list": (lambda r: _edit_meta(r, classes="circle"), "'classes'"),
    "weights missing": (lambda r: _drop_weight(r, "dense1.W"), "missing ['dense1.W']"),
    "integer-overflowing raster": (lambda r: _edit_meta(r, raster={"size": 10 ** 30, "line_width": 16.0,
                                                                   "padding": 16.0}), "'raster'"),
    "unknown test-time augmentation": (lambda r: _edit_meta(r, tta="rotate"), "unknown tta 'rotate'"),
    "test-time augmentation not a name": (lambda r: _edit_meta(r, tta=["flip"]), "unknown tta"),
}


def _drop_weight(run, name):
    with np.load(run / "model.npz") as f:
        state = {k: f[k] for k in f.files if k != name}
    with open(run / "model.npz", "wb") as fh:
        np.savez(fh, **state)


@pytest.mark.parametrize("name", list(MODEL_DAMAGE))
def test_damaged_models_are_refused_at_load(run_dir, tmp_path, name):
    run = copy_run(run_dir, tmp_path)
    damage, words = MODEL_DAMAGE[name]
    damage(run)
    with pytest.raises(DoodleError) as err:
        load_model(run)
    assert words in str(err.value) and str(run) in str(err.value), str(err.value)
    one_line_error(cli("predict", "x.png", "--model", run), words)


def test_batch_norm_models_check_their_running_statistics(data_dir, tmp_path):
    run = tmp_path / "bn"
    train(None, (*TINY, "model.norm=batch", "train.epochs=1"), data_dir=data_dir, out=run)
    model, _ = load_model(run)
    assert model.norm == "batch" and model.buffers()["norm0.var"].shape == (8,)
    _edit_weights(run, **{"norm0.var": -np.ones(8, np.float32)})
    one_line_error(cli("predict", "x.png", "--model", run), "norm0.var holds a negative variance")
    _drop_weight(run, "norm0.mean")
    one_line_error(cli("predict", "x.png", "--model", run), "missing ['norm0.mean']")
    _edit_meta(run, norm="none")  # then the file holds arrays a plain network does not have
    one_line_error(cli("predict", "x.png", "--model", run), "missing ['dense0.b']")


def test_models_from_before_test_time_augmentation_load_and_predict_as_before(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    meta = json.loads((run / "model.json").read_text())
    model, _ = load_model(run)
    assert model.tta == meta["tta"] == "flip_shift"  # the built-in default
    x = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    del meta["tta"]
    (run / "model.json").write_text(json.dumps(meta))
    old, _ = load_model(run)
    model.tta = "none"
    assert old.tta == "none" and np.array_equal(old.predict_proba(x), model.predict_proba(x))
    _edit_meta(run, tta="flip")  # the metadata decides how the model predicts
    flipped, _ = load_model(run)
    assert flipped.tta == "flip" and not np.allclose(flipped.predict_proba(x), model.predict_proba(x))


# ---------------------------------------------------------------------------------------------
# Run folders: claimed by one training, files that belong together, data found from anywhere


def test_a_second_training_into_a_claimed_folder_stops_at_once(data_dir, tmp_path):
    out = tmp_path / "run"
    with fsutil.lock_folder(out, "held"):  # this process holds it, like a running `doodle train`
        res = cli("train", *sets(), "--data-dir", data_dir, "--out", out)
        # the same process re-enters its own claim, so the CLI here gets through; another process may not:
        assert res.exit_code == 0, res.output
        proc = subprocess.run([sys.executable, "-m", "doodle", "train", "--resume", str(out), "--set",
                               "train.epochs=4", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"pid {os.getpid()}" in proc.stderr and "--out" in proc.stderr
    assert json.loads((out / "state.json").read_text())["epoch"] == 3  # untouched by the refused run
    one_line_error(cli("train", *sets(), "--data-dir", data_dir, "--out", out), "already holds a run")


def test_concurrent_trainings_with_the_same_out(data_dir, tmp_path):
    """Two real `doodle train` processes at once: one trains, the other is refused; the folder is one run."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "doodle", "train", *sets("train.epochs=30"), "--data-dir", str(data_dir),
           "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(text for code, text in results if code == 2)
    assert "another `doodle train`" in refused or "already holds a run" in refused, refused
    _, meta = load_model(out)  # refused if any file carried the other process's run id
    assert meta["metrics"]["epochs_run"] == 30 and len(_rows(out)) == 30


MIXES = {
    "config.yaml": lambda run, other: shutil.copy(other / "config.yaml", run / "config.yaml"),
    "split.npz": lambda run, other: shutil.copy(other / "split.npz", run / "split.npz"),
    "state.json": lambda run, other: shutil.copy(other / "state.json", run / "state.json"),
    "metrics.jsonl": lambda run, other: (run / "metrics.jsonl").write_text(
        (run / "metrics.jsonl").read_text() + (other / "metrics.jsonl").read_text().splitlines()[0] + "\n"),
}


@pytest.mark.parametrize("name", list(MIXES))
def test_files_of_another_run_are_refused(run_dir, data_dir, tmp_path, name):
    other = tmp_path / "other"
    train(None, (*TINY, "train.seed=1"), data_dir=data_dir, out=other)
    run = copy_run(run_dir, tmp_path)
    MIXES[name](run, other)
    one_line_error(cli("evaluate", "--model", run), f"{name}: belongs to run")
    one_line_error(cli("predict", "x.png", "--model", run), "files of different runs are mixed")


def test_a_torn_metrics_line_is_not_a_foreign_run(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 4, "train_lo')  # a kill mid-append
    assert load_model(run)[1]["run_id"] == json.loads((run / "state.json").read_text())["run_id"]


def test_evaluate_from_another_folder_uses_the_recorded_data(run_dir, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = cli("evaluate", "--model", run_dir, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 3 * 6
    assert not (tmp_path / "data").exists()  # nothing fetched into ./data
    run = copy_run(run_dir, tmp_path)
    _edit_meta(run, data_dir=str(tmp_path / "gone"))
    one_line_error(cli("evaluate", "--model", run), "which is gone; pass --data-dir")
    assert not (tmp_path / "data").exists() and not (tmp_path / "gone").exists()


def test_evaluate_never_downloads_missing_data(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    meta = json.loads((run / "model.json").read_text())
    meta["config"]["data"].update(source="simplified", categories=["cat", "dog", "apple"],
                                  base_url="http://127.0.0.1:9/")  # nothing listens: a download would fail late
    (run / "model.json").write_text(json.dumps(meta))
    t = time.perf_counter()
    one_line_error(cli("evaluate", "--model", run), "simplified/cat.ndjson: missing (and 2 more); pass --data-dir")
    assert time.perf_counter() - t < 20  # a hang guard: a download attempt would wait for its timeouts


# ---------------------------------------------------------------------------------------------
# Resuming: exactly as if never stopped, from any damage a clean error


def _arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k != "state"}


def _same_arrays(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def _rows(run):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "run_id")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


# issue 13's options: flips draw from the run's generator, batch norm keeps running statistics, and
# test-time augmentation changes the kept model's scores
ACCURACY = ("augment.flip=0.5", "model.tta=flip_shift", "model.norm=batch")


@pytest.mark.parametrize("schedule, options", [("cosine", ()), ("step", ()), ("cosine", ACCURACY)])
def test_two_plus_two_epochs_equal_four_bit_for_bit_with_dropout_and_augmentation(data_dir, tmp_path, schedule,
                                                                                  options):
    extra = ("train.epochs=4", f"train.schedule={schedule}", "train.step_epochs=1", "augment.probability=1.0",
             "model.dropout=0.3", "train.patience=3", *options)
    cfg = load_config(None, (*TINY, *extra))
    ds = load_dataset(cfg, data_dir)
    whole = fit(cfg, ds, tmp_path / "whole")
    part = fit(cfg, ds, tmp_path / "part", reporter=InterruptAt(2))
    assert part.interrupted and part.epochs == 2
    rest = train(resume=tmp_path / "part", data_dir=data_dir)
    assert rest.epochs == 4 and rest.test_accuracy == whole.test_accuracy
    assert _rows(tmp_path / "part") == _rows(tmp_path / "whole")
    for name in ("model.npz", LAST_NPZ):
        assert _same_arrays(_arrays(tmp_path / "part" / name), _arrays(tmp_path / "whole" / name)), name
    # dropout matters here: without restoring its random state the resumed run differs
    assert cfg["model"]["dropout"] > 0 and cfg["augment"]["probability"] == 1.0
    model = load_model(tmp_path / "part")[0]
    assert model.tta == cfg["model"]["tta"] and model.norm == cfg["model"]["norm"]  # it predicts as configured
    if model.norm == "batch":  # the running statistics are resume state too (in last.npz's model/ arrays)
        assert "model/norm0.var" in _arrays(tmp_path / "part" / LAST_NPZ)


def test_resume_with_more_epochs_on_a_constant_schedule_equals_one_run(data_dir, tmp_path):
    base = ("train.schedule=constant", "train.warmup_epochs=0")
    train(None, (*TINY, *base, "train.epochs=2"), data_dir=data_dir, out=tmp_path / "a")
    res = cli("train", "--resume", tmp_path / "a", "--set", "train.epochs=4", "--data-dir", data_dir)
    assert res.exit_code == 0, res.output
    train(None, (*TINY, *base, "train.epochs=4"), data_dir=data_dir, out=tmp_path / "b")
    assert _same_arrays(_arrays(tmp_path / "a" / LAST_NPZ), _arrays(tmp_path / "b" / LAST_NPZ))
    assert "epochs: 4" in (tmp_path / "a" / "config.yaml").read_text()  # the next --resume keeps the 4


def test_resume_reconciles_records_and_cleans_temporaries(run_dir, data_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    # as a kill leaves it: metrics ahead (and torn), state.json cut short, temporaries of every write
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 4, "train_loss": 1.0}) + "\n" + '{"epoch": 5, "tr')
    (run / "state.json").write_text('{"epoch": 3, "be')
    stale = [run / ".last.npz.abc123.npz.tmp", run / ".model.json.xyz.tmp", run / ".metrics.jsonl.q.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    res = cli("train", "--resume", run, "--set", "train.epochs=5", "--data-dir", data_dir, "--json")
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3, 4, 5]
    assert json.loads((run / "state.json").read_text())["epoch"] == 5
    assert not any(p.exists() for p in stale) and not list(run.glob(".*.tmp"))


RESUME_DAMAGE = {  # name -> (how, words in the error)
    "missing last.npz": (lambda r: (r / LAST_NPZ).unlink(), "not a resumable run"),
    "truncated last.npz": (lambda r: (r / LAST_NPZ).write_bytes((r / LAST_NPZ).read_bytes()[:500]), "damaged"),
    "garbage last.npz": (lambda r: (r / LAST_NPZ).write_bytes(b"PK\x03\x04" + b"\0" * 64), "damaged"),
    "pickled last.npz": (lambda r: _pickle_into(r / LAST_NPZ), "damaged"),
    "last.npz without resume state": (lambda r: _strip_state(r / LAST_NPZ), "no resume state"),
    "split.npz of another run": (lambda r: _foreign_split(r), "belongs to another run"),
    "hidden layers changed": (lambda r: None, "--resume continues a run exactly, but model.hidden ([8] -> [9]) changed"),
}


def _pickle_into(path):
    arrays = _arrays(path)
    arrays["optimizer/step"] = np.array([{"x": 1}], dtype=object)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays, state=np.array("{}"))


def _strip_state(path):
    arrays = _arrays(path)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _foreign_split(run):
    with np.load(run / "split.npz") as f:
        split = {k: f[k] for k in f.files}
    split["run_id"] = np.array("0" * 32)
    with open(run / "split.npz", "wb") as fh:
        np.savez(fh, **split)


@pytest.mark.parametrize("name", list(RESUME_DAMAGE))
def test_damaged_resume_state_is_a_clean_error(run_dir, data_dir, tmp_path, name):
    run = copy_run(run_dir, tmp_path)
    damage, words = RESUME_DAMAGE[name]
    damage(run)
    model_before = (run / "model.npz").read_bytes()
    extra = ("--set", "model.hidden=[9]") if name == "hidden layers changed" else ()
    res = cli("train", "--resume", run, "--set", "train.epochs=6", *extra, "--data-dir", data_dir)
    one_line_error(res, words)
    assert (run / "model.npz").read_bytes() == model_before


# ---------------------------------------------------------------------------------------------
# Read-only folders and a full disk


@pytest.fixture
def read_only(monkeypatch):
    """Make folders refuse writes like a read-only mount (the tests may run as root, where chmod does not)."""
    roots: list[str] = []
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def under(path) -> bool:
        if isinstance(path, int):
            return False
        p = os.path.abspath(os.fsdecode(path))
        return any(p == r or p.startswith(r + os.sep) for r in roots)

    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and under(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if under(path) and not os.path.isdir(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return lambda path: roots.append(os.path.abspath(path))


def test_read_only_out_is_a_clean_error(data_dir, tmp_path, read_only):
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    one_line_error(cli("train", *sets(), "--data-dir", data_dir, "--out", tmp_path / "ro" / "run"),
                   "ro/run: cannot write (Read-only file system); the folder is not writable", code=1)
    one_line_error(cli("train", *sets(), "--data-dir", data_dir, "--out", tmp_path / "ro"),
                   "ro: cannot write", code=1)


def test_read_only_data_dir_trains_from_memory_or_says_what_is_missing(data_dir, tmp_path, read_only):
    data = tmp_path / "data"
    shutil.copytree(data_dir / "synthetic", data / "synthetic")  # the sources, but no cache
    read_only(data)
    res = cli("train", *sets(), "--data-dir", data, "--out", tmp_path / "run", "--json")
    assert res.exit_code == 0, res.output
    assert "not cached" in res.stderr and json.loads(res.stdout)["epochs"] == 3
    assert not (data / "cache").exists()
    (tmp_path / "empty").mkdir()
    read_only(tmp_path / "empty")
    one_line_error(cli("train", *sets(), "--data-dir", tmp_path / "empty", "--out", tmp_path / "run2"),
                   "circle.ndjson: cannot write", code=1)
    assert not (tmp_path / "run2").exists()  # a failed start leaves no empty run folder behind


def test_read_only_report_folder_fails_before_the_work(run_dir, tmp_path, read_only):
    read_only(tmp_path / "rep")
    one_line_error(cli("evaluate", "--model", run_dir, "--report", tmp_path / "rep"), "rep: cannot write", code=1)


class DiskFull:
    """np.savez that fails half-way with ENOSPC, like a full disk, on its `nth` write of the file `name`."""

    def __init__(self, monkeypatch, name: str, nth: int):
        self.real, self.name, self.nth, self.count = np.savez, name, nth, 0
        monkeypatch.setattr(np, "savez", self)

    def __call__(self, file, *args, **kwargs):
        if Path(getattr(file, "name", str(file))).name.startswith(f".{self.name}."):  # atomic_path's temporary
            self.count += 1
            if self.count == self.nth:
                file.write(b"PK\x03\x04" + b"\0" * 100)
                raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(file, *args, **kwargs)


def test_full_disk_during_training_keeps_the_last_complete_epoch(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    DiskFull(monkeypatch, LAST_NPZ, nth=2)  # epoch 2's commit
    res = cli("train", *sets("train.epochs=5"), "--data-dir", data_dir, "--out", out)
    one_line_error(res, "last.npz: cannot write (No space left on device); free some disk space", code=1,
                   after_progress=True)
    monkeypatch.undo()
    assert json.loads((out / "state.json").read_text())["epoch"] == 1
    load_model(out)  # the best model so far is whole
    assert not list(out.glob(".*.tmp"))
    res = cli("train", "--resume", out, "--data-dir", data_dir, "--json")
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in _rows(out)] == list(range(1, 6))
    whole = tmp_path / "whole"
    train(None, (*TINY, "train.epochs=5"), data_dir=data_dir, out=whole)
    assert _same_arrays(_arrays(out / LAST_NPZ), _arrays(whole / LAST_NPZ))


def test_full_disk_writing_an_evaluation_report(run_dir, tmp_path, monkeypatch):
    real = Path.write_bytes

    def full(self, data):
        if self.name.startswith(".summary.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    one_line_error(cli("evaluate", "--model", run_dir, "--report", tmp_path / "rep"),
                   "summary.json: cannot write (No space left on device)", code=1)
    assert not (tmp_path / "rep" / "summary.json").exists() and not list((tmp_path / "rep").glob(".*"))


# ---------------------------------------------------------------------------------------------
# Usage errors: one line, exit 2, in CliRunner and in a real process


USAGE = [
    (("predict", "x.png", "--top-k", "0"), "'--top-k' / '-k'"),
    (("download", "cat", "--max-drawings", "0"), "'--max-drawings'"),
    (("train", "--workers", "-1"), "'--workers'"),
    (("evaluate", "--min-accuracy", "2"), "'--min-accuracy'"),
    (("gradcheck", "--max-entries", "zero"), "'--max-entries'"),
    (("train", "--epochs", "3"), "No such option: --epochs"),
    (("predict",), "Missing argument 'INPUTS'"),
    (("trian",), "No such command 'trian'"),
]


@pytest.mark.parametrize("args, fragment", USAGE)
def test_usage_errors_are_one_line(args, fragment):
    res = cli(*args)
    assert res.exit_code == 2 and res.stdout == "", res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment.lower() in lines[0].lower(), lines
    assert "--help" in lines[0]


def test_usage_errors_are_one_line_in_a_real_process():
    for args in (("predict", "x.png", "--top-k", "0"), ("download", "cat", "--max-drawings", "0")):
        proc = subprocess.run([sys.executable, "-m", "doodle", *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: Invalid value for"), proc.stderr


# ---------------------------------------------------------------------------------------------
# Processes: rasterising workers die with their parent; training survives kill -9 at any point


ORPHAN_SCRIPT = """
import sys, threading, time
import numpy as np
from doodle.rasterpool import rasterize_batch
if sys.argv[1] == "forkserver":  # another thread (the CLI's progress bar) makes doodle use forkserver
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
rng = np.random.default_rng(0)
drawings = [[[rng.integers(0, 256, 40).tolist(), rng.integers(0, 256, 40).tolist()]] for _ in range(60000)]
print("ready", flush=True)
rasterize_batch(drawings, workers=2)
"""


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_rasterizing_workers_exit_when_the_parent_is_killed(method):
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, method], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        workers: set[int] = set()
        while len(workers) < 2 + (method == "forkserver") and time.monotonic() < deadline:
            time.sleep(0.02)
            workers = _descendants(proc.pid)
        assert len(workers) >= 2, "the workers never started"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"{len(left)} worker(s) outlived their parent"


def _claimed_by(folder: Path, pid: int) -> bool:
    try:
        return (folder / fsutil.LOCK_NAME).read_text().strip() == str(pid)
    except OSError:
        return False


def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(data_dir, tmp_path):
    """SIGKILL `doodle train` at seeded random moments, resume until done; the result is bit for bit the run
    that was never stopped (weights, best model, optimizer state, metrics rows)."""
    overrides = ("train.epochs=25", "augment.probability=1.0")
    reference = tmp_path / "reference"
    train(None, (*TINY, *overrides), data_dir=data_dir, out=reference)
    rng = np.random.default_rng(11)
    kills, epochs_at_kill = 0, []
    for i in range(3):
        out = tmp_path / f"killed{i}"
        for attempt in range(6):
            resume = (out / LAST_NPZ).is_file()
            args = ["--resume", str(out)] if resume else [*sets(*overrides), "--out", str(out)]
            proc = subprocess.Popen([sys.executable, "-m", "doodle", "train", *args, "--data-dir", str(data_dir)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if attempt < 2:  # two kills per run, at a random moment after it claimed the folder
                while proc.poll() is None and not _claimed_by(out, proc.pid):
                    time.sleep(0.002)
                time.sleep(float(rng.uniform(0, 0.5)))
                proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=60)
            err = proc.stderr.read()
            proc.stderr.close()
            if code == -signal.SIGKILL:
                kills += 1
                try:
                    epochs_at_kill.append(json.loads((out / "state.json").read_text())["epoch"])
                except (OSError, ValueError):
                    epochs_at_kill.append(None)
                continue
            assert code == 0 or "already trained" in err, (code, err)  # killed after its last commit
            break
        assert json.loads((out / "state.json").read_text())["epoch"] == 25
        assert _same_arrays(_arrays(out / LAST_NPZ), _arrays(reference / LAST_NPZ))
        assert _same_arrays(_arrays(out / "model.npz"), _arrays(reference / "model.npz"))
        assert _rows(out) == _rows(reference)
        assert not list(out.glob(".*.tmp"))
    print(f"kill -9: {kills} kills, state.json epoch at each: {epochs_at_kill}")
    assert kills >= 3
