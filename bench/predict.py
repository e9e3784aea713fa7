"""Start-up of the commands people run in loops, as whole processes, each paired with a bare
`python -c "import numpy, PIL.Image"` start: `doodle predict SKETCH` on the shared sample's median and largest
sketch (target: under 1.6x the bare start and
under 0.3 s on an idle 2-core machine), `doodle --version` and a TAB of shell completion (bash and zsh).

Runs alternate (A B A B ...) after a warm-up, so a machine whose speed drifts moves both sides of each pair;
the ratio quoted is the median of the per-pair ratios. Wall time is the user's wait; CPU time (user + sys,
from the kernel's accounting of each child) is steadier on a shared machine. Without --model it first trains
a small offline model. The package is byte-compiled first: an install has its .pyc files, while a checkout run
with PYTHONDONTWRITEBYTECODE=1 would compile doodle's modules on every start.
Usage: python bench/predict.py [--model RUN] [--runs 15]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, quickdraw_root
from doodle.train import train

BARE = [sys.executable, "-c", "import numpy, PIL.Image"]


def _doodle() -> list[str]:
    """The console script when installed (what a shell runs), else `python -m doodle`."""
    script = Path(sys.executable).parent / "doodle"
    return [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "doodle"]


def _once(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall, cpu) seconds of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-200:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def paired(cmd: list[str], runs: int, env: dict) -> dict | str:
    """Medians of `cmd` and of the bare start, run in turn, and the median per-pair ratios (or why the
    command failed)."""
    try:
        for c in (cmd, BARE):
            _once(c, env)  # warm the file cache
    except RuntimeError as exc:
        return str(exc)
    a, b = [], []
    for _ in range(runs):
        a.append(_once(cmd, env))
        b.append(_once(BARE, env))
    return {"wall": statistics.median(w for w, _ in a), "cpu": statistics.median(c for _, c in a),
            "bare_wall": statistics.median(w for w, _ in b),
            "wall_ratio": statistics.median(x[0] / y[0] for x, y in zip(a, b)),
            "cpu_ratio": statistics.median(x[1] / y[1] for x, y in zip(a, b))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    compileall.compile_dir(str(REPO / "doodle"), quiet=1)
    sketches = sorted((p for p in (quickdraw_root() / "sketches").rglob("*") if p.is_file()),
                      key=lambda p: p.stat().st_size)
    median, largest = sketches[len(sketches) // 2], sketches[-1]  # image preparation grows with the file
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or Path(train(REPO / "configs" / "offline.yaml", ["data.per_category=200", "train.epochs=1"],
                                         data_dir=Path(tmp) / "data", out=Path(tmp) / "run").run)
        doodle = _doodle()
        cases = {
            "doodle predict (median)": (doodle + ["predict", str(median), "--model", str(model)], {}),
            "doodle predict (largest)": (doodle + ["predict", str(largest), "--model", str(model)], {}),
            "doodle --version": (doodle + ["--version"], {}),
            "completion TAB (bash)": (doodle, {"_DOODLE_COMPLETE": "complete_bash", "COMP_WORDS": "doodle pre",
                                               "COMP_CWORD": "1"}),
            "completion TAB (zsh)": (doodle, {"_DOODLE_COMPLETE": "complete_zsh",
                                              "_TYPER_COMPLETE_ARGS": "doodle pre"}),
        }
        rows = {name: paired(cmd, args.runs, {**env, **extra}) for name, (cmd, extra) in cases.items()}
    print(f"sketches: median {median.relative_to(quickdraw_root())} ({median.stat().st_size:,} bytes), largest "
          f"{largest.relative_to(quickdraw_root())} ({largest.stat().st_size:,} bytes)")
    print(f"{args.runs} pairs each; load average before "
          f"{load[0]:.2f} on {os.cpu_count()} cores, after {os.getloadavg()[0]:.2f}")
    print(f"{'command':<24} {'wall s':>7} {'cpu s':>7} {'bare wall s':>12} {'wall / bare':>12} {'cpu / bare':>11}")
    for name, r in rows.items():
        if isinstance(r, str):
            print(f"{name:<24} fails: {r}")
            continue
        print(f"{name:<24} {r['wall']:>7.3f} {r['cpu']:>7.3f} {r['bare_wall']:>12.3f} {r['wall_ratio']:>11.2f}x "
              f"{r['cpu_ratio']:>10.2f}x")
    print("targets: doodle predict under 1.6x the bare numpy + Pillow start, and under 0.3 s on an idle machine")


if __name__ == "__main__":
    main()
