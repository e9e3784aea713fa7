"""Evaluation throughput: MLP forward pass + metrics.summarize on already-rasterised drawings.

The product target is >= 20,000 drawings/s end to end. Run: python bench/evaluate.py [--n 100000]
Uses doodle.nn.MLP / to_float when present, else a plain numpy 784-256-128-C forward (float32).
Best of --repeats runs, because other work shares this machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import _common  # noqa: F401  (puts the repo on sys.path)
from doodle import metrics

BATCH = 4096  # rows per forward batch: keeps the (B, 256) activations in cache


def numpy_forward(weights, x_uint8: np.ndarray) -> np.ndarray:
    """Plain 784-256-128-C ReLU MLP in float32, softmax included: the fallback model."""
    (w1, b1), (w2, b2), (w3, b3) = weights
    out = np.empty((len(x_uint8), w3.shape[1]), dtype=np.float32)
    for i in range(0, len(x_uint8), BATCH):
        x = x_uint8[i : i + BATCH].astype(np.float32) * np.float32(1 / 255)  # (B, 784)
        h = np.maximum(x @ w1 + b1, 0)  # (B, 256)
        h = np.maximum(h @ w2 + b2, 0)  # (B, 128)
        z = h @ w3 + b3  # (B, C)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        out[i : i + BATCH] = z / z.sum(axis=1, keepdims=True)
    return out


def make_model(n_classes: int, rng: np.random.Generator):
    """(name, fn(x_uint8) -> probs): doodle.nn when it exists, else the numpy fallback."""
    try:
        from doodle.nn import MLP, softmax
        from doodle.pixels import to_float
    except ImportError:
        sizes = [784, 256, 128, n_classes]
        weights = [
            (rng.standard_normal((a, b), dtype=np.float32) * np.float32(np.sqrt(2 / a)), np.zeros(b, np.float32))
            for a, b in zip(sizes[:-1], sizes[1:])
        ]
        return "numpy fallback", lambda x: numpy_forward(weights, x)
    model = MLP([784, 256, 128, n_classes], seed=0)

    def forward(x):
        out = np.empty((len(x), n_classes), dtype=np.float32)
        for i in range(0, len(x), BATCH):
            out[i : i + BATCH] = softmax(model.forward(to_float(x[i : i + BATCH]), train=False))
        return out

    return "doodle.nn.MLP", forward


def best_of(repeats: int, fn):
    """(best seconds, last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="drawings")
    parser.add_argument("--classes", default="10,345", help="comma-separated class counts to try")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.n, 784), dtype=np.uint8)  # (N, 784) like Google's numpy_bitmap rows
    print(f"{args.n:,} random uint8 rows, best of {args.repeats}")
    print(f"{'classes':>7} {'model':>15} {'forward s':>10} {'summarize s':>12} {'total s':>8} {'drawings/s':>11} "
          f"{'summarize/s':>12}")
    for c in (int(v) for v in args.classes.split(",")):
        y = rng.integers(0, c, size=args.n)
        names = [f"class{i}" for i in range(c)]
        name, forward = make_model(c, rng)
        t_fwd, probs = best_of(args.repeats, lambda: forward(x))
        t_sum, summary = best_of(args.repeats, lambda: metrics.summarize(probs, y, names))
        total = t_fwd + t_sum
        print(
            f"{c:>7} {name:>15} {t_fwd:>10.3f} {t_sum:>12.3f} {total:>8.3f} {args.n / total:>11,.0f} "
            f"{args.n / t_sum:>12,.0f}"
        )
    # Components of summarize on the last class count, to see where its time goes.
    for label, fn in (
        ("true_class_rank", lambda: metrics.true_class_rank(probs, y)),
        ("topk_predictions k=3", lambda: metrics.topk_predictions(probs, 3)),
        ("argmax", lambda: probs.argmax(axis=1)),
    ):
        t, _ = best_of(args.repeats, fn)
        print(f"  {label:<22} {t:.3f} s ({args.n / t:,.0f}/s)")


if __name__ == "__main__":
    main()
