"""Drawing the computational graph of a loss, and the essay's one-weight picture, as SVG, DOT and text.

The graph drawings read a loss Tensor after `loss.backward(retain_graph=True)`: every node shows its
op, output shape, a summary of its value and the norm of its gradient. The SVG is written here (no
Graphviz): nodes sit in layers by data flow (an op one layer below its deepest input, a parameter or
input just above the op that reads it), ordered and spread so edges run short and straight; the DOT
text is for people who have Graphviz; the tree is for the terminal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from doodle import autodiff as ad
from doodle.errors import DoodleError

if TYPE_CHECKING:
    from doodle.nn import MLP

# role -> (fill, stroke); also the legend, in this order
COLOURS = {
    "input": ("#d6e6ff", "#3b6fb6"),
    "parameter": ("#ffe2b0", "#c27a00"),
    "constant": ("#ececec", "#8a8a8a"),
    "op": ("#ffffff", "#555555"),
    "loss": ("#ffd3d0", "#c0392b"),
}
FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"


# --- what every drawing says about a node -------------------------------------------------------------


def _role(node: ad.Tensor, root: ad.Tensor) -> str:
    """input, parameter, constant, op or loss: decides the colour."""
    if node is root:
        return "loss"
    if node.parents:
        return "op"
    if node.name == "x":  # MLP.logits_graph names the pixels "x" (with or without a gradient of their own)
        return "input"
    return "parameter" if node.requires_grad else "constant"


def _num(v: float) -> str:
    """A short number: 4 significant digits."""
    return f"{v:.4g}"


@dataclass
class _Label:
    """The text of one node, shared by the SVG, DOT and tree drawings."""

    title: str  # op, or the leaf's name
    shape: str
    value: str  # "= 2.303" or "mean 0.1 sd 0.3"
    grad: str  # "|grad| 0.012" or "no gradient"
    details: str  # min, max, dtype: the SVG tooltip
    role: str


def _label(node: ad.Tensor, root: ad.Tensor) -> _Label:
    """Describe a node after forward and backward."""
    role = _role(node, root)
    title = {"op": node.op, "loss": f"{node.op} = loss"}.get(role, f"{node.name or 'leaf'} ({role})")
    v = np.asarray(node.value, dtype=np.float64)
    if v.size == 1:
        value = f"= {_num(float(v.reshape(-1)[0]))}"
    else:
        value = f"mean {v.mean():.3g} sd {v.std():.3g}"
    grad = "no gradient" if node.grad is None else f"|grad| {_num(float(np.linalg.norm(node.grad)))}"
    details = f"{node.op} {node.name} {v.shape} {node.value.dtype}, min {_num(v.min())}, max {_num(v.max())}"
    return _Label(title, str(v.shape), value, grad, details, role)


def _check(root: ad.Tensor) -> None:
    """A drawable graph: a scalar loss whose graph backward kept (retain_graph=True)."""
    if not isinstance(root, ad.Tensor) or root.value.size != 1:
        raise DoodleError("draw the graph of a scalar loss Tensor")
    if root.op != "leaf" and not root.parents:
        raise DoodleError("this loss has no graph left to draw: run loss.backward(retain_graph=True) first")


# --- terminal tree and DOT ---------------------------------------------------------------------------------


TREE_WIDTH = 80  # columns of the terminal tree: a node's figures that would pass it continue on a line below


def graph_tree(root: ad.Tensor, width: int = TREE_WIDTH) -> list[str]:
    """Plain text lines: the loss first, each node's inputs indented below it; a node used twice is
    printed once and referred to by its #number afterwards. A line breaks only between a node's figures
    (never inside a number), and its continuation keeps the tree's guides."""
    _check(root)
    nodes = ad.topological(root)
    uses = {n: 0 for n in nodes}
    for n in nodes:
        for p in n.parents:
            uses[p] += 1
    number = {n: k for k, n in enumerate(nodes)}
    lines, printed = [], set()

    def visit(node, lead, branch, rest):
        lab = _label(node, root)
        tag = f" #{number[node]}" if uses[node] > 1 else ""
        if node in printed:
            lines.append(f"{lead}{branch}{lab.title}{tag} (above)")
            return
        printed.add(node)
        below = lead + rest + ("│ " if node.parents else "  ") + "  "  # under the title, beside its inputs' guide
        line = f"{lead}{branch}{lab.title}{tag}"
        for figure in (lab.shape, lab.value, lab.grad):
            if len(line) + 2 + len(figure) > width and line.strip(" │├└"):
                lines.append(line)
                line = below + figure
            else:
                line += "  " + figure
        lines.append(line)
        for k, p in enumerate(node.parents):
            last = k == len(node.parents) - 1
            visit(p, lead + rest, "└ " if last else "├ ", "  " if last else "│ ")

    visit(root, "", "", "")
    return lines


