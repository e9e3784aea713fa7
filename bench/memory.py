"""Peak memory of training at full scale: 345 categories x 5,000 drawings (1.35 GB of uint8 bitmaps).

The training set stays uint8; batches become float32 one at a time. This prints the bitmaps' size and the
process's peak resident memory after one training epoch on them (random pixels: the data's content does not
change the memory). Usage: python bench/memory.py [--per-category 5000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO  # noqa: F401  (puts the repo on sys.path)
from doodle.categories import CATEGORIES
from doodle.config import load_config
from doodle.dataset import Dataset
from doodle.train import fit


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-category", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    n = args.per_category
    base = peak_rss_mb()
    rng = np.random.default_rng(0)
    x = np.empty((345 * n, 28, 28), np.uint8)
    for c in range(345):  # fill class by class so no float temporaries inflate the peak
        x[c * n:(c + 1) * n] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(345, dtype=np.int32), n)
    ds = Dataset(x, y, list(CATEGORIES), [n] * 345)
    cfg = load_config(REPO / "configs" / "default.yaml", ["data.categories=all", f"train.epochs={args.epochs}",
                                                          "augment.probability=0.8"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(cfg, ds, Path(tmp) / "run")
    print(f"bitmaps: {x.nbytes / 1e9:.2f} GB uint8 ({len(x):,} drawings of 345 categories)")
    print(f"peak resident memory: {peak_rss_mb() / 1024:.2f} GB (python + numpy at start: {base / 1024:.2f} GB)")
    print(f"float32 copy of the whole set would be {x.size * 4 / 1e9:.2f} GB: never made")
    print(f"{res.epochs} epoch(s) in {time.perf_counter() - t0:.0f} s, {res.samples_per_second:,.0f} samples/s")


if __name__ == "__main__":
    main()
