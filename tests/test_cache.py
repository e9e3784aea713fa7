"""Streaming cache builds: the same bytes as rasterising everything in memory, interrupted builds resume
with what was finished, and a Dask cluster writes the same files (even when a worker dies mid-task)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import doodle.cache
import doodle.cores
import doodle.distributed
import doodle.rasterpool
from doodle import fsutil
from doodle.cache import build_all, build_category, open_cache, temporaries
from doodle.config import load_config
from doodle.errors import DoodleError
from doodle.raster import PADDING
from doodle.rasterpool import rasterize_batch
from doodle.strokes import iter_drawings
from doodle.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[1]
WORDS = ["circle", "square", "star"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Three synthetic ndjson files of 40 drawings, one with a bad line in the middle."""
    root = tmp_path_factory.mktemp("sources")
    paths = write_synthetic(root, words=WORDS, n=40, seed=3)
    lines = paths[1].read_text().splitlines()
    paths[1].write_text("\n".join(lines[:17] + ["{broken"] + lines[17:]) + "\n")
    return paths


def data(*extra) -> dict:
    return load_config(None, ["data.per_category=null", *extra])["data"]


def jobs_in(sources, folder: Path) -> list[tuple[Path, Path]]:
    return [(p, folder / f"{p.stem}.k.npy") for p in sources]


def in_memory_bytes(source: Path, d: dict, tmp: Path) -> bytes:
    """What the old in-memory path wrote: every kept drawing rasterised at once, then np.save."""
    drawings = [r["drawing"] for r in iter_drawings(source, limit=d["per_category"])]
    fsutil.save_npy(tmp, rasterize_batch(drawings, size=d["image_size"], line_width=d["line_width"],
                                         padding=PADDING))
    return tmp.read_bytes()


@pytest.mark.parametrize("extra", [(), ("data.per_category=33", "data.image_size=20", "data.line_width=9")])
def test_streaming_build_is_bit_for_bit_the_in_memory_result(sources, tmp_path, extra):
    d = data(*extra)
    for source in sources:
        out = tmp_path / f"{source.stem}.k.npy"
        result = build_category(source, out, d, PADDING, chunk=7)  # 7 does not divide 40, 39 or 33
        assert out.read_bytes() == in_memory_bytes(source, d, tmp_path / "ref.npy")
        assert result["rows"] == len(np.load(out)) == (d["per_category"] or 40)
        assert result["stats"]["skipped"] == (source == sources[1] and result["rows"] > 17)
        side = json.loads(out.with_suffix(".json").read_text())
        assert side["rows"] == result["rows"] and side["key"] == "k"
    assert temporaries(out) == []


def test_chunks_never_hold_more_than_chunk_drawings(sources, tmp_path, monkeypatch):
    seen = []
    real = doodle.cache.rasterize_batch
    monkeypatch.setattr(doodle.cache, "rasterize_batch", lambda d, **kw: seen.append(len(d)) or real(d, **kw))
    build_category(sources[0], tmp_path / "a.k.npy", data(), PADDING, chunk=16)
    assert seen == [16, 16, 8]


KILL_SECOND = """
import os, signal, sys
import doodle.cache as c
from doodle.config import load_config
from doodle.raster import PADDING
from doodle.errors import DoodleError
from pathlib import Path
sources, folder = [Path(p) for p in sys.argv[1:4]], Path(sys.argv[4])
real = c._append
def append(fh, drawings, *args):
    n = real(fh, drawings, *args)
    if "square" in fh.name:  # half-way through the second category
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return n
c._append = append
data = load_config(None, ["data.per_category=null"])["data"]
c.build_all([(p, folder / f"{p.stem}.k.npy") for p in sources], data, PADDING, workers=1,
            task=lambda *a: c.build_category(*a, chunk=10))
"""


def test_killed_build_resumes_with_the_finished_categories(sources, tmp_path):
    folder = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_SECOND), *map(str, sources), str(folder)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    jobs = jobs_in(sources, folder)
    finished = {p.stem for p, out in jobs if out.is_file()}
    before = {p.stem for p in sources if p.stat().st_size > sources[1].stat().st_size}  # biggest go first
    assert finished == before
    assert len(temporaries(jobs[1][1])) == 1  # the partial file kill -9 left behind
    built = []
    results = build_all(jobs, data(), PADDING, workers=1,
                        task=lambda *a: built.append(Path(a[0]).stem) or build_category(*a))
    assert sorted(built) == sorted(set(WORDS) - finished)
    assert [r is None for r in results] == [w in finished for w in WORDS]
    assert len(temporaries(jobs[1][1])) == 1  # ignored, never read; doodle.dataset removes it once it is old
    fresh = tmp_path / "fresh"
    build_all(jobs_in(sources, fresh), data(), PADDING, workers=1)
    for (_, out), (_, ref) in zip(jobs, jobs_in(sources, fresh)):
        assert out.read_bytes() == ref.read_bytes()


