"""The honest check of the built-in shapes: train only on synthetic drawings, test on real Quick, Draw! ones.

Prints generation speed, then per-class and overall top-1 accuracy of a 784-256-128-8 MLP (28x28 rasters)
on the real simplified drawings of the 8 shape categories in the shared sample, and on the raw drawings of
the same categories that are not in the simplified files (simplified here with Google's recipe).

    python bench/synthetic.py [--n 2000] [--epochs 8] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _common import quickdraw_root
from doodle import rasterize_batch
from doodle.nn import MLP
from doodle.optim import make_optimizer
from doodle.pixels import to_float
from doodle.synthetic import SHAPES, _simplify, generate
from doodle.train import train_step


def simplify_raw(strokes) -> list:
    """Google's raw -> simplified recipe: doodle.strokes' version when it exists, else the generator's own."""
    try:
        from doodle.simplify import simplify_raw as google
    except ImportError:
        return _simplify([[np.array(s[:2], dtype=float).T for s in strokes]])[0]
    return google(strokes)


def real_sets(root) -> dict[str, tuple[list, np.ndarray]]:
    """{'simplified': (drawings, labels), 'raw-only': ...}: the 8 shapes' real drawings from the shared sample."""
    sets = {"simplified": ([], []), "raw-only": ([], [])}
    for c, w in enumerate(SHAPES):
        simp = [json.loads(line) for line in open(root / "full" / "simplified" / f"{w}.ndjson")]
        sets["simplified"][0].extend(r["drawing"] for r in simp)
        sets["simplified"][1].extend([c] * len(simp))
        keys = {r["key_id"] for r in simp}
        for line in open(root / "full" / "raw" / f"{w}.ndjson"):
            r = json.loads(line)
            if r["key_id"] in keys or not r["recognized"]:
                continue
            sets["raw-only"][0].append(simplify_raw(r["drawing"]))
            sets["raw-only"][1].append(c)
    return {k: (d, np.array(y)) for k, (d, y) in sets.items()}


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> MLP:
    """Adam at 1e-3, batch 128, no schedule, no augmentation: a plain recipe, so the data makes the difference."""
    model = MLP([784, 256, 128, len(SHAPES)], activation="relu", seed=seed)
    opt = make_optimizer("adam", model.parameters(), flat=(model.flat_params, model.flat_grads), lr=1e-3)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))  # shuffle indices, not arrays
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            train_step(model, opt, "cross_entropy", to_float(x[idx]), y[idx])
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="synthetic drawings per shape")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", default="0,1,2", help="training runs to average (the real test sets are small)")
    ap.add_argument("--data-seed", type=int, default=0)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    t = time.perf_counter()
    for w in SHAPES:
        generate(w, 1000, seed=args.data_seed)
    print(f"generate 8 x 1000: {time.perf_counter() - t:.2f} s")

    t = time.perf_counter()
    drawings, labels = [], []
    for c, w in enumerate(SHAPES):
        drawings.extend(r["drawing"] for r in generate(w, args.n, seed=args.data_seed))
        labels.extend([c] * args.n)
    x = rasterize_batch(drawings, size=28)  # (N, 28, 28) uint8
    y = np.array(labels)
    print(f"train set: {len(x)} synthetic drawings, made and rasterised in {time.perf_counter() - t:.1f} s")

    tests = {name: (rasterize_batch(d, size=28), yy) for name, (d, yy) in real_sets(quickdraw_root()).items()}
    # per set: (runs, C) per-class accuracy and (runs,) overall; confusion summed over runs
    per_class = {k: [] for k in tests}
    overall = {k: [] for k in tests}
    confusion = {k: np.zeros((len(SHAPES), len(SHAPES)), dtype=np.int64) for k in tests}
    synth_acc = []
    for seed in seeds:
        t = time.perf_counter()
        model = train(x, y, args.epochs, seed)
        # accuracy on fresh synthetic drawings (another data seed): how well the model learnt the generator
        fresh = [r["drawing"] for w in SHAPES for r in generate(w, 200, seed=args.data_seed + 1000)]
        yf = np.repeat(np.arange(len(SHAPES)), 200)
        synth_acc.append(np.mean(model.predict_proba(to_float(rasterize_batch(fresh))).argmax(1) == yf))
        for k, (xt, yt) in tests.items():
            pred = model.predict_proba(to_float(xt)).argmax(axis=1)
            overall[k].append(np.mean(pred == yt))
            per_class[k].append([np.mean(pred[yt == c] == c) for c in range(len(SHAPES))])
            np.add.at(confusion[k], (yt, pred), 1)
        print(f"seed {seed}: trained {args.epochs} epochs in {time.perf_counter() - t:.1f} s; "
              + ", ".join(f"{k} {overall[k][-1]:.1%}" for k in tests))

    print(f"\nheld-out synthetic accuracy: {np.mean(synth_acc):.1%}")
    for k, (_xt, yt) in tests.items():
        pc = np.mean(per_class[k], axis=0)
        print(f"\nreal {k}: {len(yt)} drawings, top-1 {np.mean(overall[k]):.1%} "
              f"(runs: {', '.join(f'{a:.1%}' for a in overall[k])})")
        print(f"  {'class':9s} {'n':>3s} {'acc':>6s}   confused with")
        for c, w in enumerate(SHAPES):
            row = confusion[k][c].copy()
            row[c] = 0
            worst = ", ".join(f"{SHAPES[j]} {row[j] / len(seeds):.1f}" for j in np.argsort(-row)[:2] if row[j])
            print(f"  {w:9s} {np.sum(yt == c):3d} {pc[c]:6.1%}   {worst}")


if __name__ == "__main__":
    main()
