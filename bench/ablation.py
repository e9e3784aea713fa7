"""The accuracy ablation of issue 13: one lever at a time on configs/quickdraw16.yaml, chosen on validation.

Each run trains through the real pipeline (file:// mirror of the shared sample, strict config, tail split),
then scores the kept model on the validation and test splits (top-1, top-3, ECE after calibration) and
appends one JSON line to bench/ablation.jsonl: the lever's name, its overrides, the figures, the training
time and the machine's load average (2 cores, shared: timings carry that load). `--table` prints the log as
the Markdown table kept in bench/ablation.md.

    python bench/ablation.py NAME [--set key=value ...] [--config configs/quickdraw16.yaml]
    python bench/ablation.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import REPO, quickdraw_root

from doodle.checkpoint import load_model
from doodle.dataset import load_dataset
from doodle.config import load_config
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
    row = {"name": name, "run": str(out), "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
           "set": overrides[1:], "epochs": res.epochs, "best_epoch": res.best_epoch, **figures,
           "seconds": round(seconds, 1), "train_seconds": round(sum(h["seconds"] for h in res.history), 1),
           "load": [round(a, 2) for a in (*load_before, *os.getloadavg())],
           "date": time.strftime("%Y-%m-%d %H:%M")}
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def table(rows: list[dict]) -> str:
    lines = ["| run | config / overrides | epochs | val top-1 | val top-3 | test top-1 | test top-3 | test ECE | "
             "time (s) | load (start, end) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sets = ", ".join(s for s in r["set"] if not s.startswith("data.base_url")) or "-"
        test = r.get("test", {})
        lines.append(f"| {r['name']} | {Path(r['config']).name}: {sets} | {r['epochs']} (best {r['best_epoch']}) | "
                     f"{r['val']['top1']:.2%} | {r['val']['top3']:.2%} | {test.get('top1', float('nan')):.2%} | "
                     f"{test.get('top3', float('nan')):.2%} | {test.get('ece', float('nan')):.2%} | "
                     f"{r['seconds']:.0f} | {r['load'][0]:.1f}, {r['load'][3]:.1f} |")
    return "\n".join(lines)


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
    args = ap.parse_args()
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
