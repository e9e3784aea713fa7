"""`doodle play`: server time per prediction, target < 20 ms median for a typical drawing.

Posts Quick, Draw! raw drawings to the real app (Starlette's TestClient, in process, no network): a typical one
(the shared raw drawing nearest 200 points), the longest shared one, and a 2,000-point drawing (the typical one
resampled along its strokes, like a fast pen sampling a slow hand). Reports the
server's own time (its Server-Timing header: JSON parsing, checks, Google's simplification, rasterising, the
forward pass), the whole in-process round trip, and the three steps alone. Without --model it first trains a
small offline model with the offline config's layer sizes (784-256-128-8).
Usage: python bench/play.py [--model RUN] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO, quickdraw_root
from starlette.testclient import TestClient

from doodle.checkpoint import load_model
from doodle.play import check_drawing, make_app, probabilities
from doodle.raster import rasterize
from doodle.simplify import simplify_raw
from doodle.train import train


def nearest(target: int) -> tuple[str, dict, int]:
    """The shared raw drawing whose point count is nearest `target`: (file name, record, points)."""
    best = None
    for path in sorted((quickdraw_root() / "full" / "raw").glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            n = sum(len(s[0]) for s in rec["drawing"])
            if best is None or abs(n - target) < abs(best[2] - target):
                best = (path.name, rec, n)
    return best


def densify(rec: dict, total: int) -> dict:
    """The drawing resampled to `total` points, spread over its strokes by length (times interpolated too)."""
    strokes = [np.array(s, dtype=np.float64) for s in rec["drawing"]]  # each (3, n)
    arcs = [np.concatenate([[0], np.cumsum(np.hypot(*np.diff(s[:2], axis=1)))]) for s in strokes]
    lengths = np.array([a[-1] for a in arcs]) + 1e-9
    counts = np.maximum(2, np.round(total * lengths / lengths.sum())).astype(int)
    counts[np.argmax(counts)] += total - counts.sum()
    out = []
    for s, a, n in zip(strokes, arcs, counts):
        at = np.linspace(0, a[-1], n)
        out.append([np.round(np.interp(at, a, row), 2).tolist() for row in s])
    return dict(rec, drawing=out)


def figures(ms: list[float]) -> str:
    return f"median {statistics.median(ms):6.2f} ms, p90 {np.percentile(ms, 90):6.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    typical = nearest(200)
    drawings = [typical, nearest(10 ** 6), (f"{typical[0]} resampled", densify(typical[1], 2000), 2000)]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or Path(train(REPO / "configs" / "offline.yaml", ["data.per_category=200",
                                                                                "train.epochs=1"],
                                             data_dir=Path(tmp) / "data", out=Path(tmp) / "run", workers=1).run)
        client = TestClient(make_app(model_dir, Path(tmp) / "mine"))
        model, meta = load_model(model_dir)
        raster = meta["raster"]
        print(f"model: {' -> '.join(map(str, meta['layer_sizes']))}, {args.runs} requests per drawing")
        for name, rec, points in drawings:
            body = json.dumps({"drawing": rec["drawing"]})
            server, trip = [], []
            for i in range(args.runs + 5):
                t0 = time.perf_counter()
                res = client.post("/api/predict", content=body, headers={"Content-Type": "application/json"})
                elapsed = (time.perf_counter() - t0) * 1000
                assert res.status_code == 200, res.text
                if i >= 5:  # warm-up
                    trip.append(elapsed)
                    server.append(float(res.headers["server-timing"].split("dur=")[1]))
            steps = {"check": [], "simplify": [], "rasterize": [], "forward": []}
            for _ in range(args.runs):
                t0 = time.perf_counter()
                strokes = check_drawing(json.loads(body)["drawing"])
                t1 = time.perf_counter()
                simplified = simplify_raw(strokes)
                t2 = time.perf_counter()
                bitmap = rasterize(simplified, size=raster["size"], line_width=raster["line_width"],
                                   padding=raster["padding"])
                t3 = time.perf_counter()
                probabilities(model, bitmap[None])
                t4 = time.perf_counter()
                for key, a, b in (("check", t0, t1), ("simplify", t1, t2), ("rasterize", t2, t3), ("forward", t3, t4)):
                    steps[key].append((b - a) * 1000)
            print(f"\n{name} key_id {rec['key_id']}: {points:,} points in {len(rec['drawing'])} strokes, "
                  f"{len(body):,} bytes of JSON")
            print(f"  server time per prediction  {figures(server)}   (target < 20 ms median)")
            print(f"  in-process round trip       {figures(trip)}")
            print("  steps (median): " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in steps.items()))


if __name__ == "__main__":
    main()
