"""Drawings of the computational graph (SVG, DOT, text tree) and of the loss along one weight."""

from __future__ import annotations

import base64
import io
import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from doodle import autodiff as ad
from doodle import graphdraw as gd
from doodle import slicedraw as sd
from doodle.errors import DoodleError
from doodle.nn import LOSSES, MLP
from doodle.progress import Reporter

SVG = "{http://www.w3.org/2000/svg}"


def mlp_graph(loss="cross_entropy", dropout=True, sizes=(20, 8, 6, 4), batch=3):
    """A small MLP's training-mode loss after forward and a retained backward, with dropout masks on both
    hidden layers."""
    rng = np.random.default_rng(0)
    model = MLP(list(sizes), dtype=np.float64, seed=0, dropout=0.5 if dropout else 0.0)
    value = model.loss_graph(rng.random((batch, sizes[0])), rng.integers(0, sizes[-1], batch), loss, train=True)
    value.backward(retain_graph=True)
    return value


def label_of(node, root):
    """The first line the SVG shows for a node: its op, or the leaf's name (its role is its colour)."""
    return gd._label(node, root).short


def network_graph(sizes, norm="none", dropout=0.1, train=False, batch=1, loss="cross_entropy", seed=0):
    """The loss graph of a network of the given shape on a random sparse drawing, after a retained backward."""
    rng = np.random.default_rng(seed)
    model = MLP(list(sizes), dropout=dropout, norm=norm, seed=seed)
    x = (rng.random((batch, sizes[0])) > 0.8).astype(np.float32)
    value = model.loss_graph(x, rng.integers(0, sizes[-1], batch), loss, train=train)
    value.backward(retain_graph=True)
    return value


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_svg_parses_and_names_every_node(loss):
    root = mlp_graph(loss)
    nodes = ad.topological(root)
    assert 25 <= len(nodes) <= 40
    svg = ET.fromstring(gd.graph_svg(root, title="a <small> & tidy net"))
    groups = [g for g in svg.iter(f"{SVG}g") if "node" in g.get("class", "").split()]
    assert len(groups) == len(nodes)
    titles = [g.findall(f"{SVG}text")[0].text for g in groups]
    assert sorted(titles) == sorted(label_of(n, root) for n in nodes)
    assert "dense0.W" in titles and "dropout1.mask" in titles and "mean = loss" in titles
    ops = {n.op for n in nodes if n.parents}
    assert ops >= {"matmul", "add", "relu", "mul", "max", "sub", "exp", "sum", "mean"}
    assert all(any(t.startswith(op) for t in titles) for op in ops)
    assert any("&" in (t.text or "") for t in svg.iter(f"{SVG}text"))  # the title, escaped and parsed back
    roles = {g.get("class").split()[1] for g in groups}
    assert roles == {"input", "parameter", "constant", "op", "loss"}


def boxes(svg_text):
    """{node id: (x, y, w, h, title)} of every node box."""
    svg = ET.fromstring(svg_text)
    out = {}
    for g in svg.iter(f"{SVG}g"):
        if "node" in g.get("class", "").split():
            r = g.find(f"{SVG}rect")
            out[g.get("id")] = (*(float(r.get(k)) for k in ("x", "y", "width", "height")),
                                g.findall(f"{SVG}text")[0].text)
    return out


def frames(svg_text):
    """{scope: (x, y, w, h)} of every layer's frame."""
    svg = ET.fromstring(svg_text)
    return {g.get("data-scope"): tuple(float(g.find(f"{SVG}rect").get(k)) for k in ("x", "y", "width", "height"))
            for g in svg.iter(f"{SVG}g") if g.get("class") == "layer"}


def inside(box, frame):
    x, y, w, h = box[:4]
    fx, fy, fw, fh = frame
    return fx <= x and x + w <= fx + fw and fy <= y and y + h <= fy + fh


