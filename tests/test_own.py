"""Your own categories (issue 22): local `<word>.ndjson` files as data, and `doodle train --from RUN`
extending a trained run with new words."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from doodle import extend
from doodle.checkpoint import load_model
from doodle.config import class_names, load_config
from doodle.dataset import load_dataset
from doodle.errors import DoodleError
from doodle.evaluate import evaluate
from doodle.raster import rasterize
from doodle.runs import load_split
from doodle.strokes import simplify_raw
from doodle.train import train
from helpers import Recorder, cli, one_line_error


def lines(quickdraw_dir: Path, fmt: str, word: str, n: int | None = None) -> list[str]:
    return (quickdraw_dir / "full" / fmt / f"{word}.ndjson").read_text(encoding="utf-8").splitlines(keepends=True)[:n]


@pytest.fixture()
def mine(tmp_path, quickdraw_dir):
    """data/mine as `doodle play` leaves it: circle (simplified records), star (simplified) and apple (raw)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    for fmt, word, n in (("simplified", "circle", 8), ("simplified", "star", 6), ("raw", "apple", 5)):
        (folder / f"{word}.ndjson").write_text("".join(lines(quickdraw_dir, fmt, word, n)), encoding="utf-8")
    return folder


def local_cfg(folder, *extra):
    return load_config(None, [f"data.local=[{json.dumps(str(folder))}]", "data.categories=[]", *extra])


# ---------------------------------------------------------------- local data


def test_each_file_is_a_class_and_raw_and_simplified_records_mix(mine, tmp_path, quickdraw_dir):
    with open(mine / "circle.ndjson", "a", encoding="utf-8") as fh:  # a raw record among simplified ones
        fh.write(lines(quickdraw_dir, "raw", "apple", 1)[0].replace('"apple"', '"circle"'))
    ds = load_dataset(local_cfg(mine), tmp_path / "data")
    assert ds.classes == ["apple", "circle", "star"] and ds.counts == [5, 9, 6]
    raw = json.loads(lines(quickdraw_dir, "raw", "apple", 1)[0])["drawing"]
    assert np.array_equal(ds.x[0], rasterize(simplify_raw(raw)))  # Google's recipe, then the rasteriser
    assert np.array_equal(ds.x[5 + 8], ds.x[0])  # the raw line in circle.ndjson: same drawing, same pixels
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "data" / "cache" / "local").glob("*.npy")) == \
        ["apple", "circle", "star"]


def test_a_local_word_that_is_a_category_adds_to_it_after_its_own_rows(mine, tmp_path, quickdraw_dir):
    data = tmp_path / "data"
    (data / "simplified").mkdir(parents=True)
    for word in ("apple", "banana"):
        (data / "simplified" / f"{word}.ndjson").write_text("".join(lines(quickdraw_dir, "simplified", word, 10)))
    cfg = load_config(None, [f"data.local=[{json.dumps(str(mine))}]", "data.categories=[banana, apple]",
                             "data.base_url=http://127.0.0.1:9"])  # never contacted: the files are there
    ds = load_dataset(cfg, data)
    assert ds.classes == class_names(cfg) == ["banana", "apple", "circle", "star"]
    assert ds.counts == [10, 15, 8, 6]
    google = load_dataset(load_config(None, ["data.categories=[banana, apple]", "data.base_url=http://127.0.0.1:9"]),
                          data)
    assert np.array_equal(ds.x[10:20], google.x[10:20])  # apple: Google's rows first, then the 5 local ones
    assert np.array_equal(ds.y[10:25], [1] * 15)


def test_relative_paths_are_recorded_absolute(mine, monkeypatch):
    monkeypatch.chdir(mine.parent)
    cfg = load_config(None, ["data.local=[mine]", "data.categories=[]"])
    assert cfg["data"]["local"] == [str(mine.resolve())]


def test_a_drawing_of_another_word_stops_with_file_and_line(mine, tmp_path, quickdraw_dir):
    with open(mine / "star.ndjson", "a", encoding="utf-8") as fh:
        fh.write(lines(quickdraw_dir, "simplified", "circle", 1)[0])
    with pytest.raises(DoodleError, match=r"star\.ndjson:7: a drawing of 'circle' in the file of 'star'; .*"
                                          r"move the line to circle\.ndjson"):
        load_dataset(local_cfg(mine), tmp_path / "data")


