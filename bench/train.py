"""Training speed against this machine's matrix-multiply limit, and the quickdraw16 network's epoch.

The fraction: epochs of a 784-256-128-10 MLP at batch 256 (Adam, no dropout or augmentation) on synthetic
28x28 uint8 images, trained by `doodle.train.fit` itself (its shuffled batches, prepared in its batch
thread, its step, its share of the cores), against the float32 matmuls alone for the same batch shapes
on preallocated arrays: exactly the matmuls a training step does, i.e. forward x @ W and dW = x.T @ dout
for every layer, and dX = dout @ W.T for every layer but the first (pixels need no gradient, and the
trainer does not compute it). Those matmuls are timed two ways, with BLAS's own threads (numpy's
default) and split in row blocks over doodle's team (doodle.team, BLAS on one thread, as training runs
them), and the faster is the limit: what a numpy loop cannot beat. Everything else (bias, ReLU, softmax,
Adam, uint8 -> float, the batch thread, Python) is overhead on top, and the fraction of the limit
reached is the headline figure. Beside it, an epoch of the network configs/quickdraw16.yaml trains
(784-1024-512-16, batch norm, dropout 0.1, augmentation with flips) on as many rows as that config's
training split of the shared sample (28,350), through `fit` as well.

Epochs and matmul loops alternate, so a neighbour hogging the CPU hurts both alike; the best of each is
reported, and the median of the per-round ratios as a check. `--profile` instead charges one training
step's time to its parts (each layer's forward and backward, the loss, the optimizer, waiting for the
batch thread, and the batch thread's own work), for both networks.

    python bench/train.py [--samples 20000] [--batch 256] [--rounds 10] [--qd-rows 28350] [--profile]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

import _common  # noqa: F401  (puts the repo on sys.path)
from doodle import cores, nn, team
from doodle import train as trainer
from doodle.config import load_config
from doodle.dataset import Dataset
from doodle.nn import MLP, ModelSpec
from doodle.optim import optimizer_from_settings

SIZES = [784, 256, 128, 10]
QD16 = _common.REPO / "configs" / "quickdraw16.yaml"
QD16_ROWS = 28_350  # the shared sample's 42,000 rows, less the last 25% (test) and 10% of the rest (validation)


def dataset(rows: int, n_classes: int, seed: int = 0) -> Dataset:
    """Random uint8 28x28 images and labels, in class order as doodle stores them (speed ignores content)."""
    rng = np.random.default_rng(seed)
    counts = [rows // n_classes + (c < rows % n_classes) for c in range(n_classes)]
    x = rng.integers(0, 256, size=(rows, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(n_classes, dtype=np.int32), counts)
    return Dataset(x, y, [f"class{c}" for c in range(n_classes)], counts)


def small_config(batch: int) -> dict:
    """The 784-256-128-10 network at `batch`: Adam, no dropout, no augmentation, every row trained on."""
    return load_config(None, ["model.hidden=[256, 128]", "model.dropout=0", "model.norm=none", "model.tta=none",
                              f"train.batch_size={batch}", "train.optimizer=adam", "train.epochs=1",
                              "train.schedule=constant", "train.warmup_epochs=0", "data.val_fraction=0",
                              "data.test_fraction=0", "augment.probability=0", "augment.flip=0"])


def quickdraw16_config() -> dict:
    """configs/quickdraw16.yaml for one epoch, every row trained on."""
    return load_config(QD16, ["train.epochs=1", "data.val_fraction=0", "data.test_fraction=0"])


def fit_epoch(cfg: dict, ds: Dataset) -> float:
    """Seconds of training in one epoch of doodle.train.fit (what it reports: the steps and the waits for batches)."""
    with tempfile.TemporaryDirectory() as tmp:
        res = trainer.fit(cfg, ds, Path(tmp) / "run")
    return res.history[0]["seconds"]


def matmul_loop(sizes: list[int], bsizes: list[int], blocks: bool):
    """A function timing only the float32 matmuls of one epoch's steps, on preallocated arrays: with BLAS's own
    threads, or (blocks) cut in doodle's row blocks for its team, BLAS on one thread, as training does them.

    Per batch: x @ W for every layer, then dW = x.T @ dout and, except for the first layer, dX = dout @ W.T.
    Inputs stay bounded: each pass recomputes from fixed arrays."""
    rng = np.random.default_rng(1)
    f32 = np.float32
    Ws = [rng.standard_normal((a, b), dtype=f32) for a, b in zip(sizes[:-1], sizes[1:])]
    dWs = [np.empty_like(W) for W in Ws]
    arrays = {B: ([rng.standard_normal((B, n), dtype=f32) for n in sizes],  # layer inputs and logits
                  [rng.standard_normal((B, n), dtype=f32) for n in sizes]) for B in set(bsizes)}

    def product(a, b, out, rows: int) -> list:
        if not blocks:
            return [lambda: np.matmul(a, b, out=out)]
        return [lambda r=r: np.matmul(a[r], b, out=out[r]) for r in team.blocks(rows)]

    def run() -> float:
        t0 = time.perf_counter()
        for B in bsizes:
            acts, douts = arrays[B]
            for k, W in enumerate(Ws):  # forward
                team.run(product(acts[k], W, acts[k + 1], B))
            for k in reversed(range(len(Ws))):  # backward
                tasks = [lambda r=r, k=k: np.matmul(acts[k][:, r].T, douts[k + 1], out=dWs[k][r])
                         for r in (team.blocks(len(Ws[k])) if blocks else [slice(None)])]
                if k > 0:  # the first layer's dX is never needed
                    tasks += product(douts[k + 1], Ws[k].T, douts[k], B)
                team.run(tasks) if blocks else [t() for t in tasks]
        return time.perf_counter() - t0

    def timed() -> float:
        if not blocks:
            return run()
        with cores.claim():
            return run()
    return timed


# --- --profile: where one step's time goes ----------------------------------------------------------------


class Profile:
    """Wall time charged to the parts of training steps, by wrapping them in place."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.undo = []

    def wrap(self, owner, name: str, key: str) -> None:
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - t0
        setattr(owner, name, timed)
        self.undo.append((owner, name, fn))

    def restore(self) -> None:
        for owner, name, fn in reversed(self.undo):
            if isinstance(owner, dict):
                owner[name] = fn
            else:
                setattr(owner, name, fn)