def graph_dot(root: ad.Tensor) -> str:
    """Graphviz DOT text of the graph, data flowing top to bottom."""
    _check(root)
    nodes = ad.topological(root)
    number = {n: k for k, n in enumerate(nodes)}
    out = ["digraph loss {", "  rankdir=TB;",
           f'  node [shape=box, style="rounded,filled", fontname="{FONT.split(",")[0]}", fontsize=10];']
    for n in nodes:
        lab = _label(n, root)
        fill, stroke = COLOURS[lab.role]
        lines = (lab.title, lab.shape, lab.value, lab.grad)
        text = "\\n".join(t.replace("\\", "\\\\").replace('"', '\\"') for t in lines)  # DOT string escapes
        out.append(f'  n{number[n]} [label="{text}", fillcolor="{fill}", color="{stroke}"];')
    for n in nodes:
        out.extend(f"  n{number[p]} -> n{number[n]};" for p in n.parents)
    out.append("}")
    return "\n".join(out) + "\n"


# --- SVG layout ------------------------------------------------------------------------------------------

BOX_W, BOX_H = 204, 66  # node box, px
GAP_X, GAP_Y = 26, 40  # between boxes
LANE_W = 14  # the slot an edge passing through a layer takes
LINE_H = 14  # text line height (12 px font)
MARGIN = 24  # around the drawing


@dataclass
class _Slot:
    """A box or an edge's waypoint in one layer of the layout."""

    node: ad.Tensor | None  # None: a waypoint of an edge that skips layers
    layer: int
    width: float
    weight: float  # how firmly it keeps its place when neighbours compete (ops > leaves > waypoints)
    rank: int = 0  # order in the layer
    x: float = 0.0  # centre

    def __hash__(self):
        return id(self)


def _layers(nodes: list[ad.Tensor]) -> dict[ad.Tensor, int]:
    """An op one layer below its deepest parent; a leaf one layer above the first op that reads it."""
    layer = {}
    for n in nodes:  # parents first
        if n.parents:
            layer[n] = 1 + max(layer.get(p, 0) for p in n.parents)
    consumers: dict[ad.Tensor, list[int]] = {}
    for n in nodes:
        for p in n.parents:
            consumers.setdefault(p, []).append(layer[n])
    for n in nodes:
        if not n.parents:
            layer[n] = min(consumers.get(n, [1])) - 1
    return layer


def _isotonic(desired: list[float], weights: list[float]) -> list[float]:
    """Non-decreasing values closest to desired in weighted least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for d, w in zip(desired, weights):
        blocks.append([d, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return [m for m, _, c in blocks for _ in range(c)]


def _place(row: list[_Slot], desired: list[float]) -> None:
    """Set x of a layer's slots, in their order, as near desired as their widths and gaps allow."""
    offsets, acc = [], 0.0
    for k, s in enumerate(row):  # the least distance of each centre from the first one's
        if k:
            acc += (row[k - 1].width + s.width) / 2 + GAP_X
        offsets.append(acc)
    z = _isotonic([d - o for d, o in zip(desired, offsets)], [s.weight for s in row])
    for s, zi, o in zip(row, z, offsets):
        s.x = zi + o


