"""Resuming: exactly as if never stopped, from any damage a clean error.

Part of the hostile-input and interruption suite (issues 11 and 21): every case ends in a clean one-line
error or the right result, never a traceback or a silently wrong answer, and nothing complete on disk is lost.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import InterruptAt

from doodle.checkpoint import load_model
from doodle.config import load_config
from doodle.dataset import load_dataset
from doodle.runs import LAST_NPZ
from doodle.train import fit, train
from helpers import (
    TINY,
    cli,
    copy_run,
    epoch_rows,
    npz_arrays,
    one_line_error,
    same_arrays,
)

# ---------------------------------------------------------------------------------------------
# Resuming: exactly as if never stopped, from any damage a clean error


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
    assert epoch_rows(tmp_path / "part") == epoch_rows(tmp_path / "whole")
    for name in ("model.npz", LAST_NPZ):
        assert same_arrays(npz_arrays(tmp_path / "part" / name), npz_arrays(tmp_path / "whole" / name)), name
    # dropout matters here: without restoring its random state the resumed run differs
    assert cfg["model"]["dropout"] > 0 and cfg["augment"]["probability"] == 1.0
    model = load_model(tmp_path / "part")[0]
    assert model.tta == cfg["model"]["tta"] and model.norm == cfg["model"]["norm"]  # it predicts as configured
    if model.norm == "batch":  # the running statistics are resume state too (in last.npz's model/ arrays)
        assert "model/norm0.var" in npz_arrays(tmp_path / "part" / LAST_NPZ)


def test_resume_with_more_epochs_on_a_constant_schedule_equals_one_run(data_dir, tmp_path):
    base = ("train.schedule=constant", "train.warmup_epochs=0")
    train(None, (*TINY, *base, "train.epochs=2"), data_dir=data_dir, out=tmp_path / "a")
    res = cli("train", "--resume", tmp_path / "a", "--set", "train.epochs=4", "--data-dir", data_dir)
    assert res.exit_code == 0, res.output
    train(None, (*TINY, *base, "train.epochs=4"), data_dir=data_dir, out=tmp_path / "b")
    assert same_arrays(npz_arrays(tmp_path / "a" / LAST_NPZ), npz_arrays(tmp_path / "b" / LAST_NPZ))
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
    assert [r["epoch"] for r in epoch_rows(run)] == [1, 2, 3, 4, 5]
    assert json.loads((run / "state.json").read_text())["epoch"] == 5
    assert not any(p.exists() for p in stale) and not list(run.glob(".*.tmp"))


RESUME_DAMAGE = {  # name -> (how, words in the error)
    "missing last.npz": (lambda r: (r / LAST_NPZ).unlink(), "not a resumable run"),
    "truncated last.npz": (lambda r: (r / LAST_NPZ).write_bytes((r / LAST_NPZ).read_bytes()[:500]), "damaged"),
    "garbage last.npz": (lambda r: (r / LAST_NPZ).write_bytes(b"PK\x03\x04" + b"\0" * 64), "damaged"),
    "pickled last.npz": (lambda r: _pickle_into(r / LAST_NPZ), "damaged"),
    "last.npz without resume state": (lambda r: _strip_state(r / LAST_NPZ), "no resume state"),
    "split.npz of another run": (lambda r: _foreign_split(r), "belongs to another run"),
    "hidden layers changed": (lambda r: None,
                              "--resume continues a run exactly, but model.hidden ([8] -> [9]) changed"),
}


def _pickle_into(path):
    arrays = npz_arrays(path)
    arrays["optimizer/step"] = np.array([{"x": 1}], dtype=object)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays, state=np.array("{}"))


def _strip_state(path):
    arrays = npz_arrays(path)
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
