"""The data pipeline: local files are used as they are, bitmaps are cached by source and raster settings,
rebuilt when either changes, and bad lines are skipped (or, with strict, stop the run)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import doodle.cache
import doodle.progress
from doodle.config import load_config
from doodle.dataset import load_dataset
from doodle.errors import DoodleError
from doodle.raster import rasterize


@pytest.fixture()
def data_dir(tmp_path, quickdraw_dir):
    """A data folder holding the first 30 apple and banana drawings, as if downloaded."""
    (tmp_path / "simplified").mkdir()
    for word in ("apple", "banana"):
        lines = (quickdraw_dir / "full" / "simplified" / f"{word}.ndjson").read_text().splitlines()[:30]
        (tmp_path / "simplified" / f"{word}.ndjson").write_text("\n".join(lines) + "\n")
    return tmp_path


def cfg(*extra):
    return load_config(None, ["data.categories=[apple, banana]", "data.per_category=30",
                              "data.base_url=http://127.0.0.1:9", *extra])  # never contacted: files are local


@pytest.fixture()
def raster_calls(monkeypatch):
    calls = []
    real = doodle.cache.rasterize_batch

    def counting(drawings, **kw):
        calls.append(len(drawings))
        return real(drawings, **kw)

    monkeypatch.setattr(doodle.cache, "rasterize_batch", counting)
    return calls


def test_bitmaps_match_rasterize_and_labels(data_dir, quickdraw_dir):
    ds = load_dataset(cfg(), data_dir)
    assert ds.x.shape == (60, 28, 28) and ds.x.dtype == np.uint8 and ds.counts == [30, 30]
    assert list(ds.y[:30]) == [0] * 30 and list(ds.y[30:]) == [1] * 30
    import json

    first_banana = json.loads((data_dir / "simplified" / "banana.ndjson").read_text().splitlines()[0])
    assert np.array_equal(ds.x[30], rasterize(first_banana["drawing"]))


def test_cache_is_reused_then_rebuilt_when_settings_or_source_change(data_dir, raster_calls):
    load_dataset(cfg(), data_dir)
    assert raster_calls == [30, 30]
    cache = sorted((data_dir / "cache" / "simplified").glob("*.npy"))
    assert len(cache) == 2
    load_dataset(cfg(), data_dir)
    assert raster_calls == [30, 30]  # reused
    load_dataset(cfg("data.line_width=8"), data_dir)
    assert raster_calls == [30, 30, 30, 30]  # new raster settings -> rebuilt
    wide = load_dataset(cfg("data.line_width=8"), data_dir)
    assert raster_calls == [30, 30, 30, 30]
    src = data_dir / "simplified" / "apple.ndjson"
    lines = src.read_text().splitlines()
    src.write_text("\n".join(lines[1:] + lines[:1]) + "\n")  # same size, new content and mtime
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    again = load_dataset(cfg("data.line_width=8"), data_dir)
    assert raster_calls == [30, 30, 30, 30, 30]  # only the changed file
    assert np.array_equal(again.x[0], wide.x[1]) and np.array_equal(again.x[30:], wide.x[30:])


def test_bad_lines_are_skipped_or_strict(data_dir):
    src = data_dir / "simplified" / "apple.ndjson"
    lines = src.read_text().splitlines()
    src.write_text("\n".join(lines[:3] + ["{broken", '{"word": "apple", "drawing": []}'] + lines[3:]) + "\n")
    class Log(doodle.progress.Reporter):
        messages: list = []

        def log(self, message):
            self.messages.append(message)

    ds = load_dataset(cfg(), data_dir, Log())
    assert ds.counts == [30, 30]
    assert any("2 bad lines skipped" in m and "line 4" in m for m in Log.messages)
    with pytest.raises(DoodleError, match=r"apple.ndjson:4: .*run without --strict"):
        load_dataset(cfg("data.strict=true", "data.line_width=15"), data_dir)


def test_numpy_bitmap_source_over_file_url(tmp_path, quickdraw_dir):
    base = quickdraw_dir.resolve().as_uri()
    c = load_config(None, ["data.source=numpy_bitmap", "data.categories=[eye, apple]", "data.per_category=15",
                           f"data.base_url={base}"])
    ds = load_dataset(c, tmp_path)
    ref = np.load(quickdraw_dir / "full" / "numpy_bitmap" / "apple.npy")  # 20 rows: the limit takes 15
    assert ds.counts == [15, 15] and np.array_equal(ds.x[15:], ref[:15].reshape(-1, 28, 28))


def test_synthetic_source_generates_then_reuses(tmp_path):
    c = load_config(None, ["data.source=synthetic", "data.categories=[circle, star]", "data.per_category=20"])
    first = load_dataset(c, tmp_path)
    mtime = (tmp_path / "synthetic" / "circle.ndjson").stat().st_mtime_ns
    second = load_dataset(c, tmp_path)
    assert (tmp_path / "synthetic" / "circle.ndjson").stat().st_mtime_ns == mtime
    assert np.array_equal(first.x, second.x) and first.counts == [20, 20]
