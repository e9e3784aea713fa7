"""Training out of core: rows read from memory-mapped per-category files train exactly as the same rows in
memory; block shuffling visits every row once, a window of blocks at a time; configs/all.yaml runs; at many
classes `doodle evaluate` shows the extremes instead of a 345-row table."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import doodle.batches
from doodle import cli
from doodle.batches import Labels, RowStore, RowView, block_order
from doodle.categories import CATEGORIES, SYNTHETIC_SHAPES
from doodle.checkpoint import load_model
from doodle.config import class_names, load_config
from doodle.dataset import Dataset
from doodle.train import fit, train

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def mapped_parts(tmp_path, counts, size=8, seed=0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-class uint8 files on disk, opened as memory maps, and the same rows as one in-memory array."""
    rng = np.random.default_rng(seed)
    parts = []
    for c, n in enumerate(counts):
        base = np.zeros((size, size))
        base[(c * size) // len(counts):(c * size) // len(counts) + 2, :] = 200
        arr = np.clip(base + rng.normal(0, 60, (n, size, size)), 0, 255).astype(np.uint8)
        np.save(tmp_path / f"c{c}.npy", arr)
        parts.append(np.load(tmp_path / f"c{c}.npy", mmap_mode="r"))
    return np.concatenate(parts), parts


def test_row_store_reads_like_the_concatenated_array(tmp_path):
    whole, parts = mapped_parts(tmp_path, [5, 0, 7, 3])
    store = RowStore(parts)
    assert store.shape == whole.shape and len(store) == 15 and store.nbytes == whole.nbytes
    rows = np.array([14, 0, 6, 5, 5, 13])  # unsorted, repeated, across parts
    assert np.array_equal(store[rows], whole[rows])
    assert np.array_equal(store[3:9], whole[3:9]) and np.array_equal(store[-1], whole[-1])
    assert np.array_equal(np.asarray(store), whole)
    store.release()  # pages leave the process, the data does not
    assert np.array_equal(RowView(store, np.arange(2, 12))[3:6], whole[5:8])
    with pytest.raises(IndexError):
        store[np.array([15])]
    labels = Labels([5, 0, 7, 3])
    assert list(labels[rows]) == [3, 0, 2, 2, 2, 3] and labels[4] == 0 and len(labels) == 15
    assert np.array_equal(np.asarray(labels), np.repeat([0, 2, 3], [5, 7, 3]))


def rss_file() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("RssFile:")[1].split()[0]) * 1024


needs_madvise = pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED") or not Path("/proc/self/status").exists(),
                                   reason="no madvise or /proc on this platform")


@needs_madvise
def test_release_drops_mapped_pages_from_the_process(tmp_path):
    np.save(tmp_path / "big.npy", np.full((4096, 28, 28), 7, np.uint8))  # 3.2 MB
    store = RowStore([np.load(tmp_path / "big.npy", mmap_mode="r")])
    before = rss_file()
    assert store[np.arange(4096)].sum() == 7 * 4096 * 784
    touched = rss_file()
    store.release()
    assert touched - before > 2_000_000 and rss_file() - before < 500_000


