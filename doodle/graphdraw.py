"""Drawing the computational graph of a loss as SVG, DOT and text (the one-weight picture: doodle.slicedraw).

The graph drawings read a loss Tensor after `loss.backward(retain_graph=True)`: every node shows its
op, output shape, a summary of its value and the norm of its gradient. The SVG is written here (no
Graphviz) to read at a glance on one screen: each layer (the nodes' `.scope`) is a framed group whose
main line of ops runs left to right, its parameters and constants just above the op that reads them,
side branches below; the groups follow one another in rows, as many as fit a screen best; the drawing
itself sits beside its pixels x; the edges into a binary op are labelled a, b (a - b, a @ b); a line
under the title says which mode (training or evaluation) built the graph. The DOT text is for people
who have Graphviz; the tree is for the terminal.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from doodle import autodiff as ad
from doodle.errors import DoodleError

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


def short_number(v: float) -> str:
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
        value = f"= {short_number(float(v.reshape(-1)[0]))}"
    else:
        value = f"mean {v.mean():.3g} sd {v.std():.3g}"
    grad = "no gradient" if node.grad is None else f"|grad| {short_number(float(np.linalg.norm(node.grad)))}"
    details = (f"{node.op} {node.name} {v.shape} {node.value.dtype}, min {short_number(v.min())}, "
               f"max {short_number(v.max())}")
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