def path_ends(d):
    """First and last point of an SVG path's data."""
    pts = [(float(a), float(b)) for a, b in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]
    return pts[0], pts[-1]


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_svg_layout_has_no_overlapping_boxes_and_reads_forward_to_the_loss(loss):
    root = mlp_graph(loss)
    nodes = ad.topological(root)
    text = gd.graph_svg(root)
    bs = boxes(text)
    values = list(bs.values())
    for i, (x, y, w, h, _) in enumerate(values):
        for x2, y2, w2, h2, _ in values[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y
    svg = ET.fromstring(text)
    width, height = float(svg.get("width")), float(svg.get("height"))
    assert all(0 <= x and x + w <= width and 0 <= y and y + h <= height for x, y, w, h, _ in values)
    loss_box = bs[f"n{len(nodes) - 1}"]
    assert loss_box[4].endswith("= loss")
    fs = frames(text)
    assert max(fs, key=lambda s: (fs[s][1], fs[s][0])) == "loss"  # the last frame in reading order
    assert loss_box[0] == max(b[0] for b in values if inside(b, fs["loss"]))  # and the loss ends it
    paths = [p for p in svg.iter(f"{SVG}path") if p.get("class") == "edge"]
    assert len(paths) == sum(len(n.parents) for n in nodes)
    number = {n: k for k, n in enumerate(nodes)}
    assert sorted((p.get("data-from"), p.get("data-to")) for p in paths) == \
        sorted((f"n{number[p]}", f"n{number[n]}") for n in nodes for p in n.parents)
    for p in paths:  # each edge starts on its parent's box and ends on its child's, never running backwards
        (x0, y0), (x1, y1) = path_ends(p.get("d"))
        src, dst = bs[p.get("data-from")], bs[p.get("data-to")]
        assert src[0] - 0.5 <= x0 <= src[0] + src[2] + 0.5 and src[1] - 0.5 <= y0 <= src[1] + src[3] + 0.5
        assert dst[0] - 0.5 <= x1 <= dst[0] + dst[2] + 0.5 and dst[1] - 1.5 <= y1 <= dst[1] + dst[3] + 0.5
        assert dst[0] >= src[0] or dst[1] >= src[1] + src[3] + gd.ROW_GAP  # to the right, or on a later row


@pytest.mark.parametrize("name, sizes, norm", [("default", (784, 512, 256, 10), "none"),
                                               ("quickdraw16", (784, 1024, 512, 16), "batch")])
def test_the_shipped_networks_fit_a_screen(name, sizes, norm):
    for train in (False, True) if norm == "none" else (False,):  # what `doodle graph` draws: evaluation mode
        svg = ET.fromstring(gd.graph_svg(network_graph(sizes, norm=norm, train=train, batch=2 if train else 1)))
        width, height = float(svg.get("width")), float(svg.get("height"))
        assert width <= gd.SCREEN[0] and height <= gd.SCREEN[1], (name, train, width, height)
        assert width >= 2 * height * 0.6  # wide, not a column: at most ~3 rows of layers


def test_a_deeper_network_scrolls_down_not_sideways():
    deep = ET.fromstring(gd.graph_svg(network_graph((784,) + (64,) * 12 + (10,), norm="batch")))
    assert float(deep.get("width")) <= gd.MAX_WIDTH and float(deep.get("height")) > 2 * gd.SCREEN[1]
    # quickdraw16's training-mode graph (batch statistics: 9 ops a norm layer) still fits a full-HD screen
    train = ET.fromstring(gd.graph_svg(network_graph((784, 1024, 512, 16), norm="batch", train=True, batch=2)))
    assert float(train.get("width")) <= gd.MAX_WIDTH and float(train.get("height")) <= 1080


def test_every_layer_is_a_named_frame_holding_its_own_nodes():
    root = network_graph((784, 1024, 512, 16), norm="batch", dropout=0.1, train=True, batch=4)
    nodes = ad.topological(root)
    text = gd.graph_svg(root)
    fs, bs = frames(text), boxes(text)
    assert list(fs) == ["input", "dense0", "norm0", "act0", "dropout0", "dense1", "norm1", "act1", "dropout1",
                        "dense2", "loss"]
    labels = {g.get("data-scope"): "".join(g.find(f"{SVG}text").itertext())
              for g in ET.fromstring(text).iter(f"{SVG}g") if g.get("class") == "layer"}
    assert labels["norm1"].startswith("norm1") and "batch norm" in labels["norm1"]
    for k, n in enumerate(nodes):
        scope = "input" if n.name == "x" else n.scope
        assert inside(bs[f"n{k}"], fs[scope]), (k, n, scope)
        assert not any(inside(bs[f"n{k}"], f) for s, f in fs.items() if s != scope)


def test_the_drawing_itself_is_shown_beside_its_pixels():
    root = network_graph((64, 8, 4), dropout=0.0)  # an 8x8 drawing
    x = next(n for n in ad.topological(root) if n.name == "x")
    svg = ET.fromstring(gd.graph_svg(root))
    image = svg.find(f".//{SVG}image")
    assert image.get("class") == "drawing"
    uri = image.get("href")
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        shown = np.asarray(im.convert("L"))
    assert np.array_equal(shown, 255 - np.round(x.value[0].reshape(8, 8) * 255))  # dark ink on white paper
    assert float(image.get("width")) == float(image.get("height")) == 8 * gd.PIXEL
    x_box = boxes(ET.tostring(svg, encoding="unicode"))["n0"]
    assert x_box[4] == "x" and float(image.get("x")) + float(image.get("width")) < x_box[0]
    assert inside((float(image.get("x")), float(image.get("y")), 32, 32), frames(ET.tostring(svg, encoding="unicode"))
                  ["input"])
    assert gd.graph_svg(mlp_graph()).count("<image") == 0  # 20 inputs are no square bitmap


def test_edges_into_binary_ops_say_which_operand_they_are():
    root = network_graph((784, 512, 256, 10))
    nodes = ad.topological(root)
    number = {n: k for k, n in enumerate(nodes)}
    svg = ET.fromstring(gd.graph_svg(root))
    labels = [(float(t.get("x")), float(t.get("y")), t.text) for t in svg.iter(f"{SVG}text")
              if t.get("class") == "operand"]
    checked = set()
    for p in svg.iter(f"{SVG}path"):
        if p.get("class") != "edge":
            continue
        child = nodes[int(p.get("data-to")[1:])]
        parent = nodes[int(p.get("data-from")[1:])]
        if len(child.parents) < 2:
            continue
        (_, _), (x1, y1) = path_ends(p.get("d"))
        near = min(labels, key=lambda t: math.hypot(t[0] - x1, t[1] - y1))
        assert math.hypot(near[0] - x1, near[1] - y1) < 16
        assert near[2] == "ab"[child.parents.index(parent)], (child.op, parent.op or parent.name)
        checked.add(child.op)
    assert checked >= {"matmul", "add", "sub"}
    assert len(labels) == sum(len(n.parents) for n in nodes if len(n.parents) > 1)
    # The loss's subtraction z - max: a is the logits (dense2's add), b the row max.
    z = next(n for n in nodes if n.op == "sub" and n.parents[1].op == "max")
    assert z.parents[0].scope == "dense2" and number[z.parents[1]] < number[z]
    titles = {"".join(g.find(f"{SVG}text").itertext()) for g in svg.iter(f"{SVG}g") if g.get("id")}
    assert "sub  a − b" in titles and "matmul  a @ b" in titles
    dot = gd.graph_dot(root)
    assert f'  n{number[z.parents[0]]} -> n{number[z]} [label="a"];' in dot
    assert f'  n{number[z.parents[1]]} -> n{number[z]} [label="b"];' in dot


def mode_of(root, **kw):
    return ET.fromstring(gd.graph_svg(root, **kw)).find(f".//{SVG}text[@class='mode']").text


def test_the_picture_says_which_mode_built_the_graph():
    evaluation = network_graph((64, 16, 8, 4), norm="batch", dropout=0.3)
    assert mode_of(evaluation).startswith("Evaluation mode") and "norm0, norm1 use their running mean" in \
        mode_of(evaluation)
    training = network_graph((64, 16, 8, 4), norm="batch", dropout=0.3, train=True, batch=4)
    text = mode_of(training)
    assert text.startswith("Training mode") and "dropout0, dropout1 multiply by random masks" in text
    assert "norm0, norm1 use this batch's mean and variance" in text
    batch_only = mode_of(network_graph((64, 16, 4), norm="batch", dropout=0.0, train=True, batch=4))
    assert batch_only.startswith("Training mode") and "norm0 use this batch's" in batch_only and "mask" not in \
        batch_only
    dropout_only = network_graph((64, 16, 4), dropout=0.3)  # evaluation leaves no trace of dropout
    assert "does not show" in mode_of(dropout_only)
    assert mode_of(dropout_only, mode="evaluation").startswith("Evaluation mode, as doodle predict runs it")
    with pytest.raises(DoodleError, match="training mode"):
        gd.graph_svg(training, mode="evaluation")
    with pytest.raises(DoodleError, match="mode must be"):
        gd.graph_svg(evaluation, mode="eval")


def test_dot_contains_every_node_and_edge():
    root = mlp_graph("mse")
    nodes = ad.topological(root)
    dot = gd.graph_dot(root)
    assert dot.startswith("digraph loss {") and dot.rstrip().endswith("}")
    declared = re.findall(r"^  n(\d+) \[label=\"([^\"]*)", dot, flags=re.M)
    assert sorted(int(k) for k, _ in declared) == list(range(len(nodes)))
    assert sorted(label.split("\\n")[0] for _, label in declared) == sorted(gd._label(n, root).title for n in nodes)
    edges = re.findall(r"^  n\d+ -> n\d+( \[label=\"[ab]\"\])?;$", dot, flags=re.M)
    assert len(edges) == sum(len(n.parents) for n in nodes)
    assert edges.count("") == sum(len(n.parents) for n in nodes if len(n.parents) == 1)


def test_dot_escapes_quotes():
    x = ad.Tensor(np.ones(3), requires_grad=True, name='say "hi"')
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    assert 'label="say \\"hi\\" (parameter)' in gd.graph_dot(loss)


def test_tree_lists_every_node_once_and_refers_back_to_shared_ones():
    root = mlp_graph("cross_entropy", dropout=False)
    lines = gd.graph_tree(root, width=1000)  # a line per node (test_cli_columns checks the 80-column breaks)
    nodes = ad.topological(root)
    full = [line for line in lines if not line.endswith("(above)")]
    assert len(full) == len(nodes)
    assert lines[0].startswith("mean = loss  ()  = ")
    shared = [line for line in lines if line.endswith("(above)")]
    assert len(shared) == sum(len(n.parents) for n in nodes) + 1 - len(nodes)  # extra uses of shared nodes
    for line in shared:  # each points at a number printed in full earlier
        tag = re.search(r"#\d+", line).group()
        assert any(tag in earlier for earlier in full[: lines.index(line)])
    assert any("dense0.W (parameter)" in line and "|grad|" in line for line in lines)
    assert any("x (input)" in line and "no gradient" in line for line in lines)


def test_drawing_needs_a_retained_graph():
    W = ad.Tensor(np.ones((2, 2)), requires_grad=True)
    loss = (W * W).sum()
    loss.backward()
    with pytest.raises(DoodleError, match="retain_graph=True"):
        gd.graph_svg(loss)


# --- the one-weight picture ----------------------------------------------------------------------------


def slice_setup(activation="tanh", seed=0, sizes=(12, 8, 5)):
    rng = np.random.default_rng(seed)
    model = MLP(list(sizes), activation=activation, dtype=np.float64, seed=seed, init="glorot")
    return rng.standard_normal((16, sizes[0])), rng.integers(0, sizes[-1], 16), model


def fd_slope(s: sd.LossSlice) -> float:
    """Central difference of the plotted curve at its middle point (the current value)."""
    m = len(s.weights) // 2
    return (s.losses[m + 1] - s.losses[m - 1]) / (s.weights[m + 1] - s.weights[m - 1])


def test_tangent_slope_equals_the_finite_difference_slope_of_the_plotted_curve():
    x, y, model = slice_setup()
    params = model.parameters()
    before = [p.copy() for p in params]  # the model is not touched
    s = sd.loss_slice(model, x, y, layer=0, row=3, col=5, loss="mse", span=1e-3)
    assert all(np.array_equal(a, b) for a, b in zip(before, params))  # the weight is back, exactly
    assert s.weights[20] == s.current == params[0][3, 5] and s.losses[20] == pytest.approx(s.loss, rel=1e-15)
    # Grid step 5e-5: truncation ~1e-9 of the slope, rounding ~1e-12: 1e-6 relative is a safe bound.
    assert abs(s.slope) > 1e-3 and fd_slope(s) == pytest.approx(s.slope, rel=1e-6)
    assert s.tangent(np.array([s.current])) == pytest.approx([s.loss])


def test_default_weight_is_a_steep_one_whose_curve_bends_in_view():
    x, y, model = slice_setup(sizes=(12, 16, 12, 5))  # dense1.W: 192 weights, 64 of them candidates
    s = sd.loss_slice(model, x, y, layer=1)  # no row/col: a steep weight of dense1.W, and its span
    _, dlogits = LOSSES["cross_entropy"](model.forward(x), y)
    model.backward(dlogits)  # the hand-written backward: an independent gradient
    g = model.dense[1].grads["W"]
    row, col = (int(v) for v in re.fullmatch(r"dense1\.W\[(\d+), (\d+)\]", s.name).groups())
    assert s.slope == pytest.approx(g[row, col], rel=1e-12)
    assert abs(g[row, col]) >= np.sort(np.abs(g), axis=None)[-sd.CANDIDATES]  # among the steepest
    assert s.weights[20] == s.current and s.weights[-1] - s.current == pytest.approx(s.current - s.weights[0])
    # Curvature shows: the curve strays from its tangent by a good share of what is plotted, and its second
    # differences stand far above float64 rounding.
    assert s.bend() >= 0.25
    second = np.abs(np.diff(s.losses, 2))
    assert second.max() > 1e6 * np.finfo(np.float64).eps * np.abs(s.losses).max()
    # The old default (the steepest weight over 3 spreads of the layer's weights) was nearly straight.
    steepest = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    old = sd.loss_slice(model, x, y, layer=1, row=int(steepest[0]), col=int(steepest[1]),
                        span=max(3 * model.dense[1].params["W"].std(), 0.5))
    assert old.bend() < s.bend()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_last_layer_default_shows_the_bottom_of_the_valley(seed):
    # The loss is convex in the last layer's weights (softmax cross-entropy of a linear map): the default span
    # takes in the minimum along the chosen weight, and the picture marks it.
    x, y, model = slice_setup(activation="relu", seed=seed)
    s = sd.loss_slice(model, x, y, layer=1)
    low = int(np.argmin(s.losses))
    assert 0 < low < len(s.losses) - 1
    assert np.all(np.diff(s.losses, 2) > 0)  # convex all along
    assert "lowest here" in sd.slice_svg(s)


def inset_scale(svg):
    """px per unit of w in the magnified inset, from its labelled ticks."""
    ticks = [(float(t.get("data-value")), float(t.get("x"))) for t in svg.iter(f"{SVG}text")
             if t.get("class") == "inset xtick"]
    assert len(ticks) >= 3
    (v0, x0), (v1, x1) = ticks[0], ticks[-1]
    return (x1 - x0) / (v1 - v0)


@pytest.mark.parametrize("lr", [0.002, 0.05])
def test_descent_step_is_drawn_to_scale_and_downhill(lr):
    x, y, model = slice_setup(activation="relu")
    s = sd.loss_slice(model, x, y, layer=0, row=1, col=2, lr=lr)
    assert s.lr == lr and s.stepped == s.current - lr * s.slope
    svg = ET.fromstring(sd.slice_svg(s))
    arrow = next(line for line in svg.iter(f"{SVG}line") if line.get("class") == "step-arrow")
    length = float(arrow.get("x2")) - float(arrow.get("x1"))
    assert length / inset_scale(svg) == pytest.approx(-lr * s.slope, rel=2e-3, abs=0.6 / inset_scale(svg))
    assert abs(length) > 20  # and big enough to see
    texts = " ".join("".join(t.itertext()) for t in svg.iter(f"{SVG}text"))
    assert f"lr = {lr:.4g}" in texts and "magnified" in texts
    # The loss after the step, read off the magnified curve, is lower, by about lr * slope^2.
    after = np.interp(s.stepped, s.zoom_weights, s.zoom_losses)
    assert s.loss - after == pytest.approx(lr * s.slope ** 2, rel=0.05)


def test_slice_svg_is_labelled():
    x, y, model = slice_setup(activation="relu")
    s = sd.loss_slice(model, x, y, layer=0, row=1, col=2)
    svg = ET.fromstring(sd.slice_svg(s))
    texts = " ".join("".join(t.itertext()) for t in svg.iter(f"{SVG}text"))
    assert "dense0.W[1, 2]" in texts and "average loss on the batch" in texts and "gradient-descent step" in texts
    for cls in ("main xtick", "main ytick", "inset xtick", "inset ytick"):
        assert sum(t.get("class") == cls for t in svg.iter(f"{SVG}text")) >= 3, cls
    curve = next(p for p in svg.iter(f"{SVG}polyline") if p.get("class") == "curve")
    assert curve.get("points").count(",") == len(s.weights)


def test_slice_rejects_a_weight_that_does_not_exist():
    x, y, model = slice_setup()
    with pytest.raises(DoodleError, match="layer must be 0..1"):
        sd.loss_slice(model, x, y, layer=2, row=0, col=0)
    with pytest.raises(DoodleError, match="dense0.W is 12x8"):
        sd.loss_slice(model, x, y, layer=0, row=12, col=0)
    with pytest.raises(DoodleError, match="points must be odd"):
        sd.loss_slice(model, x, y, layer=0, row=0, col=0, points=40)


def test_slice_reports_its_progress():
    events = []

    class Recorder(Reporter):
        def start(self, key, description, total=None, unit=""):
            events.append(("start", key, total))

        def update(self, key, advance=0, completed=None, total=None, **fields):
            events.append(("update", key, advance))

        def end(self, key):
            events.append(("end", key))

    x, y, model = slice_setup()
    sd.loss_slice(model, x, y, layer=1, reporter=Recorder())
    (_, key, total), *steps, last = events
    assert key == "slice" and last == ("end", "slice")
    assert 2 * 41 < len(steps) <= total and all(e == ("update", "slice", 1) for e in steps)
