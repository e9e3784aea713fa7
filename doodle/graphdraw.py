"""Drawing the computational graph of a loss, and the essay's one-weight picture, as SVG, DOT and text.

The graph drawings read a loss Tensor after `loss.backward(retain_graph=True)`: every node shows its
op, output shape, a summary of its value and the norm of its gradient. The SVG is written here (no
Graphviz) to read at a glance on one screen: each layer (the nodes' `.scope`) is a framed group whose
main line of ops runs left to right, its parameters and constants just above the op that reads them,
side branches below; the groups follow one another in rows, as many as fit a screen best; the drawing
itself sits beside its pixels x; the edges into a binary op are labelled a, b (a - b, a @ b); a line
under the title says which mode (training or evaluation) built the graph. The DOT text is for people
who have Graphviz; the tree is for the terminal.

The one-weight picture is the loss along one weight with its tangent, and one gradient-descent step of
the run's learning rate drawn to scale, magnified beside it.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from doodle import autodiff as ad
from doodle.errors import DoodleError
from doodle.progress import NULL_REPORTER, Reporter

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

    title: str  # op, or the leaf's name and role
    short: str  # op, or the leaf's name: the SVG shows the role by colour
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
    short = {"op": node.op, "loss": title}.get(role, node.name or role)
    return _Label(title, short, str(v.shape), value, grad, details, role)


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
    for n in nodes:  # a binary op's edges say which operand is which
        out.extend(f"  n{number[p]} -> n{number[n]}" + (f' [label="{"ab"[k]}"]' if len(n.parents) == 2 else "") + ";"
                   for k, p in enumerate(n.parents))
    out.append("}")
    return "\n".join(out) + "\n"


# --- SVG: each layer a framed group, the groups in rows that fit a screen ---------------------------------

BOX_W, BOX_H = 160, 58  # node box, px: four 11 px lines of 22 characters
GAP_X, GAP_Y = 26, 24  # between a group's columns, and between its lanes (room for an edge's label)
PAD = 8  # inside a group's frame
GROUP_GAP = 12  # between the frames of a row
LABEL_H = 22  # a group's name, above its boxes
ROW_GAP = 34  # between rows: the wires that carry a value on to the next row run here
HEADER = 88  # title, mode line and legend
MARGIN = 24
SCREEN = (1600, 900)  # px: the number of rows is chosen so the picture fits this at the largest scale...
MAX_WIDTH = 1920  # ...and never wider than a full-HD screen, unless one layer is: a deep graph scrolls down
CHAR_W = 6.65  # px of an 11 px monospace character (0.6 em)
PIXEL = 4  # px per pixel of the drawing: 28x28 shows as 112x112
PITCH = BOX_W + GAP_X  # from one column of a group to the next
ROOM = BOX_W - 12  # px of text a box line holds
LEGEND = "a, b: operands in order (sub: a − b, matmul: a @ b); |grad|: size of the gradient of the loss at the node"
# Binary ops show which operand is which: the edges into them are labelled a, b.
FORMULAS = {"add": "a + b", "sub": "a − b", "mul": "a × b", "div": "a / b", "matmul": "a @ b"}
GLOSSES = {"input": "the drawing", "dense": "affine", "norm": "batch norm", "act": "activation",
           "dropout": "random mask", "loss": ""}  # a group's kind, by its name without the layer's number


def mode_line(root: ad.Tensor, mode: str | None = None) -> str:
    """Which mode the graph shows, as the sentence under its title: `mode` ("training" or "evaluation"), or read
    from the nodes doodle.nn names: dropout masks ("dropout0.mask") and batch norm computing its batch's statistics
    are training's; batch norm's running statistics ("norm0.mean", constants) are evaluation's."""
    leaves = [n for n in ad.topological(root) if not n.parents]
    names = {n.name for n in leaves}
    masks = [n.name.removesuffix(".mask") for n in leaves if n.name.endswith(".mask")]
    norms = [n.name.removesuffix(".gain") for n in leaves if n.name.endswith(".gain")]
    running = [s for s in norms if f"{s}.mean" in names]
    batch = [s for s in norms if s not in running]
    seen = "training" if masks or batch else "evaluation" if running else None
    if mode not in (None, "training", "evaluation"):
        raise DoodleError(f"mode must be 'training' or 'evaluation', got {mode!r}")
    if mode and seen and mode != seen:
        raise DoodleError(f"the graph is in {seen} mode (it has {'dropout masks' if masks else 'batch statistics'} "
                          f"or running statistics accordingly), not {mode}")
    mode = mode or seen
    if mode == "training":
        what = ([f"{', '.join(masks)} multiply by random masks (0 or 1/(1-p))"] if masks else []) + \
            ([f"{', '.join(batch)} use this batch's mean and variance, and the gradient flows through them"]
             if batch else [])
        return ": ".join(["Training mode, as a training step runs it"] + (["; ".join(what)] if what else []))
    if mode == "evaluation":
        return "; ".join(["Evaluation mode, as doodle predict runs it: no dropout"]
                         + ([f"{', '.join(running)} use their running mean and variance (constants)"] if running
                            else []))
    return "No dropout mask and no batch-norm statistics in this graph: the mode does not show"


