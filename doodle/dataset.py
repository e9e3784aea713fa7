"""From a config's data section to uint8 bitmaps and labels: fetch what is missing, rasterise once
into a cache under the data directory, and split by a fixed seed.

Cache files are `<data_dir>/cache/<source>/<word>.<key>.npy` (uint8 (N, S, S)) with a JSON sidecar;
`<key>` hashes the source file's identity (size, mtime), every setting that changes the pixels and
every loader setting that decides which lines are kept (strict included), so editing any of them
rebuilds the cache and nothing stale is ever reused. The sidecar keeps the load statistics, so a
cached run warns about skipped lines exactly as the first run did.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doodle import fsutil
from doodle.categories import local_path
from doodle.config import class_names
from doodle.download import ensure_downloaded
from doodle.errors import DoodleError
from doodle.progress import NULL_REPORTER, Reporter
from doodle.raster import rasterize_batch
from doodle.strokes import MAX_LINE_BYTES, MAX_POINTS, LoadStats, iter_drawings, load_bitmaps
from doodle.synthetic import write_synthetic

CACHE_VERSION = 2  # bump when the rasteriser's output or the loader's choice of lines changes
STALE_TEMPORARY = 3600.0  # seconds: older temporaries in a cache folder were left by a killed process
PADDING = 16.0  # Google's padding around the 256-unit box, in drawing units


@dataclass
class Dataset:
    """Bitmaps (uint8, white ink on black) with integer labels, classes in config order."""

    x: np.ndarray  # (N, S, S) uint8
    y: np.ndarray  # (N,) int32
    classes: list[str]
    counts: list[int]  # rows per class, in file order; rows of class c are contiguous

    def __len__(self) -> int:
        return len(self.y)


def _download_limit(data: dict) -> int | None:
    """Lines to fetch per category: filters drop some, so ask for more than we keep."""
    n = data["per_category"]
    if n is None:
        return None
    filtered = data["recognized_only"] or data["countrycodes"]
    return math.ceil(n * 1.5) + 50 if filtered and data["source"] != "numpy_bitmap" else n


def fetch_sources(cfg: dict, data_dir: str | Path, reporter: Reporter = NULL_REPORTER,
                  download: bool = True) -> list[Path]:
    """Make sure every category's source file is on disk (downloading or generating what is missing);
    without `download`, a missing download is a DoodleError instead."""
    data = cfg["data"]
    words = class_names(cfg)
    if not download and data["source"] != "synthetic":
        paths = [local_path(data_dir, data["source"], w) for w in words]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DoodleError(f"{missing[0]}: missing{more}; pass --data-dir where this run's data is, "
                              "or DATA files")
        return paths
    if data["source"] == "synthetic":
        n = data["per_category"] or 1000
        paths = [local_path(data_dir, "synthetic", w) for w in words]
        missing = [w for w, p in zip(words, paths) if not p.is_file() or _count_lines(p) < n]
        if missing:
            write_synthetic(data_dir, words=missing, n=n, seed=0, reporter=reporter)
        return paths
    return ensure_downloaded(words, fmt=data["source"], data_dir=data_dir, base_url=data["base_url"],
                             max_drawings=_download_limit(data), reporter=reporter)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def cache_key(path: Path, data: dict) -> str:
    """Hash of the source file's identity and every setting that changes the pixels or the lines kept."""
    st = path.stat()
    ident = {
        "version": CACHE_VERSION, "file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "image_size": data["image_size"], "line_width": float(data["line_width"]), "padding": PADDING,
        "recognized_only": data["recognized_only"], "countrycodes": data["countrycodes"],
        "per_category": data["per_category"], "strict": data["strict"], "max_points": MAX_POINTS,
        "max_line_bytes": MAX_LINE_BYTES,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def rasterize_file(path: Path, data: dict, cache_dir: Path, reporter: Reporter = NULL_REPORTER,
                   workers: int = 0) -> np.ndarray:
    """One category's ndjson file -> cached (N, S, S) uint8 bitmaps (memory-mapped when reused).

    A cache folder that cannot be written (read-only data, a full disk) only costs the cache: the
    bitmaps are used from memory, with a warning."""
    key = cache_key(path, data)
    out = cache_dir / f"{path.stem}.{key}.npy"
    cached = _read_cache(out, key)
    if cached is not None:
        images, stats = cached
        if stats.get("skipped"):
            reporter.log(stats["summary"])
        return images
    stats = LoadStats(str(path))
    drawings = [d["drawing"] for d in iter_drawings(
        path, recognized_only=data["recognized_only"], countrycodes=data["countrycodes"],
        limit=data["per_category"], strict=data["strict"], stats=stats)]
    if stats.skipped:
        reporter.log(stats.summary())
    if not drawings:
        raise DoodleError(f"{path}: no usable drawings (after filters: {stats.summary()}); "
                          "check the file or relax data.recognized_only / data.countrycodes")
    if data["per_category"] and len(drawings) < data["per_category"]:
        reporter.log(f"{path.name}: {len(drawings)} drawings kept, fewer than data.per_category="
                     f"{data['per_category']}")
    images = rasterize_batch(drawings, size=data["image_size"], line_width=data["line_width"],
                             padding=PADDING, workers=workers, reporter=reporter)
    del drawings
    try:
        fsutil.save_npy(out, images)
        fsutil.write_json(out.with_suffix(".json"), {
            "source": str(path), "key": key, "rows": len(images), "problems": stats.summary(),
            "stats": {"lines": stats.lines, "kept": stats.kept, "filtered": stats.filtered,
                      "skipped": stats.skipped, "summary": stats.summary()}})
    except DoodleError as exc:
        reporter.log(f"not cached ({exc}); using the bitmaps from memory")
        return images
    return np.load(out, mmap_mode="r", allow_pickle=False)


def _read_cache(out: Path, key: str) -> tuple[np.ndarray, dict] | None:
    """(bitmaps, load statistics) from a complete cache entry, or None to rebuild it.

    The sidecar is written after the bitmaps, so an entry without a readable sidecar of the same key
    was interrupted (or predates the statistics) and is rebuilt."""
    if not out.is_file():
        return None
    try:
        side = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        images = np.load(out, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if not isinstance(side, dict) or side.get("key") != key or side.get("rows") != len(images) \
            or not isinstance(side.get("stats"), dict) or images.dtype != np.uint8 or images.ndim != 3:
        return None
    return images, side["stats"]


def load_dataset(cfg: dict, data_dir: str | Path, reporter: Reporter = NULL_REPORTER,
                 workers: int = 0, download: bool = True) -> Dataset:
    """Fetch, rasterise (cached) and stack every category of the config into one uint8 array;
    `download=False` uses only what is on disk."""
    data = cfg["data"]
    classes = class_names(cfg)
    paths = fetch_sources(cfg, data_dir, reporter, download=download)
    cache_dir = Path(data_dir) / "cache" / data["source"]
    if cache_dir.is_dir():
        fsutil.clean_temporaries(cache_dir, older_than=STALE_TEMPORARY)
    parts = []
    reporter.start("prepare", "Preparing bitmaps", total=len(classes), unit="categories")
    try:
        for word, path in zip(classes, paths):
            if data["source"] == "numpy_bitmap":
                arr = load_bitmaps(path, limit=data["per_category"])
            else:
                arr = rasterize_file(path, data, cache_dir, reporter, workers)
            if len(arr) == 0:
                raise DoodleError(f"{path}: no drawings; delete it and download again")
            parts.append(arr)
            reporter.update("prepare", advance=1)
    finally:
        reporter.end("prepare")
    counts = [len(p) for p in parts]
    size = data["image_size"]
    x = np.empty((sum(counts), size, size), dtype=np.uint8)  # one copy; the caches stay memory-mapped
    y = np.empty(sum(counts), dtype=np.int32)
    start = 0
    for c, part in enumerate(parts):
        x[start:start + len(part)] = part
        y[start:start + len(part)] = c
        start += len(part)
    return Dataset(x=x, y=y, classes=classes, counts=counts)


def split_indices(counts: list[int], val_fraction: float, test_fraction: float, mode: str,
                  seed: int) -> dict[str, np.ndarray]:
    """Stratified train/val/test row indices. 'tail' tests on the last rows of each file."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    start = 0
    for n in counts:
        rows = np.arange(start, start + n)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if mode == "tail":
            test, rest = rows[n - n_test:], rng.permutation(rows[:n - n_test])
        else:
            perm = rng.permutation(rows)
            test, rest = perm[:n_test], perm[n_test:]
        parts["test"].append(np.sort(test))
        parts["val"].append(np.sort(rest[:n_val]))
        parts["train"].append(np.sort(rest[n_val:]))
        start += n
    return {k: np.concatenate(v).astype(np.int64) for k, v in parts.items()}
