"""The accuracy ablation of issue 13: one lever at a time on configs/quickdraw16.yaml, chosen on validation.

Each run trains through the real pipeline (file:// mirror of the shared sample, strict config, tail split),
then scores the kept model on the validation and test splits (top-1, top-3, ECE after calibration) and
appends one JSON line to bench/ablation.jsonl: the lever's name, its overrides, the figures, the training
time and the machine's load average (2 cores, shared: timings carry that load). `--table` prints the log as
the Markdown table kept in bench/ablation.md.

    python bench/ablation.py NAME [--set key=value ...] [--config configs/quickdraw16.yaml]
    python bench/ablation.py --table     # the log as Markdown
    python bench/ablation.py --costs     # each lever's time against the plain recipe, measured in one run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from _common import REPO, quickdraw_root
from doodle.checkpoint import load_model
from doodle.config import load_config
from doodle.dataset import load_dataset
from doodle.metrics import expected_calibration_error, topk_accuracy
from doodle.progress import Reporter
from doodle.train import train

LOG = REPO / "bench" / "ablation.jsonl"


class EpochPrinter(Reporter):
    def epoch(self, row):
        print(f"  epoch {row['epoch']:>3}  train acc {row['train_accuracy']:.4f}  val acc {row['val_accuracy']:.4f}"
              f"  lr {row['lr']:.2e}  {row['seconds']:.1f}s", flush=True)


def scores(run: Path, data_dir: Path, overrides: list[str], config: Path) -> dict:
    """Top-1, top-3 and calibrated ECE of the run's kept model on its validation and test splits."""
    import numpy as np

    model, meta = load_model(run)
    ds = load_dataset(load_config(config, overrides), data_dir, download=False)
    with np.load(run / "split.npz") as f:
        split = {k: f[k] for k in ("val", "test")}
    out = {}
    for part, idx in split.items():
        if not len(idx):
            continue
        probs = model.predict_proba(ds.x[idx])
        y = ds.y[idx]
        out[part] = {"top1": topk_accuracy(probs, y, 1), "top3": topk_accuracy(probs, y, 3),
                     "ece": expected_calibration_error(probs, y)}
    out["temperature"] = model.temperature
    return out


def run_one(name: str, overrides: list[str], config: Path, data_dir: Path, out: Path) -> dict:
    base = quickdraw_root().resolve().as_uri()
    overrides = [f"data.base_url={base}", *overrides]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    res = train(config, overrides, data_dir=data_dir, out=out, reporter=EpochPrinter())
    seconds = time.perf_counter() - t0
    figures = scores(out, data_dir, overrides, config)
    resolved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    resolved["data"].pop("base_url", None)
    shown = str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config)
    row = {"name": name, "run": str(out), "resolved": resolved, "config": shown,
           "set": overrides[1:], "epochs": res.epochs, "best_epoch": res.best_epoch, **figures,
           "seconds": round(seconds, 1), "train_seconds": round(sum(h["seconds"] for h in res.history), 1),
           "load": [round(a, 2) for a in (*load_before, *os.getloadavg())],
           "date": time.strftime("%Y-%m-%d %H:%M")}
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


# What a setting meant before it existed (runs older than issue 13's keys, or than issue 10's shuffle keys) or
# after it was removed again: off, or the behaviour of the time. TTA was briefly a number of pixels, 0 for none.
OFF = {("model", "norm"): "none", ("model", "tta"): "none", ("train", "label_smoothing"): 0.0,
       ("augment", "flip"): 0.0, ("train", "ema"): 0.0, ("augment", "mixup"): 0.0, ("augment", "cutout"): 0.0,
       ("data", "shuffle"): "full", ("data", "block_rows"): 64, ("data", "shuffle_window"): 65536,
       ("data", "scheduler"): None}


def differences(resolved: dict, reference: dict) -> str:
    """A run's settings that differ from a reference config, as key=value (settings it predates count as off)."""
    def value(cfg: dict, sec: str, key: str):
        v = cfg.get(sec, {}).get(key, OFF.get((sec, key)))
        return "none" if (sec, key) == ("model", "tta") and v == 0 else v

    keys = {(sec, key) for cfg in (resolved, reference) for sec in cfg for key in cfg[sec]} | set(OFF)
    out = [f"{sec}.{key}={json.dumps(value(resolved, sec, key))}" for sec, key in sorted(keys)
           if (sec, key) not in (("data", "base_url"), ("data", "categories"))
           and value(resolved, sec, key) != value(reference, sec, key)]
    return ", ".join(out).replace('"', "") or "-"


