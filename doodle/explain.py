"""Why did it guess that? The chain rule carried one step past the first layer, to the drawing itself.

For one drawing (`doodle explain DRAWING`):
- saliency: d log p(class) / d pixel for the 784 pixels, from one backward pass through the model's own
  graph (MLP.logits_graph with the pixels as a leaf that requires a gradient): red pixels argue for the
  class (more ink there would raise it), blue ones against;
- gradient x input: that map times the ink, a first-order share of the guess for each inked pixel;
- stroke attribution: p(class) minus p(class) of the drawing rendered again without each stroke, by the
  front door's renderer (doodle.inputs.to_bitmap's `rasterize` with the model's raster settings, bit for bit;
  the network's input of a drawing left with no stroke is a blank canvas);
- the runner-up, and what separates the two: the saliency of log p(class) - log p(runner-up).
For the network (`doodle explain --units`): the first layer's templates of its most important hidden units
(importance: mean activation on the test split times the norm of the outgoing weights), and per class the
mean saliency of its test drawings.

Everything goes the way of `doodle predict`: the same reading (doodle.inputs), the same bitmap, the same
test-time views, the same calibrated temperature, so the probabilities are predict's. With test-time augmentation
p = softmax(mean over views of the logits / T). Each view is a linear map of the drawing (a one-pixel shift with
zero fill, a mirror): the views go into the graph as one stacked leaf, one backward pass gives each view's
gradient, and each is carried back to the drawing through its view's transpose (the opposite shift, the mirror
again). That is the chain rule through the views, exact: tests check it against finite differences of the predict path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np

from doodle import autodiff as ad
from doodle.autodiff import Tensor
from doodle.checkpoint import load_model, resolve_model_path
from doodle.errors import DoodleError, lookup
from doodle.evaluate import test_split_bitmaps
from doodle.explaindraw import render_explanation, render_units
from doodle.inputs import entries, readable
from doodle.nn import MLP
from doodle.pixels import TTA, mirror_images, shift_images, to_float, tta_views
from doodle.predict import probabilities, top_categories
from doodle.progress import NULL_REPORTER, Reporter
from doodle.raster import RasterSpec, flatten, render_flat
from doodle.report import save_png

TOP = 5  # classes listed beside an explanation
UNITS = 16  # hidden units --units draws
CLASS_ROWS = 200  # test drawings per class averaged into its template, at most
GRAD_BATCH = 128  # drawings per backward pass (times the test-time views)


# --- the drawing, read through the front door as `doodle predict` reads it --------------------------------


@dataclass
class Subject:
    """The drawing explained: its bitmap as the model reads it, and the user's strokes when there are some."""

    name: str  # "file.ndjson:1", "<stdin>:1" or the image's path
    bitmap: np.ndarray  # (S, S) uint8, the network's input
    strokes: list | None  # simplified strokes [[xs, ys], ...] in 0..255; None for an image or a .npy row


def read_drawing(source: str, raster: dict, stdin: IO | None = None) -> Subject:
    """The first drawing DRAWING names, read and rendered by `doodle predict`'s own path (doodle.inputs). An
    image's strokes are lines traced from its ink, not the pen's strokes, so it gets no stroke attribution."""
    (entry, bitmap), *_ = readable(entries([source], raster, stdin=stdin, limit=1))
    drawing = entry.drawing  # an ndjson line: the user's strokes
    strokes = drawing.strokes if drawing is not None and drawing.line is not None else None
    return Subject(entry.name, bitmap, strokes)


# --- the chain rule carried to the drawing ----------------------------------------------------------------


def _views(model: MLP) -> list[tuple[bool, int, int]]:
    """The (mirrored, dy, dx) views predict_logits averages; without test-time augmentation, the drawing."""
    return lookup(TTA, model.tta, "tta") or [(False, 0, 0)]


def view_transpose(g: np.ndarray, view: tuple[bool, int, int]) -> np.ndarray:
    """A view's transpose applied to g (N, P): the view is shift(mirror(x)), a partial permutation of the
    pixels, so its transpose is mirror(shift back)."""
    mirrored, dy, dx = view
    if dy or dx:
        g = shift_images(g, -dy, -dx)
    return mirror_images(g) if mirrored else g


def log_softmax(z: Tensor) -> Tensor:
    """Row-wise log-probabilities (N, C) from the graph's ops; the row max is subtracted so exp cannot overflow."""
    z = z - z.max(axis=1, keepdims=True)
    return z - ad.log(ad.exp(z).sum(axis=1, keepdims=True))


Score = Callable[[Tensor], Tensor]  # log-probabilities (N, C) -> the scalar whose gradient we want


