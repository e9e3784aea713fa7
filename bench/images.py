"""Sketch images -> 28x28: speed per image and closeness to Google's render of the same drawing.

    python bench/images.py [--repeat 3]

Every exported sketch in sketches/<word>/<key_id>.png|jpg is compared with `rasterize` of the same drawing's
strokes: Google's simplified strokes where full/simplified has the key_id, else `simplify_raw` of the raw
strokes. Errors are mean absolute pixel differences in 1/255 units. For scale: cropping the image to its ink
and resizing it to 28x28 (what a naive `predict` would do) is printed too, and a pen-width sweep renders
Google's own strokes with a Pillow pen of 3..30 px on a 512 px canvas. Timings are best of --repeat on a
shared machine: compare them with each other rather than across runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

from _common import REPO, quickdraw_root
from doodle.images import image_strokes, image_to_bitmap, load_ink
from doodle.raster import rasterize
from doodle.simplify import simplify_raw


def sketch_pairs(root):
    """(word, image path, strokes, True if Google's simplified) for every shared sketch."""
    out = []
    for word_dir in sorted((root / "sketches").iterdir()):
        word = word_dir.name
        simplified, raw = {}, {}
        for kind, table in (("simplified", simplified), ("raw", raw)):
            with open(root / "full" / kind / f"{word}.ndjson") as f:
                for line in f:
                    rec = json.loads(line)
                    table[str(rec["key_id"])] = rec["drawing"]
        for path in sorted(word_dir.iterdir()):
            if path.stem in simplified:
                out.append((word, path, simplified[path.stem], True))
            elif path.stem in raw:
                out.append((word, path, simplify_raw(raw[path.stem]), False))
    return out


def naive(path) -> np.ndarray:
    """Crop to the ink, centre in a square with Google's margin, box-resize to 28x28: the baseline."""
    ink = load_ink(path)
    ys, xs = np.nonzero(ink > 0.5)
    crop = ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    side = int(max(h, w) * 304 / 271)  # ink box ~ 255 units + a 16-unit pen, in Google's 304-unit frame
    canvas = np.zeros((side, side), np.float32)
    canvas[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = crop
    return np.asarray(Image.fromarray(canvas).resize((28, 28), Image.Resampling.BOX)) * 255


def pen_render(drawing, pen: float, canvas: int = 512, frac: float = 0.6, ss: int = 3) -> Image.Image:
    """Google's strokes drawn by an app: round pen of `pen` px, black on white, drawing 60% of the canvas."""
    big, r = canvas * ss, pen * ss / 2
    s = canvas * frac / 255 * ss
    im = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(im)
    for xs, ys in (st[:2] for st in drawing):
        pts = [(0.1 * big + r + x * s, 0.2 * big + r + y * s) for x, y in zip(xs, ys)]
        if len(pts) > 1:
            draw.line(pts, fill=0, width=round(2 * r), joint="curve")
        for x, y in pts:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return im.resize((canvas, canvas), Image.Resampling.BOX)


def best_ms(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return 1000 * best


def err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per image (best is kept)")
    args = ap.parse_args()
    root = quickdraw_root()
    pairs = sketch_pairs(root)
    print(f"{len(pairs)} sketches ({sum(g for *_, g in pairs)} with Google's simplified strokes, "
          f"the rest through simplify_raw)")

    # speed: the stages separately, then the whole call
    t_ink, t_strokes, t_raster, t_all = [], [], [], []
    for _, path, _, _ in pairs:
        t_ink.append(best_ms(lambda: load_ink(path), args.repeat))
        strokes = image_strokes(path)
        t_strokes.append(best_ms(lambda: image_strokes(path), args.repeat))
        t_raster.append(best_ms(lambda: rasterize(strokes), args.repeat))
        t_all.append(best_ms(lambda: image_to_bitmap(path), args.repeat))
    big = [i for i, (_, p, _, _) in enumerate(pairs) if max(Image.open(p).size) >= 600]
    print(f"ms per image, median / 90th pct / max over all; median over {len(big)} images >= 600 px")
    for name, t in (("load_ink", t_ink), ("image_strokes (incl. load)", t_strokes), ("rasterize", t_raster),
                    ("image_to_bitmap", t_all)):
        t = np.array(t)
        print(f"  {name:27s} {np.median(t):6.1f} / {np.percentile(t, 90):6.1f} / {t.max():6.1f}"
              f"   {np.median(t[big]):6.1f}")
    one_shot = [sys.executable, "-c", "import sys; from doodle.images import image_to_bitmap; "
                "image_to_bitmap(sys.argv[1])", str(pairs[big[0]][1] if big else pairs[0][1])]
    wall = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run(one_shot, check=True, cwd=REPO)
        wall.append(time.perf_counter() - t)
    print(f"  a fresh python process importing doodle.images and converting one 640 px image: "
          f"{1000 * min(wall):.0f} ms")

    # closeness to Google's render
    rows = []
    for word, path, strokes, google in pairs:
        want = rasterize(strokes)
        rows.append((word, path, google, err(image_to_bitmap(path), want), err(naive(path), want)))
    e = np.array([r[3] for r in rows])
    base = np.array([r[4] for r in rows])
    g = np.array([r[2] for r in rows])
    print("\nmean abs pixel error /255 against rasterize of the same drawing's strokes")
    print(f"  all {len(e)}: {e.mean():.2f} (median {np.median(e):.2f}, 90th pct {np.percentile(e, 90):.2f}, "
          f"max {e.max():.2f}); naive crop+resize: {base.mean():.2f}")
    print(f"  vs Google's simplified ({g.sum()}): {e[g].mean():.2f}   vs simplify_raw ({(~g).sum()}): "
          f"{e[~g].mean():.2f}")
    words = sorted({r[0] for r in rows})
    print("  per word: " + ", ".join(f"{w} {np.mean([r[3] for r in rows if r[0] == w]):.1f}" for w in words))
    print("  worst: " + ", ".join(f"{r[1].parent.name}/{r[1].name} {r[3]:.1f}"
                                  for r in sorted(rows, key=lambda r: -r[3])[:4]))

    # pen-width sweep on Google's own strokes
    sweep = []
    for word in ("cat", "airplane", "bicycle", "house", "flower", "eye"):
        with open(root / "full" / "simplified" / f"{word}.ndjson") as f:
            sweep += [json.loads(next(f))["drawing"] for _ in range(5)]
    print(f"\npen-width sweep ({len(sweep)} simplified drawings drawn 307 px wide on a 512 px canvas):")
    for pen in (3, 8, 16, 30):
        e = [err(image_to_bitmap(pen_render(d, pen)), rasterize(d)) for d in sweep]
        print(f"  {pen:2d} px pen ({pen * 255 / 307:4.1f} units; Google's is 16): {np.mean(e):.2f}")


if __name__ == "__main__":
    main()
