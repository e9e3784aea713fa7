"""Processes: rasterising workers die with their parent; training survives kill -9 at any point.

Part of the hostile-input and interruption suite (issues 11 and 21): every case ends in a clean one-line
error or the right result, never a traceback or a silently wrong answer, and nothing complete on disk is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from doodle import fsutil
from doodle.runs import LAST_NPZ
from doodle.train import train
from helpers import TINY, epoch_rows, npz_arrays, same_arrays, sets

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
        assert same_arrays(npz_arrays(out / LAST_NPZ), npz_arrays(reference / LAST_NPZ))
        assert same_arrays(npz_arrays(out / "model.npz"), npz_arrays(reference / "model.npz"))
        assert epoch_rows(out) == epoch_rows(reference)
        assert not list(out.glob(".*.tmp"))
    print(f"kill -9: {kills} kills, state.json epoch at each: {epochs_at_kill}")
    assert kills >= 3
