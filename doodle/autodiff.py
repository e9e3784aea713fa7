"""Reverse-mode automatic differentiation over numpy arrays: the computational graph of a loss.

Every operation makes a `Tensor` node holding its value, its parents and a backward rule, a closure
written right beside the forward that maps the node's gradient to one gradient per parent (None for
a parent that needs none). `Tensor.backward()` walks the graph from a scalar loss in depth-first
topological order, so a node passes its gradient on only after every path into it has delivered.

This is the engine only: tensors, operations, the losses built from operations, backward. The
network states its own forward in these operations (doodle.nn's `forward_graph`, `MLP.loss_graph`);
its hand-written backward stays the fast default, this engine computes the same gradients from the
operations the loss is made of, and doodle.graphdraw draws them.

Speed: ops work on whole arrays, a step has a few dozen of them, and the engine copies nothing it
can avoid. An intermediate node's first gradient is simply moved in; a parameter's gradient is
written straight into its buffer (`grad_into`) by matmul and the bias sum; hidden values and
gradients can live in arrays reused from step to step (`out=`, `grad_out=`). Values
stay in the input dtype: scalars are python floats or take the tensor's dtype, so float32 never
widens to float64.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import numpy as np

from doodle import team
from doodle.errors import DoodleError

_recording = True  # False inside no_grad(): ops then record no parents and no backward rules
_scope = ""  # the scope() every new node is tagged with


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block ops build no graph (evaluation, prediction, loss-curve sampling)."""
    global _recording
    saved, _recording = _recording, False
    try:
        yield
    finally:
        _recording = saved


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
    """Nodes made within this block carry `name` in `.scope` (e.g. the layer that made them), so a drawing can
    group them; it changes nothing else."""
    global _scope
    saved, _scope = _scope, name
    try:
        yield
    finally:
        _scope = saved


