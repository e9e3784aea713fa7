"""The autodiff engine: every op's backward against central differences, the walk order, the losses.
(The network's graph against its hand-written backward: tests/test_nn_graph.py.)"""

from __future__ import annotations

import weakref
from collections import deque

import numpy as np
import pytest

from doodle import autodiff as ad
from doodle.errors import DoodleError
from doodle.gradcheck import numerical_gradient, rel_error
from doodle.nn import LOSSES

TOL = 1e-6  # per-entry relative error of a right rule against central differences, in float64


def grad_errors(build, *arrays, seed=0) -> list[float]:
    """Worst relative error, per input, of the engine's gradient of sum(build(*inputs) * R) against
    central differences (R a fixed random array, so every output entry matters)."""
    tensors = [ad.Tensor(a, requires_grad=True) for a in arrays]
    out = build(*tensors)
    R = np.random.default_rng(seed).standard_normal(out.shape)
    (out * R).sum().backward()

    def f():
        with ad.no_grad():
            return build(*(ad.Tensor(a) for a in arrays)).value * R

    return [rel_error(t.grad, numerical_gradient(f, a).reshape(a.shape)) for t, a in zip(tensors, arrays)]


def rand(*shape, seed=1, low=None):
    """float64 normal entries; with low, uniform in [low, low + 1] (for log, div, fractional powers)."""
    rng = np.random.default_rng(seed + len(shape))
    return rng.standard_normal(shape) if low is None else low + rng.random(shape)


Y4 = np.array([2, 0, 3, 3])
CASES = {  # name: (build, input arrays)
    "add bias row (B,n)+(n,)": (lambda a, b: a + b, [rand(4, 3), rand(3, seed=2)]),
    "add column (B,n)+(B,1)": (lambda a, b: a + b, [rand(4, 3), rand(4, 1, seed=2)]),
    "add scalar tensor": (lambda a, b: a + b, [rand(4, 3), rand(seed=2)]),
    "add leading axis (2,3,4)+(3,4)": (lambda a, b: a + b, [rand(2, 3, 4), rand(3, 4, seed=2)]),
    "add outer (3,1)+(1,4)": (lambda a, b: a + b, [rand(3, 1), rand(1, 4, seed=2)]),
    "sub column": (lambda a, b: a - b, [rand(4, 3), rand(4, 1, seed=2)]),
    "sub leading axis": (lambda a, b: b - a, [rand(2, 3, 4), rand(4, seed=2)]),
    "mul bias row": (lambda a, b: a * b, [rand(4, 3), rand(3, seed=2)]),
    "mul outer": (lambda a, b: a * b, [rand(3, 1), rand(1, 4, seed=2)]),
    "div column": (lambda a, b: a / b, [rand(4, 3), rand(4, 1, seed=2, low=0.5)]),
    "div scalar tensor": (lambda a, b: b / a, [rand(4, 3, low=0.5), rand(seed=2)]),
    "neg": (lambda a: -a, [rand(3, 2)]),
    "python scalars": (lambda a: (2.0 * a - 1) / 3 + (1 - a) * 0.5, [rand(3, 2)]),
    "rdiv scalar": (lambda a: 3 / a, [rand(3, 2, low=0.5)]),
    "matmul": (lambda a, b: a @ b, [rand(4, 3), rand(3, 5, seed=2)]),
    "exp": (ad.exp, [rand(3, 4)]),
    "log": (ad.log, [rand(3, 4, low=0.5)]),
    "pow 3": (lambda a: a ** 3, [rand(3, 4)]),
    "pow 0.5": (lambda a: a ** 0.5, [rand(3, 4, low=0.5)]),
    "square": (ad.square, [rand(3, 4)]),
    "sum all": (lambda a: a.sum(), [rand(3, 4)]),
    "sum axis 0": (lambda a: a.sum(axis=0), [rand(3, 4)]),
    "sum axis 1 keepdims": (lambda a: a.sum(axis=1, keepdims=True), [rand(3, 4)]),
    "sum axis -1 (short rows)": (lambda a: a.sum(axis=-1), [rand(6, 5)]),
    "sum axes (0, 2)": (lambda a: a.sum(axis=(0, 2)), [rand(2, 3, 4)]),
    "sum axes (0, 2) keepdims": (lambda a: a.sum(axis=(0, 2), keepdims=True), [rand(2, 3, 4)]),
    "mean all": (lambda a: a.mean(), [rand(3, 4)]),
    "mean axis 1": (lambda a: a.mean(axis=1), [rand(3, 4)]),
    "mean axis 0 keepdims": (lambda a: a.mean(axis=0, keepdims=True), [rand(3, 4)]),
    "mean axes (1, 2)": (lambda a: a.mean(axis=(1, 2)), [rand(2, 3, 4)]),
    "max all": (lambda a: a.max(), [rand(3, 4)]),
    "max axis 0": (lambda a: a.max(axis=0), [rand(3, 4)]),
    "max axis 1 keepdims": (lambda a: a.max(axis=1, keepdims=True), [rand(3, 4)]),
    "max axis -1 of 3-D": (lambda a: a.max(axis=-1), [rand(2, 3, 4)]),
    "reshape": (lambda a: a.reshape(4, 6) * a.reshape(4, 6), [rand(2, 3, 4)]),
    "transpose": (lambda a: a.T, [rand(3, 4)]),
    "transpose perm": (lambda a: a.transpose(1, 2, 0), [rand(2, 3, 4)]),
    "pick": (lambda a: ad.pick(a, Y4), [rand(4, 5)]),
    "relu": (ad.relu, [rand(5, 4) + np.sign(rand(5, 4)) * 0.1]),  # kept away from the kink at 0
    "leaky_relu": (lambda x: ad.leaky_relu(x, 0.01), [rand(5, 4) + np.sign(rand(5, 4)) * 0.1]),
    "tanh": (ad.tanh, [rand(5, 4)]),
    "sigmoid": (ad.sigmoid, [rand(5, 4)]),
    "x * x": (lambda a: a * a, [rand(3, 4)]),
    "x + x": (lambda a: a + a, [rand(3, 4)]),
    "x @ x": (lambda a: a @ a, [rand(3, 3)]),
    "bias used twice": (lambda a, b: (a + b) * (a + b), [rand(4, 3), rand(3, seed=2)]),
    "softmax": (ad.softmax, [rand(4, 5)]),
}


