"""The essay's one-weight picture for a real network: the loss along one weight with its tangent (the slope the
backward pass found), and one gradient-descent step of the run's learning rate drawn to scale, magnified beside
it. `loss_slice` measures it on a model and a batch; `slice_svg` draws it (`doodle graph --slice`, lossgraph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from doodle import autodiff as ad
from doodle.errors import DoodleError
from doodle.graphdraw import FONT, short_number
from doodle.progress import NULL_REPORTER, Reporter

if TYPE_CHECKING:
    from doodle.nn import MLP

CANDIDATES = 64  # the default weight is the bendiest of the layer's this many steepest ones
BEND = 0.3  # a curve bends visibly when it strays from its tangent by this share of the plotted loss range
SPANS = [2.0 ** k for k in range(1, 9)]  # spans tried, in spreads (std) of the layer's weights: 2 ... 256
ZOOM_STEPS = 2.5  # the inset shows this many descent steps either side of the step's middle
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass
class LossSlice:
    """The batch loss along one weight, the engine's tangent at the current value, and one descent step."""

    name: str  # "dense1.W[3, 7]"
    weights: np.ndarray  # (points,) values tried, the current one in the middle
    losses: np.ndarray  # (points,) average batch loss at each
    current: float  # the weight's value now
    loss: float  # the loss there
    slope: float  # dL/dw from the engine's backward pass
    lr: float  # the learning rate of the step drawn: w - lr * slope
    zoom_weights: np.ndarray  # (points,) a window a few steps wide around the step
    zoom_losses: np.ndarray  # (points,) the loss there

    @property
    def stepped(self) -> float:
        """The weight after one plain gradient-descent step."""
        return self.current - self.lr * self.slope

    def tangent(self, w: np.ndarray) -> np.ndarray:
        """The tangent line at the current value."""
        return self.loss + self.slope * (w - self.current)

    def bend(self) -> float:
        """How far the plotted curve strays from its tangent, as a share of the plotted loss range."""
        return _bend(self.weights - self.current, self.losses - self.loss, self.slope)


def _bend(dw: np.ndarray, dloss: np.ndarray, slope: float) -> float:
    """max |loss - tangent| over the loss range, for losses dloss at offsets dw from the tangent point."""
    spread = float(dloss.max() - dloss.min())
    return float(np.abs(dloss - slope * dw).max()) / spread if spread > 0 else 0.0