def test_parallel_build_matches_one_process(sources, tmp_path, monkeypatch):
    monkeypatch.setattr(doodle.cache, "PARALLEL_MIN_BYTES", 0)
    build_all(jobs_in(sources, tmp_path / "two"), data(), PADDING, workers=2)
    build_all(jobs_in(sources, tmp_path / "one"), data(), PADDING, workers=1)
    for (_, a), (_, b) in zip(jobs_in(sources, tmp_path / "two"), jobs_in(sources, tmp_path / "one")):
        assert a.read_bytes() == b.read_bytes()


def test_a_cache_file_without_its_sidecar_is_built_again(sources, tmp_path):
    jobs = jobs_in(sources[:1], tmp_path)
    build_all(jobs, data(), PADDING, workers=1)
    out = jobs[0][1]
    assert open_cache(out, 28)[1]["kept"] == 40
    out.with_suffix(".json").unlink()  # killed between the two renames
    assert open_cache(out, 28) is None
    assert build_all(jobs, data(), PADDING, workers=1)[0]["rows"] == 40 and open_cache(out, 28) is not None


# ---------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def cluster():
    """A Dask LocalCluster of 2 worker processes on loopback."""
    distributed = pytest.importorskip("distributed", reason="Dask not installed (pip install 'doodle[dask]')")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as c:
        yield c


def test_dask_cluster_writes_the_same_files(sources, tmp_path, cluster):
    build_all(jobs_in(sources, tmp_path / "dask"), data(), PADDING, scheduler=cluster.scheduler_address)
    build_all(jobs_in(sources, tmp_path / "local"), data(), PADDING, workers=1)
    for (_, a), (_, b) in zip(jobs_in(sources, tmp_path / "dask"), jobs_in(sources, tmp_path / "local")):
        assert a.read_bytes() == b.read_bytes()
        assert json.loads(a.with_suffix(".json").read_text())["rows"] == len(np.load(b))


def test_dask_worker_killed_mid_task_is_retried_without_a_corrupt_file(sources, tmp_path, cluster):
    marker = tmp_path / "killed"

    def die_once(source, out, d, padding):  # pickled by value: the workers run it as it is
        import os
        import signal

        import doodle.cache as c

        real = c._append

        def append(fh, drawings, *args):
            n = real(fh, drawings, *args)
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # the first chunk anywhere dies
            except FileExistsError:
                return n
            fh.flush()
            os.write(fd, fh.name.encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

        c._append = append
        try:
            return c.build_category(source, out, d, padding, chunk=10)
        finally:
            c._append = real

    jobs = jobs_in(sources, tmp_path / "dask")
    build_all(jobs, data(), PADDING, scheduler=cluster.scheduler_address, task=die_once)
    partial = Path(marker.read_text())
    assert partial.name.endswith(".tmp") and partial.parent == tmp_path / "dask"  # the dead worker's, never used
    build_all(jobs_in(sources, tmp_path / "local"), data(), PADDING, workers=1)
    for (_, a), (_, b) in zip(jobs, jobs_in(sources, tmp_path / "local")):
        assert a.read_bytes() == b.read_bytes()


def test_unreachable_scheduler_is_one_line(sources, tmp_path, monkeypatch):
    pytest.importorskip("distributed", reason="Dask not installed (pip install 'doodle[dask]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    monkeypatch.setattr(doodle.distributed, "CONNECT_SECONDS", 1)
    with pytest.raises(DoodleError, match="cannot reach the Dask scheduler"):
        build_all(jobs_in(sources, tmp_path), data(), PADDING, scheduler=f"tcp://127.0.0.1:{port}")


def _timed_task(source, out, data, padding) -> dict:
    """A category that takes 0.3 s and notes when it ran (in a worker process)."""
    import time

    start = time.time()
    time.sleep(0.3)
    Path(f"{out}.times").write_text(f"{start} {time.time()}")
    return {"rows": 0, "out": str(out)}


@pytest.mark.parametrize("share", [1, 3])
def test_a_build_beside_a_training_takes_its_fair_share_of_the_cores(sources, tmp_path, monkeypatch, share):
    """workers=0 runs as many categories at once as doodle.cores.share() allows (1 beside a training on 2 cores)."""
    monkeypatch.setattr(doodle.cache, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(doodle.rasterpool, "available_cores", lambda: 3)  # a pool of 3 workers for the 3 categories
    monkeypatch.setattr(doodle.cores, "share", lambda: share)
    jobs = jobs_in(sources, tmp_path)
    build_all(jobs, data(), PADDING, workers=0, task=_timed_task)
    spans = sorted(tuple(map(float, Path(f"{out}.times").read_text().split())) for _, out in jobs)
    overlapping = any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    assert overlapping == (share > 1)
