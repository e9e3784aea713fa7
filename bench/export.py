"""`doodle export --format web`: time a guess in the browser, target < 10 ms for a typical drawing.

Exports two networks as web folders: the default config's (784-512-256-10, TTA flip_shift) and quickdraw16's
(784-1024-512-16, batch norm, TTA flip_shift), with untrained weights (batch norm's statistics from real bitmaps; the
time does not depend on what the weights are) unless --model / --qd16 give trained runs. Serves them with Python's
static file server on a loopback port, opens them in headless Chromium and times, with performance.now(), a guess
(Google's simplification + doodle's rasterizer + the forward pass with its 10 views) of a typical drawing (the shared
raw drawing nearest 200 points, as bench/play.py) and of the same drawing resampled to 2,000 points, and each step
alone; beside it, the same guess in doodle's Python (simplify_raw + rasterize + predict_proba, as `doodle play`'s
server), so the ratio holds however loaded the machine is. Also prints each folder's size for float32, float16 and
int8 weights.
Usage: python bench/export.py [--model RUN] [--qd16 RUN] [--runs 200]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _common import REPO
from play import densify, nearest

from doodle.checkpoint import load_model, save_model
from doodle.export import export, load_web
from doodle.nn import MLP
from doodle.pixels import to_float
from doodle.raster import rasterize
from doodle.strokes import load_bitmaps, simplify_raw

CHROMIUM = "/usr/bin/chromium"
TIMER = """async ([drawings, runs]) => {
    const net = await doodle.loadNetwork();
    const {size, line_width, padding} = net.raster;
    const out = {};
    for (const [name, raw] of Object.entries(drawings)) {
        const steps = {guess: [], simplify: [], raster: [], forward: []};
        for (let i = 0; i < runs + 20; i++) {  // the first 20 warm the JIT up and are not counted
            let t = performance.now();
            doodle.guess(net, raw);
            const whole = performance.now() - t;
            t = performance.now();
            const simplified = doodle.simplifyRaw(raw);
            const a = performance.now();
            const bitmap = doodle.rasterize(simplified, size, line_width, padding);
            const b = performance.now();
            doodle.probabilities(net, doodle.logits(net, bitmap));
            const c = performance.now();
            if (i >= 20) {
                steps.guess.push(whole);
                steps.simplify.push(a - t); steps.raster.push(b - a); steps.forward.push(c - b);
            }
        }
        out[name] = steps;
    }
    return JSON.stringify(out);
}"""
REPEAT = """async ([raw, runs]) => {
    const net = await doodle.loadNetwork();
    for (let i = 0; i < runs; i++) doodle.guess(net, raw);
}"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def untrained_run(folder: Path, hidden: list[int], classes: int, norm: str) -> Path:
    """A run of an untrained network with the given shape (flip_shift TTA); batch norm statistics from real bitmaps."""
    model = MLP([784, *hidden, classes], norm=norm, tta="flip_shift", seed=0)
    if norm == "batch":
        x = to_float(np.asarray(load_bitmaps(REPO / "tests" / "fixtures" / "quickdraw" / "full" / "numpy_bitmap" /
                                             "apple.npy")))
        for _ in range(40):
            model.forward(x, train=True)
    meta = {"classes": [f"class{i}" for i in range(classes)], "layer_sizes": model.layer_sizes, "activation": "relu",
            "norm": norm, "tta": "flip_shift", "raster": {"size": 28, "line_width": 16.0, "padding": 16.0},
            "temperature": 1.0}
    save_model(folder, model, meta)
    return folder


def python_guess_ms(run: Path, raw: list, runs: int) -> tuple[list[float], float]:
    """Milliseconds per guess of raw strokes by doodle's Python (simplify_raw + rasterize + predict_proba): each
    guess's wall time, and the process's CPU time per guess."""
    model, meta = load_model(run)
    out = []
    for i in range(runs + 20):
        if i == 20:
            cpu = time.process_time()
        t = time.perf_counter()
        model.predict_proba(rasterize(simplify_raw(raw), **meta["raster"])[None])
        if i >= 20:
            out.append((time.perf_counter() - t) * 1000)
    return out, (time.process_time() - cpu) * 1000 / runs


