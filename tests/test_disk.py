"""Read-only folders and a full disk.

Part of the hostile-input and interruption suite (issues 11 and 21): every case ends in a clean one-line
error or the right result, never a traceback or a silently wrong answer, and nothing complete on disk is lost.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from doodle.checkpoint import load_model
from doodle.runs import LAST_NPZ
from doodle.train import train
from helpers import TINY, cli, epoch_rows, npz_arrays, one_line_error, same_arrays, sets

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
    assert [r["epoch"] for r in epoch_rows(out)] == list(range(1, 6))
    whole = tmp_path / "whole"
    train(None, (*TINY, "train.epochs=5"), data_dir=data_dir, out=whole)
    assert same_arrays(npz_arrays(out / LAST_NPZ), npz_arrays(whole / LAST_NPZ))


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