def input_gradients(model: MLP, x: np.ndarray, score: Score) -> tuple[np.ndarray, np.ndarray]:
    """(d score / d x (N, P), log-probabilities (N, C)) for float drawings x (N, P), in eval mode with the
    model's test-time views and temperature: log p = log_softmax(mean over views of the logits / T)."""
    x = np.asarray(x, dtype=model.dtype)
    views = _views(model)
    leaf = Tensor(np.concatenate(list(tta_views(x, views))), requires_grad=True, name="x")  # (V*N, P), view-major
    logits = model.logits_graph(leaf)  # (V*N, C)
    mean = logits.reshape(len(views), len(x), -1).mean(axis=0)  # (N, C): predict_logits' average
    logp = log_softmax(mean * (1.0 / model.temperature))
    score(logp).backward()
    assert leaf.grad is not None  # the score depends on x (backward refuses one that does not)
    g = leaf.grad.reshape(len(views), len(x), -1)  # (V, N, P): each view's own gradient
    total = sum(view_transpose(gv, v) for gv, v in zip(g, views))
    assert isinstance(total, np.ndarray)  # there is always a view: a sum of arrays, not sum()'s start 0
    return total, logp.value


def log_probability(c) -> Score:
    """The summed log-probability of class c (an int, or one per drawing)."""
    return lambda logp: ad.pick(logp, np.broadcast_to(np.asarray(c), logp.shape[:1])).sum()


def log_odds(a: int, b: int) -> Score:
    """log p(a) - log p(b) (= (z_a - z_b) / T: the log-sum-exp cancels), summed over the drawings."""
    pa, pb = log_probability(a), log_probability(b)
    return lambda logp: pa(logp) - pb(logp)


# --- strokes ------------------------------------------------------------------------------------------------


def without_each_stroke(strokes: list, raster: dict) -> np.ndarray:
    """(n, S, S) uint8: the drawing rendered again without stroke i, for each of its n strokes, by the front door's
    renderer (`rasterize`'s own render_flat, all n in one pass; a drawing left with no stroke is a blank canvas)."""
    spec = RasterSpec(size=raster["size"], line_width=raster["line_width"], padding=raster["padding"])
    rest = [strokes[:i] + strokes[i + 1:] for i in range(len(strokes))]
    out = np.zeros((len(rest), spec.size, spec.size), np.uint8)
    kept = [i for i, r in enumerate(rest) if r]
    if kept:
        out[kept] = render_flat(*flatten([rest[i] for i in kept]), spec)
    return out


def stroke_contributions(model: MLP, strokes: list, raster: dict, c: int, p: float,
                         run: str | Path = "the model") -> tuple[np.ndarray, np.ndarray]:
    """(contribution (n,), p(c) without each stroke (n,)): contribution = p - p(c without the stroke)."""
    without = probabilities(model, without_each_stroke(strokes, raster), run)[:, c]  # (n,)
    return p - without.astype(np.float64), without


# --- one drawing ----------------------------------------------------------------------------------------------


@dataclass
class Explanation:
    """Why the network gave `classes[target]` the probability it did, for one drawing."""

    input: str
    model: str
    classes: list[str]
    probabilities: np.ndarray  # (C,) calibrated, with test-time views: `doodle predict`'s numbers
    target: int  # the class explained
    target_source: str  # "top guess" or "--class"
    other: int  # the runner-up: the most probable class besides target
    bitmap: np.ndarray  # (S, S) uint8
    saliency: np.ndarray  # (S, S) d log p(target) / d pixel
    gradient_x_input: np.ndarray  # (S, S)
    difference: np.ndarray  # (S, S) d [log p(target) - log p(other)] / d pixel
    strokes: list | None
    contributions: np.ndarray | None  # (n,) p(target) minus p(target) without stroke i
    without: np.ndarray | None  # (n,) p(target) without stroke i
    temperature: float
    tta: str
    out: str | None = None

    def top(self, k: int = TOP) -> list[dict]:
        """The k most probable classes, ties in class order (as `doodle predict`)."""
        return top_categories(self.probabilities, self.classes, k)

    def to_json(self) -> dict:
        def rows(a):
            return [[float(f"{v:.6g}") for v in row] for row in a]

        strokes = None
        if self.contributions is not None:
            assert self.strokes is not None and self.without is not None  # what the contributions were made from
            strokes = [{"stroke": i + 1, "points": len(s[0]), "contribution": float(d), "probability_without": float(w)}
                       for i, (s, d, w) in enumerate(zip(self.strokes, self.contributions, self.without))]
        return {"input": self.input, "model": self.model, "class": self.classes[self.target],
                "class_source": self.target_source, "probability": float(self.probabilities[self.target]),
                "runner_up": {"category": self.classes[self.other],
                              "probability": float(self.probabilities[self.other])},
                "top": self.top(), "temperature": self.temperature, "tta": self.tta,
                "strokes": strokes, "saliency": rows(self.saliency), "gradient_x_input": rows(self.gradient_x_input),
                "difference_saliency": rows(self.difference), "out": self.out}


