"""Are doodle's explanations about the network? Two checks from the literature, on held-out shared drawings.

1. Sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps"): the saliency maps of the trained network
   against those of the same network with its untrained initial weights (same config, same seed: what training
   started from). A map that explains the network must change when the weights do: the mean Spearman rank
   correlation between the two maps of a drawing must be low. Reported for the saliency (signed and absolute
   values, as Adebayo et al. do) and for gradient x input, which multiplies by the ink and so keeps the drawing's
   shape whatever the weights.
2. Faithfulness of stroke attribution (deletion curves): strokes are deleted one at a time, most positive
   contribution first, and the drawing re-rasterized after each deletion; p(top guess) should fall faster than
   when deleting in random order (10 orders per drawing) or in drawing order (first stroke first). Each curve is
   p against the fraction of strokes deleted (0..1); its area (AUC) is lower for a faster fall.

Held out: the first k drawings of full/simplified/<word>.ndjson are rows of full/numpy_bitmap/<word>.npy
(pairs.json), which configs/quickdraw16.yaml trains on. So without --model the bench trains quickdraw16 on a copy of
the bitmap files with those rows moved to the end, where the tail split makes them test rows (bench/sketches.py's
way). With --model RUN --bitmaps DIR (the numpy_bitmap folder the run trained from), only drawings whose rows are
in the run's test split are used; the run's split.npz says which.
Usage: python bench/explain.py [--model RUN --bitmaps DIR | --keep DIR] [--set key=value ...] [--figures DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sketches import find_rows, held_out_mirror, test_membership

from _common import REPO, quickdraw_root
from doodle.checkpoint import load_model
from doodle.config import load_config
from doodle.explain import input_gradients, log_probability, stroke_contributions
from doodle.inputs import Drawing, to_bitmaps
from doodle.nn import MLP, ModelSpec
from doodle.pixels import to_float
from doodle.rasterpool import rasterize_batch
from doodle.report import INK, MUTED, WHITE, nice_ticks, save_png, typeface
from doodle.strokes import iter_drawings
from doodle.train import train

RANDOM_ORDERS = 10  # random deletion orders per drawing, averaged
GRID = np.linspace(0.0, 1.0, 101)  # fractions of strokes deleted at which curves are compared
BATCH = 128


def paired(root: Path, classes: list[str]) -> list[tuple[int, list, None]]:
    """(class index, simplified strokes, None) for every simplified drawing that is also a bitmap row (pairs.json)."""
    pairs = json.loads((root / "pairs.json").read_text())["pairs"]
    items = []
    for c, word in enumerate(classes):
        for k, rec in enumerate(iter_drawings(root / "full" / "simplified" / f"{word}.ndjson")):
            if k >= pairs.get(word, 0):
                break
            items.append((c, rec["drawing"], None))
    return items


def ranks(a: np.ndarray) -> np.ndarray:
    """Ranks of each row of a (N, P), ties given their average rank (as Spearman's correlation needs)."""
    out = np.empty(a.shape)
    for i, row in enumerate(a):
        order = np.argsort(row, kind="stable")
        sorted_row = row[order]
        r = np.empty(len(row))
        r[order] = np.arange(len(row), dtype=np.float64)
        # average the ranks of tied values
        _, start, counts = np.unique(sorted_row, return_index=True, return_counts=True)
        for s, n in zip(start, counts):
            if n > 1:
                r[order[s:s + n]] = s + (n - 1) / 2
        out[i] = r
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row Spearman rank correlation of a and b (N, P)."""
    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    return (ra * rb).sum(axis=1) / np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1) + 1e-30)


def saliencies(model: MLP, x_u8: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(N, P) d log p(target) / d pixel, batch by batch, through the model's views and temperature."""
    out = []
    for i in range(0, len(x_u8), BATCH):
        g, _ = input_gradients(model, to_float(x_u8[i:i + BATCH]), log_probability(targets[i:i + BATCH]))
        out.append(g)
    return np.concatenate(out)


def deletion_curves(model: MLP, strokes: list, orders: list[list[int]], c: int, raster: dict) -> np.ndarray:
    """(len(orders), len(GRID)): p(c) as the strokes are deleted one by one in each order, against the fraction
    deleted; every state of every order re-rasterized and predicted in one batch."""
    n = len(strokes)
    states = [[s for j, s in enumerate(strokes) if j not in set(order[:k])] for order in orders for k in range(n)]
    bitmaps = to_bitmaps([Drawing(s) for s in states], raster)
    blank = np.zeros((1, *bitmaps.shape[1:]), np.uint8)  # every stroke deleted: a blank canvas
    p = model.predict_proba(np.concatenate([bitmaps, blank]))[:, c].astype(np.float64)
    per_order = np.concatenate([p[:-1].reshape(len(orders), n), np.full((len(orders), 1), p[-1])], axis=1)
    return np.array([np.interp(GRID, np.arange(n + 1) / n, row) for row in per_order])


def auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve (rows on GRID), by the trapezoid rule."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(GRID)).sum(axis=1)


def draw_deletion(curves: dict[str, np.ndarray], aucs: dict[str, float], n: int, path: Path) -> None:
    """Mean deletion curve per order, with its AUC in the legend."""
    colours = {"attributed": (178, 24, 43), "random": (90, 90, 90), "drawing order": (33, 113, 181)}
    w, h, left, top, side = 620, 470, 70, 70, 360
    img = Image.new("RGB", (w, h), WHITE)
    d = ImageDraw.Draw(img)
    d.text((20, 14), f"Deletion curves: {n} held-out drawings", fill=INK, font=typeface(17))
    d.text((20, 38), "strokes deleted one by one, drawing re-rasterized; lower area = faithful attribution",
           fill=MUTED, font=typeface(12))

    def px(fx, fy):
        return left + fx * side, top + (1 - fy) * side

    for v in nice_ticks(0, 1):
        d.line([px(0, v), px(1, v)], fill=(225, 225, 225))
        d.text((left - 6, px(0, v)[1]), f"{v:.1f}", fill=MUTED, font=typeface(11), anchor="rm")
        d.text((px(v, 0)[0], top + side + 6), f"{v:.1f}", fill=MUTED, font=typeface(11), anchor="mt")
    d.rectangle((left, top, left + side, top + side), outline=INK)
    d.text((left + side / 2, top + side + 24), "fraction of strokes deleted", fill=INK, font=typeface(12), anchor="mt")
    d.text((left, top - 16), "mean p(top guess)", fill=INK, font=typeface(12))
    for k, (name, c) in enumerate(curves.items()):
        d.line([px(x, y) for x, y in zip(GRID, c)], fill=colours[name], width=3)
        y = top + 20 + 22 * k
        d.line([(left + side + 16, y), (left + side + 40, y)], fill=colours[name], width=3)
        d.text((left + side + 46, y), f"{name}: AUC {aucs[name]:.3f}", fill=INK, font=typeface(12), anchor="lm")
    save_png(img, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a quickdraw16 run (numpy_bitmap); default: train one with the "
                                               "paired drawings held out")
    ap.add_argument("--bitmaps", type=Path, help="the numpy_bitmap folder --model trained from")
    ap.add_argument("--set", action="append", default=[], help="config override for the training, e.g. "
                                                               "train.epochs=20")
    ap.add_argument("--figures", type=Path, help="write deletion.png here")
    ap.add_argument("--keep", type=Path, help="keep the training's mirror, data and run in this new folder "
                                              "(docs/explain.png came from such a run, train.epochs=20)")
    ap.add_argument("--limit", type=int, help="use only the first N held-out drawings (a quick look)")
    args = ap.parse_args()
    root = quickdraw_root()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        classes = load_config(REPO / "configs" / "quickdraw16.yaml")["data"]["categories"]
        items = paired(root, classes)
        renders = rasterize_batch([d for _, d, _ in items])  # Google's recipe (the defaults), as in the bitmap files
        if args.model is None:
            rows = find_rows(items, renders, classes, root / "full" / "numpy_bitmap")
            held_out_mirror(items, rows, classes, root / "full" / "numpy_bitmap", work / "mirror")
            print("training configs/quickdraw16.yaml with the paired drawings moved into the test split ...",
                  flush=True)
            run = Path(train(REPO / "configs" / "quickdraw16.yaml",
                             [f"data.base_url={(work / 'mirror').resolve().as_uri()}", *args.set],
                             data_dir=work / "data", out=work / "run").run)
            bitmap_dir = work / "mirror" / "full" / "numpy_bitmap"
        else:
            if args.bitmaps is None:
                raise SystemExit("--model needs --bitmaps: the numpy_bitmap folder the run trained from")
            run, bitmap_dir = args.model, args.bitmaps
        model, meta = load_model(run)
        if meta["classes"] != classes:
            raise SystemExit(f"{run}: not a quickdraw16 run (classes {meta['classes'][:3]}...)")
        rows = find_rows(items, renders, classes, bitmap_dir)
        held = [it for it, unseen in zip(items, test_membership(run, rows, items, classes)) if unseen][:args.limit]
        raster = meta["raster"]
        x = to_bitmaps([Drawing(d) for _, d, _ in held], raster)  # (N, S, S) the model's input
        y = np.array([c for c, _, _ in held])
        t0 = time.perf_counter()
        p = model.predict_proba(x)  # (N, C)
        top = p.argmax(axis=1)
        print(f"model {run}: {' -> '.join(map(str, meta['layer_sizes']))}, tta {model.tta}, T = "
              f"{model.temperature:.3f}; {len(held)} of {len(items)} paired drawings held out "
              f"(top-1 {np.mean(top == y):.1%} on them); load {load[0]:.1f} (2 cores)")

        # 1. The sanity check: trained vs the untrained initial weights of the same run.
        initial = MLP.from_spec(ModelSpec.from_meta(meta), seed=meta["config"]["train"]["seed"])
        trained_s, initial_s = saliencies(model, x, top), saliencies(initial, x, top)
        ink = to_float(x)
        print("\nsanity check (Adebayo et al. 2018): Spearman rank correlation, trained vs untrained initial weights,"
              f" per drawing (mean, sd; median) over {len(held)} drawings, each map of its top guess")
        for name, a, b in (("saliency", trained_s, initial_s), ("|saliency|", np.abs(trained_s), np.abs(initial_s)),
                           ("gradient x input", trained_s * ink, initial_s * ink),
                           ("|gradient x input|", np.abs(trained_s * ink), np.abs(initial_s * ink))):
            r = spearman(a, b)
            print(f"  {name:<20} {r.mean():+.3f} (sd {r.std():.3f}; median {np.median(r):+.3f})")
        on_ink = ink > 0
        r_ink = np.array([spearman(trained_s[i:i + 1, on_ink[i]], initial_s[i:i + 1, on_ink[i]])[0]
                          for i in range(len(held))])
        print(f"  {'saliency on the ink':<20} {r_ink.mean():+.3f} (sd {r_ink.std():.3f}) (the pixels gradient x "
              "input keeps)")
        same = spearman(trained_s[:-1], trained_s[1:])
        print(f"  for scale: two different drawings under the trained weights: saliency {same.mean():+.3f}")

        # 2. Deletion curves.
        rng = np.random.default_rng(0)
        curves = {"attributed": [], "random": [], "drawing order": []}
        n_strokes = []
        for (_, strokes, _), c, pc in zip(held, top, p[np.arange(len(held)), top]):
            contrib, _ = stroke_contributions(model, strokes, raster, int(c), float(pc))
            n = len(strokes)
            n_strokes.append(n)
            orders = [list(np.argsort(-contrib, kind="stable")), list(range(n))] + \
                [list(rng.permutation(n)) for _ in range(RANDOM_ORDERS)]
            got = deletion_curves(model, strokes, orders, int(c), raster)
            curves["attributed"].append(got[0])
            curves["drawing order"].append(got[1])
            curves["random"].append(got[2:].mean(axis=0))
        curves = {k: np.array(v) for k, v in curves.items()}
        aucs = {k: auc(v) for k, v in curves.items()}
        n_strokes = np.array(n_strokes)
        seconds = time.perf_counter() - t0
        print(f"\ndeletion curves over {len(held)} drawings ({np.mean(n_strokes):.1f} strokes on average, "
              f"{np.sum(n_strokes == 1)} with one stroke): AUC of p(top guess) vs fraction of strokes deleted "
              "(lower = faster fall)")
        for k, v in aucs.items():
            print(f"  {k:<14} mean AUC {v.mean():.3f}   (p after deleting half: {curves[k][:, 50].mean():.3f})")
        diff = aucs["random"] - aucs["attributed"]
        boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
        print(f"  random - attributed: {diff.mean():+.3f} (95% bootstrap interval {np.percentile(boot, 2.5):+.3f} .. "
              f"{np.percentile(boot, 97.5):+.3f}); attributed lower on {np.mean(diff > 1e-9):.0%} of the drawings, "
              f"tied on {np.mean(np.abs(diff) <= 1e-9):.0%}")
        many = n_strokes >= 3
        print(f"  drawings with 3+ strokes ({many.sum()}): attributed {aucs['attributed'][many].mean():.3f}, random "
              f"{aucs['random'][many].mean():.3f}, drawing order {aucs['drawing order'][many].mean():.3f}")
        print(f"\n{seconds:.0f} s for both checks")
        if args.figures:
            args.figures.mkdir(parents=True, exist_ok=True)
            draw_deletion({k: v.mean(axis=0) for k, v in curves.items()}, {k: float(v.mean()) for k, v in aucs.items()},
                          len(held), args.figures / "deletion.png")
            print(f"figure: {args.figures / 'deletion.png'}")


if __name__ == "__main__":
    main()