def test_bad_lines_are_skipped_and_counted_or_stop_a_strict_run(mine, tmp_path):
    with open(mine / "star.ndjson", "a", encoding="utf-8") as fh:
        fh.write('{"word": "star", "drawing": [[1, 2\n')
    logged = Recorder()
    ds = load_dataset(local_cfg(mine), tmp_path / "data", logged)
    assert ds.counts == [5, 8, 6]
    assert any("star.ndjson: 6 drawings, 1 bad line skipped (line 7" in line for line in logged.lines)
    with pytest.raises(DoodleError, match=r"star\.ndjson:7: malformed JSON .*without --strict"):
        load_dataset(local_cfg(mine, "data.strict=true"), tmp_path / "data")


@pytest.mark.parametrize("name, problem", [("a\tb", "control character U+0009"), ("x" * 201, "over the limit")])
def test_a_word_that_is_not_a_safe_file_name_is_refused(mine, tmp_path, name, problem):
    (mine / f"{name}.ndjson").write_text((mine / "star.ndjson").read_text())
    with pytest.raises(DoodleError, match=f"data.local: .*: the file .*: the word .* {re.escape(problem)}"):
        load_dataset(local_cfg(mine), tmp_path / "data")


def test_hidden_files_are_not_words_and_an_empty_folder_says_what_it_expects(mine, tmp_path):
    (mine / ".star.ndjson.tmp").write_text("junk\n")
    (mine / ".hidden.ndjson").write_text("junk\n")
    assert load_dataset(local_cfg(mine), tmp_path / "data").classes == ["apple", "circle", "star"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DoodleError, match=r"data.local: .*empty: no <word>\.ndjson files in this folder"):
        load_dataset(local_cfg(tmp_path / "empty"), tmp_path / "data")
    with pytest.raises(DoodleError, match=r"data.local: .*nowhere: no such file or folder"):
        load_dataset(local_cfg(tmp_path / "nowhere"), tmp_path / "data")
    with pytest.raises(DoodleError, match="1 word \\(star\\) and no data.categories: a classifier needs at least two"):
        load_dataset(local_cfg(mine / "star.ndjson"), tmp_path / "data")


def test_config_checks_the_key(tmp_path):
    with pytest.raises(DoodleError, match="data.local must be a list of .ndjson files or folders"):
        load_config(None, ["data.local=data/mine"])
    with pytest.raises(DoodleError, match="data.categories needs at least two classes"):
        load_config(None, ["data.categories=[]"])


def test_an_appended_drawing_rebuilds_only_that_file_and_two_folders_share_a_word(mine, tmp_path, quickdraw_dir):
    data = tmp_path / "data"
    load_dataset(local_cfg(mine), data)
    cache = data / "cache" / "local"
    before = {p.name for p in cache.glob("*.npy")}
    with open(mine / "star.ndjson", "a", encoding="utf-8") as fh:  # what play's Save does
        fh.write(lines(quickdraw_dir, "simplified", "star", 7)[6])
    other = tmp_path / "friends"
    other.mkdir()
    (other / "star.ndjson").write_text((mine / "star.ndjson").read_text())  # same name and size, other folder
    ds = load_dataset(local_cfg(mine, f"data.local=[{json.dumps(str(mine))}, {json.dumps(str(other))}]"), data)
    assert ds.classes == ["apple", "circle", "star"] and ds.counts == [5, 8, 14]
    after = {p.name for p in cache.glob("*.npy")}
    assert len(after - before) == 2 and {n for n in before if not n.startswith("star")} <= after