@needs_madvise
def test_random_batches_keep_resident_memory_flat(tmp_path, monkeypatch):
    monkeypatch.setattr(doodle.batches, "CHECK_BYTES", 256 << 10)
    monkeypatch.setattr(doodle.batches, "RELEASE_BYTES", 1 << 20)
    parts = []
    for c in range(4):  # 4 x 2,500 rows: 7.8 MB of files
        np.save(tmp_path / f"{c}.npy", np.full((2500, 28, 28), c, np.uint8))
        parts.append(np.load(tmp_path / f"{c}.npy", mmap_mode="r"))
    store, rng = RowStore(parts), np.random.default_rng(0)
    before, peak = rss_file(), 0
    for _ in range(60):  # 64 random rows (50 KB) map far more than 50 KB: fault-around spans are counted
        rows = np.sort(rng.choice(len(store), 64, replace=False))
        assert np.array_equal(store[rows][:, 0, 0], rows // 2500)
        peak = max(peak, rss_file() - before)
    assert peak < 3_000_000


@pytest.mark.parametrize("shuffle", [["data.shuffle=full"],
                                     ["data.shuffle=blocks", "data.block_rows=8", "data.shuffle_window=40"]])
def test_memory_mapped_training_equals_in_memory_training(tmp_path, shuffle):
    counts = [90, 70, 110]
    whole, parts = mapped_parts(tmp_path, counts)
    classes = ["circle", "square", "star"]
    cfg = load_config(None, ["data.categories=[circle, square, star]", "data.image_size=8", "model.hidden=[16]",
                             "train.epochs=3", "train.batch_size=32", "train.lr=0.01", "model.dropout=0.0",
                             *shuffle])
    in_memory = fit(cfg, Dataset(whole, np.repeat(np.arange(3, dtype=np.int32), counts), classes, counts),
                    tmp_path / "memory")
    mapped = fit(cfg, Dataset(RowStore(parts), Labels(counts), classes, counts), tmp_path / "mapped")
    def untimed(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert untimed(mapped.history) == untimed(in_memory.history)
    a, b = load_model(tmp_path / "memory")[0].state_dict(), load_model(tmp_path / "mapped")[0].state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert mapped.test_accuracy == in_memory.test_accuracy > 0.5


def test_block_order_reads_blocks_a_window_at_a_time():
    rng = np.random.default_rng(0)
    train = np.sort(rng.choice(10_000, 3_008, replace=False)).astype(np.int32)  # gaps like a real split
    order = block_order(train, block_rows=16, window=160, rng=np.random.default_rng(1))
    assert order.dtype == np.int32 and np.array_equal(np.sort(order), train)  # every row once
    block_of = {int(r): i // 16 for i, r in enumerate(train)}
    for w in range(0, len(order), 160):
        window = [block_of[int(r)] for r in order[w:w + 160]]
        assert len(set(window)) == len(window) // 16 and window != sorted(window)  # whole blocks, mixed
    ragged = block_order(train[:3_001], block_rows=16, window=160, rng=np.random.default_rng(1))
    assert np.array_equal(np.sort(ragged), train[:3_001])  # a short last block too
    single = block_order(train, block_rows=1, window=10**6, rng=np.random.default_rng(1))
    assert np.array_equal(np.sort(single), train) and not np.array_equal(single, train)


def test_all_yaml_names_the_345_categories_and_trains_when_shrunk(tmp_path):
    cfg = load_config(REPO / "configs" / "all.yaml")
    assert class_names(cfg) == list(CATEGORIES) and cfg["data"]["per_category"] == 10_000
    small = ["data.source=synthetic", "data.per_category=40", "model.hidden=[16]", "train.epochs=1",
             "data.block_rows=4", "data.shuffle_window=64", "data.val_fraction=0.1", "data.test_fraction=0.1"]
    res = train(REPO / "configs" / "all.yaml", small, data_dir=tmp_path / "data", out=tmp_path / "run")
    assert res.classes == list(SYNTHETIC_SHAPES) and res.epochs == 1 and res.test_accuracy is not None


@pytest.mark.shared
def test_all_yaml_on_the_shared_345_categories(tmp_path, shared_quickdraw_dir):
    base = shared_quickdraw_dir.resolve().as_uri()
    res = train(REPO / "configs" / "all.yaml", ["data.per_category=5", "model.hidden=[8]", "train.epochs=1",
                                                 f"data.base_url={base}"],
                data_dir=tmp_path / "data", out=tmp_path / "run")
    assert len(res.classes) == 345 and res.history[0]["samples"] == 345 * 5


def test_doodle_cache_prepares_then_reuses(tmp_path):
    args = ["cache", "--config", REPO / "configs" / "offline.yaml", "--set", "data.per_category=20",
            "--data-dir", tmp_path, "--json"]
    first = runner.invoke(cli.app, [str(a) for a in args])
    assert first.exit_code == 0, first.output
    info = json.loads(first.stdout)
    assert info["categories"] == 8 and info["drawings"] == 160 and info["bytes"] == 160 * 784
    npys = sorted((tmp_path / "cache" / "synthetic").glob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in npys]
    again = runner.invoke(cli.app, [str(a) for a in args])
    assert again.exit_code == 0 and [p.stat().st_mtime_ns for p in npys] == stamps
