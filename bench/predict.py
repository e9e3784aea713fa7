"""`doodle predict sketch.png` as a whole process: target under 0.5 s on this machine.

Times fresh `python -m doodle predict` processes (interpreter start, imports, model load, image preparation,
forward pass) on the largest shared sketch. Without --model it first trains a small offline model.
Usage: python bench/predict.py [--model RUN] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, quickdraw_root

from doodle.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    sketch = max((p for p in (quickdraw_root() / "sketches").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or Path(train(REPO / "configs" / "offline.yaml", ["data.per_category=200", "train.epochs=1"],
                                         data_dir=Path(tmp) / "data", out=Path(tmp) / "run").run)
        cmd = [sys.executable, "-m", "doodle", "predict", str(sketch), "--model", str(model)]
        subprocess.run(cmd, check=True, capture_output=True)  # warm the file cache
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare = time.perf_counter() - t0
    print(f"sketch: {sketch.relative_to(quickdraw_root())} ({sketch.stat().st_size:,} bytes)")
    print(f"doodle predict, whole process: median {statistics.median(times):.3f} s, best {min(times):.3f} s, "
          f"worst {max(times):.3f} s over {args.runs} runs (target < 0.5 s; bare python start {bare:.3f} s)")


if __name__ == "__main__":
    main()