@pytest.mark.parametrize("name", CASES)
def test_every_op_backward_matches_finite_differences(name):
    build, arrays = CASES[name]
    errors = grad_errors(build, *(a.copy() for a in arrays))
    assert max(errors) < TOL, errors


def test_every_op_is_covered():
    ops = {"add", "sub", "mul", "div", "neg", "matmul", "exp", "log", "pow", "square", "sum", "mean", "max",
           "reshape", "transpose", "pick", "relu", "leaky_relu", "tanh", "sigmoid"}
    seen = set()
    for build, arrays in CASES.values():
        out = build(*(ad.Tensor(a, requires_grad=True) for a in arrays))
        stack = [out]
        while stack:
            node = stack.pop()
            seen.add(node.op)
            stack.extend(node.parents)
    assert ops <= seen, ops - seen


@pytest.mark.parametrize("loss", sorted(ad.LOSSES))
def test_loss_gradients_match_finite_differences(loss):
    # Logits wide enough for gradients from 1e-1 down to 1e-6; much wider, and the finite differences'
    # absolute noise (~1e-12) swamps the smallest entries' relative error. Huge logits: see below.
    z, y = rand(6, 5) * 1.5, np.array([0, 4, 2, 2, 1, 3])
    t = ad.Tensor(z, requires_grad=True)
    ad.LOSSES[loss](t, y).backward()

    def per_sample():  # each row's loss / B: terms of the batch mean, so rows a perturbation misses cancel exactly
        with ad.no_grad():
            return np.array([float(ad.LOSSES[loss](ad.Tensor(z[b:b + 1]), y[b:b + 1]).value) / len(z)
                             for b in range(len(z))])

    assert rel_error(t.grad, numerical_gradient(per_sample, z).reshape(z.shape)) < TOL


@pytest.mark.parametrize("loss", sorted(ad.LOSSES))
def test_losses_equal_the_manual_ones(loss):
    z = rand(6, 5) * 3
    y = np.array([0, 4, 2, 2, 1, 3])
    value = ad.LOSSES[loss](ad.Tensor(z), y).value
    assert value.shape == () and float(value) == pytest.approx(LOSSES[loss](z.copy(), y)[0], rel=1e-12)