def test_train_evaluate_and_resume_on_your_own_drawings(mine, tmp_path, quickdraw_dir):
    overrides = [f"data.local=[{json.dumps(str(mine))}]", "data.categories=[]", "train.epochs=1",
                 "model.hidden=[16]", "data.val_fraction=0.2", "data.test_fraction=0.2"]
    res = train(None, overrides, data_dir=tmp_path / "data", out=tmp_path / "run", workers=1)
    assert res.classes == ["apple", "circle", "star"]
    summary = evaluate(tmp_path / "run")  # the run's own test split, rebuilt from the local files
    assert summary["n"] == len(load_split(tmp_path / "run")["test"]) > 0
    with open(mine / "star.ndjson", "a", encoding="utf-8") as fh:  # play saves another star meanwhile
        fh.write((mine / "star.ndjson").read_text().splitlines(keepends=True)[0])
    assert evaluate(tmp_path / "run") == summary  # the same rows, the same figures
    again = train(None, ["train.epochs=2"], data_dir=tmp_path / "data", resume=tmp_path / "run")
    assert again.epochs == 2
    resumed = evaluate(tmp_path / "run")
    # play saves (or teaches) a new word; it sorts before the run's own words, yet they keep their places
    (mine / "banana.ndjson").write_text("".join(lines(quickdraw_dir, "simplified", "banana", 6)), encoding="utf-8")
    assert evaluate(tmp_path / "run") == resumed
    assert train(None, ["train.epochs=3"], data_dir=tmp_path / "data", resume=tmp_path / "run").epochs == 3
    wider = train(None, [f"data.local=[{json.dumps(str(mine))}]", "train.epochs=1"], data_dir=tmp_path / "data",
                  out=tmp_path / "wider", from_run=tmp_path / "run")
    assert sorted(wider.classes) == ["apple", "banana", "circle", "star"]  # the run's rows keep their names
    (mine / "star.ndjson").write_text("".join((mine / "star.ndjson").read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(DoodleError, match="changed since training"):  # drawings removed: the split is gone
        evaluate(tmp_path / "run")


# ---------------------------------------------------------------- extending a run


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, quickdraw_dir):
    """A small trained run on the fixture's bitmaps: apple, banana, eye, cat."""
    root = tmp_path_factory.mktemp("base")
    train(None, ["data.source=numpy_bitmap", "data.categories=[apple, banana, eye, cat]", "model.hidden=[32]",
                 f"data.base_url={quickdraw_dir.resolve().as_uri()}", "train.epochs=2", "data.seed=1"],
          data_dir=root / "data", out=root / "run", workers=1)
    return root / "run"


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_extend_keeps_the_runs_weights_and_split_and_adds_rows(base_run, mine, tmp_path):
    before = digest(base_run)
    cfg, data_dir = extend.config_from_run(base_run, [f"data.local=[{json.dumps(str(mine))}]"])
    assert data_dir == Path(json.loads((base_run / "model.json").read_text())["data_dir"])
    assert cfg["data"]["categories"] == ["apple", "banana", "eye", "cat"] and cfg["extend"]["from"] == str(base_run)
    assert cfg["train"]["epochs"] == extend.EXTEND_TRAIN["epochs"]
    ds = load_dataset(cfg, data_dir)
    assert ds.classes == ["apple", "banana", "eye", "cat", "circle", "star"]  # apple: 5 more drawings
    start = extend.starting_point(cfg, ds, data_dir)
    base_model, _ = load_model(base_run, calibrated=False)
    old = base_model.state_dict()
    assert all(np.array_equal(start.state[k], v) for k, v in old.items() if not k.startswith("dense1"))
    assert np.array_equal(start.state["dense1.W"][:, :4], old["dense1.W"])  # the old rows, unchanged
    assert np.isfinite(start.state["dense1.W"]).all() and start.state["dense1.W"].shape == (32, 6)
    base_split = load_split(base_run)
    # RUN's val and test rows, at the same places (its classes' rows come first in theirs)
    starts, old_starts = np.cumsum([0, *ds.counts[:-1]]), np.cumsum([0, 20, 20, 20])
    for part in ("val", "test"):
        mapped = [r - old_starts[c] + starts[c] for r, c in zip(base_split[part], np.searchsorted(
            np.cumsum([20, 20, 20, 12]), base_split[part], side="right"))]
        assert set(mapped) <= set(start.split[part].tolist())
    train_rows = start.split["train"]
    per_class = np.bincount(ds.y[train_rows])
    assert per_class[4] == per_class[5] == per_class[1:4].max() > 8  # new words repeated to weigh as an old class
    assert digest(base_run) == before


def test_train_from_a_run_records_where_it_came_from_and_never_touches_it(base_run, mine, tmp_path):
    before = digest(base_run)
    overrides = [f"data.local=[{json.dumps(str(mine))}]", "train.epochs=2", "extend.replay=20"]
    res = train(None, overrides, out=tmp_path / "ext", from_run=base_run, data_dir=None)
    assert res.classes == ["apple", "banana", "eye", "cat", "circle", "star"]
    meta = json.loads((tmp_path / "ext" / "model.json").read_text())
    origin = meta["extended_from"]
    assert origin["run"] == str(base_run) and origin["new_classes"] == ["circle", "star"] and origin["replay"] == 20
    assert origin["run_id"] == json.loads((base_run / "model.json").read_text())["run_id"]
    assert meta["config"]["extend"]["from"] == str(base_run)
    summary = evaluate(tmp_path / "ext")  # the union's test split, old classes' rows as RUN tested them
    assert set(summary["per_class"]) == set(res.classes)
    again = train(None, ["train.epochs=3"], data_dir=meta["data_dir"], resume=tmp_path / "ext")
    assert again.epochs == 3
    assert json.loads((tmp_path / "ext" / "model.json").read_text())["extended_from"] == origin
    assert digest(base_run) == before


def test_extend_refuses_what_would_change_the_runs_meaning(base_run, mine, tmp_path):
    local = f"data.local=[{json.dumps(str(mine))}]"
    with pytest.raises(DoodleError, match=r"model.hidden: \[8\] differs from \[32\] in .*an extension keeps"):
        train(None, [local, "model.hidden=[8]"], out=tmp_path / "a", from_run=base_run)
    with pytest.raises(DoodleError, match="data.line_width: 8.0 differs from 16.0"):
        train(None, [local, "data.line_width=8"], out=tmp_path / "b", from_run=base_run)
    with pytest.raises(DoodleError, match="nothing to add to .*--set data.local=\\[data/mine\\]"):
        train(None, [], out=tmp_path / "c", from_run=base_run)
    with pytest.raises(DoodleError, match="--from starts from the run's own config"):
        train(base_run / "config.yaml", [local], out=tmp_path / "d", from_run=base_run)
    with pytest.raises(DoodleError, match="already holds a run"):
        train(None, [local], out=base_run, from_run=base_run)
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_a_config_file_can_name_the_run_to_extend(base_run, mine, tmp_path):
    yaml_text = (f"data:\n  categories: [cat]\n  local: [{json.dumps(str(mine))}]\n  source: numpy_bitmap\n"
                       f"model:\n  hidden: [32]\n  norm: none\ntrain:\n  epochs: 1\nextend:\n  from: {base_run}\n")
    (tmp_path / "ext.yaml").write_text(yaml_text)
    res = train(tmp_path / "ext.yaml", [], data_dir=json.loads((base_run / "model.json").read_text())["data_dir"],
                out=tmp_path / "ext")
    assert res.classes == ["apple", "banana", "eye", "cat", "circle", "star"]


def test_new_rows_learn_the_new_class_and_leave_the_old_logits_alone():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)).astype(np.float32) * 3  # 3 old classes, 1 new, in feature space
    W = (centres[:3] - centres[:3].mean(0)).T.copy()  # (16, 3) a sensible old head
    b = np.zeros(3, np.float32)
    old_y = np.repeat(np.arange(3), 50)
    old_feats = centres[old_y] + rng.normal(size=(150, 16)).astype(np.float32)
    new_feats = centres[3] + rng.normal(size=(5, 16)).astype(np.float32)
    Wn, bn = extend.new_rows(old_feats, old_y, W, b, [new_feats])
    test = centres[3] + rng.normal(size=(100, 16)).astype(np.float32)
    full_w, full_b = np.concatenate([W, Wn], axis=1), np.concatenate([b, bn])
    assert np.mean((test @ full_w + full_b).argmax(1) == 3) > 0.9
    assert np.mean((old_feats @ full_w + full_b).argmax(1) == old_y) > 0.9
    assert Wn.dtype == np.float32 and Wn.shape == (16, 1)


