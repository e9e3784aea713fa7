"""Sketch images versus strokes: the same drawings, predicted from users' exported images and from strokes.

For the 16 numpy_bitmap categories, every raw drawing in full/raw/<word>.ndjson that has an exported image in
sketches/<word>/<key_id>.png|jpg (dark pen of varying width, off-centre, 256-640 px, some JPEG) is predicted twice by
a model trained on those categories: once from its strokes (Google's raw->simplified recipe, then doodle.rasterize)
and once from the image (doodle.images.image_to_bitmap). Target: image accuracy within 3 points of stroke accuracy.

Usage: python bench/sketches.py [--model RUN]   (without --model it trains configs/quickdraw16.yaml first)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import REPO, quickdraw_root

from doodle.checkpoint import load_model
from doodle.images import image_to_bitmap
from doodle.raster import rasterize_batch
from doodle.strokes import iter_drawings
from doodle.train import train


def pairs(root: Path, classes: list[str]):
    """(class index, simplified strokes, image path) for every raw drawing with an exported sketch."""
    for c, word in enumerate(classes):
        images = {p.stem: p for p in (root / "sketches" / word).iterdir()} if (root / "sketches" / word).is_dir() else {}
        for rec in iter_drawings(root / "full" / "raw" / f"{word}.ndjson"):
            if str(rec["key_id"]) in images:
                yield c, rec["drawing"], images[str(rec["key_id"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, help="a run trained on the 16 bitmap categories")
    args = ap.parse_args()
    root = quickdraw_root()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.model
        if run is None:
            print("training configs/quickdraw16.yaml (pass --model to reuse a run) ...", flush=True)
            run = Path(train(REPO / "configs" / "quickdraw16.yaml", [f"data.base_url={root.resolve().as_uri()}"],
                             data_dir=Path(tmp) / "data", out=Path(tmp) / "run").run)
        model, meta = load_model(run)
        classes = meta["classes"]
        r = meta["raster"]
        items = list(pairs(root, classes))
        y = np.array([c for c, _, _ in items])
        from_strokes = rasterize_batch([d for _, d, _ in items], size=r["size"], line_width=r["line_width"],
                                       padding=r["padding"])
        t0 = time.perf_counter()
        from_images = np.stack([image_to_bitmap(p, size=r["size"], line_width=r["line_width"], padding=r["padding"])
                                for _, _, p in items])
        ms = (time.perf_counter() - t0) / len(items) * 1000
        acc_s = float(np.mean(model.predict_proba(from_strokes).argmax(1) == y))
        acc_i = float(np.mean(model.predict_proba(from_images).argmax(1) == y))
        mae = float(np.abs(from_strokes.astype(np.int16) - from_images).mean())
    print(f"{len(items)} drawings in {len(classes)} categories; images prepared in {ms:.1f} ms each")
    print(f"accuracy from strokes: {acc_s:.1%}")
    print(f"accuracy from images:  {acc_i:.1%}   (difference {100 * (acc_s - acc_i):+.1f} points; target within 3)")
    print(f"mean pixel difference image vs strokes render: {mae:.2f}/255")


if __name__ == "__main__":
    main()