def loss_slice(model: MLP, x: np.ndarray, y: np.ndarray, layer: int, row: int | None = None,
               col: int | None = None, loss: str = "cross_entropy", points: int = 41,
               span: float | None = None, lr: float | None = None,
               reporter: Reporter = NULL_REPORTER) -> LossSlice:
    """The average loss of the model (evaluation mode) on the batch (x, y) as weight dense<layer>.W[row, col]
    moves by up to +-span, and one gradient-descent step of learning rate lr (default: the config's train.lr).

    The model is not changed: the loss is computed in float64 on a copy, since a step changes it by less than
    float32 resolves. Without row and col, the weight is the one among the layer's steepest (largest |dL/dw|)
    whose loss curve bends most; without span, the narrowest span in which its curve bends clearly (past its
    minimum, or where a unit switches off), so curvature shows. Progress goes to `reporter` (key "slice"), one
    step per loss computed.
    """
    n_layers = len(model.dense)
    if not 0 <= layer < n_layers:
        raise DoodleError(f"layer must be 0..{n_layers - 1} (the network has {n_layers} weight matrices), got {layer}")
    W = model.dense[layer].params["W"]
    if (row is None) != (col is None) or (row is not None and col is not None
                                          and not (0 <= row < W.shape[0] and 0 <= col < W.shape[1])):
        raise DoodleError(f"{model.dense[layer].name}.W is {W.shape[0]}x{W.shape[1]}: give row 0..{W.shape[0] - 1} "
                          f"and col 0..{W.shape[1] - 1} (or neither, for a steep weight), got {row}:{col}")
    if points < 3 or points % 2 == 0:
        raise DoodleError(f"points must be odd and at least 3 (the current value sits in the middle), got {points}")
    if lr is None:
        from doodle.config import SCHEMA

        lr = SCHEMA["train"]["lr"].default
    work = type(model).from_spec(model.spec, dtype=np.float64)
    work.load_state_dict(model.state_dict())
    value = work.loss_graph(x, y, loss)
    value.backward()
    dense = work.dense[layer]
    W, grad, base = dense.params["W"], dense.grads["W"], float(value.value)
    evaluate = _loss_along(work, layer, np.asarray(x, np.float64), y, loss)
    total = 2 * points + (2 * CANDIDATES if row is None else 0) + (2 * len(SPANS) + 1 if span is None else 0)
    reporter.start("slice", f"loss along a weight of {dense.name}", total=total)

    def at(r: int, c: int, dw: float) -> float:
        reporter.update("slice", advance=1)
        return evaluate(r, c, dw)

    try:
        spread = float(W.std()) or 1.0
        if row is None:
            row, col = _bendiest(at, W, grad, base, spread)
        assert col is not None  # given with row (checked above), or chosen with it
        current, slope = float(W[row, col]), float(grad[row, col])
        if span is None:
            span = _clear_span(lambda dw: at(row, col, dw), slope, spread)
        offsets = np.linspace(-float(span), float(span), points)  # (points,)
        offsets[points // 2] = 0.0
        step = lr * abs(slope) or 1e-6 * spread
        zoom = -lr * slope / 2 + np.linspace(-ZOOM_STEPS * step, ZOOM_STEPS * step, points)  # (points,) offsets
        return LossSlice(f"{dense.name}.W[{row}, {col}]", current + offsets,
                         np.array([at(row, col, d) for d in offsets]), current, base, slope, float(lr),
                         current + zoom, np.array([at(row, col, d) for d in zoom]))
    finally:
        reporter.end("slice")


def _loss_along(model: MLP, layer: int, x: np.ndarray, y: np.ndarray, loss: str):
    """at(row, col, dw): the loss with dense<layer>.W[row, col] moved by dw. The layer's input and output are
    computed once: moving one weight changes one column of the output, and only the layers after it rerun."""
    dense = model.dense[layer]
    k = model.layers.index(dense)
    loss_fn = ad.LOSSES[loss]
    with ad.no_grad():
        a = ad.Tensor(x)
        for lay in model.layers[:k]:
            a = lay.forward_graph(a)
        z = dense.forward_graph(a).value  # (B, n_out)
    a_in = a.value  # (B, n_in)

    def at(row: int, col: int, dw: float) -> float:
        out = z.copy()
        out[:, col] += dw * a_in[:, row]
        with ad.no_grad():
            t = ad.Tensor(out)
            for lay in model.layers[k + 1:]:
                t = lay.forward_graph(t)
            return float(loss_fn(t, y).value)
    return at


def _bendiest(at, W: np.ndarray, grad: np.ndarray, base: float, spread: float) -> tuple[int, int]:
    """Of the layer's steepest weights, the one whose loss curves up most (a valley to descend into) over a few
    spreads of the layer's weights: the second difference against the slope; if none curves up, the most bent."""
    delta = 8.0 * spread
    best, best_key = None, None
    for i in np.argsort(-np.abs(grad), axis=None, kind="stable")[:CANDIDATES]:
        row, col = (int(v) for v in np.unravel_index(i, grad.shape))
        g = float(grad[row, col])
        if g == 0.0:
            continue
        curve = (at(row, col, delta) - 2.0 * base + at(row, col, -delta)) / (delta * delta)
        bend = curve * delta / (2.0 * abs(g))  # the curvature's share of the change over delta; > 0: convex
        key = (bend > 0, abs(bend))
        if best_key is None or key > best_key:
            best, best_key = (row, col), key
    if best is None:  # a flat layer: the first weight
        return 0, 0
    return best


def _clear_span(at, slope: float, spread: float) -> float:
    """The narrowest span (of SPANS, in spreads of the layer's weights) over which the curve strays from its
    tangent by BEND of its range; else the one where it strays most."""
    seen = {0.0: at(0.0)}
    best = None
    for s in (f * spread for f in SPANS):
        for d in (-s, -s / 2, s / 2, s):
            if d not in seen:
                seen[d] = at(d)
        dw = np.array(sorted(d for d in seen if abs(d) <= s))
        bend = _bend(dw, np.array([seen[d] for d in dw]) - seen[0.0], slope)
        if bend >= BEND:
            return s
        if best is None or bend > best[0]:
            best = (bend, s)
    assert best is not None  # SPANS is not empty
    return best[1]


def _ticks(lo: float, hi: float, n: int = 6) -> list[tuple[float, str]]:
    """About n round ticks (1, 2 or 5 times a power of ten apart) within [lo, hi], with labels just
    precise enough to tell them apart."""
    raw = (hi - lo) / n
    power = math.floor(math.log10(raw))
    step = next(m * 10.0 ** power for m in (1, 2, 5, 10) if m * 10.0 ** power >= raw / 1.5)
    decimals = max(0, -math.floor(math.log10(step)))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [(k * step, f"{k * step:.{decimals}f}") for k in range(first, last + 1)]


def _scaled_ticks(lo: float, hi: float, n: int = 4) -> tuple[list[tuple[float, str]], str]:
    """Ticks for a tiny range, labelled in units of a power of ten: ([(value, label)], "×10^-5")."""
    power = math.floor(math.log10(max(abs(lo), abs(hi))))
    ticks = _ticks(lo / 10.0 ** power, hi / 10.0 ** power, n)
    return [(v * 10.0 ** power, text) for v, text in ticks], "×10" + str(power).translate(SUPERSCRIPT)


class _Plot:
    """A plot area: data (x, y) ranges onto a pixel box, with its axes and ticks drawn."""

    def __init__(self, box: tuple[float, float, float, float], xs: tuple[float, float], ys: tuple[float, float]):
        self.left, self.top, self.width, self.height = box
        (self.x0, self.x1), (self.y0, self.y1) = xs, ys

    def px(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * self.width

    def py(self, v: float) -> float:
        return self.top + (self.y1 - v) / (self.y1 - self.y0) * self.height

    def axes(self, xticks, yticks, cls: str) -> list[str]:
        """Frame, grid and labelled ticks; each label carries its value (data-value) for tests and tools."""
        left, top, w, h = self.left, self.top, self.width, self.height
        out = [f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="white" stroke="#333"/>']
        # (axis, value, label, grid line, tick mark, label's anchor point and alignment)
        marks = [("x", t, text, (x, top, x, top + h), (x, top + h, x, top + h + 5), (x, top + h + 18), "middle")
                 for t, text in xticks for x in [self.px(t)]]
        marks += [("y", t, text, (left, y, left + w, y), (left - 5, y, left, y), (left - 8, y + 4), "end")
                  for t, text in yticks for y in [self.py(t)]]
        for axis, t, text, grid, tick, (lx, ly), anchor in marks:
            out.append("".join(f'<line x1="{a:.1f}" y1="{b:.1f}" x2="{c:.1f}" y2="{d:.1f}" stroke="{colour}"/>'
                               for (a, b, c, d), colour in ((grid, "#eee"), (tick, "#333")))
                       + f'<text class="{cls} {axis}tick" data-value="{t!r}" x="{lx:.1f}" y="{ly:.1f}" '
                       f'text-anchor="{anchor}">{text}</text>')
        return out

    def line(self, ws, vs, attrs: str) -> str:
        pts = " ".join(f"{self.px(w):.2f},{self.py(v):.2f}" for w, v in zip(ws, vs))
        return f'<polyline points="{pts}" fill="none" {attrs}/>'


def _padded(lo: float, hi: float, floor: float) -> tuple[float, float]:
    """[lo, hi] widened by 12% each side (at least `floor` wide in all): room around a curve."""
    spread = max(hi - lo, floor)
    return (lo + hi - spread * 1.24) / 2, (lo + hi + spread * 1.24) / 2


def slice_svg(s: LossSlice, title: str = "") -> str:
    """The loss curve along one weight with its tangent and the current point; beside it, magnified, one
    gradient-descent step of the slice's learning rate drawn to scale on the curve."""
    W_, H_ = 1020, 560
    main = _Plot((86, 112, 560, 360), (float(s.weights[0]), float(s.weights[-1])),
                 _padded(float(s.losses.min()), float(s.losses.max()), 1e-4 * max(abs(s.loss), 1.0)))
    dz = s.zoom_weights - s.current  # (points,) offsets in the inset
    dl = s.zoom_losses - s.loss
    inset = _Plot((800, 150, 190, 170), (float(dz[0]), float(dz[-1])),
                  _padded(float(dl.min()), float(dl.max()), 1e-12 + 1e-9 * abs(s.loss)))
    zoom = (inset.width / (inset.x1 - inset.x0)) / (main.width / (main.x1 - main.x0))
    after = float(np.interp(s.stepped, s.zoom_weights, s.zoom_losses))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W_}" height="{H_}" viewBox="0 0 {W_} {H_}" '
             f'font-family={quoteattr(FONT)} font-size="12">',
             '<defs>'
             + "".join(f'<clipPath id="{name}"><rect x="{p.left}" y="{p.top}" width="{p.width}" height="{p.height}"/>'
                       f'</clipPath>' for name, p in (("plot", main), ("inset", inset)))
             + '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#1b7f3b"/></marker></defs>',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{main.left}" y="26" font-size="15" font-weight="bold">'
             f'{escape(title or f"The loss as one weight moves: {s.name}")}</text>',
             f'<text x="{main.left}" y="46" fill="#444">slope dL/dw = {escape(short_number(s.slope))} (backward pass), '
             f'loss {escape(short_number(s.loss))} at w = {escape(short_number(s.current))}</text>',
             f'<text class="step" x="{main.left}" y="64" fill="#1b7f3b">one gradient-descent step at lr = '
             f'{escape(short_number(s.lr))}: w - lr * slope = {escape(short_number(s.stepped))}, a move of '
             f'{escape(f"{s.stepped - s.current:+.2g}")} (too small to see on the left)</text>']
    parts += main.axes(_ticks(main.x0, main.x1), _ticks(main.y0, main.y1), "main")
    parts.append(f'<text x="{main.left + main.width / 2}" y="{H_ - 40}" text-anchor="middle">'
                 f'weight {escape(s.name)}</text>'
                 f'<text transform="translate(20 {main.top + main.height / 2}) rotate(-90)" text-anchor="middle">'
                 f'average loss on the batch</text>')
    tangent = s.tangent(np.array([main.x0, main.x1]))
    parts.append('<g clip-path="url(#plot)">'
                 + main.line([main.x0, main.x1], tangent, 'stroke="#e67e22" stroke-width="2" stroke-dasharray="7 5"')
                 + main.line(s.weights, s.losses, 'class="curve" stroke="#1f5fa8" stroke-width="2.4"') + "</g>")
    low = int(np.argmin(s.losses))
    if 0 < low < len(s.losses) - 1:  # the bottom of the valley along this weight is in view
        lx, ly = main.px(float(s.weights[low])), main.py(float(s.losses[low]))
        parts.append(f'<path d="M{lx - 6:.1f},{ly + 14:.1f} L{lx + 6:.1f},{ly + 14:.1f} L{lx:.1f},{ly + 5:.1f} z" '
                     f'fill="#1f5fa8"/><text x="{lx:.1f}" y="{ly + 28:.1f}" text-anchor="middle" fill="#1f5fa8">'
                     f'lowest here</text>')
    cx, cy = main.px(s.current), main.py(s.loss)
    parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5.5" fill="#c0392b"/>'
                 f'<rect x="{cx - 9:.1f}" y="{cy - 9:.1f}" width="18" height="18" fill="none" stroke="#888"/>'
                 f'<path d="M{cx + 9:.1f},{cy - 9:.1f} L{inset.left:.1f},{inset.top:.1f} M{cx + 9:.1f},{cy + 9:.1f} '
                 f'L{inset.left:.1f},{inset.top + inset.height:.1f}" stroke="#bbb" stroke-dasharray="3 3"/>')

    xt, xunit = _scaled_ticks(inset.x0, inset.x1)
    yt, yunit = _scaled_ticks(inset.y0, inset.y1)
    parts.append(f'<text x="{inset.left - 60}" y="{inset.top - 30}" font-weight="bold">the step, magnified '
                 f'{escape(f"{zoom:,.0f}")}x</text>'
                 f'<text x="{inset.left - 60}" y="{inset.top - 14}" fill="#444">loss - {escape(short_number(s.loss))} '
                 f'({yunit})</text>'
                 f'<text x="{inset.left + inset.width / 2}" y="{inset.top + inset.height + 36}" fill="#444" '
                 f'text-anchor="middle">w - {escape(short_number(s.current))} ({xunit})</text>')
    parts += inset.axes(xt, yt, "inset")
    parts.append('<g clip-path="url(#inset)">'
                 + inset.line([inset.x0, inset.x1], s.slope * np.array([inset.x0, inset.x1]),
                              'stroke="#e67e22" stroke-width="2" stroke-dasharray="7 5"')
                 + inset.line(dz, dl, 'class="zoom-curve" stroke="#1f5fa8" stroke-width="2.4"') + "</g>")
    x0, x1, y0, y1 = inset.px(0.0), inset.px(s.stepped - s.current), inset.py(0.0), inset.py(after - s.loss)
    ay = inset.top + inset.height - 14
    parts.append(f'<circle cx="{x0:.1f}" cy="{y0:.1f}" r="5" fill="#c0392b"/>'
                 f'<circle cx="{x1:.1f}" cy="{y1:.1f}" r="5" fill="#1b7f3b"/>'
                 f'<line x1="{x0:.1f}" y1="{y0 + 6:.1f}" x2="{x0:.1f}" y2="{ay:.1f}" stroke="#c0392b" '
                 f'stroke-dasharray="2 3"/>'
                 f'<line x1="{x1:.1f}" y1="{y1 + 6:.1f}" x2="{x1:.1f}" y2="{ay:.1f}" stroke="#1b7f3b" '
                 f'stroke-dasharray="2 3"/>'
                 f'<line class="step-arrow" x1="{x0:.1f}" y1="{ay:.1f}" x2="{x1:.1f}" y2="{ay:.1f}" stroke="#1b7f3b" '
                 f'stroke-width="2.5" marker-end="url(#head)"/>')
    notes = ["red: w now; green: one step on", f"the step: lr * |slope| = {short_number(s.lr * abs(s.slope))}",
             f"the loss falls by {short_number(s.loss - after)}",
             f"tangent: lr * slope^2 = {short_number(s.lr * s.slope ** 2)}"]
    for k, text in enumerate(notes):
        parts.append(f'<text x="{inset.left - 60}" y="{inset.top + inset.height + 66 + 16 * k}" font-size="11" '
                     f'fill="#444">{escape(text)}</text>')
    lx = main.left
    for mark, text in (('<line x1="0" y1="-4" x2="24" y2="-4" stroke="#1f5fa8" stroke-width="2.4"/>',
                        "loss at each value"),
                       ('<line x1="0" y1="-4" x2="24" y2="-4" stroke="#e67e22" stroke-width="2" '
                        'stroke-dasharray="7 5"/>', "tangent, slope from the backward pass"),
                       ('<circle cx="12" cy="-4" r="5" fill="#c0392b"/>', "current weight")):
        parts.append(f'<g transform="translate({lx} {main.top - 14})">{mark}<text x="32" y="0">{escape(text)}</text>'
                     f'</g>')
        lx += 32 + 7.3 * len(text) + 26
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
