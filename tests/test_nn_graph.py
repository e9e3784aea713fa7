"""The network's own graph (each layer's forward_graph, MLP.loss_graph) against its hand-written backward.

The model is described once (doodle.nn): these tests hold the graph the layers build to the layers'
forward and backward, value for value and gradient for gradient, in every configuration.
"""

from __future__ import annotations

import numpy as np
import pytest

from doodle import autodiff as ad
from doodle.errors import DoodleError
from doodle.gradcheck import rel_error
from doodle.nn import ACTIVATIONS, BACKPROP, LOSSES, MLP, NORMS, Dense, Dropout, Layer, LeakyReLU


def replay_dropout(model: MLP, seed: int) -> None:
    """Give every dropout layer a fresh generator: the next forward (or graph) draws the same masks."""
    for k, layer in enumerate(layer for layer in model.layers if isinstance(layer, Dropout)):
        layer.rng = np.random.default_rng([seed, k])


def manual_and_graph(activation, loss, dropout, norm="none", seed=0, dtype=np.float64, sizes=(12, 9, 7, 5),
                     batch=16):
    """(loss, gradients, dL/dx) of one batch by the layers' backward and by the model's graph, same masks."""
    rng = np.random.default_rng(seed)
    model = MLP(list(sizes), activation=activation, dropout=dropout, seed=seed, dtype=dtype, norm=norm)
    for p in model.parameters():
        if p.ndim == 1:  # biases start at 0 and gains at 1; make them matter
            p += rng.normal(0.0, 0.2, size=p.shape).astype(dtype)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=batch)
    replay_dropout(model, seed)
    value, dlogits = LOSSES[loss](model.forward(x, train=True), y)
    dx = model.backward(dlogits, input_grad=True)
    manual = [g.copy() for g in model.gradients()]
    replay_dropout(model, seed)
    pixels = ad.Tensor(x.copy(), requires_grad=True, name="x")
    graph_loss = model.loss_graph(pixels, y, loss, train=True)
    graph_loss.backward()
    return (value, manual, dx), (float(graph_loss.value), [g.copy() for g in model.gradients()], pixels.grad)


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_graph_gradients_equal_the_manual_ones(activation, loss, dropout, norm):
    (value, manual, dx), (graph_value, graph, graph_dx) = manual_and_graph(activation, loss, dropout, norm)
    assert graph_value == pytest.approx(value, rel=1e-12)
    worst = max(rel_error(m, g) for m, g in zip(manual, graph))
    assert worst < 1e-10, worst
    # the chain rule carried to the drawing: the graph's input gradient is the first layer's dX
    assert rel_error(dx, graph_dx) < 1e-10


def test_every_layer_states_its_forward_as_a_graph_and_every_loss_has_both_forms():
    assert set(ad.LOSSES) == set(LOSSES)
    for cls in [*ACTIVATIONS.values(), *(c for c in NORMS.values() if c), Dense, Dropout]:
        assert cls.forward_graph is not Layer.forward_graph, cls


def test_float32_network_gradients_agree_to_round_off():
    (_, manual, _), (_, graph, _) = manual_and_graph("relu", "cross_entropy", 0.3, dtype=np.float32,
                                                     sizes=(64, 32, 16, 10), batch=32)
    assert all(g.dtype == np.float32 for g in graph)
    for m, g in zip(manual, graph):  # normwise: single entries that nearly cancel are noisier
        assert np.linalg.norm(m - g) <= 1e-5 * np.linalg.norm(m)


def test_the_graph_uses_the_layers_own_constants():
    model = MLP([6, 5, 3], activation="leaky_relu", dtype=np.float64, seed=1)
    act = next(layer for layer in model.layers if isinstance(layer, LeakyReLU))
    act.alpha = 0.3  # a slope no default shares: the graph must read the layer's
    x = np.random.default_rng(0).standard_normal((8, 6))
    with ad.no_grad():
        np.testing.assert_allclose(model.logits_graph(x).value, model.forward(x), rtol=1e-13)
    model = MLP([6, 5, 3], norm="batch", dtype=np.float64, seed=1)
    model.norms[0].eps = 0.5  # likewise batch norm's eps, in both modes
    for train in (False, True):
        with ad.no_grad():
            np.testing.assert_allclose(model.logits_graph(x, train=train).value, model.forward(x, train=train),
                                       rtol=1e-12)


