"""`doodle export`: parity and speed of the exports, target < 10 ms per guess in the browser for a typical drawing.

Two networks: the default config's (784-512-256-10, TTA flip_shift) and quickdraw16's (784-1024-512-16, batch norm,
TTA flip_shift), untrained (batch norm's statistics from real bitmaps) unless --model / --qd16 give trained runs.
Each is exported as ONNX and as web folders with float32, float16 and int8 weights, and measured:
- parity on the committed fixture's drawings (tests/fixtures: Google's raw and simplified ndjson, doodle play's raw
  shapes): ONNX's reference evaluator and onnxruntime against doodle's probabilities (model.predict_proba, what
  `doodle predict` prints); the page's JavaScript in headless Chromium against doodle's Python: simplified strokes,
  bitmaps, probabilities (quantized folders: against doodle evaluate's view of them, dequantized as the page does);
- speed: a guess in the page (Google's simplification + doodle's rasterizer + the forward pass with its 10 views)
  of a typical drawing (the shared raw drawing nearest 200 points, as bench/play.py) and of the same drawing
  resampled to 2,000 points, timed with performance.now(), each step alone, and the page's CPU time per guess
  (Chrome's ThreadTime: a busy machine stretches wall time, hardly CPU time);
- size: each folder, and its weights.bin.
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
from pathlib import Path

import numpy as np
from play import densify, nearest

from _common import REPO
from doodle.checkpoint import load_model, save_model
from doodle.export import export, load_web, onnx_probabilities
from doodle.nn import MLP
from doodle.pixels import to_float
from doodle.raster import rasterize
from doodle.strokes import load_bitmaps, read_records, simplify_raw

CHROMIUM = "/usr/bin/chromium"
FIXTURE = REPO / "tests" / "fixtures"
RAW_FILES = [*sorted((FIXTURE / "quickdraw" / "full" / "raw").glob("*.ndjson")), FIXTURE / "play" / "raw_shapes.ndjson"]
SIMPLIFIED_FILES = sorted((FIXTURE / "quickdraw" / "full" / "simplified").glob("*.ndjson"))
PRECISIONS = ("float32", "float16", "int8")

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
# In: JSON [folders, raw drawings, simplified drawings]; out: JSON {simplified, bitmaps, probabilities per folder}.
PARITY = """async (args) => {
    const [folders, raw, simplified] = JSON.parse(args), probabilities = {};
    let bitmaps = null;
    for (const folder of folders) {
        const net = await doodle.loadNetwork(`../${folder}/`);
        const {size, line_width, padding} = net.raster;
        const drawn = simplified.map((d) => doodle.rasterize(d, size, line_width, padding));
        bitmaps = bitmaps || drawn.map((b) => Array.from(b));
        probabilities[folder] = drawn.map((b) => Array.from(doodle.probabilities(net, doodle.logits(net, b))));
    }
    return JSON.stringify({simplified: raw.map((d) => doodle.simplifyRaw(d)), bitmaps, probabilities});
}"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def untrained_run(folder: Path, hidden: list[int], classes: int, norm: str) -> Path:
    """A run of an untrained network with the given shape (flip_shift TTA); batch norm statistics from real bitmaps."""
    model = MLP([784, *hidden, classes], norm=norm, tta="flip_shift", seed=0)
    if norm == "batch":
        x = to_float(np.asarray(load_bitmaps(FIXTURE / "quickdraw" / "full" / "numpy_bitmap" / "apple.npy")))
        for _ in range(40):
            model.forward(x, train=True)
    meta = {"classes": [f"class{i}" for i in range(classes)], "layer_sizes": model.layer_sizes, "activation": "relu",
            "norm": norm, "tta": "flip_shift", "raster": {"size": 28, "line_width": 16.0, "padding": 16.0},
            "temperature": 1.0}
    save_model(folder, model, meta)
    return folder


def fixture_drawings() -> tuple[list, list]:
    """(raw drawings, simplified drawings): the raw ones simplified by doodle, then every committed simplified one."""
    raw = [json.loads(line)["drawing"] for p in RAW_FILES for line in p.read_text().splitlines() if line.strip()]
    simplified = [simplify_raw(d) for d in raw]
    for path in SIMPLIFIED_FILES:
        with open(path, "rb") as fh:
            simplified += [rec["drawing"] for _, rec, err in read_records(fh, str(path)) if not err]
    return raw, simplified