@dataclass
class _Group:
    """One layer's nodes (their .scope) and where their boxes sit in its frame."""

    name: str
    nodes: list[ad.Tensor]
    at: dict = field(default_factory=dict)  # node -> (x of its box from the frame's content, lane: -1 leaves, 0..)
    width: float = 0.0
    lanes: int = 1  # lanes of ops: 0 the main line, 1.. the side branches below it
    image: np.ndarray | None = None  # (S, S) the drawing, in the input's group
    caption: str = ""
    x: float = 0.0  # the frame's top left, once placed
    y: float = 0.0
    height: float = 0.0


def _groups(root: ad.Tensor, nodes: list[ad.Tensor], consumers: dict) -> list[_Group]:
    """The nodes by layer, in the order data reaches them: the input, then each run of ops of one scope (a scope
    entered twice makes two groups); every other leaf joins the group of the first op that reads it."""
    groups: list[_Group] = []
    of: dict[ad.Tensor, _Group] = {}
    for n in nodes:  # topological: a group's ops only read earlier groups and each other
        if n.parents:
            if not groups or groups[-1].name != n.scope:
                groups.append(_Group(n.scope, []))
            groups[-1].nodes.append(n)
            of[n] = groups[-1]
    inputs = [n for n in nodes if _role(n, root) == "input"]
    for n in nodes:
        if not n.parents and n not in inputs:
            if not consumers[n]:  # a loss that is a leaf itself
                groups.append(_Group(n.scope, []))
            (of[consumers[n][0]] if consumers[n] else groups[-1]).nodes.append(n)
    return ([_Group("input", inputs)] if inputs else []) + groups


