"""What block shuffling costs in accuracy: configs/quickdraw16.yaml trained with data.shuffle full and blocks.

`blocks` reads the disk a block of consecutive rows at a time (one category per block) and mixes one
window of blocks at a time, so a window holds only some of the classes. What matters is blocks per class
per window: configs/all.yaml's 262,144-row window of 64-row blocks holds 4,096 blocks for 345 classes,
about 12 per class. On these 16 classes the same density is a 12,288-row window; the harsher settings hold
3 or 1 blocks per class per window. train.seed=1 shows how much two full-shuffle runs differ anyway.
Every run trains through the real pipeline (same split, seed and epochs);
only the epoch order differs. Usage: python bench/shuffle.py [--epochs 15] [--only 0 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import REPO, quickdraw_root
from doodle.train import train

SETTINGS = {  # name -> overrides
    "full (a uniform permutation)": ["data.shuffle=full"],
    "full, train.seed=1 (run-to-run noise)": ["data.shuffle=full", "train.seed=1"],
    "blocks 64, window 12,288 (12 blocks/class, as all.yaml)": ["data.shuffle=blocks", "data.block_rows=64",
                                                                "data.shuffle_window=12288"],
    "blocks 64, window 3,072 (3 blocks/class)": ["data.shuffle=blocks", "data.block_rows=64",
                                                 "data.shuffle_window=3072"],
    "blocks 64, window 1,024 (1 block/class)": ["data.shuffle=blocks", "data.block_rows=64",
                                                "data.shuffle_window=1024"],
    "blocks 256, window 4,096 (1 block/class)": ["data.shuffle=blocks", "data.block_rows=256",
                                                 "data.shuffle_window=4096"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=15, help="epochs per run (the config's 80 take ~5x longer)")
    ap.add_argument("--only", type=int, nargs="+", help="run only these settings (0 = full, 1 = noise, ...)")
    args = ap.parse_args()
    chosen = [k for i, k in enumerate(SETTINGS) if args.only is None or i in args.only]
    base = quickdraw_root().resolve().as_uri()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(chosen):
            extra = SETTINGS[name]
            tick = time.perf_counter()
            res = train(REPO / "configs" / "quickdraw16.yaml",
                        [f"data.base_url={base}", f"train.epochs={args.epochs}", *extra],
                        data_dir=Path(tmp) / "data", out=Path(tmp) / f"run{i}")
            rows.append({"shuffle": name, "test_accuracy": res.test_accuracy, "val_accuracy": res.val_accuracy,
                         "best_epoch": res.best_epoch, "seconds": round(time.perf_counter() - tick, 1)})
            print(f"{name:<56} test {res.test_accuracy:.2%}  val {res.val_accuracy:.2%}  "
                  f"({rows[-1]['seconds']:.0f} s)", flush=True)
    full = rows[0]["test_accuracy"]  # the first setting run is the reference
    print(f"\nconfigs/quickdraw16.yaml, {args.epochs} epochs (the config has 80), test = last 25% of each file")
    for r in rows:
        print(f"{r['shuffle']:<56} {r['test_accuracy']:.2%}  ({(r['test_accuracy'] - full) * 100:+.2f} points)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
