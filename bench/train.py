"""Training speed against this machine's matrix-multiply limit.

Times epochs of a 784-256-128-10 MLP at batch 256 on synthetic 28x28 uint8 images, exactly as the
trainer runs them (shuffled indices, `to_float` per batch, `train_step` with Adam), and in the same
process times the float32 matmuls alone, for the same batch shapes, on preallocated arrays: exactly the
matmuls a training step does, i.e. forward x @ W and dW = x.T @ dout for every layer, and dX = dout @ W.T
for every layer but the first (pixels need no gradient, and the trainer does not compute it). That is the
limit a numpy loop cannot beat; everything else (bias, ReLU, softmax, Adam, uint8 -> float) is overhead on
top, and the fraction of the limit reached is the headline figure.

Epochs and matmul loops alternate, so a neighbour hogging the CPU hurts both alike; the best of each
is reported, and the median of the per-round ratios as a check. BLAS threads: numpy's defaults.

    python bench/train.py [--samples 20000] [--batch 256] [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common  # noqa: F401  (puts the repo on sys.path)
import numpy as np

from doodle.nn import MLP
from doodle.pixels import to_float
from doodle.train import train_step
from doodle.optim import make_optimizer

SIZES = [784, 256, 128, 10]


def batch_sizes(n: int, batch: int) -> list[int]:
    """The minibatch sizes of one epoch, the last one partial."""
    return [min(batch, n - i) for i in range(0, n, batch)]


def train_epoch(model, opt, X, Y, batch, rng) -> float:
    """Seconds for one epoch, as the trainer does it."""
    t0 = time.perf_counter()
    order = rng.permutation(len(X))  # shuffle indices, not arrays
    for i in range(0, len(X), batch):
        idx = np.sort(order[i:i + batch])  # sorted gathers read the uint8 array in order, as doodle.train does
        train_step(model, opt, "cross_entropy", to_float(X[idx]), Y[idx])
    return time.perf_counter() - t0


def make_matmul_loop(sizes: list[int], bsizes: list[int]):
    """A function timing only the float32 matmuls of one epoch's steps, on preallocated arrays.

    Per batch: x @ W for every layer, then dW = x.T @ dout and, except for the first layer, dX = dout @ W.T.
    Inputs stay bounded: each pass recomputes from fixed arrays.
    """
    rng = np.random.default_rng(1)
    f32 = np.float32
    Ws = [rng.standard_normal((a, b), dtype=f32) for a, b in zip(sizes[:-1], sizes[1:])]
    dWs = [np.empty_like(W) for W in Ws]
    per_batch = {}
    for B in set(bsizes):
        acts = [rng.standard_normal((B, n), dtype=f32) for n in sizes]  # layer inputs and logits
        douts = [rng.standard_normal((B, n), dtype=f32) for n in sizes]
        per_batch[B] = (acts, douts)

    def run() -> float:
        t0 = time.perf_counter()
        for B in bsizes:
            acts, douts = per_batch[B]
            for k, W in enumerate(Ws):  # forward
                np.matmul(acts[k], W, out=acts[k + 1])
            for k in reversed(range(len(Ws))):  # backward
                np.matmul(acts[k].T, douts[k + 1], out=dWs[k])
                if k > 0:  # the first layer's dX is never needed
                    np.matmul(douts[k + 1], Ws[k].T, out=douts[k])
        return time.perf_counter() - t0

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(args.samples, 28, 28), dtype=np.uint8)
    Y = rng.integers(0, SIZES[-1], size=args.samples)
    model = MLP(SIZES, seed=0)
    opt = make_optimizer("adam", model.parameters(), flat=(model.flat_params, model.flat_grads), lr=1e-3)
    bsizes = batch_sizes(args.samples, args.batch)
    matmul_loop = make_matmul_loop(SIZES, bsizes)

    train_epoch(model, opt, X, Y, args.batch, rng)  # warm-up: page faults, BLAS threads
    matmul_loop()
    epochs, limits = [], []
    for r in range(args.rounds):
        epochs.append(train_epoch(model, opt, X, Y, args.batch, rng))
        limits.append(matmul_loop())
        print(f"round {r + 1}: train {args.samples / epochs[-1]:9,.0f} samples/s   matmul-bound limit "
              f"{args.samples / limits[-1]:9,.0f} samples/s   fraction {limits[-1] / epochs[-1]:6.1%}")

    train_sps = args.samples / min(epochs)
    limit_sps = args.samples / min(limits)
    macs = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))  # per sample, per pass
    flops = 2 * (3 * macs - SIZES[0] * SIZES[1])  # forward, dW, and dX of every layer but the first
    med = statistics.median(m / e for e, m in zip(epochs, limits))
    print(f"\n{SIZES} MLP, batch {args.batch}, {args.samples:,} uint8 samples, Adam, best of {args.rounds} rounds:")
    print(f"  training            {train_sps:10,.0f} samples/s  ({min(epochs):.3f} s/epoch)")
    print(f"  matmul-bound limit  {limit_sps:10,.0f} samples/s  "
          f"(the matmuls a step does: forward, dW, dX but the first layer's; {flops * limit_sps / 1e9:.0f} GFLOP/s)")
    print(f"  fraction of limit   {train_sps / limit_sps:10.1%}  (median of rounds {med:.1%})")


if __name__ == "__main__":
    main()
