"""What keeping freed memory (doodle.heap) is worth: training steps and rasterising, with and without.

glibc's malloc otherwise returns numpy's big temporaries to the kernel and faults fresh, zeroed pages in
for the next ones. Each measurement runs in a fresh child process, plain and tuned alternating round by
round (a busy neighbour slows both alike); the best of the rounds and the minor page faults are printed.

  training      one epoch of `doodle.train.fit` with configs/default.yaml (augmentation in its worker
                thread, dropout, validation) on 10 x 2,000 random bitmaps, as bench/augment.py runs it
  rasterising   doodle.cache.build_category on every shared simplified drawing (one ndjson file), as
                `doodle cache` runs it in each worker

    python bench/heap.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import quickdraw_root


def child(mode: str, what: str, corpus: str) -> dict:
    from doodle import heap

    if mode == "tuned":
        assert heap.keep_freed_memory(), "glibc's mallopt is not available here"
    else:
        heap.keep_freed_memory = lambda: False  # doodle's entry points call it: leave malloc as glibc has it
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if what == "train":
        from augment import dataset, epoch_seconds

        ds = dataset(2000, 10)
        epoch_seconds("configs/default.yaml", ds, augmented=True)  # warm
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rate = max(epoch_seconds("configs/default.yaml", ds, augmented=True)[1] for _ in range(2))
    else:
        from doodle.cache import build_category
        from doodle.config import load_config

        data = load_config(None, [])["data"]
        with tempfile.TemporaryDirectory() as tmp:
            tick = time.perf_counter()
            rows = build_category(corpus, Path(tmp) / "c.npy", {**data, "per_category": None}, 16.0)["rows"]
            rate = rows / (time.perf_counter() - tick)
    return {"rate": rate, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "all.ndjson"
        with open(corpus, "wb") as out:
            for path in sorted((quickdraw_root() / "full" / "simplified").glob("*.ndjson")):
                out.write(path.read_bytes())
        results: dict = {}
        for _ in range(args.rounds):
            for what in ("train", "raster"):
                for mode in ("plain", "tuned"):
                    proc = subprocess.run([sys.executable, __file__, "--child", mode, what, str(corpus)],
                                          capture_output=True, text=True, check=True)
                    r = json.loads(proc.stdout.splitlines()[-1])
                    best = results.setdefault((what, mode), r)
                    if r["rate"] > best["rate"]:
                        results[(what, mode)] = r
    units = {"train": "samples/s", "raster": "drawings/s"}
    for what in ("train", "raster"):
        p, t = results[(what, "plain")], results[(what, "tuned")]
        print(f"{what:<8} plain {p['rate']:>9,.0f} {units[what]} ({p['faults']:>7,} page faults)   "
              f"tuned {t['rate']:>9,.0f} ({t['faults']:>6,} faults)   {t['rate'] / p['rate']:.2f}x")
    print(f"best of {args.rounds} rounds each; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} "
          f"at the end ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
