"""Finite-difference checks of every layer, activation and loss, and of whole networks."""

from __future__ import annotations

import numpy as np
import pytest

from doodle.errors import DoodleError
from doodle.gradcheck import (
    TOLERANCES,
    check_gradients,
    check_layer,
    check_loss,
    gradcheck_model,
    numerical_gradient,
    passed,
    rel_error,
    worst,
)
from doodle.nn import ACTIVATIONS, LOSSES, BatchNorm, Dense, Dropout, LeakyReLU, ModelSpec, ReLU, Sigmoid, Tanh

TOL = 1e-6


def check(sizes, activation="relu", loss="cross_entropy", dropout=0.0, norm="none", seed=0, batch=4,
          max_entries=None):
    """check_gradients on the float64 network these settings describe."""
    model = gradcheck_model(ModelSpec(tuple(sizes), activation=activation, norm=norm, dropout=dropout), seed=seed)
    return check_gradients(model, loss=loss, seed=seed, batch=batch, max_entries=max_entries)


def test_rel_error_formula():
    assert rel_error(np.array([1.0]), np.array([1.1])) == pytest.approx(0.1 / 2.1)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0  # exact zeros agree
    assert rel_error(np.array([0.0]), np.array([1e-13])) == pytest.approx(0.1)  # floor 1e-12
    assert rel_error(np.array([2.0, -1.0]), np.array([2.0, 1.0])) == 1.0  # worst entry wins


def test_numerical_gradient_of_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    n = numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    np.testing.assert_allclose(n.reshape(x.shape), 3 * x ** 2, rtol=1e-8)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored


def test_dense_layer_gradients():
    rng = np.random.default_rng(0)
    layer = Dense(6, 5, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.normal(size=5)
    errors = check_layer(layer, rng.standard_normal((4, 6)))
    assert set(errors) == {"x", "W", "b"}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(), LeakyReLU(alpha=0.2), Tanh(), Sigmoid()],
                         ids=["relu", "leaky", "leaky0.2", "tanh", "sigmoid"])
def test_activation_gradients(layer):
    x = np.random.default_rng(1).standard_normal((4, 7)) * 2
    errors = check_layer(layer, x)
    assert errors["x"] < TOL, errors


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_in_the_table_is_right(name):
    # the table is what configs reach, so every entry is checked, whatever gets added to it
    x = np.random.default_rng(4).standard_normal((4, 7)) * 2
    assert check_layer(ACTIVATIONS[name](), x)["x"] < TOL


def test_dropout_gradient_with_a_fixed_mask():
    layer = Dropout(0.5)

    def same_mask():
        layer.rng = np.random.default_rng(3)

    x = np.random.default_rng(2).standard_normal((5, 8))
    errors = check_layer(layer, x, reset=same_mask)
    assert errors["x"] < TOL
    assert 0 < np.count_nonzero(layer.mask) < layer.mask.size  # some units really were dropped


@pytest.mark.parametrize("train", [True, False], ids=["batch statistics", "running statistics"])
def test_batch_norm_gradients(train):
    rng = np.random.default_rng(6)
    layer = BatchNorm(7, dtype=np.float64)
    layer.params["gain"][:] = rng.normal(1.0, 0.3, 7)
    layer.params["bias"][:] = rng.normal(0.0, 0.3, 7)
    layer.buffers["mean"][:], layer.buffers["var"][:] = rng.normal(0.0, 1.0, 7), rng.random(7) + 0.5
    x = rng.standard_normal((6, 7)) * 2 + 1
    errors = check_layer(layer, x, train=train)
    assert set(errors) == {"x", "gain", "bias"}
    assert max(errors.values()) < TOL, errors


def test_a_batch_norm_backward_that_ignores_the_batch_statistics_is_caught(monkeypatch):
    # In training the mean and variance depend on every input: leaving that path out is the classic bug.
    real = BatchNorm.backward

    def as_if_constant(self, dout):
        self.batch_stats = False
        return real(self, dout)

    monkeypatch.setattr(BatchNorm, "backward", as_if_constant)
    x = np.random.default_rng(6).standard_normal((6, 7))
    assert check_layer(BatchNorm(7, dtype=np.float64), x, train=True)["x"] > 1e-2
    errors = check([3, 5, 4, 3], seed=0, batch=8, norm="batch")
    assert errors["dense0.W"]["manual_vs_numeric"] > 1e-2 and errors["dense0.W"]["graph_vs_numeric"] < TOL
    assert not passed(errors)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_loss_gradients(loss):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((5, 6))
    assert check_loss(loss, logits, rng.integers(0, 6, size=5)) < TOL


