"""What augmentation costs a training epoch, and doodle train's own end-to-end speed for the shipped configs.

For each config (the network, batch size, dropout and augmentation it ships with), one epoch of
`doodle.train.fit` over the same rows, with augmentation as configured and with it off, interleaved
over a few repetitions; the median epoch seconds give the ratio augmented / unaugmented (the target
is at most 1.15). Beside it, the bare training step (no augmentation, no dropout) on the same network
and batch size, so the difference between `doodle train` and the step is visible.

Data: 16 x 2,000 random bitmaps shaped like Google's 28x28 renders (speed does not depend on what
they show, and this needs no data). Usage: python bench/augment.py [--rows 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import _common  # noqa: F401  (puts the repo on sys.path)
from doodle.augment import augment_batch
from doodle.config import load_config
from doodle.dataset import Dataset
from doodle.nn import MLP
from doodle.optim import optimizer_from_settings
from doodle.pixels import to_float
from doodle.train import fit, train_step

CONFIGS = ["configs/default.yaml", "configs/quickdraw16.yaml"]
CLASSES = ["airplane", "alarm clock", "apple", "banana", "bicycle", "bird", "book", "cat", "diamond", "dog", "eye",
           "fish", "flower", "house", "rainbow", "train"]


def dataset(rows: int, n_classes: int) -> Dataset:
    """Sparse random strokes-like bitmaps (mostly zeros, some ink), `rows` per class."""
    rng = np.random.default_rng(0)
    x = (rng.random((rows * n_classes, 28, 28)) < 0.12) * rng.integers(128, 256, (rows * n_classes, 28, 28))
    y = np.repeat(np.arange(n_classes, dtype=np.int32), rows)
    return Dataset(x.astype(np.uint8), y, CLASSES[:n_classes], [rows] * n_classes)


def epoch_seconds(cfg_path: str, ds: Dataset, augmented: bool) -> tuple[float, float]:
    """(seconds of training in one epoch, samples/s) as doodle train reports them."""
    overrides = [f"data.categories=[{', '.join(ds.classes)}]", "data.source=simplified", "train.epochs=1",
                 "data.test_fraction=0", "data.val_fraction=0.05"]
    if not augmented:
        overrides.append("augment.probability=0")
    cfg = load_config(Path(_common.REPO) / cfg_path, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(cfg, ds, Path(tmp) / "run")
    return res.history[0]["seconds"], res.samples_per_second


def bare_step(cfg_path: str, ds: Dataset, steps: int = 40) -> float:
    """Samples/s of the bare step: to_float + train_step, no augmentation, no dropout."""
    cfg = load_config(Path(_common.REPO) / cfg_path)
    t, m = cfg["train"], cfg["model"]
    model = MLP([784, *m["hidden"], len(ds.classes)], activation=m["activation"], seed=0)
    opt = optimizer_from_settings(t, model.parameters(), flat=(model.flat_params, model.flat_grads))
    bs = t["batch_size"]
    rng = np.random.default_rng(0)
    times = []
    for _ in range(steps):
        idx = np.sort(rng.choice(len(ds.y), bs, replace=False))
        tick = time.perf_counter()
        train_step(model, opt, t["loss"], to_float(ds.x[idx]), ds.y[idx])
        times.append(time.perf_counter() - tick)
    return bs / statistics.median(times)


def augment_ms(cfg_path: str, ds: Dataset, repeats: int = 50) -> float:
    """Median milliseconds to augment one batch with the config's settings."""
    cfg = load_config(Path(_common.REPO) / cfg_path)
    a, bs = cfg["augment"], cfg["train"]["batch_size"]
    rng = np.random.default_rng(0)
    xb = ds.x[:bs]
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        augment_batch(xb, rng, a["shift"], a["rotate"], a["scale"], a["probability"])
        times.append(time.perf_counter() - tick)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000, help="bitmaps per class")
    ap.add_argument("--repeats", type=int, default=3, help="epochs of each kind, interleaved")
    args = ap.parse_args()
    for cfg_path in CONFIGS:
        n_classes = len(load_config(Path(_common.REPO) / cfg_path)["data"]["categories"])
        ds = dataset(args.rows, n_classes)
        on, off = [], []
        for _ in range(args.repeats):
            off.append(epoch_seconds(cfg_path, ds, augmented=False))
            on.append(epoch_seconds(cfg_path, ds, augmented=True))
        t_on, t_off = statistics.median(s for s, _ in on), statistics.median(s for s, _ in off)
        print(f"{cfg_path}: {len(ds.y):,} rows, {n_classes} classes")
        print(f"  augment one batch            {augment_ms(cfg_path, ds):7.2f} ms")
        print(f"  epoch, augmentation off      {t_off:7.2f} s  ({statistics.median(r for _, r in off):,.0f} samples/s)")
        print(f"  epoch, augmentation on       {t_on:7.2f} s  ({statistics.median(r for _, r in on):,.0f} samples/s,"
              f" doodle train's end-to-end speed)")
        print(f"  augmented / unaugmented      {t_on / t_off:7.3f}x  (target <= 1.15)")
        print(f"  bare step (no aug, no drop)  {bare_step(cfg_path, ds):,.0f} samples/s")


if __name__ == "__main__":
    main()