def worst(expected: np.ndarray, got) -> str:
    got = np.asarray(got, dtype=np.float64)
    same = int((expected.argmax(1) == got.argmax(1)).sum())
    return f"max |dp| {np.abs(expected - got).max():.1e}, same top-1 {same}/{len(got)}"


def parity(page, run: Path, folders: dict[str, Path], onnx_file: Path) -> None:
    raw, simplified = fixture_drawings()
    model, meta = load_model(run)
    raster = {k: meta["raster"][k] for k in ("size", "line_width", "padding")}
    bitmaps = np.stack([rasterize(d, **raster) for d in simplified])  # (N, S, S)
    expected = {"float32": model.predict_proba(bitmaps).astype(np.float64)}
    for q in PRECISIONS[1:]:
        expected[q] = load_web(folders[q])[0].predict_proba(bitmaps).astype(np.float64)
    got = json.loads(page.evaluate(PARITY, json.dumps([[folders[q].name for q in PRECISIONS], raw, simplified])))
    same_strokes = sum(a == b for a, b in zip(got["simplified"], simplified))
    diff = np.abs(np.array(got["bitmaps"]) - bitmaps.reshape(len(bitmaps), -1).astype(int))
    print(f"  parity on the {len(simplified)} fixture drawings ({len(raw)} raw):")
    for runtime in ("reference", "onnxruntime"):
        onnx_p = onnx_probabilities(onnx_file, to_float(bitmaps), runtime)
        print(f"    ONNX {runtime:<12} {worst(expected['float32'], onnx_p)}")
    print(f"    JS simplification: {same_strokes}/{len(raw)} identical; bitmaps: {int((diff > 0).sum())} pixels differ "
          f"(worst {int(diff.max())}/255)")
    for q in PRECISIONS:
        print(f"    JS {q:<14} {worst(expected[q], got['probabilities'][folders[q].name])}")


def js_cpu_ms(page, raw: list, runs: int) -> float:
    """CPU time of the page's main thread per guess (Chrome's ThreadTime metric)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def thread_time() -> float:
        return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "ThreadTime")

    before = thread_time()
    page.evaluate(REPEAT, [raw, runs])
    return (thread_time() - before) * 1000 / runs


def stats(ms: list[float]) -> str:
    return f"median {np.median(ms):6.2f} ms, p90 {np.percentile(ms, 90):6.2f} ms"


def speed(page, drawings: dict, runs: int) -> None:
    timings = json.loads(page.evaluate(TIMER, [drawings, runs]))
    for drawing, steps in timings.items():
        cpu = js_cpu_ms(page, drawings[drawing], runs)
        print(f"  {drawing:<20} guess {stats(steps['guess'])}; CPU {cpu:.2f} ms (simplify "
              f"{np.median(steps['simplify']):.2f}, raster {np.median(steps['raster']):.2f}, forward "
              f"{np.median(steps['forward']):.2f} ms)")


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
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        root = Path(tmp)
        runs = {"default 784-512-256-10, flip_shift": args.model or untrained_run(root / "d", [512, 256], 10, "none"),
                "quickdraw16 784-1024-512-16, batch norm, flip_shift":
                    args.qd16 or untrained_run(root / "q", [1024, 512], 16, "batch")}
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        print(f"headless Chromium {browser.version}; load average {load[0]:.1f} at the start (2 cores)")
        sizes = {}
        for i, (name, run) in enumerate(runs.items()):
            trained = args.model if i == 0 else args.qd16
            print(f"\n{name}: {run if trained else 'untrained weights'}")
            folders = {q: root / f"site{i}-{q}" for q in PRECISIONS}
            for q, folder in folders.items():
                res = export(run, "web", folder, quantize=None if q == "float32" else q)
                sizes[name, q] = (res["bytes"], (folder / "weights.bin").stat().st_size)
            export(run, "onnx", root / f"model{i}.onnx")
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/site{i}-float32/?mode=free")
            page.wait_for_selector("body[data-ready='1']")
            parity(page, run, folders, root / f"model{i}.onnx")
            print(f"  speed ({args.runs} guesses after 20 warm-up ones):")
            speed(page, drawings, args.runs)
            page.close()
        browser.close()
        server.shutdown()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'folder size (weights.bin)':<52} {'float32':>16} {'float16':>16} {'int8':>16}")
    for name in runs:
        print(f"{name:<52} " + " ".join(f"{sizes[name, q][0] / 1e6:5.2f} ({sizes[name, q][1] / 1e6:4.2f}) MB"
                                        for q in PRECISIONS))


if __name__ == "__main__":
    main()