def test_graph_names_are_the_model_file_names():
    model = MLP([6, 5, 4, 3], norm="batch", dropout=0.2, dtype=np.float64)
    loss = model.loss_graph(np.zeros((2, 6)), np.array([0, 1]), train=True)
    leaves = {n.name for n in ad.topological(loss) if not n.parents and n.requires_grad}
    assert leaves == set(model.param_names)  # dense0.W, norm0.gain, ...: what model.npz holds
    constants = {n.name for n in ad.topological(loss) if not n.parents and not n.requires_grad}
    assert {"x", "dropout0.mask", "dropout1.mask"} <= constants
    with ad.no_grad():
        evaluation = model.loss_graph(np.zeros((2, 6)), np.array([0, 1]))
    assert not any("mask" in n.name for n in ad.topological(evaluation))  # no dropout outside training


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_workspace_reuse_changes_nothing(activation):
    """Training steps reuse the layers' arrays: two steps give exactly what two fresh graphs give."""
    x = np.random.default_rng(0).standard_normal((16, 12))
    y = np.arange(16) % 5
    reused, fresh = (MLP([12, 9, 7, 5], activation=activation, dropout=0.5, seed=2, dtype=np.float64)
                     for _ in range(2))
    step = BACKPROP["graph"](reused, "mse")
    for k in range(2):  # the second step writes over the first one's values and gradients
        value, logits = step(x * (k + 1), y)
        graph = fresh.loss_graph(x * (k + 1), y, "mse", train=True)
        graph.backward()
        assert value == float(graph.value)
        assert all(np.array_equal(a, b) for a, b in zip(reused.gradients(), fresh.gradients()))
    kept = {layer.name: set(ws) for layer, ws in zip(reused.layers, reused._workspaces)}
    assert kept["dense0"] == {"matmul", "add"}  # the first layer keeps no dX: the pixels need none
    assert kept["dense1"] == {"matmul", "d_matmul", "add"}
    assert kept["act0"] == {"act", "d_act"} and kept["dropout0"] == {"mul", "d_mul"}
    assert kept["dense2"] == {"matmul", "d_matmul"}  # the logits are a new array every step


def test_loss_graph_rejects_bad_arguments():
    model = MLP([4, 3, 2])
    x, y = np.zeros((5, 4), np.float32), np.array([0, 1, 1, 0, 1])
    with pytest.raises(DoodleError, match="unknown loss 'hinge'"):
        model.loss_graph(x, y, loss="hinge")
    with pytest.raises(DoodleError, match=r"labels must be 5 integers in \[0, 2\)"):
        model.loss_graph(x, np.array([0, 1, 2, 0, 1]))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_batch_norm_graph_folds_the_same_running_statistics(dropout):
    models = [MLP([12, 9, 7, 5], dropout=dropout, seed=3, dtype=np.float64, norm="batch") for _ in range(2)]
    x, y = np.random.default_rng(3).standard_normal((16, 12)), np.arange(16) % 5
    for _ in range(3):
        models[0].forward(x, train=True)
        models[1].loss_graph(x, y, train=True)
    for (name, a), b in zip(models[0].buffers().items(), models[1].buffers().values()):
        np.testing.assert_allclose(b, a, rtol=1e-12, err_msg=name)
    assert not np.allclose(models[0].buffers()["norm0.var"], 1.0)


def test_batch_norm_graph_in_evaluation_uses_the_running_statistics():
    rng = np.random.default_rng(4)
    model = MLP([12, 9, 5], seed=4, dtype=np.float64, norm="batch")
    for _ in range(3):  # move the running statistics away from (0, 1)
        model.forward(rng.standard_normal((32, 12)) * 3 + 1, train=True)
    x = rng.standard_normal((4, 12))
    with ad.no_grad():
        logits = model.logits_graph(x)
    np.testing.assert_allclose(logits.value, model.forward(x, train=False), rtol=1e-12)
    with ad.no_grad():  # training mode: the batch's own statistics (and they are folded in)
        batch_logits = model.logits_graph(x, train=True)
    assert not np.allclose(batch_logits.value, logits.value)


def test_every_node_knows_the_layer_that_made_it():
    model = MLP([6, 5, 3], norm="batch", dropout=0.5, dtype=np.float64)
    loss = model.loss_graph(np.zeros((2, 6)), np.array([0, 1]), train=True)
    scopes = {n.scope for n in ad.topological(loss) if n.name != "x"}
    assert scopes == {layer.name for layer in model.layers} | {"loss"}
    assert {n.scope for n in ad.topological(loss) if n.name.startswith("norm0.")} == {"norm0"}
    assert ad.Tensor(1.0).scope == ""  # outside any layer
