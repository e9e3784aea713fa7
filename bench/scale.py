"""All 345 categories at scale: rasterising and training out of core, with memory measured as it goes.

Real bulk data cannot be downloaded here, so this builds a corpus in Google's layout
(`full/simplified/<word>.ndjson`) from the shared simplified drawings of all 345 categories, N copies per
category, each copy jittered (rotated, scaled and shifted as a whole, every stroke nudged on its own).
Then it measures, each phase in a fresh child process so memory figures are its own:

  rasterising   drawings/s on 1 core and on all cores (same sample of categories: the speed-up), then
                the whole corpus on all cores: wall time (target < 5 min at N = 10,000 on 2 cores)
  training      one epoch of the configs/all.yaml network on the cached bitmaps, read through memory maps,
                and the same epoch with the bitmaps copied into memory: samples/s and their ratio
                (target >= 0.9)
  memory        peak anonymous memory (RssAnon: heap, arrays) and peak resident memory (RSS, which adds
                mapped file pages) of the process tree, sampled every 20 ms, at N = 2,000 and N
  extrapolation to all ~50 million drawings: time to rasterise, time per epoch, disk space

Usage: python bench/scale.py [--n 10000] [--small 2000] [--work DIR] [--keep]
The corpus and caches go to --work (default: a temporary folder; 2.0 GB of ndjson + 2.7 GB of bitmaps at
N = 10,000). Every figure is measured in this run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import REPO, quickdraw_root
from doodle.categories import CATEGORIES, local_path

ALL_DRAWINGS = 50_000_000  # Google: "50 million drawings across 345 categories"
ALL_NDJSON_GB = 22.0  # Google's simplified files, all 345
ALL_CONFIG = REPO / "configs" / "all.yaml"


# ---------------------------------------------------------------- memory


def _status(pid: int) -> dict[str, int]:
    """RssAnon and RssFile of one process, in bytes (empty if it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as fh:
                    pids += [int(p) for p in fh.read().split()]
        except OSError:
            pass
        i += 1
    return pids


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Sampler:
    """Samples this process tree every `every` seconds: peaks of the summed RssAnon and RSS, and the CPU
    time every process of the tree used (so speeds can be given per CPU-second on a shared machine)."""

    def __init__(self, every: float = 0.02):
        self.every, self.anon, self.rss = every, 0, 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            anon = rss = 0
            for pid in _tree(os.getpid()):
                s = _status(pid)
                anon += s.get("RssAnon", 0)
                rss += s.get("RssAnon", 0) + s.get("RssFile", 0) + s.get("RssShmem", 0)
                self._cpu[pid] = max(self._cpu.get(pid, 0.0), _cpu_seconds(pid))
            self.anon, self.rss = max(self.anon, anon), max(self.rss, rss)
            self._stop.wait(self.every)

    @property
    def cpu(self) -> float:
        return sum(self._cpu.values()) - self._cpu0

    def __enter__(self):
        self._cpu0 = _cpu_seconds(os.getpid())
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._cpu[os.getpid()] = _cpu_seconds(os.getpid())


# ---------------------------------------------------------------- corpus


def _strokes(drawing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs = np.concatenate([np.asarray(s[0], float) for s in drawing])
    ys = np.concatenate([np.asarray(s[1], float) for s in drawing])
    sid = np.repeat(np.arange(len(drawing)), [len(s[0]) for s in drawing])
    return xs, ys, sid


def jitter_category(word: str, sources: list, n: int, seed: int) -> list[str]:
    """n ndjson lines: copies of `sources` (round robin), each rotated +-15 deg, scaled 0.85-1.15 and shifted
    +-12 units about the box centre, every stroke nudged by ~3 units; integer coordinates in 0..255."""
    rng = np.random.default_rng(seed)
    lines = [""] * n
    for s, drawing in enumerate(sources):
        copies = np.arange(s, n, len(sources))
        if not len(copies):
            continue
        xs, ys, sid = _strokes(drawing)
        c = len(copies)
        theta = np.radians(rng.uniform(-15, 15, (c, 1)))
        zoom = rng.uniform(0.85, 1.15, (c, 1))
        shift = rng.uniform(-12, 12, (c, 2))
        nudge = rng.normal(0, 3, (c, len(drawing), 2))
        u, v = xs - 127.5, ys - 127.5
        X = 127.5 + zoom * (np.cos(theta) * u - np.sin(theta) * v) + shift[:, :1] + nudge[:, sid, 0]
        Y = 127.5 + zoom * (np.sin(theta) * u + np.cos(theta) * v) + shift[:, 1:] + nudge[:, sid, 1]
        X = np.clip(np.rint(X), 0, 255).astype(int).tolist()
        Y = np.clip(np.rint(Y), 0, 255).astype(int).tolist()
        bounds = np.concatenate(([0], np.cumsum(np.bincount(sid)))).tolist()
        for k, copy in enumerate(copies.tolist()):
            xk, yk = X[k], Y[k]
            strokes = ",".join(f"[{json.dumps(xk[a:b])},{json.dumps(yk[a:b])}]" for a, b in zip(bounds, bounds[1:]))
            lines[copy] = (f'{{"word":{json.dumps(word)},"countrycode":"US","timestamp":"2017-03-01 00:00:00.0 UTC",'
                           f'"recognized":true,"key_id":"{seed:05d}{copy:09d}","drawing":[{strokes}]}}')
    return lines


def _write_category(args) -> int:
    word, src, dst, n, seed = args
    sources = [json.loads(line)["drawing"] for line in Path(src).read_text().splitlines() if line.strip()]
    lines = jitter_category(word, sources, n, seed)
    tmp = Path(str(dst) + ".part")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(dst)
    return os.path.getsize(dst)


def build_corpus(root: Path, n: int) -> tuple[list[Path], float, int]:
    """<root>/simplified/<word>.ndjson for all 345 words (reused when already built for this n)."""
    from concurrent.futures import ProcessPoolExecutor

    shared = quickdraw_root()
    paths = [local_path(root, "simplified", w) for w in CATEGORIES]
    marker = root / f"corpus-{n}.done"
    tick = time.perf_counter()
    if not marker.is_file():
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        jobs = [(w, local_path(shared / "full", "simplified", w), p, n, i) for i, (w, p) in
                enumerate(zip(CATEGORIES, paths))]
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_write_category, jobs, chunksize=4))
        marker.write_text("")
    return paths, time.perf_counter() - tick, sum(p.stat().st_size for p in paths)


