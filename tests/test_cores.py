"""doodle's own threads (doodle.team) and its share of the machine (doodle.cores): a run's weights are the
same bit for bit on any number of threads, the team runs every task once and hands errors back, and the
fair share counts the doodle processes computing now."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from doodle import cores, team
from doodle.config import load_config
from doodle.dataset import Dataset
from doodle.errors import DoodleError
from doodle.rasterpool import process_pool
from doodle.train import fit

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n, work, cores, sizes", [
    (256, 51_000_000, 2, [128, 128]), (784, 51_000_000, 2, [392, 392]), (784, 51_000_000, 8, [98] * 8),
    (256, 330_000, 8, [256]), (100, 51_000_000, 8, [100]), (129, 0, 2, [64, 65]), (1, 0, 4, [1])])
def test_blocks_follow_the_shape_and_the_machine_never_the_thread_count(monkeypatch, n, work, cores, sizes):
    monkeypatch.setattr(team, "CORES", cores)
    got = team.blocks(n, work)
    assert [b.stop - b.start for b in got] == sizes
    assert got[0].start == 0 and got[-1].stop == n and all(a.stop == b.start for a, b in zip(got, got[1:]))


@pytest.fixture
def threads():
    """Set the process team's thread count for one test, then put it back."""
    saved = team.TEAM.threads
    yield lambda n: setattr(team.TEAM, "threads", n)
    team.TEAM.threads = saved


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_team_runs_every_task_once(threads, n):
    threads(n)
    seen, names = [], set()

    def task(i):
        time.sleep(0.002 * (i % 3))  # uneven tasks: the threads take them as they come
        seen.append(i)
        names.add(threading.current_thread().name)
    for _ in range(3):
        seen.clear()
        team.run([lambda i=i: task(i) for i in range(9)])
        assert sorted(seen) == list(range(9))
    assert len(names) <= n


def test_no_tasks_is_no_wait(threads):
    threads(2)
    team.run([])


def test_a_task_error_reaches_the_caller_after_the_other_tasks(threads):
    threads(2)
    done = []

    def bad():
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        team.run([bad] + [lambda i=i: (time.sleep(0.001), done.append(i)) for i in range(4)])
    assert sorted(done) == [0, 1, 2, 3]  # nothing still writing when the caller goes on


def rows(n_per: int, n_classes: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n_per * n_classes, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(n_classes, dtype=np.int32), n_per)
    return Dataset(x, y, ["circle", "square", "star"], [n_per] * n_classes)


@pytest.mark.parametrize("extra", [[], ["model.norm=batch", "model.activation=tanh", "train.optimizer=nesterov",
                                        "train.weight_decay=0.001"]])
def test_a_run_is_the_same_bit_for_bit_on_any_number_of_threads(tmp_path, monkeypatch, extra):
    """Batches of 300 rows through 784-260-130 layers, as a 4-core machine cuts the products: most in blocks.
    (BLAS following the thread count would fail this: OpenBLAS rounds the 784-long products differently on
    one thread and on several.)"""
    monkeypatch.setattr(team, "CORES", 4)
    cfg = load_config(None, ["data.categories=[circle, square, star]", "model.hidden=[260, 130]",
                             "model.dropout=0.1", "train.batch_size=300", "train.epochs=1", "augment.flip=0.5",
                             "data.val_fraction=0.1", "data.test_fraction=0", *extra])
    weights = []
    for n in ("1", "2", "3"):
        monkeypatch.setenv(cores.ENV, n)
        fit(cfg, rows(300), tmp_path / n)
        with np.load(tmp_path / n / "last.npz") as f:
            weights.append({k: f[k] for k in f.files if f[k].dtype.kind == "f"})
    assert len(weights[0]) >= 6
    for other in weights[1:]:
        assert all(np.array_equal(weights[0][k], other[k]) for k in weights[0])


def test_a_claim_pins_blas_to_one_thread_registers_and_undoes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(cores.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv(cores.ENV, raising=False)
    blas = lambda: {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}  # noqa: E731
    before = blas()
    with cores.claim():
        assert blas() == {1}
        assert cores.computing(cores.registry()) == 1
        assert team.TEAM.threads == team.CORES
        with cores.claim():  # train -> score: re-entered, still one claim
            assert cores.computing(cores.registry()) == 1
        assert blas() == {1}
    assert blas() == before and team.TEAM.threads == 1
    assert cores.computing(cores.registry()) == 0 and not list(cores.registry().glob("*.claim"))


def test_the_fair_share_counts_live_claims_and_forgets_killed_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(cores.tempfile, "gettempdir", lambda: str(tmp_path))
    holder = ("import sys, time, tempfile; tempfile.gettempdir = lambda: sys.argv[1]\n"
              "from doodle import cores\n"
              "with cores.claim():\n    print('in', flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", holder, str(tmp_path)], stdout=subprocess.PIPE, env=env)
             for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == b"in"
        assert cores.computing(cores.registry()) == 2
        with cores.claim():
            assert cores.computing(cores.registry()) == 3
        procs[0].kill()  # no cleanup: the kernel drops its lock, the file stays
        procs[0].wait()
        assert len(list(cores.registry().glob("*.claim"))) == 2
        assert cores.computing(cores.registry()) == 1
        assert len(list(cores.registry().glob("*.claim"))) == 1  # the killed one's file is gone
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdout.close()
    assert [cores.fair_share(n, cores=2) for n in (1, 2, 3)] == [2, 1, 1]
    assert [cores.fair_share(n, cores=8) for n in (1, 2, 3)] == [8, 4, 2]


def test_doodle_threads_fixes_the_count_and_a_bad_value_is_one_line(monkeypatch):
    monkeypatch.setenv(cores.ENV, "3")
    with cores.claim():
        assert team.TEAM.threads == 3
    monkeypatch.setenv(cores.ENV, "two")
    with pytest.raises(DoodleError, match="DOODLE_THREADS='two': give a whole number"):
        with cores.claim():
            pass


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_rasterizing_workers_have_one_blas_thread_each():
    """The workers are the parallelism: each has one BLAS thread, whatever the machine."""
    with process_pool(2) as pool:
        assert pool.submit(_blas_threads).result() == [1]