def test_loss_is_stable_for_huge_logits():
    z = ad.Tensor(np.array([[1000.0, 0.0, -1000.0]]), requires_grad=True)
    loss = ad.softmax_cross_entropy(z, np.array([0]))
    loss.backward()
    assert float(loss.value) == 0.0 and np.all(np.isfinite(z.grad))


def test_max_sends_its_gradient_to_the_first_of_tied_entries():
    x = ad.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])


# --- the order of the backward walk ----------------------------------------------------------------


def breadth_first_backward(root: ad.Tensor) -> None:
    """The naive walk some teaching engines use: each node passes its gradient on when first dequeued."""
    root.grad = np.ones_like(root.value)
    queue, seen = deque([root]), {root}
    while queue:
        node = queue.popleft()
        if node.op == "leaf":
            continue
        for parent, g in zip(node.parents, node._backward(node.grad)):
            if g is not None:
                parent.grad = g if parent.grad is None else parent.grad + g
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)


def tanh_chain(x: ad.Tensor) -> ad.Tensor:
    """f = m + tanh(tanh(m)), m = 2x: m is reached by a short path and a long one."""
    m = 2.0 * x
    return m + ad.tanh(ad.tanh(m))


def test_depth_first_order_waits_for_every_path_where_breadth_first_does_not():
    x0 = 0.3
    t1 = np.tanh(2 * x0)
    exact = 2.0 + 2.0 * (1 - np.tanh(t1) ** 2) * (1 - t1 ** 2)  # df/dx by the chain rule

    x = ad.Tensor(np.array(x0), requires_grad=True)
    tanh_chain(x).backward()
    assert float(x.grad) == pytest.approx(exact, rel=1e-12)
    assert grad_errors(tanh_chain, np.array(x0))[0] < TOL

    x_bfs = ad.Tensor(np.array(x0), requires_grad=True)
    breadth_first_backward(tanh_chain(x_bfs))
    assert float(x_bfs.grad) == pytest.approx(2.0)  # m left before the tanh path arrived: only the short path
    assert abs(float(x_bfs.grad) - exact) > 0.5


def test_topological_order_puts_every_node_before_its_parents():
    z = ad.Tensor(rand(4, 5), requires_grad=True)
    loss = ad.squared_error(z, Y4)
    order = ad.topological(loss, grad_only=True)
    position = {node: k for k, node in enumerate(order)}
    assert order[-1] is loss and order[0] is z and len(position) == len(order)
    for node in order:
        assert all(position[p] < position[node] for p in node.parents if p.requires_grad)
    every = ad.topological(loss)
    assert set(every) - set(order) == {n for n in every if not n.requires_grad} != set()  # the one-hot truth


# --- a wrong rule must be caught ---------------------------------------------------------------------


def test_a_planted_wrong_backward_rule_is_caught(monkeypatch):
    real_tanh = ad.tanh

    def tanh_with_wrong_rule(x):
        out = real_tanh(x)
        y = out.value
        out._backward = lambda g: (g * (1.0 - y),)  # should be 1 - y^2
        return out

    monkeypatch.setattr(ad, "tanh", tanh_with_wrong_rule)
    assert grad_errors(lambda a: ad.tanh(a), rand(5, 4))[0] > 1e-2


def test_a_wrong_unbroadcast_is_caught(monkeypatch):
    real = ad.unbroadcast

    def mean_not_sum(grad, shape, out=None):
        summed = real(grad, shape)
        if summed.shape != grad.shape:
            summed = summed * (np.prod(shape) / grad.size)
        if out is None:
            return summed
        np.copyto(out, summed)
        return out

    monkeypatch.setattr(ad, "unbroadcast", mean_not_sum)
    _, bias_error = grad_errors(lambda a, b: a + b, rand(4, 3), rand(3, seed=2))
    assert bias_error > 1e-2
    assert grad_errors(ad.tanh, rand(5, 4))[0] < TOL  # untouched rules still pass


# --- what backward touches, keeps and frees ---------------------------------------------------------


def test_inputs_without_requires_grad_get_no_gradient_and_no_dx_matmul(monkeypatch):
    x = ad.Tensor(rand(4, 3))
    W = ad.Tensor(rand(3, 2, seed=2), requires_grad=True)
    loss = (x @ W).sum()
    calls = []
    real_matmul = np.matmul

    def counting_matmul(*args, **kwargs):
        calls.append(args[0].shape)
        return real_matmul(*args, **kwargs)

    monkeypatch.setattr(np, "matmul", counting_matmul)
    loss.backward()
    assert x.grad is None and W.grad.shape == (3, 2)
    assert calls == [(3, 4)]  # dW = x.T @ g only, never dX = g @ W.T