def test_cli_train_from(base_run, mine, tmp_path):
    result = cli("train", "--from", base_run, "--set", f"data.local=[{json.dumps(str(mine))}]", "--set",
                 "train.epochs=1", "--out", tmp_path / "ext", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"][-2:] == ["circle", "star"]
    one_line_error(cli("train", "--from", tmp_path / "nope", "--set", "data.local=[x]"), "nope: no such model")
    one_line_error(cli("train", "--from", base_run, "--set", "model.hidden=[8]", "--set",
                       f"data.local=[{json.dumps(str(mine))}]"), "model.hidden: [8] differs from [32]")


def test_without_replay_only_the_new_drawings_train(base_run, mine):
    cfg, data_dir = extend.config_from_run(base_run, [f"data.local=[{json.dumps(str(mine))}]", "extend.replay=0",
                                                      "data.val_fraction=0", "data.test_fraction=0"])
    ds = load_dataset(cfg, data_dir)
    start = extend.starting_point(cfg, ds, data_dir)
    rows = start.split["train"]
    assert sorted(set(ds.y[rows].tolist())) == [0, 4, 5]  # apple's 5 drawings of mine, circle, star
    assert len(rows) == 5 + 8 + 6 and np.isfinite(start.state["dense1.W"]).all()  # new rows still fitted
