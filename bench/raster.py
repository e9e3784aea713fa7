"""Rasterizer speed (one process, all cores) and fidelity against Google's own 28x28 renders.

    python bench/raster.py [--repeat 3] [--copies 8]

Speed uses every drawing of the shared full/simplified files (best of --repeat runs); the all-cores run
renders --copies copies of them so the worker pool's start-up is paid once over a large job, as in
`doodle` dataset builds. Timings on a shared machine are noisy: CPU seconds are printed beside wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
from _common import quickdraw_root

from doodle.raster import rasterize_batch


def load_simplified(root):
    """Every drawing of every shared simplified file: list of stroke lists."""
    drawings = []
    for path in sorted((root / "full" / "simplified").glob("*.ndjson")):
        with open(path) as f:
            drawings += [json.loads(line)["drawing"] for line in f if line.strip()]
    return drawings


def timed(fn, repeat: int):
    """(best wall seconds, CPU seconds of that run) over `repeat` runs."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def fidelity(root):
    pairs = json.loads((root / "pairs.json").read_text())["pairs"]
    print(f"\nmean |ours - Google| over the shared pairs (0..255 units), per word:")
    errors = []
    for word, k in pairs.items():
        with open(root / "full" / "simplified" / f"{word}.ndjson") as f:
            drawings = [json.loads(next(f))["drawing"] for _ in range(k)]
        google = np.load(root / "full" / "numpy_bitmap" / f"{word}.npy")[:k].reshape(-1, 28, 28)
        err = np.abs(rasterize_batch(drawings).astype(np.float64) - google).mean(axis=(1, 2))  # (k,)
        errors.append(err)
        print(f"  {word:<14} {k:4d} pairs  mean {err.mean():.3f}  worst {err.max():.3f}")
    err = np.concatenate(errors)
    print(f"  {'all':<14} {len(err):4d} pairs  mean {err.mean():.3f}  worst {err.max():.3f}"
          f"   (target <= 1.0; naive Pillow ~19, Pillow 8x supersampled ~2.8)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timing runs; the best one counts")
    parser.add_argument("--copies", type=int, default=8, help="copies of the sample for the all-cores run")
    args = parser.parse_args()
    root = quickdraw_root()
    drawings = load_simplified(root)
    points = sum(len(s[0]) for d in drawings for s in d)
    print(f"{len(drawings)} drawings, {points / len(drawings):.1f} points each, from {root}/full/simplified")
    rasterize_batch(drawings[:200])  # warm up caches and imports

    for size in (28, 64):
        wall, cpu = timed(lambda: rasterize_batch(drawings, size=size), args.repeat)
        print(f"  1 process, {size}x{size}: {len(drawings) / wall:8.0f} drawings/s"
              f"   ({len(drawings) / cpu:.0f}/s per CPU second)")
    big = drawings * args.copies
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = timed(lambda: rasterize_batch(big, workers=0), 1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime  # the forked workers
    print(f"  {cores} processes, 28x28: {len(big) / wall:8.0f} drawings/s over {len(big)} drawings"
          f"   ({len(big) / cpu:.0f}/s per CPU second;"
          f" 345 x 10,000 drawings: about {345e4 / (len(big) / wall) / 60:.0f} min)")
    busy = os.getloadavg()[0]
    if busy > cores:
        print(f"  (load average {busy:.1f} on {cores} cores: other work shares the CPUs, wall times suffer)")
    fidelity(root)


if __name__ == "__main__":
    main()
