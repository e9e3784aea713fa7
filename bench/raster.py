"""Rasterizer speed (one process, all cores) and fidelity against Google's own 28x28 renders, for doodle's
renderer (doodle.raster) and the reference it replaced (doodle.rasterref), in one run.

    python bench/raster.py [--repeat 5] [--copies 8]

Speed uses every drawing of the shared full/simplified files (best of --repeat runs, the two renderers
taking turns so a busy machine slows both alike); the all-cores run renders --copies copies of them so the
worker pool's start-up is paid once over a large job, as in `doodle` dataset builds. Both renderers go
through rasterize_batch (flattening and checking included); the reference runs in the same pool by
standing in for doodle.raster.render_flat. Timings on a shared machine are noisy: the load average is
printed, and CPU seconds beside wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import time

import numpy as np

from _common import quickdraw_root
from doodle import raster, rasterpool, rasterref
from doodle.rasterpool import rasterize_batch

RENDERERS = {"new": raster.render_flat, "reference": rasterref.render_flat}
TARGET = 345e4  # drawings: the scale benchmark's 345 categories x 10,000


@contextlib.contextmanager
def renderer(name: str):
    """rasterize_batch draws with this renderer (forked workers inherit it)."""
    saved = rasterpool.render_flat
    rasterpool.render_flat = RENDERERS[name]
    try:
        yield
    finally:
        rasterpool.render_flat = saved


def load_simplified(root):
    """Every drawing of every shared simplified file: list of stroke lists."""
    drawings = []
    for path in sorted((root / "full" / "simplified").glob("*.ndjson")):
        with open(path) as f:
            drawings += [json.loads(line)["drawing"] for line in f if line.strip()]
    return drawings


def timed(fn):
    """(wall seconds, CPU seconds of this process and its finished children) of one call."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu + after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return time.perf_counter() - wall, cpu


def best_of(jobs: dict, repeat: int) -> dict:
    """{name: (best wall, its CPU)} over `repeat` rounds in which every job runs once, in turn."""
    best = {name: (float("inf"), 0.0) for name in jobs}
    for _ in range(repeat):
        for name, job in jobs.items():
            best[name] = min(best[name], timed(job))
    return best


def fidelity(root):
    """Mean |ours - Google| per pair (0..255 units), for each renderer, word by word."""
    pairs = json.loads((root / "pairs.json").read_text())["pairs"]
    print("\nmean |ours - Google| over the shared pairs (0..255 units), per word: new renderer | reference")
    errors = {name: [] for name in RENDERERS}
    for word, k in pairs.items():
        with open(root / "full" / "simplified" / f"{word}.ndjson") as f:
            drawings = [json.loads(next(f))["drawing"] for _ in range(k)]
        google = np.load(root / "full" / "numpy_bitmap" / f"{word}.npy")[:k].reshape(-1, 28, 28)
        row = []
        for name in RENDERERS:
            with renderer(name):
                err = np.abs(rasterize_batch(drawings).astype(np.float64) - google).mean(axis=(1, 2))  # (k,)
            errors[name].append(err)
            row.append(f"mean {err.mean():.3f}  worst {err.max():.3f}")
        print(f"  {word:<14} {k:4d} pairs  " + "  |  ".join(row))
    row = []
    for name in RENDERERS:
        err = np.concatenate(errors[name])
        row.append(f"mean {err.mean():.4f}  worst {err.max():.4f}")
    print(f"  {'all':<14} {len(err):4d} pairs  " + "  |  ".join(row))
    print("  (target: mean <= 0.1, no pair worse than the reference's worst)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timing rounds; the best one counts")
    parser.add_argument("--copies", type=int, default=8, help="copies of the sample for the all-cores run")
    args = parser.parse_args()
    root = quickdraw_root()
    drawings = load_simplified(root)
    points = sum(len(s[0]) for d in drawings for s in d)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{len(drawings)} drawings, {points / len(drawings):.1f} points each, from {root}/full/simplified;"
          f" load average {os.getloadavg()[0]:.1f} on {cores} cores")
    for name in RENDERERS:
        with renderer(name):
            rasterize_batch(drawings[:200])  # warm up caches and imports

    for size in (28, 64):
        def job(name, size=size):
            def run():
                with renderer(name):
                    rasterize_batch(drawings, size=size)
            return run
        best = best_of({name: job(name) for name in RENDERERS}, args.repeat)
        rates = {name: len(drawings) / wall for name, (wall, _) in best.items()}
        for name, (_wall, cpu) in best.items():
            print(f"  1 process, {size}x{size}, {name:9}: {rates[name]:8.0f} drawings/s"
                  f"   ({len(drawings) / cpu:.0f}/s per CPU second)")
        print(f"    new / reference: {rates['new'] / rates['reference']:.2f}x")

    big = drawings * args.copies

    def pooled(name):
        def run():
            with renderer(name):
                rasterize_batch(big, workers=0)
        return run
    best = best_of({name: pooled(name) for name in RENDERERS}, max(1, args.repeat // 2))
    rates = {name: len(big) / wall for name, (wall, _) in best.items()}
    for name, (_wall, cpu) in best.items():
        print(f"  {cores} processes, 28x28, {name:9}: {rates[name]:8.0f} drawings/s over {len(big)} drawings"
              f"   ({len(big) / cpu:.0f}/s per CPU second; 345 x 10,000 drawings: about"
              f" {TARGET / rates[name] / 60:.1f} min)")
    print(f"    new / reference: {rates['new'] / rates['reference']:.2f}x")
    busy = os.getloadavg()[0]
    if busy > cores:
        print(f"  (load average {busy:.1f} on {cores} cores: other work shares the CPUs, wall times suffer)")
    fidelity(root)


if __name__ == "__main__":
    main()