class Tensor:
    """A node of the graph: value, gradient, parents, the op that made it and its backward rule."""

    __slots__ = ("value", "grad", "parents", "op", "requires_grad", "name", "scope", "_backward", "_buffer")

    def __init__(self, value, requires_grad: bool = False, name: str = "", grad_into: np.ndarray | None = None):
        self.value = np.asarray(value)  # an ndarray is wrapped, not copied
        self.grad: np.ndarray | None = None
        self.parents: tuple[Tensor, ...] = ()
        self.op = "leaf"
        self.requires_grad = requires_grad
        self.name = name
        self.scope = _scope
        self._backward: Callable | None = None
        # A leaf's gradient lives in this array: the caller's (e.g. a view of the model's flat
        # gradient buffer) or one allocated on first use. Intermediate nodes have none.
        if grad_into is not None and (grad_into.shape != self.value.shape or grad_into.dtype != self.value.dtype
                                      or not grad_into.flags.c_contiguous):
            raise DoodleError(f"grad_into for {name or 'a tensor'} must be a C-contiguous {self.value.dtype} array "
                              f"of shape {self.value.shape}, got {grad_into.dtype} {grad_into.shape}")
        self._buffer = grad_into

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)
    ndim = property(lambda self: self.value.ndim)
    T = property(lambda self: self.transpose())

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"Tensor({self.op}{label}, shape={self.shape}, dtype={self.dtype})"

    # Operators; python scalars take the tensor's dtype (see _lift).
    def __add__(self, other): return add(self, other)
    def __radd__(self, other): return add(other, self)
    def __sub__(self, other): return sub(self, other)
    def __rsub__(self, other): return sub(other, self)
    def __mul__(self, other): return mul(self, other)
    def __rmul__(self, other): return mul(other, self)
    def __truediv__(self, other): return div(self, other)
    def __rtruediv__(self, other): return div(other, self)
    def __neg__(self): return neg(self)
    def __matmul__(self, other): return matmul(self, other)
    def __rmatmul__(self, other): return matmul(other, self)
    def __pow__(self, p): return power(self, p)

    # --- reductions and views: numpy's method names ---------------------------------------------

    def sum(self, axis=None, keepdims: bool = False) -> Tensor:
        """Sum over axis (int, tuple or None for all)."""
        kept = _kept(self.shape, axis)

        def backward(g):  # g has the reduced shape; every input entry gets it (a read-only view)
            return (np.broadcast_to(g.reshape(kept), self.shape),)
        return _node(_reduce(np.add, self.value, axis, keepdims), (self,), "sum", backward)

    def mean(self, axis=None, keepdims: bool = False) -> Tensor:
        """Mean over axis (int, tuple or None for all)."""
        kept = _kept(self.shape, axis)
        n = math.prod(self.shape) // max(math.prod(kept), 1)  # entries per mean

        def backward(g):
            return (np.broadcast_to(g.reshape(kept) * (1.0 / n), self.shape),)
        return _node(_reduce(np.add, self.value, axis, keepdims) / n, (self,), "mean", backward)

    def max(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        """Maximum over one axis (or all); the gradient goes to the first maximal entry only."""
        x = self.value

        def backward(g):
            if axis is None:
                d = np.zeros_like(x)
                d.flat[x.argmax()] = g
                return (d,)
            first = x.argmax(axis=axis, keepdims=True)  # argmax: the first of tied entries
            index_shape = [1] * x.ndim
            index_shape[axis] = -1
            along = np.arange(x.shape[axis]).reshape(index_shape)  # 0..n-1 along axis
            return ((along == first) * g.reshape(first.shape),)  # one-hot of the max, times g
        return _node(_reduce(np.maximum, x, axis, keepdims), (self,), "max", backward)

    def reshape(self, *shape) -> Tensor:
        """The same entries in a new shape (a view)."""
        def backward(g):
            return (g.reshape(self.shape),)
        return _node(self.value.reshape(*shape), (self,), "reshape", backward)

    def transpose(self, *axes) -> Tensor:
        """Axes permuted (a view); no axes reverses them."""
        perm = tuple(axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes) or None

        def backward(g):
            return (g.transpose(None if perm is None else tuple(np.argsort(perm))),)
        return _node(self.value.transpose(perm), (self,), "transpose", backward)

    # --- the backward pass -------------------------------------------------------------------------

    def backward(self, retain_graph: bool = False) -> None:
        """From this scalar, fill the gradient of every leaf that requires one.

        Without retain_graph, each node's rule, parent links and gradient are dropped once it has
        passed its gradient on, so the step's activations and masks are freed (only nodes the
        caller still holds keep their values). doodle.graphdraw needs retain_graph=True.
        """
        if self.value.size != 1:
            raise DoodleError(f"backward needs a scalar loss, got shape {self.shape}")
        if not self.requires_grad:
            raise DoodleError("backward of a value that depends on no parameter (was it built under no_grad?)")
        if self.op != "leaf" and self._backward is None:
            raise DoodleError("this graph was already released by a backward: pass retain_graph=True to go twice")
        order = topological(self, grad_only=True)[::-1]  # the loss first, every node before its parents
        for node in order:  # a retained graph's previous gradients must not add in
            if node.op != "leaf":
                node.grad = None
        _accumulate(self, np.ones_like(self.value))
        for node in order:
            if node.op == "leaf":  # its gradient is final
                continue
            rule = node._backward  # set on every node that needs a gradient, until a backward releases it
            if rule is None:  # a node of an earlier graph, released by its backward, reached again through this one
                raise DoodleError(f"a {node.op} node of this graph was released by an earlier backward: pass "
                                  "retain_graph=True to that backward to build on its nodes again")
            for parent, g in zip(node.parents, rule(node.grad)):
                if g is not None:
                    _accumulate(parent, g)
            if not retain_graph:
                node.grad, node._backward, node.parents = None, None, ()


def _node(value: np.ndarray, parents: tuple[Tensor, ...], op: str, backward: Callable) -> Tensor:
    """An op's result; it records parents and rule only when recording and a parent needs a gradient."""
    out = Tensor(value)
    out.op = op
    if _recording and any(p.requires_grad for p in parents):
        out.requires_grad = True
        out.parents = parents
        out._backward = backward
    return out


def topological(root: Tensor, grad_only: bool = False) -> list[Tensor]:
    """The nodes root depends on (only those needing a gradient, with grad_only), each after its parents.

    Depth-first post-order: a node is listed once all its parents are, however many paths lead there.
    """
    order: list[Tensor] = []
    seen: set[Tensor] = set()
    stack = [(root, False)]
    while stack:  # iterative: a deep graph cannot hit the recursion limit
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in reversed(node.parents)
                         if p not in seen and (p.requires_grad or not grad_only))
    return order