def _layout(root: ad.Tensor) -> tuple[list[list[_Slot]], dict[ad.Tensor, _Slot], list[list[_Slot]]]:
    """(rows of slots by layer, node -> its slot, one chain of slots per edge from parent to child)."""
    nodes = ad.topological(root)
    layer = _layers(nodes)
    rows: list[list[_Slot]] = [[] for _ in range(max(layer.values()) + 1)]
    box = {}
    for n in nodes:
        # Leaves hardly pull: the chain of ops stays straight and parameters hang beside it.
        box[n] = _Slot(n, layer[n], BOX_W, 8.0 if n.parents else 0.05)
        rows[layer[n]].append(box[n])
    edges, up, down = [], {}, {}
    for n in nodes:
        for p in n.parents:
            chain = [box[p]]
            for k in range(layer[p] + 1, layer[n]):  # waypoints through the layers the edge skips
                chain.append(_Slot(None, k, LANE_W, 2.0))
                rows[k].append(chain[-1])
            chain.append(box[n])
            edges.append(chain)
            for a, b in zip(chain, chain[1:]):
                down.setdefault(a, []).append(b)
                up.setdefault(b, []).append(a)

    # First order: discovery from the loss, inputs in argument order, so x sits left of W and the
    # main chain left of what joins it.
    discovered, stack = {}, [root]
    while stack:
        n = stack.pop()
        if n not in discovered:
            discovered[n] = len(discovered)
            stack.extend(reversed(n.parents))
    for row in rows:  # a waypoint goes just after the node its edge leads to
        row.sort(key=lambda s: discovered[s.node] if s.node else discovered[_chain_end(s, down)] + 0.5)
    for row in rows:
        for k, s in enumerate(row):
            s.rank, s.x = k, k * (BOX_W + GAP_X)

    def pull(slots, towards):
        """Weighted mean x of the slots each one is linked to in the direction swept."""
        out = []
        for s in slots:
            links = towards.get(s, [])
            out.append(sum(t.x * t.weight for t in links) / sum(t.weight for t in links) if links else s.x)
        return out

    for sweep in range(8):  # down and up, alternately: reorder by barycentre, then place
        order = rows[1:] if sweep % 2 == 0 else rows[-2::-1]
        towards = up if sweep % 2 == 0 else down
        for row in order:
            desired = pull(row, towards)
            if sweep < 4:
                pairs = sorted(zip(row, desired), key=lambda p: (p[1], p[0].rank))
                row[:] = [s for s, _ in pairs]
                desired = [d for _, d in pairs]
                for k, s in enumerate(row):
                    s.rank = k
            _place(row, desired)
    left = min(s.x - s.width / 2 for row in rows for s in row)
    for row in rows:
        for s in row:
            s.x += MARGIN - left
    return rows, box, edges


def _chain_end(s: _Slot, down: dict) -> ad.Tensor:
    """The node an edge waypoint leads to."""
    while s.node is None:
        s = down[s][0]
    return s.node


def _ports(slots: list[_Slot], centre: float) -> dict[int, float]:
    """x of each edge's end along a box side, in the order of the boxes at the other ends: arrows
    into one box neither meet at a point nor cross."""
    n = len(slots)
    spread = min(BOX_W * 0.6, 22.0 * (n - 1))
    xs = [centre] if n == 1 else [centre - spread / 2 + spread * i / (n - 1) for i in range(n)]
    by_x = sorted(range(n), key=lambda k: slots[k].x)
    return {k: xs[i] for i, k in enumerate(by_x)}


