"""From a config's data section to uint8 bitmaps and labels: fetch what is missing, rasterise once
into a cache under the data directory, and split by a fixed seed.

The classes are data.categories (from data.source), then the words of data.local (your own
`<word>.ndjson` files, doodle.local) not among them; a local word that is also a category adds its
drawings to that category's, after them. Local files are cached like Google's, in `cache/local/`.

Cache files are `<data_dir>/cache/<source>/<word>.<key>.npy` (uint8 (N, S, S)) with a JSON sidecar;
`<key>` hashes the source file's identity (size, mtime; and its full path for a local file, as two
folders may each hold a cat.ndjson), every setting that changes the pixels and
every loader setting that decides which lines are kept (strict included), so editing any of them
rebuilds the cache and nothing stale is ever reused. The sidecar keeps the load statistics, so a
cached run warns about skipped lines exactly as the first run did.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from doodle import fsutil
from doodle.batches import Labels, RowStore
from doodle.cache import build_all, open_cache, read_drawings
from doodle.categories import local_path
from doodle.config import class_names, load_config, source_categories
from doodle.download import ensure_downloaded
from doodle.errors import DoodleError
from doodle.local import local_files
from doodle.progress import NULL_REPORTER, Reporter
from doodle.raster import PADDING
from doodle.rasterpool import rasterize_batch
from doodle.strokes import MAX_LINE_BYTES, MAX_POINTS, LoadStats, load_bitmaps
from doodle.synthetic import write_synthetic

LOCAL = "local"  # the cache folder of data.local's files
CACHE_VERSION = 3  # bump when the rasteriser's output or the loader's choice of lines changes
STALE_TEMPORARY = 3600.0  # seconds: older temporaries in a cache folder were left by a killed process
OFFLINE_HINT = ("offline? use --config configs/offline.yaml, or point data.base_url or $DOODLE_BASE_URL at a mirror "
                "(a folder or file:// URL in Google's layout)")  # said once when the download server is unreachable


@dataclass
class Dataset:
    """Bitmaps (uint8, white ink on black) with integer labels, classes in config order.

    `x` is an in-memory array or a RowStore over the memory-mapped cache files; `y` an array or the
    equivalent Labels. Either way x[rows] and y[rows] give in-memory arrays of just those rows.
    """

    x: np.ndarray | RowStore  # (N, S, S) uint8
    y: np.ndarray | Labels  # (N,) int32
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
    words = source_categories(cfg)
    if not words:  # only local drawings
        return []
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
        lacking = [w for w, p in zip(words, paths) if not p.is_file() or _count_lines(p) < n]
        if lacking:
            write_synthetic(data_dir, words=lacking, n=n, seed=0, reporter=reporter)
        return paths
    return ensure_downloaded(words, fmt=data["source"], data_dir=data_dir, base_url=data["base_url"],
                             max_drawings=_download_limit(data), reporter=reporter, offline_hint=OFFLINE_HINT)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def cache_key(path: Path, data: dict, local: bool = False) -> str:
    """Hash of the source file's identity and every setting that changes the pixels or the lines kept."""
    st = path.stat()
    ident: dict[str, Any] = {"path": str(path.resolve())} if local else {}
    ident |= {
        "version": CACHE_VERSION, "file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
        "image_size": data["image_size"], "line_width": float(data["line_width"]), "padding": PADDING,
        "recognized_only": data["recognized_only"], "countrycodes": data["countrycodes"],
        "per_category": data["per_category"], "strict": data["strict"], "max_points": MAX_POINTS,
        "max_line_bytes": MAX_LINE_BYTES,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def build_caches(paths: list[Path], data: dict, cache_dir: Path, reporter: Reporter = NULL_REPORTER,
                 workers: int = 0, words: list[str] | None = None) -> list[np.ndarray]:
    """The cache files of these ndjson files, memory-mapped; missing ones are rasterised first, streaming,
    on `workers` processes (0 = all cores) or on the Dask cluster at data.scheduler. `words`, one per
    path, mark local files: each may hold only its word, and is built on this machine.

    A cache folder that cannot be written (read-only data, a full disk) only costs the cache: the
    bitmaps are made in memory, with a warning."""
    local = words is not None
    jobs = [(Path(p), Path(cache_dir) / f"{Path(p).stem}.{cache_key(Path(p), data, local)}.npy") for p in paths]
    size = data["image_size"]
    entries = [open_cache(out, size) for _, out in jobs]  # each finished file opened once
    built: list[dict | None] = [None] * len(jobs)
    if any(entry is None for entry in entries):
        problem = _unwritable(Path(cache_dir))
        if problem:
            reporter.log(f"not cached ({problem}); using the bitmaps from memory")
            return [entry[0] if entry is not None else _in_memory(path, data, reporter, workers,
                                                                   words[i] if words is not None else None)
                    for i, (entry, (path, _)) in enumerate(zip(entries, jobs))]
        built = build_all(jobs, data, PADDING, workers=workers, scheduler=None if local else data["scheduler"],
                          reporter=reporter, words=words)
        entries = [entry or open_cache(out, size) for entry, (_, out) in zip(entries, jobs)]
    arrays, short = [], {}
    for (path, out), result, entry in zip(jobs, built, entries):
        if entry is None:
            raise DoodleError(f"{out}: cache file unreadable right after it was written; check the disk "
                              "and delete the file")
        arr, stats = entry
        if stats.get("skipped"):
            reporter.log(stats["summary"])
        if result is not None and data["per_category"] and len(arr) < data["per_category"] and not local:
            short[path.stem] = len(arr)
        arrays.append(arr)
    if short:  # one line for all of them: a mirror of small files would otherwise print one per category
        name, fewest = min(short.items(), key=lambda kv: kv[1])
        reporter.log(f"data.per_category={data['per_category']:,}: {len(short)} of {len(jobs)} categories have "
                     f"fewer drawings (fewest: {name}, {fewest:,})")
    return arrays


def _unwritable(folder: Path) -> str | None:
    """Why nothing can be written in `folder` (None if it can)."""
    probe = folder / ".write-probe"
    try:
        fsutil.write_bytes(probe, b"")
        probe.unlink()
    except DoodleError as exc:
        return str(exc)
    except OSError as exc:
        return str(fsutil.write_error(probe, exc))
    return None


def _in_memory(path: Path, data: dict, reporter: Reporter, workers: int, word: str | None = None) -> np.ndarray:
    """A category's bitmaps without the cache, rasterised here."""
    stats = LoadStats(str(path))
    drawings = [d["drawing"] for d in read_drawings(path, data, stats, word)]
    if stats.skipped:
        reporter.log(stats.summary())
    if not drawings:
        raise DoodleError(f"{path}: no usable drawings (after filters: {stats.summary()}); "
                          "check the file or relax data.recognized_only / data.countrycodes")
    return rasterize_batch(drawings, size=data["image_size"], line_width=data["line_width"], padding=PADDING,
                           workers=workers, reporter=reporter)


def load_dataset(cfg: dict, data_dir: str | Path, reporter: Reporter = NULL_REPORTER,
                 workers: int = 0, download: bool = True, counts: list[int] | None = None,
                 trained: list[str] | None = None) -> Dataset:
    """Fetch and rasterise (cached) every category of the config; the bitmaps stay in their memory-mapped
    files (one per category), addressed as one array, so the dataset is never copied into memory.
    `download=False` uses only what is on disk.

    `counts`, the rows per class a run was trained on, cuts each class that has more to its first that many
    rows: files only grow at their end (play appends your drawings to data/mine), so those are the rows the
    run's split indexes. A class with fewer stays short, for the caller to refuse. `trained`, the classes a run
    was trained on, leaves out the words added to data.local since (a new <word>.ndjson there, as play saves or
    teaches it), for the same reason."""
    data = cfg["data"]
    classes = class_names(cfg)
    if trained is not None:
        cats = len(source_categories(cfg))  # data.local's own words come after them
        classes = classes[:cats] + [w for w in classes[cats:] if w in trained]
    if len(classes) < 2:
        raise DoodleError(f"data.local: {len(classes)} word{'' if len(classes) == 1 else 's'} "
                          f"({', '.join(classes) or 'none'}) and no data.categories: a classifier needs at least two")
    paths = fetch_sources(cfg, data_dir, reporter, download=download)
    cache_root = Path(data_dir) / "cache"
    for folder in (cache_root / data["source"], cache_root / LOCAL):
        if folder.is_dir():
            fsutil.clean_temporaries(folder, older_than=STALE_TEMPORARY)
    if data["source"] == "numpy_bitmap":
        parts = [load_bitmaps(path, limit=data["per_category"]) for path in paths]
    else:
        parts = build_caches(paths, data, cache_root / data["source"], reporter, workers)
    for path, arr in zip(paths, parts):
        if len(arr) == 0:
            raise DoodleError(f"{path}: no drawings; delete it and download again")
    by_class: dict[str, list[np.ndarray]] = {c: [arr] for c, arr in zip(source_categories(cfg), parts)}
    mine = [(word, path) for word, files in local_files(data["local"]).items() if word in classes for path in files]
    if mine:
        more = build_caches([p for _, p in mine], data, cache_root / LOCAL, reporter, workers, [w for w, _ in mine])
        for (word, _), arr in zip(mine, more):
            by_class.setdefault(word, []).append(arr)  # after the category's own rows: rows stay contiguous
    if counts is not None and len(counts) == len(classes):
        by_class = {c: _first_rows(by_class[c], n) for c, n in zip(classes, counts)}
    parts = [arr for c in classes for arr in by_class[c]]
    counts = [sum(len(a) for a in by_class[c]) for c in classes]
    return Dataset(x=RowStore(parts), y=Labels(counts), classes=classes, counts=counts)


def _first_rows(parts: list[np.ndarray], n: int) -> list[np.ndarray]:
    """The first n rows of a class's parts, in order (views; all of them when there are fewer)."""
    out = []
    for arr in parts:
        if n <= 0:
            break
        out.append(arr[:n])
        n -= len(out[-1])
    return out


def prepare(config_path: str | Path | None, overrides: tuple[str, ...] | list[str] = (), data_dir: str | Path = "data",
            reporter: Reporter = NULL_REPORTER, workers: int = 0) -> dict:
    """`doodle cache`: fetch and rasterise a config's data, nothing else; returns what is there now."""
    cfg = load_config(config_path, overrides)
    tick = time.perf_counter()
    ds = load_dataset(cfg, data_dir, reporter, workers=workers)
    folder = "numpy_bitmap" if cfg["data"]["source"] == "numpy_bitmap" else f"cache/{cfg['data']['source']}"
    return {"categories": len(ds.classes), "drawings": len(ds), "bytes": ds.x.nbytes,
            "cache": str(Path(data_dir) / folder), "seconds": time.perf_counter() - tick}


def split_indices(counts: list[int], val_fraction: float, test_fraction: float, mode: str,
                  seed: int) -> dict[str, np.ndarray]:
    """Stratified train/val/test row indices. 'tail' tests on the last rows of each file.

    int32 while the rows fit (they always do below 2 billion drawings): half the memory at 50 million.
    """
    rng = np.random.default_rng(seed)
    dtype = np.int32 if sum(counts) < 2**31 else np.int64
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    start = 0
    for n in counts:
        rows = np.arange(start, start + n, dtype=dtype)
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
    return {k: np.concatenate(v).astype(dtype, copy=False) for k, v in parts.items()}