def test_no_grad_builds_no_graph():
    W = ad.Tensor(rand(3, 2), requires_grad=True)
    with ad.no_grad():
        out = ad.tanh(ad.Tensor(rand(4, 3)) @ W).sum()
    assert out.parents == () and not out.requires_grad
    with pytest.raises(DoodleError, match="no_grad"):
        out.backward()
    assert (ad.Tensor(rand(4, 3)) @ W).requires_grad  # recording is back on


def test_backward_frees_the_step_and_keeps_what_the_caller_holds():
    W = ad.Tensor(rand(3, 4), requires_grad=True)
    logits = ad.relu(ad.Tensor(rand(5, 3)) @ W)
    hidden = weakref.ref(logits.parents[0].value)  # x @ W: referenced only through the graph
    loss = ad.softmax_cross_entropy(logits, np.array([0, 1, 2, 3, 0]))
    loss.backward()
    assert hidden() is None  # freed with the graph
    assert logits.value.shape == (5, 4) and logits.parents == () and logits.grad is None
    assert W.grad is not None and float(loss.value) > 0
    with pytest.raises(DoodleError, match="retain_graph"):
        loss.backward()
    again = ad.softmax_cross_entropy(logits * 2.0, np.array([0, 1, 2, 3, 0]))  # a new graph on a released node
    with pytest.raises(DoodleError, match="relu node of this graph was released by an earlier backward"):
        again.backward()


def test_retain_graph_keeps_every_gradient_and_leaves_accumulate():
    W = ad.Tensor(rand(3, 4), requires_grad=True)
    h = ad.tanh(ad.Tensor(rand(5, 3)) @ W)
    loss = (h * h).mean()
    loss.backward(retain_graph=True)
    first = W.grad.copy()
    assert h.grad.shape == h.shape and h.parents
    loss.backward(retain_graph=True)  # intermediate gradients restart; a leaf's add up, as documented
    np.testing.assert_allclose(W.grad, 2 * first, rtol=1e-12)


def test_leaf_gradients_are_own_writeable_arrays():
    x = ad.Tensor(rand(3, 4), requires_grad=True)
    b = ad.Tensor(rand(4, seed=2), requires_grad=True)
    (x + b).sum().backward()  # sum's gradient is a read-only broadcast view; add hands the same array to both
    assert x.grad.flags.writeable and not np.shares_memory(x.grad, b.grad)
    np.testing.assert_array_equal(x.grad, np.ones((3, 4)))
    np.testing.assert_array_equal(b.grad, np.full(4, 3.0))


def test_grad_into_receives_the_gradient_without_a_new_array():
    buf = np.full((3, 2), np.nan)
    W = ad.Tensor(rand(3, 2), requires_grad=True, grad_into=buf)
    (ad.Tensor(rand(4, 3)) @ W).sum().backward()
    assert W.grad is buf and np.all(np.isfinite(buf))
    with pytest.raises(DoodleError, match="grad_into"):
        ad.Tensor(rand(3, 2), requires_grad=True, grad_into=np.zeros((2, 3)))


def test_float32_stays_float32():
    f32 = np.float32
    x = ad.Tensor(rand(4, 3).astype(f32), requires_grad=True)
    b = ad.Tensor(rand(3).astype(f32), requires_grad=True)
    h = (2.0 * x + b - 1) / 3.0
    h = ad.sigmoid(ad.leaky_relu(h, 0.01)) ** 2 + ad.tanh(ad.relu(h)) * 0.5 + ad.exp(-h) + ad.log(ad.square(h) + 1.0)
    loss = ad.squared_error(h, np.array([0, 1, 2, 0])) + ad.softmax_cross_entropy(h, np.array([0, 1, 2, 0]))
    loss.backward(retain_graph=True)
    stack, nodes = [loss], []
    while stack:
        nodes.append(stack.pop())
        stack.extend(nodes[-1].parents)
    assert {n.value.dtype for n in nodes} == {np.dtype(f32)}
    assert {n.grad.dtype for n in nodes if n.requires_grad} == {np.dtype(f32)}
    assert len(nodes) > 40