def _claim(t: Tensor) -> np.ndarray | None:
    """t's buffer, if t is a leaf awaiting its first gradient: a rule then writes it there directly."""
    if t.op != "leaf" or not t.requires_grad or t.grad is not None:
        return None
    if t._buffer is None:
        t._buffer = np.empty_like(t.value)
    t.grad = t._buffer  # claimed: a second rule for the same leaf gets None and accumulates instead
    return t.grad


def _into(t: Tensor, grad_out: np.ndarray | None, like: np.ndarray | None = None) -> np.ndarray | None:
    """Where a rule writes t's gradient: t's own buffer if t is a leaf awaiting it, else grad_out (a
    workspace array), else a new array like `like` (without one, None: the ufunc allocates)."""
    claimed = _claim(t)
    if claimed is not None:
        return claimed
    return np.empty_like(like) if grad_out is None and like is not None else grad_out


def _accumulate(t: Tensor, g: np.ndarray) -> None:
    """Add one path's gradient into t: the first is moved in (or copied into a leaf's buffer)."""
    if t._buffer is not None and g is t._buffer:  # already written there by the rule (_claim)
        return
    leaf = t.op == "leaf"
    if t.grad is None:
        if not leaf:
            t.grad = g  # moved; safe, as no rule writes into the gradient it is given
            return
        if t._buffer is None:
            t._buffer = np.empty_like(t.value)
        np.copyto(t._buffer, g)
        t.grad = t._buffer
    elif leaf:
        t.grad += g  # a leaf owns its buffer
    else:
        t.grad = t.grad + g  # t.grad may be another node's array too (x + x)


def _lift(x, like: Tensor | None = None) -> Tensor:
    """x as a Tensor; a scalar takes like's dtype, so 0.5 * float32 stays float32."""
    if isinstance(x, Tensor):
        return x
    if like is not None and np.ndim(x) == 0:
        return Tensor(np.asarray(x, dtype=like.dtype))
    return Tensor(x)


def _pair(a, b) -> tuple[Tensor, Tensor]:
    """Both operands as Tensors, a scalar one taking the other's dtype."""
    return _lift(a, b if isinstance(b, Tensor) else None), _lift(b, a if isinstance(a, Tensor) else None)


def unbroadcast(grad: np.ndarray, shape: tuple, out: np.ndarray | None = None) -> np.ndarray:
    """Sum a broadcast result's gradient back to an operand's shape: over leading axes and its size-1 axes."""
    if grad.shape == shape:
        if out is None:
            return grad
        np.copyto(out, grad)
        return out
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    if out is None:
        return _reduce(np.add, grad, axes, True).reshape(shape)
    np.add.reduce(grad, axis=axes, keepdims=True, out=out.reshape((1,) * lead + tuple(shape)))  # a view of out
    return out


