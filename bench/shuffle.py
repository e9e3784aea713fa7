"""What block shuffling costs in accuracy: configs/quickdraw16.yaml trained with data.shuffle full and blocks.

`blocks` reads the disk a block of consecutive rows at a time (one category per block) and mixes one
window of blocks at a time, so a window holds only some of the classes. What matters is blocks per class
per window: configs/all.yaml's 65,536-row window of 64-row blocks holds 1,024 blocks for 345 classes,
about 3 per class. On these 16 classes the same density is a 3,072-row window; the harsher settings hold
one block per class per window. Every run trains through the real pipeline (same split, seed and epochs);
only the epoch order differs. Usage: python bench/shuffle.py [--epochs 15]
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
    "blocks 64, window 3,072 (3 blocks/class, as all.yaml)": ["data.shuffle=blocks", "data.block_rows=64",
                                                              "data.shuffle_window=3072"],
    "blocks 64, window 1,024 (1 block/class)": ["data.shuffle=blocks", "data.block_rows=64",
                                                "data.shuffle_window=1024"],
    "blocks 256, window 4,096 (1 block/class)": ["data.shuffle=blocks", "data.block_rows=256",
                                                 "data.shuffle_window=4096"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=15, help="epochs per run (the config's 40 take ~4x longer)")
    args = ap.parse_args()
    base = quickdraw_root().resolve().as_uri()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(SETTINGS.items()):
            tick = time.perf_counter()
            res = train(REPO / "configs" / "quickdraw16.yaml",
                        [f"data.base_url={base}", f"train.epochs={args.epochs}", *extra],
                        data_dir=Path(tmp) / "data", out=Path(tmp) / f"run{i}")
            rows.append({"shuffle": name, "test_accuracy": res.test_accuracy, "val_accuracy": res.val_accuracy,
                         "best_epoch": res.best_epoch, "seconds": round(time.perf_counter() - tick, 1)})
            print(f"{name:<56} test {res.test_accuracy:.2%}  val {res.val_accuracy:.2%}  "
                  f"({rows[-1]['seconds']:.0f} s)", flush=True)
    full = rows[0]["test_accuracy"]
    print(f"\nconfigs/quickdraw16.yaml, {args.epochs} epochs (the config has 40), test = last 25% of each file")
    for r in rows:
        print(f"{r['shuffle']:<56} {r['test_accuracy']:.2%}  ({(r['test_accuracy'] - full) * 100:+.2f} points)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
