"""Streaming cache builds: one category's ndjson file -> its uint8 bitmap cache, never holding the
file's records in memory; many categories at once, one per core (or per Dask worker: doodle.distributed).

A category is read CHUNK_ROWS drawings at a time; each chunk is rasterised and appended to a temporary
.npy beside the final file, whose header is rewritten with the row count at the end (the bytes are then
exactly what `np.save` writes for the whole array). The temporary is renamed into place, then the JSON
sidecar is written. An interrupted build leaves finished categories in place and only temporaries
(`.<name>.*.tmp`) for the others, which are never read (doodle.dataset removes them once an hour old, so
a live writer's are spared); the next build does only what is missing.

Categories are the unit of parallel work: each worker parses, rasterises and writes its own files, so a
build uses all cores as long as there are at least as many categories to build as cores.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path

import numpy as np

from doodle import cores, fsutil
from doodle.errors import DoodleError
from doodle.local import check_word
from doodle.progress import NULL_REPORTER, Reporter
from doodle.rasterpool import process_pool, rasterize_batch, worker_count
from doodle.strokes import LoadStats, iter_drawings

CHUNK_ROWS = 2048  # drawings parsed and rasterised at a time: a few MB, whatever the file's size
PARALLEL_MIN_BYTES = 4 << 20  # below this much ndjson to read (~7,000 drawings), worker processes cost more


def npy_header(rows: int, size: int) -> bytes:
    """The .npy header `np.save` writes for a C-ordered uint8 (rows, size, size) array."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (rows, size, size)})
    return buf.getvalue()


