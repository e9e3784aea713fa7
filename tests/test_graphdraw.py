"""Drawings of the computational graph (SVG, DOT, text tree) and of the loss along one weight."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from doodle import autodiff as ad
from doodle import graphdraw as gd
from doodle.errors import DoodleError
from doodle.nn import LOSSES, MLP

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
    """The first line a drawing shows for a node: its op, or the leaf's name."""
    return gd._label(node, root).title


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_svg_parses_and_names_every_node(loss):
    root = mlp_graph(loss)
    nodes = ad.topological(root)
    assert 25 <= len(nodes) <= 40
    svg = ET.fromstring(gd.graph_svg(root, title="a <small> & tidy net"))
    groups = [g for g in svg.iter(f"{SVG}g") if "node" in g.get("class", "")]
    assert len(groups) == len(nodes)
    titles = [g.findall(f"{SVG}text")[0].text for g in groups]
    assert sorted(titles) == sorted(label_of(n, root) for n in nodes)
    ops = {n.op for n in nodes if n.parents}
    assert ops >= {"matmul", "add", "relu", "mul", "max", "sub", "exp", "sum", "mean"}
    assert all(any(t.startswith(op) for t in titles) for op in ops)
    assert any("&" in (t.text or "") for t in svg.iter(f"{SVG}text"))  # the title, escaped and parsed back
    roles = {g.get("class").split()[1] for g in groups}
    assert roles == {"input", "parameter", "constant", "op", "loss"}


def boxes(svg_text):
    """(x, y, w, h, title) of every node box."""
    svg = ET.fromstring(svg_text)
    out = []
    for g in svg.iter(f"{SVG}g"):
        if "node" in g.get("class", ""):
            r = g.find(f"{SVG}rect")
            out.append((*(float(r.get(k)) for k in ("x", "y", "width", "height")), g.findall(f"{SVG}text")[0].text))
    return out


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_svg_layout_has_no_overlapping_boxes_and_flows_down_to_the_loss(loss):
    root = mlp_graph(loss)
    text = gd.graph_svg(root)
    bs = boxes(text)
    for i, (x, y, w, h, _) in enumerate(bs):
        for x2, y2, w2, h2, _ in bs[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y
    svg = ET.fromstring(text)
    width, height = float(svg.get("width")), float(svg.get("height"))
    assert all(0 <= x and x + w <= width and 0 <= y and y + h <= height for x, y, w, h, _ in bs)
    loss_box = next(b for b in bs if b[4].endswith("= loss"))
    assert loss_box[1] == max(b[1] for b in bs)  # the loss is at the bottom
    paths = [p for p in svg.iter(f"{SVG}path") if p.get("marker-end")]
    assert len(paths) == sum(len(n.parents) for n in ad.topological(root))
    for p in paths:  # every edge runs down, from a parent's bottom to a child's top
        ys = [float(v) for v in re.findall(r"[-\d.]+,([-\d.]+)", p.get("d"))]
        assert ys[-1] > ys[0]


def test_dot_contains_every_node_and_edge():
    root = mlp_graph("mse")
    nodes = ad.topological(root)
    dot = gd.graph_dot(root)
    assert dot.startswith("digraph loss {") and dot.rstrip().endswith("}")
    declared = re.findall(r"^  n(\d+) \[label=\"([^\"]*)", dot, flags=re.M)
    assert sorted(int(k) for k, _ in declared) == list(range(len(nodes)))
    assert sorted(label.split("\\n")[0] for _, label in declared) == sorted(label_of(n, root) for n in nodes)
    assert len(re.findall(r"^  n\d+ -> n\d+;$", dot, flags=re.M)) == sum(len(n.parents) for n in nodes)


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


def slice_setup(activation="tanh", seed=0):
    rng = np.random.default_rng(seed)
    model = MLP([12, 8, 5], activation=activation, dtype=np.float64, seed=seed, init="glorot")
    return rng.standard_normal((16, 12)), rng.integers(0, 5, 16), model


def fd_slope(s: gd.LossSlice) -> float:
    """Central difference of the plotted curve at its middle point (the current value)."""
    m = len(s.weights) // 2
    return (s.losses[m + 1] - s.losses[m - 1]) / (s.weights[m + 1] - s.weights[m - 1])


def test_tangent_slope_equals_the_finite_difference_slope_of_the_plotted_curve():
    x, y, model = slice_setup()
    params = model.parameters()
    before = [p.copy() for p in params]
    s = gd.loss_slice(model, x, y, layer=0, row=3, col=5, loss="mse", span=1e-3)
    assert all(np.array_equal(a, b) for a, b in zip(before, params))  # the weight is back, exactly
    assert s.weights[20] == s.current == params[0][3, 5] and s.losses[20] == pytest.approx(s.loss, rel=1e-15)
    # Grid step 5e-5: truncation ~1e-9 of the slope, rounding ~1e-12: 1e-6 relative is a safe bound.
    assert abs(s.slope) > 1e-3 and fd_slope(s) == pytest.approx(s.slope, rel=1e-6)
    assert s.tangent(np.array([s.current])) == pytest.approx([s.loss])


def test_default_span_curve_still_has_the_engine_slope():
    x, y, model = slice_setup()
    s = gd.loss_slice(model, x, y, layer=1)  # no row/col: the steepest weight of dense1.W
    _, dlogits = LOSSES["cross_entropy"](model.forward(x), y)
    model.backward(dlogits)  # the hand-written backward agrees on which weight is steepest
    g = model.dense[1].grads["W"]
    row, col = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    assert s.name == f"dense1.W[{row}, {col}]" and s.slope == pytest.approx(g[row, col], rel=1e-12)
    span = max(3 * model.dense[1].params["W"].std(), 0.5)
    assert s.weights[0] == pytest.approx(s.current - span) and len(s.weights) == 41
    # Coarse grid (h = span / 20, about 0.036 here): the curve's own difference quotient differs
    # from the tangent by about h^2 / 6 times the third derivative: 3e-5 relative for this smooth
    # network; 1e-3 leaves room for other seeds, and a wrong slope (another weight's) is far off.
    assert fd_slope(s) == pytest.approx(s.slope, rel=1e-3)


def test_slice_svg_is_labelled_and_points_downhill():
    x, y, model = slice_setup(activation="relu")
    s = gd.loss_slice(model, x, y, layer=0, row=1, col=2)
    svg = ET.fromstring(gd.slice_svg(s))
    texts = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    assert "dense0.W[1, 2]" in texts and "average loss on the batch" in texts and "descent" in texts
    ticks = [t for t in svg.iter(f"{SVG}text") if t.get("text-anchor") in ("middle", "end")]
    assert len(ticks) >= 8  # labelled ticks on both axes
    assert svg.find(f".//{SVG}polyline").get("points").count(",") == len(s.weights)
    arrow = next(line for line in svg.iter(f"{SVG}line") if line.get("marker-end"))
    assert np.sign(float(arrow.get("x2")) - float(arrow.get("x1"))) == -np.sign(s.slope)


def test_slice_rejects_a_weight_that_does_not_exist():
    x, y, model = slice_setup()
    with pytest.raises(DoodleError, match="layer must be 0..1"):
        gd.loss_slice(model, x, y, layer=2, row=0, col=0)
    with pytest.raises(DoodleError, match="dense0.W is 12x8"):
        gd.loss_slice(model, x, y, layer=0, row=12, col=0)
    with pytest.raises(DoodleError, match="points must be odd"):
        gd.loss_slice(model, x, y, layer=0, row=0, col=0, points=40)
