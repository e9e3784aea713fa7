"""Sketch images versus strokes: the same held-out drawings, predicted from users' exported images and from strokes.

For the 16 numpy_bitmap categories, every raw drawing in full/raw/<word>.ndjson that has an exported image in
sketches/<word>/<key_id>.png|jpg (dark pen of varying width, off-centre, 256-640 px, some JPEG) is predicted twice by
a model trained on those categories: once from its strokes (Google's raw->simplified recipe, then doodle.rasterize)
and once from the image (doodle.images.image_to_bitmap). Target: image accuracy within 3 points of stroke accuracy.

Only drawings the model never saw are scored. Nearly all sketched drawings are also rows of the numpy_bitmap files
(Google rendered them; our render of the strokes matches one row to within 0.3/255, the next-closest row is 6/255
or more away), and in the shared sample all of those rows lie in the first 75% of their file, which
configs/quickdraw16.yaml trains and validates on. So by default the bench trains configs/quickdraw16.yaml on a copy
of the bitmap files in which each sketched drawing's row is moved to the end of its file: the tail split then puts
every one of them in the test set, and the run's own split.npz is checked to say so. With --model, a sketch is held
out only if its row is in that run's test split (or in no bitmap file at all); the others are excluded and counted.

Usage: python bench/sketches.py [--model RUN [--bitmaps DIR]] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO, quickdraw_root
from doodle.checkpoint import load_model
from doodle.config import load_config
from doodle.images import image_to_bitmap
from doodle.rasterpool import rasterize_batch
from doodle.strokes import iter_drawings
from doodle.train import train

MATCH = 2.0  # mean |difference| /255 below which a bitmap row is the same drawing (measured: <= 0.3 vs >= 6.3)


def pairs(root: Path, classes: list[str]):
    """(class index, simplified strokes, image path) for every raw drawing with an exported sketch."""
    for c, word in enumerate(classes):
        folder = root / "sketches" / word
        images = {p.stem: p for p in folder.iterdir()} if folder.is_dir() else {}
        for rec in iter_drawings(root / "full" / "raw" / f"{word}.ndjson"):
            if str(rec["key_id"]) in images:
                yield c, rec["drawing"], images[str(rec["key_id"])]


def bitmap_rows(renders: np.ndarray, bitmaps: np.ndarray) -> list[np.ndarray]:
    """For each render (28x28 of a drawing's strokes), the rows of `bitmaps` (N, 784) that are the same drawing."""
    flat = bitmaps.reshape(len(bitmaps), -1).astype(np.int16)
    return [np.flatnonzero(np.abs(flat - r.reshape(-1)).mean(axis=1) < MATCH) for r in renders.astype(np.int16)]


def find_rows(items, renders, classes, bitmap_dir: Path) -> list[np.ndarray]:
    """Per item, the rows of bitmap_dir/<its word>.npy holding the same drawing (empty: in no row)."""
    rows: list[np.ndarray] = [np.empty(0, np.int64)] * len(items)
    for c, word in enumerate(classes):
        mine = [i for i, (k, _, _) in enumerate(items) if k == c]
        if mine:
            found = bitmap_rows(renders[mine], np.load(bitmap_dir / f"{word}.npy", mmap_mode="r"))
            for i, r in zip(mine, found):
                rows[i] = r
    return rows


def held_out_mirror(items, rows, classes, source_dir: Path, mirror: Path) -> None:
    """Copy each word's bitmap file into mirror/full/numpy_bitmap/ with its sketched rows moved to the end."""
    out = mirror / "full" / "numpy_bitmap"
    out.mkdir(parents=True)
    for c, word in enumerate(classes):
        bitmaps = np.load(source_dir / f"{word}.npy")
        sketched = np.unique(np.concatenate([np.empty(0, np.int64)] + [rows[i] for i, (k, _, _) in enumerate(items)
                                                                        if k == c]))
        keep = np.setdiff1d(np.arange(len(bitmaps)), sketched)
        np.save(out / f"{word}.npy", bitmaps[np.concatenate([keep, sketched])])


def test_membership(run: Path, rows, items, classes) -> np.ndarray:
    """Per item: True if the run never saw the drawing (its rows are all in the run's test split, or it has none)."""
    with np.load(run / "split.npz", allow_pickle=False) as f:
        counts, test = f["counts"], set(f["test"].tolist())
    if len(counts) != len(classes):
        raise SystemExit(f"{run}/split.npz has {len(counts)} classes, the model {len(classes)}")
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    seen = []
    for (c, _, _), r in zip(items, rows):
        used = r[r < counts[c]]  # rows past per_category were never loaded
        seen.append(any(int(offsets[c] + j) not in test for j in used))
    return ~np.array(seen, dtype=bool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a run trained on the 16 bitmap categories (source numpy_bitmap)")
    ap.add_argument("--bitmaps", type=Path, help="the numpy_bitmap folder --model was trained from "
                                                 "(default: the shared sample's full/numpy_bitmap)")
    ap.add_argument("--keep", type=Path, help="keep the held-out training's mirror and run in this new folder")
    args = ap.parse_args()
    root = quickdraw_root()
    shared_bitmaps = root / "full" / "numpy_bitmap"
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        if args.model is None:
            classes = load_config(REPO / "configs" / "quickdraw16.yaml")["data"]["categories"]
            items = list(pairs(root, classes))
            renders = rasterize_batch([d for _, d, _ in items])  # Google's recipe, as in the bitmap files
            rows = find_rows(items, renders, classes, shared_bitmaps)
            held_out_mirror(items, rows, classes, shared_bitmaps, work / "mirror")
            print("training configs/quickdraw16.yaml with every sketched drawing moved into the test split "
                  "(pass --model to reuse a run) ...", flush=True)
            run = Path(train(REPO / "configs" / "quickdraw16.yaml",
                             [f"data.base_url={(work / 'mirror').resolve().as_uri()}"],
                             data_dir=work / "data", out=work / "run").run)
            bitmap_dir = work / "mirror" / "full" / "numpy_bitmap"
        else:
            run, bitmap_dir = args.model, args.bitmaps or shared_bitmaps
        model, meta = load_model(run)
        if meta["config"]["data"]["source"] != "numpy_bitmap":
            raise SystemExit(f"{run}: trained from {meta['config']['data']['source']}; this bench needs a numpy_bitmap "
                             "run (configs/quickdraw16.yaml) to tell which drawings it saw")
        classes = meta["classes"]
        r = meta["raster"]
        items = list(pairs(root, classes))
        renders = rasterize_batch([d for _, d, _ in items])
        rows = find_rows(items, renders, classes, bitmap_dir)
        unseen = test_membership(run, rows, items, classes)
        in_no_row = np.array([len(x) == 0 for x in rows])
        held = [it for it, u in zip(items, unseen) if u]
        y = np.array([c for c, _, _ in held])
        from_strokes = rasterize_batch([d for _, d, _ in held], size=r["size"], line_width=r["line_width"],
                                       padding=r["padding"])
        t0 = time.perf_counter()
        from_images = np.stack([image_to_bitmap(p, size=r["size"], line_width=r["line_width"], padding=r["padding"])
                                for _, _, p in held])
        ms = (time.perf_counter() - t0) / max(len(held), 1) * 1000
        acc_s = float(np.mean(model.predict_proba(from_strokes).argmax(1) == y))
        acc_i = float(np.mean(model.predict_proba(from_images).argmax(1) == y))
        mae = float(np.abs(from_strokes.astype(np.int16) - from_images).mean())
    print(f"{len(items)} sketched drawings in {len(classes)} categories; model {run}")
    print(f"  held out (the model never saw them): {len(held)} = {int((unseen & ~in_no_row).sum())} rows of its "
          f"test split + {int((unseen & in_no_row).sum())} in no bitmap file")
    print(f"  excluded: {len(items) - len(held)} (their bitmap rows are in the run's train or validation split)")
    if len(held) < 100:
        print(f"  note: {len(held)} drawings are too few for a stable figure; run without --model to train with "
              "every sketch held out")
    print(f"accuracy from strokes: {acc_s:.1%}   (held-out drawings only)")
    print(f"accuracy from images:  {acc_i:.1%}   (difference {100 * (acc_s - acc_i):+.1f} points; target within 3)")
    print(f"mean pixel difference image vs strokes render: {mae:.2f}/255; images prepared in {ms:.1f} ms each")


if __name__ == "__main__":
    main()