# Batch norm makes a layer's output blind to the scale of its weight columns, so some weight gradients
# nearly cancel; a batch of 8 keeps them above the float64 floor (with 4, a few reach 3e-6).
@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_whole_network_with_batch_norm(activation, loss):
    errors = check([3, 5, 4, 3], activation=activation, loss=loss, seed=0, batch=8, norm="batch")
    assert set(errors) == {"dense0.W", "norm0.gain", "norm0.bias", "dense1.W", "norm1.gain", "norm1.bias",
                           "dense2.W", "dense2.b", "input"}
    w = worst(errors)
    assert w["manual_vs_numeric"] < TOL and w["graph_vs_numeric"] < TOL, errors
    assert w["manual_vs_graph"] < 1e-12, errors


def test_whole_network_with_batch_norm_and_dropout():
    # quickdraw16's combination (dropout can silence a unit for the whole batch: its gradients are then
    # nearly zero, so the finite differences are checked where they stay above the floor)
    errors = check([3, 5, 4, 3], dropout=0.5, seed=0, batch=8, norm="batch")
    assert passed(errors), errors


def test_big_network_sampled():
    errors = check([784, 256, 128, 10], max_entries=8, seed=1)
    assert len(errors) == 7
    # Sampled entries of a big net sit nearer the float64 floor described above.
    w = worst(errors)
    assert w["manual_vs_numeric"] < 1e-5 and w["graph_vs_numeric"] < 1e-5, errors
    assert w["manual_vs_graph"] < TOLERANCES["manual_vs_graph"], errors
    assert check([784, 256, 128, 10], max_entries=8, seed=1) == errors  # deterministic


def test_a_wrong_backward_is_caught(monkeypatch):
    # ReLU passing every gradient through (forgetting the mask) must show up loudly.
    monkeypatch.setattr(ReLU, "backward", lambda self, dout: dout)
    errors = check([3, 5, 4, 3], activation="relu", seed=0)
    assert errors["dense0.W"]["manual_vs_numeric"] > 1e-2 and errors["dense0.W"]["manual_vs_graph"] > 1e-2
    assert errors["dense0.W"]["graph_vs_numeric"] < TOL  # the graph is right: the manual side is to blame
    assert not passed(errors)


def test_a_wrong_graph_rule_is_caught(monkeypatch):
    import doodle.autodiff as ad

    real = ad.tanh

    def tanh_without_chain_rule(x, out=None, grad_out=None):
        t = real(x, out=out, grad_out=grad_out)
        rule = t._backward
        t._backward = lambda g: tuple(None if r is None else r / np.maximum(1 - t.value ** 2, 1e-3) for r in rule(g))
        return t

    monkeypatch.setattr(ad, "tanh", tanh_without_chain_rule)  # the engine's op, as the Tanh layer calls it
    errors = check([3, 5, 4, 3], activation="tanh", seed=0)
    assert errors["dense0.W"]["graph_vs_numeric"] > 1e-2 and errors["dense0.W"]["manual_vs_graph"] > 1e-2
    assert errors["dense0.W"]["manual_vs_numeric"] < TOL


def test_a_wrong_bias_gradient_is_caught(monkeypatch):
    original = Dense.backward

    def mean_not_sum(self, dout):
        dx = original(self, dout)
        self.grads["b"][:] = dout.mean(axis=0)
        return dx

    monkeypatch.setattr(Dense, "backward", mean_not_sum)
    assert check([3, 5, 4, 3], seed=0)["dense1.b"]["manual_vs_numeric"] > 1e-2


def test_softmax_diagonal_only_jacobian_is_caught(monkeypatch):
    # The classic mistake: backprop through softmax with p * (1 - p) only.
    import doodle.nn as nn

    def diagonal_mse(logits, y):
        p = nn.softmax(logits)
        d = p.copy()
        d[np.arange(len(y)), y] -= 1
        return float(np.sum(d * d) / len(y)), 2 * d / len(y) * p * (1 - p)

    monkeypatch.setitem(LOSSES, "mse", diagonal_mse)
    assert check_loss("mse", np.random.default_rng(0).standard_normal((4, 5)), np.array([0, 1, 2, 3])) > 1e-2


def test_unknown_loss():
    with pytest.raises(DoodleError, match="unknown loss"):
        check([3, 4, 2], loss="hinge")


def test_gradient_checks_refuse_a_float32_model():
    from doodle.nn import MLP

    with pytest.raises(DoodleError, match="float64"):
        check_gradients(MLP([3, 4, 2]))