def explain_drawing(model: MLP, meta: dict, subject: Subject, cls: str | None = None,
                    attribute: bool = True) -> Explanation:
    """The numbers of an explanation (no picture); `attribute=False` skips the stroke attribution."""
    classes, run = meta["classes"], str(meta.get("run", "the model"))
    if cls is not None and cls not in classes:
        raise DoodleError(f"--class {cls!r}: the network knows {', '.join(classes[:12])}"
                          f"{'...' if len(classes) > 12 else ''}")
    bitmap = subject.bitmap
    p = probabilities(model, bitmap[None], run)[0]  # (C,) as `doodle predict` computes it
    order = np.argsort(-p, kind="stable")
    target = int(order[0]) if cls is None else classes.index(cls)
    other = int(next(j for j in order if j != target))
    x = to_float(bitmap[None])  # (1, P)
    saliency, _ = input_gradients(model, x, log_probability(target))
    difference, _ = input_gradients(model, x, log_odds(target, other))
    side = bitmap.shape
    contributions = without = None
    if attribute and subject.strokes is not None:
        contributions, without = stroke_contributions(model, subject.strokes, meta["raster"], target,
                                                      float(p[target]), run)
    return Explanation(input=subject.name, model=run, classes=classes, probabilities=p,
                       target=target, target_source="top guess" if cls is None else "--class", other=other,
                       bitmap=bitmap, saliency=saliency.reshape(side), gradient_x_input=(saliency * x).reshape(side),
                       difference=difference.reshape(side), strokes=subject.strokes, contributions=contributions,
                       without=without, temperature=model.temperature, tta=model.tta)


def why(model: MLP, raster: dict, bitmap: np.ndarray, strokes: list, p: np.ndarray, run: str | Path,
        attribute: bool = True) -> dict:
    """The play page's "why?" for a guess already made (p, (C,) from `probabilities`): the top guess's saliency
    over the bitmap (S rows, to 4 significant digits, and its largest magnitude) and each stroke's contribution
    (None without `attribute`)."""
    c = int(np.argmax(p))  # the first of tied maxima: the top guess as top_categories orders them
    saliency, _ = input_gradients(model, to_float(bitmap[None]), log_probability(c))
    contributions = stroke_contributions(model, strokes, raster, c, float(p[c]), run)[0] if attribute else None
    side = bitmap.shape[0]
    return {"class": c, "saliency": [[float(f"{v:.4g}") for v in row] for row in saliency.reshape(side, side)],
            "scale": float(np.abs(saliency).max()),
            "strokes": None if contributions is None else [float(f"{d:.4g}") for d in contributions]}


def explain(source: str, out: str | Path = "explain.png", model_path: str | Path | None = None,
            cls: str | None = None, stdin: IO | None = None) -> Explanation:
    """`doodle explain DRAWING`: explain the model's guess for one drawing and draw it to `out` (PNG)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DoodleError(f"--out {out}: the explanation is a PNG picture; give a name ending in .png")
    run = resolve_model_path(model_path)
    model, meta = load_model(run)
    meta = dict(meta, run=str(run))
    expl = explain_drawing(model, meta, read_drawing(source, meta["raster"], stdin), cls)
    save_png(render_explanation(expl), out)
    expl.out = str(out)
    return expl


# --- what the network learned ------------------------------------------------------------------------------


@dataclass
class Units:
    """What `doodle explain --units` found: the most important hidden units and a template per class."""

    model: str
    classes: list[str]
    units: list[int]  # indices of the first hidden layer's units, most important first
    importance: np.ndarray  # (U,) for every unit of that layer
    templates: np.ndarray  # (len(units), S, S) the weights into each drawn unit (times batch norm's scale)
    class_templates: np.ndarray  # (C, S, S) mean saliency of log p(c) over c's test drawings
    class_counts: list[int]  # test drawings averaged per class
    drawings: int  # test drawings the importance was measured on
    out: str | None = None

    IMPORTANCE = ("mean activation over the test split times the norm of the unit's outgoing weights: the typical "
                  "size of the signal the unit sends on")
    CLASS_TEMPLATE = ("mean saliency (d log p(class) / d pixel, through the test-time views and the temperature) "
                      "over the class's own test drawings: red pixels raise the class on average, blue ones lower it. "
                      "Chosen over the probability-weighted average drawing, which shows mostly what the drawings "
                      "look like: this one changes with the weights")

    def to_json(self) -> dict:
        total = float(self.importance.sum()) or 1.0
        return {"model": self.model, "drawings": self.drawings, "importance": self.IMPORTANCE,
                "class_template": self.CLASS_TEMPLATE, "hidden_units": int(len(self.importance)),
                "units": [{"unit": int(u), "importance": float(self.importance[u]),
                           "share": float(self.importance[u]) / total} for u in self.units],
                "classes": [{"category": c, "drawings": n} for c, n in zip(self.classes, self.class_counts)],
                "out": self.out}


def first_hidden(model: MLP, x: np.ndarray) -> np.ndarray:
    """The first hidden layer's activations (N, H) for float drawings x (N, P), in eval mode: every layer before
    the second Dense (the network must have a hidden layer)."""
    for layer in model.layers[:model.layers.index(model.dense[1])]:
        x = layer.forward(x, train=False)
    return x


def unit_templates(model: MLP) -> np.ndarray:
    """(P, H) the weights into each first-layer unit, times batch norm's gain / sqrt(var + eps) where there is one,
    so a template's red pixels are the ones that raise the unit after the norm."""
    W = model.dense[0].params["W"].astype(np.float64)  # (P, H)
    norms = [n for n in model.norms if n.name == "norm0"]
    if norms:
        n = norms[0]
        W = W * (n.params["gain"] / np.sqrt(n.buffers["var"].astype(np.float64) + n.eps))
    return W