def _reduce(ufunc: np.ufunc, x: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    """ufunc.reduce over axis; a short last axis of a 2-D array is reduced on a transposed copy.

    Reducing each 10-wide row of (B, 10) logits runs numpy's inner loop B times over 10 entries;
    on the contiguous (10, B) copy it runs 10 times over B: 5x faster (as nn.cross_entropy does).
    """
    if x.ndim == 2 and axis in (1, -1, (1,), (-1,)) and x.shape[1] <= 32:
        r = ufunc.reduce(np.ascontiguousarray(x.T), axis=0)  # (B,)
        return r[:, None] if keepdims else r
    return ufunc.reduce(x, axis=axis, keepdims=keepdims)


def _kept(shape: tuple, axis) -> tuple:
    """shape with the reduced axes (int, tuple or None for all) set to 1: what keepdims gives."""
    if axis is None:
        return (1,) * len(shape)
    axes = [a % len(shape) for a in ((axis,) if isinstance(axis, (int, np.integer)) else axis)]
    return tuple(1 if k in axes else n for k, n in enumerate(shape))


# --- elementwise arithmetic with broadcasting -------------------------------------------------------


def add(a, b, out: np.ndarray | None = None) -> Tensor:
    """a + b; the bias add of a layer: its gradient is one sum over the batch axis."""
    a, b = _pair(a, b)

    def backward(g):
        return (unbroadcast(g, a.shape, _claim(a)) if a.requires_grad else None,
                unbroadcast(g, b.shape, _claim(b)) if b.requires_grad else None)
    return _node(np.add(a.value, b.value, out=out), (a, b), "add", backward)


def sub(a, b) -> Tensor:
    """a - b."""
    a, b = _pair(a, b)

    def backward(g):
        return (unbroadcast(g, a.shape) if a.requires_grad else None,
                -unbroadcast(g, b.shape) if b.requires_grad else None)
    return _node(a.value - b.value, (a, b), "sub", backward)


def mul(a, b, out: np.ndarray | None = None, grad_out: np.ndarray | None = None) -> Tensor:
    """a * b; dropout is this, with a constant 0 or 1/(1-p) mask. grad_out: for a's gradient before
    unbroadcasting (the result's shape)."""
    a, b = _pair(a, b)

    def backward(g):
        return (unbroadcast(np.multiply(g, b.value, out=grad_out), a.shape) if a.requires_grad else None,
                unbroadcast(g * a.value, b.shape) if b.requires_grad else None)
    return _node(np.multiply(a.value, b.value, out=out), (a, b), "mul", backward)


def div(a, b) -> Tensor:
    """a / b."""
    a, b = _pair(a, b)
    out = a.value / b.value

    def backward(g):
        ga = g / b.value  # d(a/b)/da = 1/b; d(a/b)/db = -a/b^2 = -(g/b) * out
        return (unbroadcast(ga, a.shape) if a.requires_grad else None,
                unbroadcast(-ga * out, b.shape) if b.requires_grad else None)
    return _node(out, (a, b), "div", backward)


def neg(a) -> Tensor:
    """-a."""
    a = _lift(a)
    return _node(-a.value, (a,), "neg", lambda g: (-g,))


def matmul(a, b, out: np.ndarray | None = None, grad_out: np.ndarray | None = None) -> Tensor:
    """a (m, k) @ b (k, n) -> (m, n); the pixels' side (no requires_grad) costs no dX matmul.
    grad_out: for a's gradient (m, k)."""
    a, b = _lift(a), _lift(b)
    if a.ndim != 2 or b.ndim != 2:
        raise DoodleError(f"matmul takes two 2-D tensors, got shapes {a.shape} and {b.shape}")

    def backward(g):  # g (m, n); .T is a BLAS transpose flag, not a copy
        ga = gb = None
        if a.requires_grad:
            ga = _into(a, grad_out)
            ga = np.empty(a.shape, np.result_type(g, b.value)) if ga is None else ga
        if b.requires_grad:
            gb = _claim(b)
            gb = np.empty(b.shape, np.result_type(a.value, g)) if gb is None else gb
        team.run((team.product(g, b.value.T, ga) if ga is not None else []) +  # (m, k)
                 (team.product(a.value.T, g, gb) if gb is not None else []))  # (k, n)
        return ga, gb
    value = np.empty((a.shape[0], b.shape[1]), np.result_type(a.value, b.value)) if out is None else out
    team.run(team.product(a.value, b.value, value))  # by blocks of rows, as the layers do (doodle.team)
    return _node(value, (a, b), "matmul", backward)


# --- elementwise functions ----------------------------------------------------------------------------


def exp(x) -> Tensor:
    """e^x."""
    x = _lift(x)
    out = np.exp(x.value)
    return _node(out, (x,), "exp", lambda g: (g * out,))


def log(x) -> Tensor:
    """Natural log."""
    x = _lift(x)
    return _node(np.log(x.value), (x,), "log", lambda g: (g / x.value,))


def power(x, p: float) -> Tensor:
    """x ** p for a python scalar p."""
    x = _lift(x)
    p = float(p)
    return _node(x.value ** p, (x,), "pow", lambda g: (g * (p * x.value ** (p - 1.0)),))


def square(x) -> Tensor:
    """x * x."""
    x = _lift(x)
    return _node(x.value * x.value, (x,), "square", lambda g: (g * (2.0 * x.value),))


def relu(x, out: np.ndarray | None = None, grad_out: np.ndarray | None = None) -> Tensor:
    """max(x, 0) as x * mask, with the 0/1 mask in x's dtype: backward is one multiply (as nn.ReLU)."""
    x = _lift(x)
    mask = np.greater(x.value, 0, out=np.empty_like(x.value))  # (B, n) 1.0 where x > 0
    return _node(np.multiply(x.value, mask, out=out), (x,), "relu",
                 lambda g: (np.multiply(g, mask, out=_into(x, grad_out)),))


def leaky_relu(x, alpha: float, out: np.ndarray | None = None, grad_out: np.ndarray | None = None) -> Tensor:
    """x where x > 0, else alpha * x (the layer passes its own slope), via a cached slope array."""
    x = _lift(x)
    dt = x.dtype
    slope = np.where(x.value > 0, np.ones((), dt), np.asarray(alpha, dt))  # (B, n) 1 or alpha
    return _node(np.multiply(x.value, slope, out=out), (x,), "leaky_relu",
                 lambda g: (np.multiply(g, slope, out=_into(x, grad_out)),))


def tanh(x, out: np.ndarray | None = None, grad_out: np.ndarray | None = None) -> Tensor:
    """tanh(x); its derivative 1 - tanh^2 comes from the output."""
    x = _lift(x)
    out = np.tanh(x.value, out=out)

    def backward(g):  # g * (1 - out^2), in one array
        d = np.multiply(out, out, out=_into(x, grad_out, like=out))
        np.subtract(1.0, d, out=d)
        return (np.multiply(g, d, out=d),)
    return _node(out, (x,), "tanh", backward)


def sigmoid(x, out: np.ndarray | None = None, grad_out: np.ndarray | None = None) -> Tensor:
    """1 / (1 + e^-x) as (1 + tanh(x/2)) / 2, exactly as nn.Sigmoid: never overflows."""
    x = _lift(x)
    out = np.multiply(x.value, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    def backward(g):  # g * s * (1 - s), in nn.Sigmoid's order
        d = np.multiply(g, out, out=_into(x, grad_out, like=out))
        d *= 1.0 - out
        return (d,)
    return _node(out, (x,), "sigmoid", backward)


def pick(x, idx: np.ndarray) -> Tensor:
    """x[b, idx[b]] for every row b: the true class's entry. x (B, C), idx (B,) ints -> (B,)."""
    x = _lift(x)
    rows = np.arange(len(idx))

    def backward(g):  # (B,) -> (B, C), zero but for the picked entries
        d = np.zeros_like(x.value)
        d[rows, idx] = g
        return (d,)
    return _node(x.value[rows, idx], (x,), "pick", backward)


# --- losses, built from the ops above so the graph shows every step ----------------------------------


def softmax(logits: Tensor) -> Tensor:
    """Row-wise softmax (B, C): exp of logits minus the row max, over its row sum."""
    e = exp(logits - logits.max(axis=1, keepdims=True))  # (B, C), max subtracted: no overflow
    return e / e.sum(axis=1, keepdims=True)  # (B, C) / (B, 1)


def softmax_cross_entropy(logits: Tensor, y: np.ndarray) -> Tensor:
    """Mean over the batch of log-sum-exp(z) - z[y], z = logits - row max (so exp cannot overflow)."""
    z = logits - logits.max(axis=1, keepdims=True)  # (B, C), each row's max is now 0
    lse = log(exp(z).sum(axis=1))  # (B,), >= 0 since one term is e^0
    return (lse - pick(z, y)).mean()  # scalar


def squared_error(logits: Tensor, y: np.ndarray) -> Tensor:
    """The essay's loss: sum over classes of (softmax - one-hot truth)^2, averaged over the batch."""
    p = softmax(logits)  # (B, C)
    onehot = Tensor(np.eye(p.shape[1], dtype=p.dtype)[y], name="onehot")  # (B, C) constant
    return square(p - onehot).sum(axis=1).mean()  # scalar


LOSSES: dict[str, Callable[[Tensor, np.ndarray], Tensor]] = {
    "cross_entropy": softmax_cross_entropy, "mse": squared_error}