# ---------------------------------------------------------------- phases (each in its own process)


def _data(n: int) -> dict:
    from doodle.config import load_config

    return load_config(ALL_CONFIG, [f"data.per_category={n}"])["data"]


def phase_raster(work: Path, n: int, workers: int, every: int) -> dict:
    """Rasterise every `every`-th category's first n drawings into a fresh cache folder."""
    from doodle.dataset import build_caches

    paths = [local_path(work / "corpus", "simplified", w) for w in CATEGORIES][::every]
    cache = work / f"cache-{n}-{workers}-{every}"
    shutil.rmtree(cache, ignore_errors=True)
    with Sampler() as mem:
        tick = time.perf_counter()
        parts = build_caches(paths, _data(n), cache, workers=workers)
        seconds = time.perf_counter() - tick
    rows = sum(len(p) for p in parts)
    return {"categories": len(paths), "drawings": rows, "seconds": seconds, "rate": rows / seconds,
            "cpu_seconds": mem.cpu, "cpu_rate": rows / mem.cpu, "load": os.getloadavg()[0], "peak_anon": mem.anon,
            "peak_rss": mem.rss, "cache": str(cache),
            "bytes": sum(Path(f).stat().st_size for f in cache.glob("*.npy"))}


def phase_train(work: Path, n: int, in_memory: bool) -> dict:
    """One epoch of configs/all.yaml's network on the 345 x n cache: memory-mapped, or copied into memory."""
    from doodle.batches import Labels, RowStore
    from doodle.config import load_config
    from doodle.dataset import Dataset, build_caches
    from doodle.train import fit

    cfg = load_config(ALL_CONFIG, [f"data.per_category={n}", "train.epochs=1"])
    paths = [local_path(work / "corpus", "simplified", w) for w in CATEGORIES]
    with Sampler() as mem:
        parts = build_caches(paths, cfg["data"], work / f"cache-{n}-0-1")  # already built: just mapped
        counts = [len(p) for p in parts]
        x = np.concatenate(parts) if in_memory else RowStore(parts)
        ds = Dataset(x=x, y=Labels(counts), classes=list(CATEGORIES), counts=counts)
        with tempfile.TemporaryDirectory(dir=work) as run:
            tick = time.perf_counter()
            res = fit(cfg, ds, Path(run) / "run")
            seconds = time.perf_counter() - tick
    row = res.history[-1]
    return {"samples": row["samples"], "train_seconds": row["seconds"], "sps": row["samples"] / row["seconds"],
            "epoch_seconds": seconds, "cpu_seconds": mem.cpu, "cpu_sps": row["samples"] / mem.cpu,
            "load": os.getloadavg()[0], "val_accuracy": res.val_accuracy, "peak_anon": mem.anon, "peak_rss": mem.rss,
            "data_bytes": int(sum(p.nbytes for p in parts))}


