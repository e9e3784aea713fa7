"""A training beside a second doodle process on a shared machine: step times alone, beside a second
training, and beside a cache build, with the code before doodle took its share of the cores (BLAS's own
threads, every process on every core) and with it (doodle.cores), all in one run.

Each measured training is `doodle.train.fit` in its own process, the network of bench/train.py
(784-256-128-10, batch 256, Adam) on 20,000 random 28x28 images, every step timed through fit's own
progress callback (the time between two steps' reports: the step and the wait for its batch). The
neighbour is started first and runs until the measurement ends: the same training, or a cache build
(`doodle.cache.build_all` with workers=0, as `doodle cache` runs it) of 6 categories of ~14,000 shared
drawings each, rebuilt from scratch until stopped. "before" runs the code of revision BEFORE (extracted
with `git archive`: the commit this work started from), "after" this checkout; both sides of a pair run
the same code. Median and p90 of the step times after a warm-up are printed, with the ratio to the same
code alone, and the load average (other jobs on the machine count too: run it when the machine is quiet).

    python bench/contention.py [--seconds 8] [--before ec96673]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "ec96673"  # main before doodle.cores: BLAS's own threads
WARMUP = 2.0  # seconds of steps before the timed ones (page faults, threads, the neighbour settling)


# --- the child processes: they import whichever doodle --code names ------------------------------------------


def _train(code: str, seconds: float, out: str) -> None:
    """Train until `seconds` of steps after the warm-up are timed; print their durations as JSON."""
    import numpy as np

    from doodle.config import load_config
    from doodle.dataset import Dataset
    from doodle.progress import Reporter
    from doodle.train import fit

    class Done(Exception):
        pass

    class Clock(Reporter):
        def __init__(self):
            self.ticks: list[float] = []
            self.start_at = time.perf_counter()

        def update(self, key, advance=0, completed=None, total=None, **fields):
            now = time.perf_counter()
            if now - self.start_at < WARMUP:
                return
            if not self.ticks:
                print("ready", flush=True)  # the parent starts the measured side now
            self.ticks.append(now)
            if now - self.ticks[0] >= seconds:
                raise Done

    rng = np.random.default_rng(0)
    n = 20_000
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(10, dtype=np.int32), n // 10)
    ds = Dataset(x, y, [f"class{c}" for c in range(10)], [n // 10] * 10)
    cfg = load_config(None, ["model.hidden=[256, 128]", "model.dropout=0", "model.norm=none", "model.tta=none",
                             "train.batch_size=256", "train.optimizer=adam", "train.epochs=1000",
                             "train.schedule=constant", "train.warmup_epochs=0", "data.val_fraction=0",
                             "data.test_fraction=0", "augment.probability=0", "augment.flip=0"])
    clock = Clock()
    try:
        fit(cfg, ds, Path(out), reporter=clock)
    except Done:
        pass
    try:
        from doodle import team

        threads = team.TEAM.threads
    except ImportError:  # the code before doodle.team
        threads = None
    print(json.dumps({"steps": [b - a for a, b in zip(clock.ticks, clock.ticks[1:])], "threads": threads}),
          flush=True)


def _cache(code: str, sources: str, out: str) -> None:
    """Build the cache of every ndjson file in `sources` into `out`, again and again, until killed."""
    from doodle.cache import build_all
    from doodle.config import load_config
    from doodle.dataset import PADDING

    data = load_config(None, ["data.per_category=null"])["data"]
    jobs = [(p, Path(out) / f"{p.stem}.npy") for p in sorted(Path(sources).glob("*.ndjson"))]
    first = True
    while True:
        for _, npy in jobs:
            npy.unlink(missing_ok=True)
        build_all(jobs, data, PADDING, workers=0)
        if first:
            print("ready", flush=True)
            first = False


# --- the parent ---------------------------------------------------------------------------------------------


def _spawn(code: Path, role: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(code)}
    return subprocess.Popen([sys.executable, __file__, "--child", role, str(code), *args], env=env,
                            stdout=subprocess.PIPE, text=True)


def _ready(proc: subprocess.Popen) -> None:
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"a neighbour did not start (exit {proc.poll()}): {line!r}")


def measure(code: Path, neighbour: str | None, seconds: float, tmp: Path, sources: Path) -> dict:
    """Step times of one training of `code`, alone or beside a neighbour of the same code."""
    other = None
    if neighbour == "training":
        other = _spawn(code, "train", "1e9", str(tmp / "neighbour-run"))
    elif neighbour == "cache build":
        (tmp / "cache").mkdir(exist_ok=True)
        other = _spawn(code, "cache", str(sources), str(tmp / "cache"))
    try:
        if other is not None:
            _ready(other)
        run = tmp / "measured-run"
        shutil.rmtree(run, ignore_errors=True)
        proc = _spawn(code, "train", str(seconds), str(run))
        _ready(proc)
        result = json.loads(proc.stdout.readlines()[-1])
        proc.wait()
    finally:
        if other is not None:
            other.kill()
            other.wait()
            other.stdout.close()
        shutil.rmtree(tmp / "neighbour-run", ignore_errors=True)
    steps = sorted(result["steps"])
    return {"median": statistics.median(steps), "p90": steps[int(0.9 * (len(steps) - 1))], "steps": len(steps),
            "threads": result["threads"]}


def _sources(tmp: Path) -> Path:
    """6 ndjson files, each every shared simplified drawing (~14,000): big enough for the pool of workers."""
    from _common import quickdraw_root

    folder = tmp / "sources"
    folder.mkdir()
    lines = b"".join(p.read_bytes() for p in sorted((quickdraw_root() / "full" / "simplified").glob("*.ndjson")))
    for i in range(6):
        (folder / f"category{i}.ndjson").write_bytes(lines)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    ap.add_argument("--before", default=BEFORE, help="git revision of the code before (or a folder holding doodle/)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        role, code, *rest = args.child
        sys.path.insert(0, code)
        {"train": lambda: _train(code, float(rest[0]), rest[1]), "cache": lambda: _cache(code, *rest)}[role]()
        return
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = Path(args.before)
        if not (before / "doodle").is_dir():
            before = tmp / "before"
            before.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before, "doodle"], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        sources = _sources(tmp)
        rows = {}
        for neighbour in (None, "training", "cache build"):
            for side, code in (("before", before), ("after", REPO)):
                rows[side, neighbour] = measure(code, neighbour, args.seconds, tmp, sources)
                r = rows[side, neighbour]
                print(f"  {side:<6} {neighbour or 'alone':<12} median {r['median'] * 1e3:7.2f} ms  p90 "
                      f"{r['p90'] * 1e3:7.2f} ms  ({r['steps']} steps)", flush=True)
    print(f"\n784-256-128-10 training step (batch 256) on {os.cpu_count()} cores, {args.seconds:g} s timed each; "
          f"before = {args.before}, after = this checkout")
    print(f"{'beside':<13} {'before: median':>15} {'p90':>8} {'x alone':>8}   {'after: median':>14} {'p90':>8} "
          f"{'x alone':>8} {'threads':>8}")
    for neighbour in (None, "training", "cache build"):
        b, a = rows["before", neighbour], rows["after", neighbour]
        print(f"{neighbour or 'nothing':<13} {b['median'] * 1e3:>12.2f} ms {b['p90'] * 1e3:>5.1f} ms "
              f"{b['median'] / rows['before', None]['median']:>7.2f}x   {a['median'] * 1e3:>11.2f} ms "
              f"{a['p90'] * 1e3:>5.1f} ms {a['median'] / rows['after', None]['median']:>7.2f}x {a['threads']:>8}")
    print(f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after (other jobs on the machine count too)")


if __name__ == "__main__":
    main()