def unit_importance(model: MLP, x: np.ndarray) -> np.ndarray:
    """(H,) mean |activation| over drawings x (uint8 bitmaps, or floats (N, P)) times the norm of each unit's
    outgoing weights. A batch at a time is made float: a test split's floats would take 4x its bitmaps."""
    total = np.zeros(model.dense[0].params["W"].shape[1])
    for i in range(0, len(x), 1024):
        xb = x[i:i + 1024]
        xb = to_float(xb) if xb.dtype == np.uint8 else np.asarray(xb, model.dtype)
        total += np.abs(first_hidden(model, xb)).sum(axis=0, dtype=np.float64)
    return total / max(len(x), 1) * np.linalg.norm(model.dense[1].params["W"].astype(np.float64), axis=1)


def class_templates(model: MLP, x_u8: np.ndarray, y: np.ndarray, n_classes: int,
                    reporter: Reporter = NULL_REPORTER) -> tuple[np.ndarray, list[int]]:
    """((C, P) mean saliency of log p(c) over up to CLASS_ROWS of class c's drawings, drawings per class)."""
    rows = np.concatenate([np.flatnonzero(y == c)[:CLASS_ROWS] for c in range(n_classes)])
    sums = np.zeros((n_classes, x_u8[0].size))
    reporter.start("templates", "class templates", total=len(rows), unit="drawings")
    try:
        for i in range(0, len(rows), GRAD_BATCH):
            r = rows[i:i + GRAD_BATCH]
            g, _ = input_gradients(model, to_float(x_u8[r]), log_probability(y[r]))
            np.add.at(sums, y[r], g)
            reporter.update("templates", advance=len(r))
    finally:
        reporter.end("templates")
    counts = np.bincount(y[rows], minlength=n_classes)
    return sums / np.maximum(counts, 1)[:, None], [int(n) for n in counts]


def explain_units(model_path: str | Path | None = None, out: str | Path = "units.png",
                  data_dir: str | Path | None = None, n_units: int = UNITS,
                  reporter: Reporter = NULL_REPORTER) -> Units:
    """`doodle explain --units`: the first layer's most important units and a template per class, measured on the
    run's own test split (rebuilt from its data, as `doodle evaluate` does), drawn to `out` (PNG)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DoodleError(f"--out {out}: the templates are a PNG picture; give a name ending in .png")
    run = resolve_model_path(model_path)
    model, meta = load_model(run)
    if len(model.dense) < 2:
        raise DoodleError(f"{run}: this network has no hidden layer (its weights map pixels straight to classes), "
                          "so it has no units to explain")
    classes = meta["classes"]
    data = test_split_bitmaps(run, meta, data_dir, reporter)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[w] for w in data.labels], dtype=np.int64)
    importance = unit_importance(model, data.x)
    units = [int(u) for u in np.argsort(-importance, kind="stable")[:n_units]]
    side = data.x.shape[1]
    templates = unit_templates(model)[:, units].T.reshape(len(units), side, side)
    per_class, counts = class_templates(model, data.x, y, len(classes), reporter)
    result = Units(model=str(run), classes=classes, units=units, importance=importance, templates=templates,
                   class_templates=per_class.reshape(len(classes), side, side), class_counts=counts,
                   drawings=len(y))
    save_png(render_units(result), out)
    result.out = str(out)
    return result


__all__ = ["Subject", "Explanation", "Units", "read_drawing", "input_gradients", "explain_drawing", "explain",
           "explain_units", "why", "stroke_contributions", "without_each_stroke", "view_transpose"]
