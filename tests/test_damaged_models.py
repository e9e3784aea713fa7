"""Models.

Part of the hostile-input and interruption suite (issues 11 and 21): every case ends in a clean one-line
error or the right result, never a traceback or a silently wrong answer, and nothing complete on disk is lost.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from doodle.checkpoint import load_model
from doodle.errors import DoodleError
from doodle.train import train
from helpers import TINY, cli, copy_run, edit_meta, one_line_error

# ---------------------------------------------------------------------------------------------
# Models


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
    "layer sizes differ from the arrays": (lambda r: edit_meta(r, layer_sizes=[64, 16, 3]), "expected (64, 16)"),
    "raster size differs from the input": (lambda r: edit_meta(r, raster={"size": 28, "line_width": 16.0,
                                                                           "padding": 16.0}), "makes 784 inputs"),
    "classes differ from the output": (lambda r: edit_meta(r, classes=["circle", "square"]), "2 classes"),
    "absurd layer size": (lambda r: edit_meta(r, layer_sizes=[64, 10 ** 12, 3]), "expected (64, 1000000000000)"),
    "unknown activation": (lambda r: edit_meta(r, activation="swish"), "unknown activation"),
    "layer sizes not numbers": (lambda r: edit_meta(r, layer_sizes=["64", 8, 3]), "layer_sizes"),
    "raster without size": (lambda r: edit_meta(r, raster={}), "'raster'"),
    "classes not a list": (lambda r: edit_meta(r, classes="circle"), "'classes'"),
    "weights missing": (lambda r: _drop_weight(r, "dense1.W"), "missing ['dense1.W']"),
    "integer-overflowing raster": (lambda r: edit_meta(r, raster={"size": 10 ** 30, "line_width": 16.0,
                                                                   "padding": 16.0}), "'raster'"),
    "unknown test-time augmentation": (lambda r: edit_meta(r, tta="rotate"), "unknown tta 'rotate'"),
    "test-time augmentation not a name": (lambda r: edit_meta(r, tta=["flip"]), "unknown tta"),
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
    edit_meta(run, norm="none")  # then the file holds arrays a plain network does not have
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
    edit_meta(run, tta="flip")  # the metadata decides how the model predicts
    flipped, _ = load_model(run)
    assert flipped.tta == "flip" and not np.allclose(flipped.predict_proba(x), model.predict_proba(x))