def _timed(prof: Profile, key: str, fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        prof.seconds[key] += time.perf_counter() - t0


def profile(label: str, cfg: dict, ds: Dataset, steps: int) -> None:
    """Charge `steps` steps of the trainer's own loop (batches, step) to their parts, and print per-step ms."""
    t = cfg["train"]
    spec = ModelSpec.from_config(cfg, len(ds.classes))
    model = MLP.from_spec(spec, seed=t["seed"])
    opt = optimizer_from_settings(t, model.parameters(), flat=(model.flat_params, model.flat_grads))
    prof = Profile()
    for layer in model.layers:
        kind = type(layer).__name__
        prof.wrap(layer, "forward", f"{kind} forward")
        prof.wrap(layer, "backward", f"{kind} backward")
    prof.wrap(trainer, "augment_batch", "batch thread: uint8 -> float32, augmentation")
    prof.wrap(opt, "step", f"optimizer ({t['optimizer']})")
    loss_fn = nn.LOSSES[t["loss"]]
    prof.undo.append((nn.LOSSES, t["loss"], loss_fn))
    nn.LOSSES[t["loss"]] = lambda *a: _timed(prof, f"loss ({t['loss']})", loss_fn, *a)
    step = trainer.make_step(model, opt, t["loss"])  # after the wrapping: it binds what it calls
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds.y))
    bs = t["batch_size"]
    with cores.claim():
        for _ in range(2):  # the first pass warms up (page faults, threads)
            prof.seconds.clear()
            batches = trainer._batches(ds.x, order, bs, steps, cfg["augment"], rng)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            wall = time.perf_counter()
            for _ in range(steps):
                t0 = time.perf_counter()
                idx, xb = next(batches)
                prof.seconds["waiting for the batch thread"] += time.perf_counter() - t0
                step(xb, ds.y[idx])
            wall = time.perf_counter() - wall
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            batches.close()
        threads = team.TEAM.threads
    prof.restore()
    charged = sum(v for k, v in prof.seconds.items() if not k.startswith("batch thread"))
    print(f"\n{label}: {steps} steps of {bs}, {wall / steps * 1e3:.2f} ms per step on {threads} team thread(s), "
          f"{faults / steps:.0f} page faults per step")
    for key, sec in sorted(prof.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<44} {sec / steps * 1e3:7.3f} ms")
    print(f"  {'the rest (argmax, the step loop, Python)':<44} "
          f"{(wall - charged) / steps * 1e3:7.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--qd-rows", type=int, default=QD16_ROWS)
    ap.add_argument("--profile", action="store_true", help="where a step's time goes, instead of the rounds")
    args = ap.parse_args()

    small, qd16 = small_config(args.batch), quickdraw16_config()
    ds, qd_ds = dataset(args.samples, SIZES[-1]), dataset(args.qd_rows, 16, seed=1)
    load = os.getloadavg()
    if args.profile:
        profile("784-256-128-10, batch 256", small, ds, 60)
        profile("quickdraw16 (784-1024-512-16, batch norm, dropout, augmentation)", qd16, qd_ds, 30)
        print(f"\nload average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after ({team.CORES} cores)")
        return
    bsizes = [min(args.batch, args.samples - i) for i in range(0, args.samples, args.batch)]
    loops = {"BLAS threads": matmul_loop(SIZES, bsizes, blocks=False),
             "team blocks": matmul_loop(SIZES, bsizes, blocks=True)}
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]

    fit_epoch(small, ds)  # warm-up: page faults, threads
    for loop in loops.values():
        loop()
    epochs, limits, qd_epochs = [], defaultdict(list), []
    for r in range(args.rounds):
        epochs.append(fit_epoch(small, ds))
        for name, loop in loops.items():
            limits[name].append(loop())
        if r % 3 == 0:
            qd_epochs.append(fit_epoch(qd16, qd_ds))
        limit = min(v[-1] for v in limits.values())
        print(f"round {r + 1}: train {args.samples / epochs[-1]:9,.0f} samples/s   matmul-bound limit "
              f"{args.samples / limit:9,.0f} samples/s   fraction {limit / epochs[-1]:6.1%}", flush=True)

    best = {name: min(v) for name, v in limits.items()}
    limit_s = min(best.values())
    train_sps, limit_sps = args.samples / min(epochs), args.samples / limit_s
    macs = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))  # per sample, per pass
    flops = 2 * (3 * macs - SIZES[0] * SIZES[1])  # forward, dW, and dX of every layer but the first
    med = statistics.median(min(v[i] for v in limits.values()) / e for i, e in enumerate(epochs))
    print(f"\n{SIZES} MLP, batch {args.batch}, {args.samples:,} uint8 samples, Adam, best of {args.rounds} rounds "
          f"(doodle.train.fit's epoch seconds; {cores.fair_share(1)} team threads alone, BLAS {blas}):")
    print(f"  training            {train_sps:10,.0f} samples/s  ({min(epochs):.3f} s/epoch)")
    for name, sec in best.items():
        print(f"  matmuls, {name:<11}{args.samples / sec:10,.0f} samples/s  ({flops * args.samples / sec / 1e9:.0f} "
              f"GFLOP/s)")
    print(f"  matmul-bound limit  {limit_sps:10,.0f} samples/s  (the faster: the matmuls a step does: forward, dW, "
          f"dX but the first layer's)")
    print(f"  fraction of limit   {train_sps / limit_sps:10.1%}  (median of rounds {med:.1%})")
    print(f"quickdraw16 network (784-1024-512-16, batch norm, dropout 0.1, augmentation with flips), "
          f"{args.qd_rows:,} rows: {min(qd_epochs):.2f} s per epoch (best of {len(qd_epochs)}; median "
          f"{statistics.median(qd_epochs):.2f} s), {args.qd_rows / min(qd_epochs):,.0f} samples/s")
    print(f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after ({team.CORES} cores)")


if __name__ == "__main__":
    main()