def table(rows: list[dict]) -> str:
    """The log as Markdown; each run's settings are shown as their differences from today's config file."""
    references = {}
    lines = ["# The accuracy ablation of issue 13, run by run", "",
             "Written by `python bench/ablation.py --table > bench/ablation.md` from `bench/ablation.jsonl`. Each run "
             "trained through the real pipeline on the shared sample; its settings are shown as their differences "
             "from today's config file. The lever-by-lever summary is in the README (Better guesses). The machine "
             "was shared: a run's time is comparable only with the runs started beside it (the load is shown).", "",
             "| run | differs from today's config file | epochs | val top-1 | val top-3 | test top-1 | test top-3 | "
             "test ECE | time (s) | load (start, end) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = Path(r["config"]).name
        if name not in references:
            references[name] = load_config(REPO / "configs" / name)
        sets = f"{name}: {differences(r['resolved'], references[name])}"
        test = r.get("test", {})
        lines.append(f"| {r['name']} | {sets} | {r['epochs']} (best {r['best_epoch']}) | "
                     f"{r['val']['top1']:.2%} | {r['val']['top3']:.2%} | {test.get('top1', float('nan')):.2%} | "
                     f"{test.get('top3', float('nan')):.2%} | {test.get('ece', float('nan')):.2%} | "
                     f"{r['seconds']:.0f} | {r['load'][0]:.1f}, {r['load'][3]:.1f} |")
    return "\n".join(lines)


def costs(rounds: int = 7) -> dict[str, float]:
    """Each lever's time against the plain recipe, measured within one run on random 28x28 bitmaps: a training
    step of 784-1024-512-16 at batch 256 (manual backprop, Adam), a batch's augmentation, and prediction.
    Variants alternate round by round, so a busy neighbour slows them alike; the medians of the per-round
    ratios are returned."""
    import statistics

    import numpy as np

    from doodle.augment import augment_batch
    from doodle.nn import MLP
    from doodle.optim import make_optimizer
    from doodle.train import train_step

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 16, 256)
    xf = augment_batch(x, rng, 0.08, 12, 0.12, 0.9)
    test = rng.integers(0, 256, (2000, 28, 28), dtype=np.uint8)

    def stepper(norm: str):
        m = MLP([784, 1024, 512, 16], dropout=0.1, norm=norm)
        opt = make_optimizer("adam", m.parameters(), flat=(m.flat_params, m.flat_grads), lr=1e-3)
        return lambda: train_step(m, opt, "cross_entropy", xf, y)

    def predictor(tta: str):
        m = MLP([784, 1024, 512, 16], tta=tta)
        return lambda: m.predict_logits(test)

    variants = {  # name: (plain, with the lever, repeats per timing)
        "batch norm (train step)": (stepper("none"), stepper("batch"), 10),
        "flips (augmentation of a batch)": (lambda: augment_batch(x, rng, 0.08, 12, 0.12, 0.9),
                                            lambda: augment_batch(x, rng, 0.08, 12, 0.12, 0.9, flip=0.5), 10),
        "TTA flip_shift (prediction)": (predictor("none"), predictor("flip_shift"), 2),
    }
    ratios: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, (plain, lever, n) in variants.items():
            times = []
            for fn in (plain, lever):
                fn()  # warm
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times.append(time.perf_counter() - t0)
            ratios[name].append(times[1] / times[0])
    return {k: statistics.median(v) for k, v in ratios.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", help="the lever's name in the log")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. train.epochs=5")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "quickdraw16.yaml")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "doodle-ablation-data",
                    help="downloads and caches, kept between runs")
    ap.add_argument("--runs", type=Path, default=Path(tempfile.gettempdir()) / "doodle-ablation-runs",
                    help="where run folders are kept (RUNS/NAME-<time>)")
    ap.add_argument("--table", action="store_true", help="print the log as a Markdown table")
    ap.add_argument("--costs", action="store_true", help="time each lever against the plain recipe (ratios)")
    args = ap.parse_args()
    if args.costs:
        load = os.getloadavg()[0]
        for name, ratio in costs().items():
            print(f"{name:<34} {ratio:.2f}x")
        print(f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores)")
        return
    if args.table:
        rows = [json.loads(line) for line in LOG.read_text(encoding="utf-8").splitlines() if line.strip()]
        print(table(rows))
        return
    if not args.name:
        ap.error("give a NAME for the run (or --table)")
    out = args.runs / f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    row = run_one(args.name, args.set, args.config.resolve(), args.data_dir, out)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