def js_cpu_ms(page, raw: list, runs: int) -> float:
    """CPU time of the page's main thread per guess (Chrome's ThreadTime metric), which a busy machine barely
    changes, unlike performance.now()'s wall time."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def thread_time() -> float:
        return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "ThreadTime")

    before = thread_time()
    page.evaluate(REPEAT, [raw, runs])
    return (thread_time() - before) * 1000 / runs


def stats(ms: list[float]) -> str:
    return f"median {np.median(ms):6.2f} ms, p90 {np.percentile(ms, 90):6.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, help="a trained run with the default network (default: untrained)")
    ap.add_argument("--qd16", type=Path, help="a trained quickdraw16 run (default: untrained)")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    _, typical, points = nearest(200)
    drawings = {f"typical ({points} points)": typical["drawing"], "2,000 points": densify(typical, 2000)["drawing"]}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = {"default 784-512-256-10, flip_shift": args.model or untrained_run(root / "d", [512, 256], 10, "none"),
                "quickdraw16 784-1024-512-16, batch norm, flip_shift":
                    args.qd16 or untrained_run(root / "q", [1024, 512], 16, "batch")}
        sizes = {}
        for i, (name, run) in enumerate(runs.items()):
            for q in ("float32", "float16", "int8"):
                res = export(run, "web", root / "site" / f"{i}-{q}", quantize=None if q == "float32" else q)
                sizes[name, q] = (res["bytes"], next(f["bytes"] for f in res["files"] if f["path"].endswith(".bin")))
            assert load_web(root / "site" / f"{i}-float32")[0].layer_sizes
        handler = functools.partial(Quiet, directory=str(root / "site"))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        timings = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            for i, name in enumerate(runs):
                page = browser.new_page()
                page.goto(f"{base}/{i}-float32/?mode=free")
                page.wait_for_selector("body[data-ready='1']")
                timings[name] = json.loads(page.evaluate(TIMER, [drawings, args.runs]))
                for drawing, raw in drawings.items():
                    timings[name][drawing]["cpu"] = js_cpu_ms(page, raw, args.runs)
                    timings[name][drawing]["python"], timings[name][drawing]["python_cpu"] = \
                        python_guess_ms(runs[name], raw, args.runs)
                page.close()
            version = browser.version
            browser.close()
        server.shutdown()
    print(f"headless Chromium {version}, {args.runs} guesses each after 20 warm-up ones; load average "
          f"{load[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores)")
    for name, per in timings.items():
        print(f"\n{name}{'' if (args.model if 'default' in name else args.qd16) else ' (untrained weights)'}")
        for drawing, steps in per.items():
            print(f"  {drawing:<22} guess {stats(steps['guess'])} (simplify {np.median(steps['simplify']):.2f}, "
                  f"raster {np.median(steps['raster']):.2f}, forward {np.median(steps['forward']):.2f}); "
                  f"CPU {steps['cpu']:.2f} ms per guess")
            print(f"  {'':<22} doodle's Python: {stats(steps['python'])}, CPU {steps['python_cpu']:.2f} ms; "
                  f"browser/Python CPU {steps['cpu'] / steps['python_cpu']:.2f}")
        typical = next(iter(per.values()))
        wall, cpu = np.median(typical["guess"]), typical["cpu"]
        verdict = "met" if wall < 10 else "met in CPU time (the wall time waits for a busy machine)" if cpu < 10 \
            else "NOT met"
        print(f"  typical drawing: {wall:.2f} ms (wall, median), {cpu:.2f} ms (CPU); target < 10 ms: {verdict}")
    print(f"\n{'folder size':<52} {'float32':>10} {'float16':>10} {'int8':>10}   (weights.bin alone)")
    for name in runs:
        cells = [f"{sizes[name, q][0] / 1e6:7.2f} MB" for q in ("float32", "float16", "int8")]
        bins = ", ".join(f"{sizes[name, q][1] / 1e6:.2f}" for q in ("float32", "float16", "int8"))
        print(f"{name:<52} {' '.join(cells)}   ({bins} MB)")


if __name__ == "__main__":
    main()