def _isotonic(desired: list[float], weights: list[float]) -> list[float]:
    """Non-decreasing values closest to desired in weighted least squares (pool adjacent violators)."""
    blocks: list[tuple[float, float, int]] = []  # (mean, weight, count)
    for d, w in zip(desired, weights):
        blocks.append((d, w, 1))
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append(((m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2))
    return [m for m, _, c in blocks for _ in range(c)]


def _spread(desired: list[float]) -> list[float]:
    """Positions a box pitch apart at least, in order, as near the desired ones as can be (least squares)."""
    z = _isotonic([d - k * PITCH for k, d in enumerate(desired)], [1.0] * len(desired))
    return [zk + k * PITCH for k, zk in enumerate(z)]


def _arrange(g: _Group, root: ad.Tensor, consumers: dict) -> None:
    """Place a group's boxes: ops in columns by data flow, the main line (the value the group hands on, back through
    first operands) in lane 0, side branches below it, and each leaf above the op that reads it."""
    ops = [n for n in g.nodes if n.parents]
    inside = set(ops)
    col: dict[ad.Tensor, int] = {}
    for n in ops:  # topological: parents first
        col[n] = 1 + max((col[p] for p in n.parents if p in inside), default=-1)
    main: set[ad.Tensor] = set()
    last = next((n for n in reversed(ops) if not consumers[n] or not set(consumers[n]) <= inside),
                ops[-1] if ops else None)
    while last is not None and last in inside:
        main.add(last)
        last = last.parents[0]
    for n in reversed(ops):  # a side op feeding one main-line op just after it moves right below it
        if n not in main and len(consumers[n]) == 1 and consumers[n][0] in main and col[n] == col[consumers[n][0]] - 1:
            col[n] += 1
    rank = {c: k for k, c in enumerate(sorted(set(col.values())))}  # emptied columns close up
    taken = set()
    for n in ops:
        lane = 0 if n in main else next(k for k in range(1, len(ops) + 1) if (rank[col[n]], k) not in taken)
        taken.add((rank[col[n]], lane))
        g.at[n] = (rank[col[n]] * PITCH, lane)
    leaves = [n for n in g.nodes if not n.parents]
    if ops:
        want = sorted(((next((g.at[c][0] for c in consumers[n] if c in inside), 0.0), k) for k, n in enumerate(leaves)))
        for (_, k), x in zip(want, _spread([w for w, _ in want])):
            g.at[leaves[k]] = (x, -1)
    else:  # only leaves (the input): on the main line, side by side
        g.at.update({n: (k * PITCH, 0) for k, n in enumerate(leaves)})
    left = min(x for x, _ in g.at.values())
    shift = -left
    if g.name == "input":
        v = next(n for n in leaves if _role(n, root) == "input").value
        side = math.isqrt(v.shape[-1]) if v.ndim == 2 else 0
        if side >= 8 and side * side == v.shape[-1]:  # a square bitmap: show the first drawing itself
            g.image = np.asarray(v[0], dtype=np.float64).reshape(side, side)
            g.caption = f"x, {side}x{side}" + (f": 1 of {len(v)}" if len(v) > 1 else "")
            shift += side * PIXEL + 12
    g.at = {n: (x + shift, lane) for n, (x, lane) in g.at.items()}
    content = max(x for x, _ in g.at.values()) + BOX_W
    g.width = max(content, CHAR_W * (len(g.name) + 2 + len(_gloss(g.name)))) + 2 * PAD
    g.lanes = 1 + max(lane for _, lane in g.at.values())


def _gloss(name: str) -> str:
    """What kind of layer a group is: "dense3" -> "affine"."""
    return GLOSSES.get(name.rstrip("0123456789"), "")


def _row_height(lanes: int) -> float:
    """A row's frames: name, the leaves' lane, then `lanes` lanes of ops."""
    return LABEL_H + (lanes + 1) * (BOX_H + GAP_Y) - GAP_Y + PAD


def _rows(groups: list[_Group]) -> list[list[_Group]]:
    """The groups, in order, cut into rows: of all cuts with the widest row as narrow as it can be for its number
    of rows, the one that fits SCREEN at the largest scale (fewer rows on a tie) within MAX_WIDTH: a graph too
    big for the screen grows downwards, as pages scroll down, not sideways."""
    def greedy(limit):
        rows, width = [[]], -GROUP_GAP
        for g in groups:
            if rows[-1] and width + GROUP_GAP + g.width > limit:
                rows.append([])
                width = -GROUP_GAP
            rows[-1].append(g)
            width += GROUP_GAP + g.width
        return rows

    def size(rows):
        w = max(sum(g.width for g in row) + GROUP_GAP * (len(row) - 1) for row in rows) + 2 * MARGIN
        h = HEADER + sum(_row_height(max(g.lanes for g in row)) for row in rows) + ROW_GAP * (len(rows) - 1) + MARGIN
        return w, h

    limits = sorted({sum(g.width for g in groups[i:j]) + GROUP_GAP * (j - i - 1)
                     for i in range(len(groups)) for j in range(i + 1, len(groups) + 1)})
    best, seen = None, set()
    for limit in limits:
        rows = greedy(limit)
        if len(rows) in seen:  # a wider limit with as many rows gains nothing
            continue
        seen.add(len(rows))
        w, h = size(rows)
        key = (w > MAX_WIDTH, max(w / SCREEN[0], h / SCREEN[1]))
        if best is None or key < best[0]:
            best = (key, rows)
    assert best is not None  # there is a group (the loss's), so a limit
    return best[1]


def _rounded(points: list[tuple[float, float]], r: float = 6.0) -> str:
    """SVG path data through orthogonal points, corners rounded."""
    d = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for (x0, y0), (x1, y1), (x2, y2) in zip(points, points[1:], points[2:]):
        a = min(r, math.hypot(x1 - x0, y1 - y0) / 2, math.hypot(x2 - x1, y2 - y1) / 2)
        ux, uy = _unit(x1 - x0, y1 - y0)
        vx, vy = _unit(x2 - x1, y2 - y1)
        d += f" L{x1 - ux * a:.1f},{y1 - uy * a:.1f} Q{x1:.1f},{y1:.1f} {x1 + vx * a:.1f},{y1 + vy * a:.1f}"
    return d + f" L{points[-1][0]:.1f},{points[-1][1]:.1f}"


def _unit(dx: float, dy: float) -> tuple[float, float]:
    n = math.hypot(dx, dy) or 1.0
    return dx / n, dy / n


def _png_uri(image: np.ndarray) -> str:
    """A bitmap of ink in 0..1 as a data: URI of a PNG, dark ink on white paper (as report.py shows drawings)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((255 - np.clip(image, 0, 1) * 255).round().astype(np.uint8), mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def graph_svg(root: ad.Tensor, title: str = "", mode: str | None = None) -> str:
    """The graph as a standalone SVG document: each layer a framed group, data flowing left to right and row after
    row down to the loss, the drawing beside its pixels, the operands of binary ops labelled, the mode stated
    (`mode`, or read from the nodes: see mode_line)."""
    _check(root)
    nodes = ad.topological(root)
    number = {n: k for k, n in enumerate(nodes)}  # as in the DOT text
    consumers: dict[ad.Tensor, list[ad.Tensor]] = {n: [] for n in nodes}
    for n in nodes:
        for p in dict.fromkeys(n.parents):
            consumers[p].append(n)
    groups = _groups(root, nodes, consumers)
    for g in groups:
        _arrange(g, root, consumers)
    rows = _rows(groups)
    title = title or "Computational graph of the loss"
    subtitle = mode_line(root, mode)
    y = float(HEADER)
    row_of: dict[ad.Tensor, int] = {}
    bottoms: list[float] = []
    for r, row in enumerate(rows):
        x, height = float(MARGIN), _row_height(max(g.lanes for g in row))
        for g in row:
            g.x, g.y, g.height = x, y, height
            x += g.width + GROUP_GAP
            row_of.update((n, r) for n in g.nodes)
        y += height + ROW_GAP
        bottoms.append(y - ROW_GAP)
    box = {n: (g.x + PAD + bx, g.y + LABEL_H + (lane + 1) * (BOX_H + GAP_Y)) for g in groups
           for n, (bx, lane) in g.at.items()}
    # wide enough for the title, the mode line and the legend too (a monospace character is 0.6 em)
    legend = sum(42 + CHAR_W * len(role) for role in COLOURS) + CHAR_W * len(LEGEND)
    width = max(max(g.x + g.width for g in groups) + MARGIN, 2 * MARGIN + 9.6 * len(title),
                2 * MARGIN + 7.8 * len(subtitle), 2 * MARGIN + legend)
    height = bottoms[-1] + MARGIN

    # Each edge: the sides it leaves and enters by, from where the two boxes sit.
    edges = []  # (parent, child, operand index, out side, in side)
    for n in nodes:
        for k, p in enumerate(n.parents):
            (sx, sy), (tx, ty) = box[p], box[n]
            if row_of[p] != row_of[n]:
                sides = ("right", "left")
            elif sy + BOX_H <= ty and (not p.parents or sx + BOX_W > tx):  # a leaf, or an op right above
                sides = ("bottom", "top")
            elif sy >= ty + BOX_H:  # below: a side branch rejoining
                sides = ("right", "bottom") if sx + BOX_W < tx else ("top", "bottom")
            else:
                sides = ("right", "left")
            edges.append((p, n, k, *sides))

    def centre(n):
        return box[n][0] + BOX_W / 2, box[n][1] + BOX_H / 2

    # Where each edge meets a box: spread along the side, in the order of the boxes at the other ends.
    ends: dict[tuple, list] = {}
    for e, (p, n, k, out_side, in_side) in enumerate(edges):
        along = 1 if out_side in ("left", "right") else 0
        ends.setdefault((p, out_side), []).append((centre(n)[along], k, e, 0))
        along = 1 if in_side in ("left", "right") else 0
        ends.setdefault((n, in_side), []).append((centre(p)[along], k, e, 1))
    port: dict[tuple[int, int], tuple[float, float]] = {}
    for (n, side), items in ends.items():
        items.sort()
        length = BOX_H if side in ("left", "right") else BOX_W
        step = min(12.0 if length == BOX_H else 24.0, 0.7 * length / max(len(items) - 1, 1))
        x, y = box[n]
        mid = (y + BOX_H / 2) if side in ("left", "right") else (x + BOX_W / 2)
        # The end nearest in line with the box's middle stays there (a main line runs straight), the rest
        # spread from it; centred as a whole if that would run off the side.
        first: float = -min(range(len(items)), key=lambda i: abs(items[i][0] - mid))
        if max(abs(first), abs(first + len(items) - 1)) * step > 0.4 * length:
            first = -(len(items) - 1) / 2
        for i, (_, _, e, end) in enumerate(items):
            off = (first + i) * step
            port[e, end] = {"left": (x, y + BOX_H / 2 + off), "right": (x + BOX_W, y + BOX_H / 2 + off),
                            "top": (x + BOX_W / 2 + off, y), "bottom": (x + BOX_W / 2 + off, y + BOX_H)}[side]

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
             f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'font-family={quoteattr(FONT)} font-size="11">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{MARGIN}" y="28" font-size="16" font-weight="bold">{escape(title)}</text>',
             f'<text class="mode" x="{MARGIN}" y="49" font-size="13" fill="#7a2e00">{escape(subtitle)}</text>']
    lx = float(MARGIN)
    for role, (fill, stroke) in COLOURS.items():
        parts.append(f'<rect x="{lx:.0f}" y="62" width="14" height="14" rx="3" fill="{fill}" stroke="{stroke}"/>'
                     f'<text x="{lx + 20:.0f}" y="73">{role}</text>')
        lx += 20 + CHAR_W * len(role) + 22
    parts.append(f'<text x="{lx:.0f}" y="73" fill="#555">{LEGEND}</text>')

    for g in groups:
        parts.append(f'<g class="layer" data-scope={quoteattr(g.name)}>'
                     f'<rect x="{g.x:.1f}" y="{g.y:.1f}" width="{g.width:.1f}" height="{g.height:.1f}" rx="9" '
                     f'fill="#f5f7fa" stroke="#c5cfdb"/>'
                     f'<text x="{g.x + PAD:.1f}" y="{g.y + 15:.1f}" font-weight="bold" fill="#34495e">'
                     f'{escape(g.name or "graph")}<tspan font-weight="normal" fill="#7f8c8d">  '
                     f'{escape(_gloss(g.name))}</tspan></text>')
        if g.image is not None:
            side = g.image.shape[0] * PIXEL
            ix, iy = g.x + PAD, g.y + LABEL_H
            uri = _png_uri(g.image)
            parts.append(f'<image class="drawing" x="{ix:.1f}" y="{iy:.1f}" width="{side}" height="{side}" '
                         f'href="{uri}" xlink:href="{uri}" style="image-rendering:pixelated" '
                         f'preserveAspectRatio="none"/>'
                         f'<rect x="{ix:.1f}" y="{iy:.1f}" width="{side}" height="{side}" fill="none" stroke="#999"/>'
                         f'<text x="{ix + side / 2:.1f}" y="{iy + side + 13:.1f}" text-anchor="middle" fill="#555">'
                         f'{escape(g.caption)}</text>')
        parts.append("</g>")

    gaps: dict[int, list] = {}  # row -> the parents whose wires run in the gap below it
    for e, (p, n, k, out_side, in_side) in enumerate(edges):
        (x0, y0), (x1, y1) = port[e, 0], port[e, 1]
        if row_of[p] != row_of[n]:  # on to a later row: down the gap after the parent, back left, into the child
            lane = gaps.setdefault(row_of[p], [])
            if p not in lane:
                lane.append(p)
            yg = bottoms[row_of[p]] + 10 + 6 * lane.index(p)
            pts = [(x0, y0), (x0 + 10, y0), (x0 + 10, yg), (x1 - 10, yg), (x1 - 10, y1), (x1, y1)]
        elif (out_side, in_side) == ("right", "left"):
            xm = max(x1 - GAP_X / 2, (x0 + x1) / 2)
            pts = [(x0, y0), (x1, y1)] if abs(y0 - y1) < 0.5 else [(x0, y0), (xm, y0), (xm, y1), (x1, y1)]
        elif (out_side, in_side) == ("right", "bottom"):
            pts = [(x0, y0), (x1, y0), (x1, y1)]
        else:  # straight down or up, with a jog halfway when the ports are not in line
            ym = (y0 + y1) / 2
            pts = [(x0, y0), (x1, y1)] if abs(x0 - x1) < 0.5 else [(x0, y0), (x0, ym), (x1, ym), (x1, y1)]
        parts.append(f'<path class="edge" data-from="n{number[p]}" data-to="n{number[n]}" d="{_rounded(pts)}" '
                     f'fill="none" stroke="#777" stroke-width="1.3" marker-end="url(#arrow)"/>')
        if len(n.parents) > 1:  # which operand: a, b, ...
            lx, ly, anchor = {"left": (x1 - 4, y1 - 4, "end"), "top": (x1 + 4, y1 - 6, "start"),
                              "bottom": (x1 + 4, y1 + 13, "start")}[in_side]
            parts.append(f'<text class="operand" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" font-size="11" '
                         f'font-weight="bold" fill="#2c3e50" stroke="white" stroke-width="3" paint-order="stroke">'
                         f'{"abcdefgh"[k]}</text>')

    for n in nodes:
        lab = _label(n, root)
        fill, stroke = COLOURS[lab.role]
        x, y = box[n]
        formula = FORMULAS.get(n.op, "") if len(n.parents) == 2 else ""
        parts.append(f'<g class="node {lab.role}" id="n{number[n]}"><title>{escape(lab.details)}</title>'
                     f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
                     f'stroke="{stroke}" stroke-width="{2.2 if lab.role == "loss" else 1.2}"/>'
                     f'<text x="{x + 6:.1f}" y="{y + 14:.1f}" font-weight="bold"'
                     f'{_squeeze(len(lab.short) + (len(formula) + 2 if formula else 0))}>{escape(_fit(lab.short))}'
                     + (f'<tspan font-weight="normal" fill="#555">  {escape(formula)}</tspan>' if formula else "")
                     + "</text>")
        for i, (text, extra) in enumerate(((lab.shape, ""), (lab.value, ""),
                                          (lab.grad, ' fill="#7a2e00"' if n.grad is not None else ' fill="#888"'))):
            parts.append(f'<text x="{x + 6:.1f}" y="{y + 27 + i * 13:.1f}"{extra}{_squeeze(len(_fit(text)))}>'
                         f'{escape(_fit(text))}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _squeeze(chars: int) -> str:
    """A textLength attribute that narrows a line a little too long for its box (_fit cuts a longer one)."""
    return f' textLength="{ROOM}" lengthAdjust="spacingAndGlyphs"' if chars * CHAR_W > ROOM else ""


def _fit(text: str, chars: int = int(ROOM * 1.2 / CHAR_W)) -> str:
    """Text cut to what a box line holds, squeezed by up to a sixth."""
    return text if len(text) <= chars else text[:chars - 1] + "…"


# --- the one-weight picture ------------------------------------------------------------------------------

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
             f'<text x="{main.left}" y="46" fill="#444">slope dL/dw = {escape(_num(s.slope))} (backward pass), '
             f'loss {escape(_num(s.loss))} at w = {escape(_num(s.current))}</text>',
             f'<text class="step" x="{main.left}" y="64" fill="#1b7f3b">one gradient-descent step at lr = '
             f'{escape(_num(s.lr))}: w - lr * slope = {escape(_num(s.stepped))}, a move of '
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
                 f'<text x="{inset.left - 60}" y="{inset.top - 14}" fill="#444">loss - {escape(_num(s.loss))} '
                 f'({yunit})</text>'
                 f'<text x="{inset.left + inset.width / 2}" y="{inset.top + inset.height + 36}" fill="#444" '
                 f'text-anchor="middle">w - {escape(_num(s.current))} ({xunit})</text>')
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
    notes = ["red: w now; green: one step on", f"the step: lr * |slope| = {_num(s.lr * abs(s.slope))}",
             f"the loss falls by {_num(s.loss - after)}", f"tangent: lr * slope^2 = {_num(s.lr * s.slope ** 2)}"]
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