def open_cache(out: Path, size: int) -> tuple[np.ndarray, dict] | None:
    """A finished cache entry: (read-only memory map, load statistics), or None if it must be built.

    The sidecar is written after the bitmaps, so an entry without a readable sidecar naming the same key
    and row count was interrupted (or predates the statistics) and is rebuilt."""
    if not out.is_file():
        return None
    try:
        side = fsutil.read_json(out.with_suffix(".json"))
        arr = np.load(out, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(side, dict) or side.get("key") != _key(out) or side.get("rows") != len(arr) \
            or not isinstance(side.get("stats"), dict):
        return None
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != (size, size):
        return None
    return arr, side["stats"]


def _key(out: Path) -> str:
    """The cache key in a file name `<word>.<key>.npy`."""
    return out.name.rsplit(".", 2)[-2]


def temporaries(out: Path) -> list[Path]:
    """What interrupted builds of `out` left (fsutil.atomic_path names them `.<name>.<random>.npy.tmp`):
    never renamed into place, so never read; fsutil.clean_temporaries removes them once they are old."""
    return sorted(out.parent.glob(f".{out.name}.*.tmp"))


def read_drawings(source: Path, data: dict, stats: LoadStats, word: str | None = None):
    """The kept records of one ndjson file under the data section's filters; with `word` (a local
    `<word>.ndjson`), a record of another word is a DoodleError naming its line."""
    for record in iter_drawings(source, recognized_only=data["recognized_only"], countrycodes=data["countrycodes"],
                                limit=data["per_category"], strict=data["strict"], stats=stats):
        if word is not None:
            check_word(record, word, source)
        yield record


def build_category(source: str | Path, out: str | Path, data: dict, padding: float,
                   chunk: int = CHUNK_ROWS, word: str | None = None) -> dict:
    """Stream one ndjson file into the cache file `out` (uint8 (N, S, S) .npy) and its JSON sidecar.

    `data` is the config's data section (raster size, pen, filters, per_category, strict); `word`, for
    a local file, the one word its records may name (read_drawings). Returns
    {"out", "rows", "summary", "skipped", "seconds"}. Safe to run twice at once or to kill: only a
    complete file is ever renamed onto `out`.
    """
    source, out = Path(source), Path(out)
    size, line_width = data["image_size"], float(data["line_width"])
    stats = LoadStats(str(source))
    tick = time.perf_counter()
    rows = 0
    with fsutil.atomic_path(out, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            header = npy_header(0, size)
            fh.write(header)
            drawings: list = []
            for record in read_drawings(source, data, stats, word):
                drawings.append(record["drawing"])
                if len(drawings) == chunk:
                    rows += _append(fh, drawings, size, line_width, padding)
                    drawings.clear()
            rows += _append(fh, drawings, size, line_width, padding)
            if rows == 0:
                raise DoodleError(f"{source}: no usable drawings (after filters: {stats.summary()}); "
                                  "check the file or relax data.recognized_only / data.countrycodes")
            final = npy_header(rows, size)
            if len(final) != len(header):  # cannot happen for 3-D uint8 (both pad to 128 bytes); never guess
                raise DoodleError(f"{out}: .npy header changed size ({len(header)} -> {len(final)} bytes)")
            fh.seek(0)
            fh.write(final)
    summary = {"lines": stats.lines, "kept": stats.kept, "filtered": stats.filtered, "skipped": stats.skipped,
               "summary": stats.summary()}
    fsutil.write_json(out.with_suffix(".json"), {"source": str(source), "key": _key(out), "rows": rows,
                                                 "problems": stats.summary(), "stats": summary})
    return {"out": str(out), "rows": rows, "stats": summary, "seconds": time.perf_counter() - tick}


def _append(fh, drawings: list, size: int, line_width: float, padding: float) -> int:
    """Rasterise a chunk in this process and append its bytes; returns the rows written."""
    if not drawings:
        return 0
    bitmaps = rasterize_batch(drawings, size=size, line_width=line_width, padding=padding, workers=1)
    fh.write(np.ascontiguousarray(bitmaps).data.cast("B"))
    return len(bitmaps)


def build_all(jobs: list[tuple[Path, Path]], data: dict, padding: float, workers: int = 0,
              scheduler: str | None = None, reporter: Reporter = NULL_REPORTER,
              task=build_category, words: list[str] | None = None) -> list[dict | None]:
    """Build the cache files of `jobs` [(source, out)] that are not there yet; returns one result per
    job (None for a file that was already complete). `scheduler` sends the work to a Dask cluster;
    otherwise up to `workers` processes (0 = all cores) build one category each. `task` is the
    per-category function (a seam for tests); `words`, one per job, are the words local files must hold
    (local files are built here, never on a cluster: they are on this machine only)."""
    if words is not None and scheduler:
        raise ValueError("local files are built on this machine: no scheduler")
    size = data["image_size"]
    todo = [i for i, (_, out) in enumerate(jobs) if open_cache(out, size) is None]
    results: list[dict | None] = [None] * len(jobs)
    if not todo:
        return results
    # Biggest files first, so the last worker to finish does not start a long job at the end.
    todo.sort(key=lambda i: -jobs[i][0].stat().st_size)
    reporter.start("cache", "rasterizing", total=len(todo), unit="categories")
    try:
        if scheduler:
            from doodle.distributed import run_on_cluster

            done = run_on_cluster(task, [(str(jobs[i][0]), str(jobs[i][1]), data, padding) for i in todo],
                                  scheduler, lambda r: _progress(reporter, r))
            for i, result in zip(todo, done):
                results[i] = result
        else:
            n_bytes = sum(jobs[i][0].stat().st_size for i in todo)
            # Registered as a computing doodle process (doodle.cores): a training beside it takes half the
            # cores, and with workers=0 this build takes only its fair share too, rechecked as categories end.
            with cores.claim():
                share = (lambda: min(cores.share(), len(todo))) if workers == 0 else None
                n = worker_count(workers, len(todo)) if n_bytes >= PARALLEL_MIN_BYTES else 1
                _run_local(task, jobs, todo, data, padding, n, results, reporter, words, share if n > 1 else None)
    finally:
        reporter.end("cache")
    return results


def _word_kw(words: list[str] | None, i: int) -> dict:
    """The task's keyword arguments for job i: the word of a local file, nothing for Google's files."""
    return {} if words is None else {"word": words[i]}


def _run_local(task, jobs, todo, data, padding, workers: int, results: list, reporter: Reporter,
               words: list[str] | None = None, share=None) -> None:
    """One category per task: in this process, or `workers` processes with at most 2 tasks each queued;
    with `share` (a function: processes this build may use now), at most that many tasks at once."""
    if workers == 1:
        for i in todo:
            results[i] = task(jobs[i][0], jobs[i][1], data, padding, **_word_kw(words, i))
            _progress(reporter, results[i])
        return
    pool = process_pool(workers)
    try:
        pending: dict[Future, int] = {}  # submitted task -> its job's index
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < (2 * workers if share is None else share()):
                i = queue.pop(0)
                pending[pool.submit(task, jobs[i][0], jobs[i][1], data, padding, **_word_kw(words, i))] = i
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                results[i] = future.result()
                _progress(reporter, results[i])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _progress(reporter: Reporter, result: dict) -> None:
    reporter.update("cache", advance=1, drawings=f"{result['rows']:,} in {Path(result['out']).name.split('.')[0]}")


__all__ = ["build_category", "build_all", "read_drawings", "open_cache", "npy_header", "temporaries", "CHUNK_ROWS"]