def graph_svg(root: ad.Tensor, title: str = "") -> str:
    """The graph as a standalone SVG document, data flowing down to the loss."""
    _check(root)
    rows, box, edges = _layout(root)
    top = 76  # title and legend
    title = title or "Computational graph of the loss"
    # wide enough for the title too: a monospace character at 16 px is about 0.6 em wide
    width = max(max(s.x + s.width / 2 for row in rows for s in row) + MARGIN, 2 * MARGIN + 16 * 0.6 * len(title))
    height = top + len(rows) * (BOX_H + GAP_Y) + 12

    def y_top(layer):
        return top + layer * (BOX_H + GAP_Y)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.0f} {height:.0f}" font-family={quoteattr(FONT)} font-size="12">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{MARGIN}" y="28" font-size="16" font-weight="bold">'
             f'{escape(title)}</text>']
    lx = float(MARGIN)
    for role, (fill, stroke) in COLOURS.items():
        parts.append(f'<rect x="{lx:.0f}" y="42" width="14" height="14" rx="3" fill="{fill}" stroke="{stroke}"/>'
                     f'<text x="{lx + 20:.0f}" y="54">{role}</text>')
        lx += 30 + 8 * len(role) + 24

    # Edge ends, spread along the bottom of the source box and the top of the target box.
    outs, ins = {}, {}
    for k, chain in enumerate(edges):
        outs.setdefault(chain[0], []).append((k, chain[1]))
        ins.setdefault(chain[-1], []).append((k, chain[-2]))
    start, end = {}, {}
    for table, side in ((outs, start), (ins, end)):
        for s, links in table.items():
            ports = _ports([t for _, t in links], s.x)
            for i, (k, _) in enumerate(links):
                side[k] = ports[i]
    for k, chain in enumerate(edges):
        pts = [(start[k], y_top(chain[0].layer) + BOX_H)]
        for w in chain[1:-1]:  # pass straight down through each skipped layer
            pts += [(w.x, y_top(w.layer)), (w.x, y_top(w.layer) + BOX_H)]
        pts.append((end[k], y_top(chain[-1].layer) - 1))
        d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            mid = (y0 + y1) / 2
            d += f" C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}"
        parts.append(f'<path d="{d}" fill="none" stroke="#777" stroke-width="1.3" marker-end="url(#arrow)"/>')

    for n, s in box.items():
        lab = _label(n, root)
        fill, stroke = COLOURS[lab.role]
        x, y = s.x - BOX_W / 2, y_top(s.layer)
        parts.append(f'<g class="node {lab.role}"><title>{escape(lab.details)}</title>'
                     f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="7" fill="{fill}" '
                     f'stroke="{stroke}" stroke-width="{2.2 if lab.role == "loss" else 1.3}"/>')
        for i, (text, extra) in enumerate(((lab.title, ' font-weight="bold"'), (lab.shape, ""), (lab.value, ""),
                                          (lab.grad, ' fill="#7a2e00"' if n.grad is not None else ' fill="#888"'))):
            parts.append(f'<text x="{x + 9:.1f}" y="{y + 16 + i * LINE_H:.1f}"{extra}>{escape(_fit(text))}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _fit(text: str, chars: int = int((BOX_W - 16) / 7.3)) -> str:
    """Text cut to what a box line holds (12 px monospace: 7.2 px a character)."""
    return text if len(text) <= chars else text[:chars - 1] + "…"


# --- the one-weight picture ------------------------------------------------------------------------------


@dataclass
class LossSlice:
    """The batch loss along one weight, and the engine's tangent at the current value."""

    name: str  # "W1[3, 7]"
    weights: np.ndarray  # (points,) values tried, the current one in the middle
    losses: np.ndarray  # (points,) average batch loss at each
    current: float  # the weight's value now
    loss: float  # the loss there
    slope: float  # dL/dw from the engine's backward pass

    def tangent(self, w: np.ndarray) -> np.ndarray:
        """The tangent line at the current value."""
        return self.loss + self.slope * (w - self.current)


def loss_slice(model: MLP, x: np.ndarray, y: np.ndarray, layer: int, row: int | None = None,
               col: int | None = None, loss: str = "cross_entropy", points: int = 41,
               span: float | None = None) -> LossSlice:
    """The average loss of the model (evaluation mode) on the batch (x, y) as weight dense<layer>.W[row, col]
    moves by up to +-span.

    Without row and col, the layer's steepest weight (largest |dL/dw|). The weight is changed in
    place for each evaluation and restored afterwards. The default span is three times the spread
    of the layer's weights, at least 0.5: wide enough for the curve to bend.
    """
    n_layers = len(model.dense)
    if not 0 <= layer < n_layers:
        raise DoodleError(f"layer must be 0..{n_layers - 1} (the network has {n_layers} weight matrices), got {layer}")
    dense = model.dense[layer]
    W = dense.params["W"]
    if (row is None) != (col is None) or (row is not None and not (0 <= row < W.shape[0] and 0 <= col < W.shape[1])):
        raise DoodleError(f"{dense.name}.W is {W.shape[0]}x{W.shape[1]}: give row 0..{W.shape[0] - 1} and col "
                          f"0..{W.shape[1] - 1} (or neither, for the steepest weight), got {row}:{col}")
    if points < 3 or points % 2 == 0:
        raise DoodleError(f"points must be odd and at least 3 (the current value sits in the middle), got {points}")
    value = model.loss_graph(x, y, loss)
    value.backward()
    grad = dense.grads["W"]
    if row is None:
        row, col = (int(i) for i in np.unravel_index(np.argmax(np.abs(grad)), grad.shape))
    slope = float(grad[row, col])
    current = float(W[row, col])
    span = max(3.0 * float(W.std()), 0.5) if span is None else float(span)
    weights = current + np.linspace(-span, span, points)
    weights[points // 2] = current
    losses = np.empty(points)
    try:
        with ad.no_grad():
            for k, w in enumerate(weights):
                W[row, col] = w
                losses[k] = float(model.loss_graph(x, y, loss).value)
    finally:
        W[row, col] = current
    return LossSlice(f"{dense.name}.W[{row}, {col}]", weights, losses, current, float(value.value), slope)


def _ticks(lo: float, hi: float, n: int = 6) -> list[tuple[float, str]]:
    """About n round ticks (1, 2 or 5 times a power of ten apart) within [lo, hi], with labels just
    precise enough to tell them apart."""
    raw = (hi - lo) / n
    power = math.floor(math.log10(raw))
    step = next(m * 10.0 ** power for m in (1, 2, 5, 10) if m * 10.0 ** power >= raw / 1.5)
    decimals = max(0, -math.floor(math.log10(step)))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [(k * step, f"{k * step:.{decimals}f}") for k in range(first, last + 1)]


def slice_svg(s: LossSlice, title: str = "") -> str:
    """The loss curve along one weight, its tangent, the current point and the descent direction."""
    W_, H_ = 760, 500
    left, right, top, bottom = 86, 28, 84, 64
    pw, ph = W_ - left - right, H_ - top - bottom
    x0, x1 = float(s.weights[0]), float(s.weights[-1])
    lo, hi = float(s.losses.min()), float(s.losses.max())
    spread = max(hi - lo, 1e-4 * max(abs(hi), 1.0))  # a flat curve still gets a readable axis
    y0, y1 = (lo + hi - spread * 1.24) / 2, (lo + hi + spread * 1.24) / 2

    def px(w):
        return left + (w - x0) / (x1 - x0) * pw

    def py(v):
        return top + (y1 - v) / (y1 - y0) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W_}" height="{H_}" viewBox="0 0 {W_} {H_}" '
             f'font-family={quoteattr(FONT)} font-size="12">',
             '<defs><clipPath id="plot"><rect x="%d" y="%d" width="%d" height="%d"/></clipPath>'
             '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" '
             'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#1b7f3b"/></marker></defs>' % (left, top, pw, ph),
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="26" font-size="15" font-weight="bold">'
             f'{escape(title or f"The loss as one weight moves: {s.name}")}</text>',
             f'<text x="{left}" y="44" fill="#444">slope dL/dw = {escape(_num(s.slope))} (backward pass), '
             f'loss {escape(_num(s.loss))} at w = {escape(_num(s.current))}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>']
    for t, text in _ticks(x0, x1):
        parts.append(f'<line x1="{px(t):.1f}" y1="{top + ph}" x2="{px(t):.1f}" y2="{top + ph + 5}" stroke="#333"/>'
                     f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + ph}" stroke="#eee"/>'
                     f'<text x="{px(t):.1f}" y="{top + ph + 19}" text-anchor="middle">{text}</text>')
    for t, text in _ticks(y0, y1):
        parts.append(f'<line x1="{left - 5}" y1="{py(t):.1f}" x2="{left}" y2="{py(t):.1f}" stroke="#333"/>'
                     f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + pw}" y2="{py(t):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 8}" y="{py(t) + 4:.1f}" text-anchor="end">{text}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{H_ - 18}" text-anchor="middle">weight {escape(s.name)}</text>'
                 f'<text transform="translate(20 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
                 f'average loss on the batch</text>')
    curve = " ".join(f"{px(w):.1f},{py(v):.1f}" for w, v in zip(s.weights, s.losses))
    tangent = s.tangent(np.array([x0, x1]))
    parts.append(f'<g clip-path="url(#plot)">'
                 f'<line x1="{px(x0):.1f}" y1="{py(tangent[0]):.1f}" x2="{px(x1):.1f}" y2="{py(tangent[1]):.1f}" '
                 f'stroke="#e67e22" stroke-width="2" stroke-dasharray="7 5"/>'
                 f'<polyline points="{curve}" fill="none" stroke="#1f5fa8" stroke-width="2.4"/></g>')
    cx, cy = px(s.current), py(s.loss)
    parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5.5" fill="#c0392b"/>')
    if s.slope:  # descent moves w against the slope: an arrow along the bottom, from below the point
        step = -math.copysign(0.18 * pw, s.slope)
        ay = top + ph - 16
        parts.append(f'<line x1="{cx:.1f}" y1="{cy + 8:.1f}" x2="{cx:.1f}" y2="{ay:.1f}" stroke="#1b7f3b" '
                     f'stroke-dasharray="2 3"/>'
                     f'<line x1="{cx:.1f}" y1="{ay:.1f}" x2="{cx + step:.1f}" y2="{ay:.1f}" stroke="#1b7f3b" '
                     f'stroke-width="2.5" marker-end="url(#head)"/>'
                     f'<text x="{cx + step / 2:.1f}" y="{ay - 8:.1f}" text-anchor="middle" fill="#1b7f3b">'
                     f'descent: w - lr * slope</text>')
    lx = left
    for mark, text in (('<line x1="0" y1="-4" x2="24" y2="-4" stroke="#1f5fa8" stroke-width="2.4"/>',
                        "loss at each value"),
                       ('<line x1="0" y1="-4" x2="24" y2="-4" stroke="#e67e22" stroke-width="2" '
                        'stroke-dasharray="7 5"/>', "tangent, slope from the backward pass"),
                       ('<circle cx="12" cy="-4" r="5" fill="#c0392b"/>', "current weight")):
        parts.append(f'<g transform="translate({lx} {top - 12})">{mark}<text x="32" y="0">{escape(text)}</text></g>')
        lx += 32 + 7.3 * len(text) + 26
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