def run_phase(work: Path, *args: str) -> dict:
    """Run one phase in a child process; its last stdout line is the JSON result."""
    proc = subprocess.run([sys.executable, __file__, "--work", str(work), "--phase", *args],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"phase {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- report


def gb(b: float) -> str:
    return f"{b / 1e9:.2f} GB"


def minutes(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="drawings per category (default 10,000)")
    ap.add_argument("--small", type=int, default=2_000, help="the smaller size for the memory comparison")
    ap.add_argument("--every", type=int, default=10, help="1-core speed measured on every k-th category")
    ap.add_argument("--work", type=Path, default=None, help="folder for the corpus and caches (default: temporary)")
    ap.add_argument("--keep", action="store_true", help="keep --work's corpus and caches")
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:  # a child: one measurement, one JSON line
        name, *rest = args.phase
        result = phase_raster(args.work, *map(int, rest)) if name == "raster" else \
            phase_train(args.work, int(rest[0]), rest[1] == "memory")
        print(json.dumps(result))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="doodle-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    try:
        print(f"load average before: {os.getloadavg()[0]:.1f} on {cores} cores", flush=True)
        paths, corpus_s, corpus_bytes = build_corpus(work / "corpus", args.n)
        print(f"corpus: 345 x {args.n:,} jittered drawings, {gb(corpus_bytes)} of ndjson ({corpus_s:.0f} s)",
              flush=True)
        one = run_phase(work, "raster", str(args.n), "1", str(args.every))
        many = run_phase(work, "raster", str(args.n), "0", str(args.every))
        print(f"rasterising {one['drawings']:,} drawings ({one['categories']} categories): "
              f"1 core {one['rate']:,.0f}/s, "
              f"{cores} cores {many['rate']:,.0f}/s: speed-up {many['rate'] / one['rate']:.2f}x "
              f"(per CPU-second: {one['cpu_rate']:,.0f} and {many['cpu_rate']:,.0f}; "
              f"load {one['load']:.1f} and {many['load']:.1f})", flush=True)
        sizes = sorted({args.small, args.n})
        raster = {n: run_phase(work, "raster", str(n), "0", "1") for n in sizes}
        for n in sizes:
            r = raster[n]
            print(f"rasterising 345 x {n:,} = {r['drawings']:,} drawings on {cores} cores: {minutes(r['seconds'])} "
                  f"({r['rate']:,.0f}/s; {r['cpu_rate']:,.0f} per CPU-second, load {r['load']:.1f}), cache "
                  f"{gb(r['bytes'])}; peak anon {gb(r['peak_anon'])}, peak RSS {gb(r['peak_rss'])} (all processes)",
                  flush=True)
        train = {}
        for n in sizes:
            train[n] = {mode: run_phase(work, "train", str(n), mode) for mode in ("mapped", "memory")}
            m, r = train[n]["mapped"], train[n]["memory"]
            print(f"training 1 epoch, 345 x {n:,} ({m['samples']:,} samples, {gb(m['data_bytes'])} of bitmaps): "
                  f"memory-mapped {m['sps']:,.0f} samples/s, in memory {r['sps']:,.0f}/s: "
                  f"ratio {m['sps'] / r['sps']:.3f} "
                  f"(per CPU-second {m['cpu_sps']:,.0f} and {r['cpu_sps']:,.0f}: {m['cpu_sps'] / r['cpu_sps']:.3f}; "
                  f"load {m['load']:.1f} and {r['load']:.1f}); memory-mapped peak anon {gb(m['peak_anon'])}, "
                  f"peak RSS {gb(m['peak_rss'])} (in memory: {gb(r['peak_anon'])} anon)", flush=True)
        big, small = args.n, sizes[0]
        rate = raster[big]["rate"]
        per_row = (train[big]["mapped"]["peak_anon"] - train[small]["mapped"]["peak_anon"]) / (345 * (big - small)) \
            if big != small else float("nan")
        epoch_share = train[big]["mapped"]["samples"] / (345 * big)
        print("\nextrapolated to all ~50 million drawings on this machine:")
        print(f"  rasterising: {minutes(ALL_DRAWINGS / rate)} at {rate:,.0f} drawings/s")
        print(f"  one epoch (training share {epoch_share:.0%}): "
              f"{minutes(ALL_DRAWINGS * epoch_share / train[big]['mapped']['sps'])}")
        print(f"  disk: {ALL_NDJSON_GB:.0f} GB of simplified ndjson + {gb(ALL_DRAWINGS * 784)} of 28x28 cache")
        if not math.isnan(per_row):
            print(f"  training peak anon: {gb(train[small]['mapped']['peak_anon'])} at 345 x {small:,}, "
                  f"{gb(train[big]['mapped']['peak_anon'])} at 345 x {big:,}: {per_row:.1f} bytes per drawing "
                  f"-> {gb(train[small]['mapped']['peak_anon'] + per_row * (ALL_DRAWINGS - 345 * small))} at 50 M")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        print(json.dumps({"n": args.n, "cores": cores, "corpus_bytes": corpus_bytes, "raster_1core": one,
                          "raster_all_cores": many, "raster": raster, "train": train}, default=str))
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
