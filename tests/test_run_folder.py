"""Run folders: claimed by one training, files that belong together, data found from anywhere.

Part of the hostile-input and interruption suite (issues 11 and 21): every case ends in a clean one-line
error or the right result, never a traceback or a silently wrong answer, and nothing complete on disk is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from doodle import fsutil
from doodle.checkpoint import load_model
from doodle.train import train
from helpers import TINY, cli, copy_run, edit_meta, epoch_rows, one_line_error, sets

# ---------------------------------------------------------------------------------------------
# Run folders: claimed by one training, files that belong together, data found from anywhere


def test_a_second_training_into_a_claimed_folder_stops_at_once(data_dir, tmp_path):
    out = tmp_path / "run"
    with fsutil.lock_folder(out, "held"):  # this process holds it, like a running `doodle train`
        res = cli("train", *sets(), "--data-dir", data_dir, "--out", out)
        # the same process re-enters its own claim, so the CLI here gets through; another process may not:
        assert res.exit_code == 0, res.output
        proc = subprocess.run([sys.executable, "-m", "doodle", "train", "--resume", str(out), "--set",
                               "train.epochs=4", "--data-dir", str(data_dir)],
                              capture_output=True, text=True, timeout=60)
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
    assert meta["metrics"]["epochs_run"] == 30 and len(epoch_rows(out)) == 30


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
    edit_meta(run, data_dir=str(tmp_path / "gone"))
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
