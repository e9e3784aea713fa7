"""A multilayer perceptron with hand-written backpropagation, in numpy: the one description of the network.

Each layer keeps what its backward pass needs in an explicit cache, and its `backward` sits right
beside its `forward`. `backward` only computes gradients (into `grads`, the same arrays every time);
updating the parameters is the optimizer's job (doodle.optim). Beside them, `forward_graph` states
the same forward in the operations of the autodiff engine (doodle.autodiff), so the computational
graph of a loss falls out of running the model's own layers (`MLP.loss_graph`), with the layer's
own constants (batch norm's eps, leaky ReLU's slope) and its own dropout masks. `BACKPROP` names
the two ways to the gradients a training step can take: the hand-written backward, or the graph.

Everything stays in the model's dtype: float32 for training, float64 for gradient checks. Scalars
are python floats, which NumPy 2 never lets widen a float32 array (a np.float64 scalar would).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from doodle import autodiff as ad
from doodle import team
from doodle.autodiff import Tensor
from doodle.errors import DoodleError, check_names, lookup
from doodle.pixels import TTA, to_float, tta_views

# --- initialisation: name -> fn(rng, n_in, n_out, dtype) -> W (n_in, n_out) ----------------------


def _he(rng: np.random.Generator, n_in: int, n_out: int, dtype) -> np.ndarray:
    """He et al. 2015: normal with variance 2 / n_in, keeps ReLU activations from shrinking."""
    W = rng.standard_normal((n_in, n_out), dtype=dtype)
    W *= np.sqrt(2.0 / n_in)
    return W


def _glorot(rng: np.random.Generator, n_in: int, n_out: int, dtype) -> np.ndarray:
    """Glorot & Bengio 2010: uniform in +-sqrt(6 / (n_in + n_out)), suits tanh and sigmoid."""
    limit = np.sqrt(6.0 / (n_in + n_out))
    W = rng.random((n_in, n_out), dtype=dtype)  # [0, 1)
    W *= 2.0 * limit
    W -= limit
    return W


# "xavier" and "glorot" are the same scheme (Xavier Glorot); both names are common in configs.
INITS: dict[str, Callable] = {"he": _he, "xavier": _glorot, "glorot": _glorot}


# --- layers ------------------------------------------------------------------------------------


Workspace = dict  # a layer's arrays reused by its graph from one training step to the next: key -> ndarray


class Layer:
    """A differentiable step. `params` and `grads` share keys; layers without weights leave them empty.

    `name` (set by the MLP: "dense0", "norm0", ...) prefixes the names of the layer's arrays, in
    model.npz and in the graph alike."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.name = type(self).__name__.lower()

    @classmethod
    def weight_shapes(cls, *args: Any, **kw: Any) -> dict[str, tuple[int, ...]]:
        """{array name: shape} of what such a layer stores in model.npz, computed without allocating (each kind of
        layer takes its own keywords: those ModelSpec.plan gives it)."""
        return {}

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Output for input `x`; caches what `backward` needs."""
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the last forward's input, given the gradient w.r.t. its output."""
        raise NotImplementedError

    def forward_graph(self, x: Tensor, train: bool = False, ws: Workspace | None = None) -> Tensor:
        """The same forward as autodiff operations on the graph node x; the backward then comes for free.

        ws: arrays kept from the previous step for values and gradients (training reuses them: a fresh
        1 MB array is mapped page by page, and the page faults cost more than the arithmetic)."""
        raise NotImplementedError

    def _leaf(self, key: str) -> Tensor:
        """The parameter `key` as a graph leaf whose gradient lands in this layer's own grads array."""
        return Tensor(self.params[key], requires_grad=True, name=f"{self.name}.{key}", grad_into=self.grads[key])


def _buf(ws: Workspace | None, key: str, shape: tuple, dtype) -> np.ndarray | None:
    """ws[key] when it still fits, else a new array kept there; None without a workspace."""
    if ws is None:
        return None
    a = ws.get(key)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = ws[key] = np.empty(shape, dtype)
    return a


class Dense(Layer):
    """Affine map x @ W + b; without `bias`, just x @ W (batch norm after it brings its own shift).

    init=None leaves W at zero, for weights about to be loaded."""

    def __init__(self, n_in: int, n_out: int, init: str | None = "he", rng: np.random.Generator | None = None,
                 dtype=np.float32, bias: bool = True):
        super().__init__()
        if init is None:
            self.params["W"] = np.zeros((n_in, n_out), dtype=dtype)
        else:
            rng = np.random.default_rng() if rng is None else rng
            self.params["W"] = np.ascontiguousarray(lookup(INITS, init, "init")(rng, n_in, n_out, dtype))
        if bias:
            self.params["b"] = np.zeros(n_out, dtype=dtype)
        # Written in place by backward, so optimizers and MLP.gradients() can hold on to them.
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        # The network's first layer sets this False: the pixels need no gradient, and skipping
        # dX saves the biggest backward matmul but one.
        self.input_grad = True
        # The network's last layer sets this True: its output (the logits) leaves the network, so its
        # graph never writes it into a workspace array that the next step would overwrite.
        self.keep_output = False
        self.x: np.ndarray | None = None  # cache: the input (B, n_in)

    @classmethod
    def weight_shapes(cls, n_in: int, n_out: int, bias: bool = True, **_) -> dict[str, tuple[int, ...]]:
        return {"W": (n_in, n_out), **({"b": (n_out,)} if bias else {})}

    # Both passes cut their products into blocks of rows (doodle.team.blocks: fixed by the shapes and the
    # machine) for the team's threads: every row gets the same bits however many threads there are.

    def forward(self, x, train=False):
        self.x = x
        W, b = self.params["W"], self.params.get("b")
        out = np.empty((len(x), W.shape[1]), dtype=np.result_type(x, W))  # (B, n_out)

        def rows(r: slice) -> None:
            np.matmul(x[r], W, out=out[r])
            if b is not None:
                out[r] += b
        team.each(rows, len(x), x.shape[0] * W.size)
        return out

    def backward(self, dout):
        x, W = self.x, self.params["W"]
        # dW (n_in, n_out) by blocks of its rows, each a product over the whole batch; x.T is a BLAS
        # transpose flag and a leading dimension, no copy. All of the pass's products in one round.
        tasks = team.product(x.T, dout, self.grads["W"])
        if "b" in self.grads:
            tasks.append(functools.partial(np.sum, dout, axis=0, out=self.grads["b"]))
        dx = None
        if self.input_grad:
            dx = np.empty((len(dout), len(W)), dtype=np.result_type(dout, W))  # (B, n_in)
            tasks += team.product(dout, W.T, dx)
        team.run(tasks)
        return dx

    def forward_graph(self, x, train=False, ws=None):
        shape = (x.shape[0], self.params["W"].shape[1])  # (B, n_out)
        dt = self.params["W"].dtype
        out = ad.matmul(x, self._leaf("W"), out=_buf(ws, "matmul", shape, dt),
                        grad_out=_buf(ws, "d_matmul", x.shape, dt) if self.input_grad else None)
        if "b" in self.params:
            out = ad.add(out, self._leaf("b"), out=None if self.keep_output else _buf(ws, "add", shape, dt))
        return out


class ReLU(Layer):
    """max(x, 0), as x * (x > 0): the 0/1 mask it caches is all backward needs."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        # The MLP sets inplace: there the input (a fresh Dense output) and dout (a fresh dX) belong to
        # nobody else, and overwriting them saves a (B, n) allocation each way.
        self.inplace = inplace
        self.mask: np.ndarray | None = None  # cache: 1.0 where x > 0 else 0.0, in x's dtype (B, n)

    def forward(self, x, train=False):
        # A float mask, not bool: float * float is a plain SIMD loop, float * bool goes through a
        # cast and runs 3x slower (np.maximum is slower still, for its NaN handling).
        mask = self.mask = np.empty_like(x)
        out = x if self.inplace else np.empty_like(x)

        def rows(r: slice) -> None:
            np.greater(x[r], 0, out=mask[r])
            np.multiply(x[r], mask[r], out=out[r])
        team.each(rows, len(x), 2 * x.size * team.PASS)
        return out

    def backward(self, dout):
        return _masked(dout, self.mask, self.inplace)

    def forward_graph(self, x, train=False, ws=None):
        return ad.relu(x, out=_buf(ws, "act", x.shape, x.dtype), grad_out=_buf(ws, "d_act", x.shape, x.dtype))


class LeakyReLU(Layer):
    """x where x > 0, else alpha * x, so units that go negative still learn."""

    def __init__(self, alpha: float = 0.01):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x, train=False):
        self.mask = x > 0  # cache
        return np.where(self.mask, x, self.alpha * x)

    def backward(self, dout):
        return np.where(self.mask, dout, self.alpha * dout)

    def forward_graph(self, x, train=False, ws=None):
        return ad.leaky_relu(x, self.alpha, out=_buf(ws, "act", x.shape, x.dtype),
                             grad_out=_buf(ws, "d_act", x.shape, x.dtype))


class Tanh(Layer):
    """tanh(x)."""

    def forward(self, x, train=False):
        self.out = np.tanh(x)  # cache: tanh' = 1 - tanh^2
        return self.out

    def backward(self, dout):
        out = self.out
        return dout * (1.0 - out * out)

    def forward_graph(self, x, train=False, ws=None):
        return ad.tanh(x, out=_buf(ws, "act", x.shape, x.dtype), grad_out=_buf(ws, "d_act", x.shape, x.dtype))


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2: same value, never overflows."""

    def forward(self, x, train=False):
        out = np.tanh(x * 0.5)
        out += 1.0
        out *= 0.5
        self.out = out  # cache: sigmoid' = s (1 - s)
        return out

    def backward(self, dout):
        out = self.out
        return dout * out * (1.0 - out)

    def forward_graph(self, x, train=False, ws=None):
        return ad.sigmoid(x, out=_buf(ws, "act", x.shape, x.dtype), grad_out=_buf(ws, "d_act", x.shape, x.dtype))


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability p while training, scale survivors by 1/(1-p).

    The scaling happens at training time, so evaluation is the identity.
    """

    def __init__(self, p: float, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise DoodleError(f"dropout must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng
        self.mask: np.ndarray | None = None  # cache: 0 or 1/(1-p), in x's dtype

    def _draw_mask(self, shape: tuple, dtype) -> np.ndarray:
        """The next mask from this layer's generator: 0 or 1/(1-p) per unit (forward and graph alike)."""
        if np.dtype(dtype) == np.float32:
            keep = _float32_uniform_at_least(self.rng, shape, self.p)
        else:
            keep = self.rng.random(shape, dtype=dtype) >= self.p
        mask = keep.astype(dtype)
        mask *= 1.0 / (1.0 - self.p)
        return mask

    def forward(self, x, train=False):
        if not train or self.p == 0.0:
            self.mask = None
            return x
        self.mask = self._draw_mask(x.shape, x.dtype)
        return _masked(x, self.mask)

    def backward(self, dout):
        return dout if self.mask is None else _masked(dout, self.mask)

    def forward_graph(self, x, train=False, ws=None):
        if not train or self.p == 0.0:
            return x
        mask = Tensor(self._draw_mask(x.shape, x.dtype), name=f"{self.name}.mask")  # a constant: 0 or 1/(1-p)
        return ad.mul(x, mask, out=_buf(ws, "mul", x.shape, x.dtype), grad_out=_buf(ws, "d_mul", x.shape, x.dtype))


def _float32_uniform_at_least(rng: np.random.Generator, shape: tuple, p: float) -> np.ndarray:
    """rng.random(shape, dtype=np.float32) >= p, the same draws and the same generator state after, at a
    third of the cost: from the raw 64-bit words, without making the floats.

    A float32 uniform is the top 24 bits of the generator's next 32-bit word times 2**-24, and PCG64 (what
    default_rng makes) hands out each 64-bit word as two 32-bit ones, low half first, keeping the high
    half for the next call (has_uint32). So u >= p is word >= ceil(float32(p) * 2**24) << 8, the 32-bit
    words are the raw words viewed as uint32 (little-endian), and a half left over is handed back to the
    generator as the one it keeps. Other generators take the plain way."""
    bits = rng.bit_generator
    if bits.state.get("bit_generator") != "PCG64" or np.little_endian is False:
        return rng.random(shape, dtype=np.float32) >= p
    n = math.prod(int(k) for k in shape)  # python ints: no overflow
    state = bits.state
    kept = state["has_uint32"] if n else 0
    raw = bits.random_raw((n - kept + 1) // 2)  # two 32-bit words per 64-bit one
    words = raw.view(np.uint32)  # (2 * len(raw),)
    if kept:  # the half the generator kept from its last 64-bit word comes first
        words = np.concatenate([np.array([state["uinteger"]], dtype=np.uint32), words])
    if kept or len(raw):  # what numpy leaves: a half kept, or none (and the last high half, stale)
        left = len(words) - n
        new_state = dict(bits.state)  # after random_raw; dict(): numpy types the state as a read-only Mapping
        new_state["has_uint32"] = left
        if len(raw):
            new_state["uinteger"] = int(words[n - 1 + left])
        bits.state = new_state
    threshold = math.ceil(float(np.float32(p)) * 2.0 ** 24)  # u = k * 2**-24 >= float32(p) <=> k >= this
    if threshold >= 2 ** 24:
        return np.zeros(shape, dtype=bool)
    return np.greater_equal(words[:n], np.uint32(threshold << 8)).reshape(shape)


def _masked(x: np.ndarray, mask: np.ndarray, inplace: bool = False) -> np.ndarray:
    """x * mask (both (B, n)), in blocks of rows on the team; into x itself if inplace."""
    out = x if inplace else np.empty(x.shape, np.result_type(x, mask))
    team.each(lambda r: np.multiply(x[r], mask[r], out=out[r]), len(x), x.size * team.PASS)
    return out


ACTIVATIONS: dict[str, type[Layer]] = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid}


class BatchNorm(Layer):
    """Each unit standardised over the batch (Ioffe & Szegedy 2015), then scaled by `gain` and shifted by
    `bias`. Training uses the batch's mean and variance and folds them into running averages
    (`buffers`), which evaluation uses instead, so a prediction never depends on its batch."""

    def __init__(self, n: int, momentum: float = 0.9, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.momentum, self.eps = float(momentum), float(eps)
        self.params["gain"], self.params["bias"] = np.ones(n, dtype=dtype), np.zeros(n, dtype=dtype)
        self.grads["gain"], self.grads["bias"] = np.zeros(n, dtype=dtype), np.zeros(n, dtype=dtype)
        self.buffers = {"mean": np.zeros(n, dtype=dtype), "var": np.ones(n, dtype=dtype)}
        self.xhat: np.ndarray | None = None  # cache: the standardised input (B, n)
        self.inv: np.ndarray | None = None  # cache: 1 / sqrt(var + eps), per unit (n,)
        self.batch_stats = False  # cache: whether the last forward used the batch's statistics (training)

    @classmethod
    def weight_shapes(cls, n: int, **_) -> dict[str, tuple[int, ...]]:
        return {k: (n,) for k in ("gain", "bias", "mean", "var")}

    def _track(self, mean: np.ndarray, var: np.ndarray, batch: int) -> None:
        """Fold one training batch's mean and (biased) variance into the running averages, in place."""
        m = self.momentum
        run_mean, run_var = self.buffers["mean"], self.buffers["var"]
        run_mean *= m
        run_mean += (1.0 - m) * mean
        run_var *= m
        run_var += ((1.0 - m) * batch / max(batch - 1, 1)) * var  # the unbiased estimate

    # The statistics are sums over the batch (whole columns: fast in numpy, and summed in one order); the
    # rest is elementwise and runs in blocks of rows on the team.

    def forward(self, x, train=False):
        B = len(x)
        gain, bias = self.params["gain"], self.params["bias"]
        mean = x.mean(axis=0) if train else self.buffers["mean"]  # (n,)
        xc = np.empty(x.shape, np.result_type(x, mean))  # dtypes as numpy would pick
        team.each(lambda r: np.subtract(x[r], mean, out=xc[r]), B, x.size * team.PASS)
        if train:
            var = np.einsum("ij,ij->j", xc, xc) * (1.0 / B)  # (n,)
            self._track(mean, var, B)
        else:
            var = self.buffers["var"]
        inv = 1.0 / np.sqrt(var + self.eps)
        out = np.empty(x.shape, np.result_type(xc, gain, bias))

        def rows(r: slice) -> None:
            xc[r] *= inv
            np.multiply(xc[r], gain, out=out[r])  # gain * xhat + bias
            out[r] += bias
        team.each(rows, B, 3 * x.size * team.PASS)
        self.xhat, self.inv, self.batch_stats = xc, inv, train
        return out

    def backward(self, dout):
        # out = g * xhat + b, xhat = (x - mean) * inv. With the batch's own mean and variance the gradient
        # flows through them too: dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means
        # over the batch; with the running ones (constants) it is just inv * dxhat.
        xhat, B = self.xhat, len(self.xhat)
        gain = self.params["gain"]
        np.einsum("ij,ij->j", dout, xhat, out=self.grads["gain"])
        np.sum(dout, axis=0, out=self.grads["bias"])
        mean_d = self.grads["bias"] * (gain * (1.0 / B))  # (n,) mean(dxhat) = g * sum(dout) / B
        mean_dx = self.grads["gain"] * gain * (1.0 / B)  # (n,) mean(dxhat * xhat) likewise
        dx = np.empty(dout.shape, np.result_type(dout, gain))  # (B, n) dL/dxhat, then dL/dx

        def rows(r: slice) -> None:
            d = np.multiply(dout[r], gain, out=dx[r])
            if self.batch_stats:
                d -= mean_d
                d -= xhat[r] * mean_dx
            d *= self.inv
        team.each(rows, B, 5 * dout.size * team.PASS)
        return dx

    def forward_graph(self, x, train=False, ws=None):
        if train:  # the batch's statistics are graph nodes: the gradient flows through them
            mean = x.mean(axis=0, keepdims=True)  # (1, n)
            centred = x - mean
            var = ad.square(centred).mean(axis=0, keepdims=True)  # (1, n) the biased variance
            self._track(mean.value[0], var.value[0], x.shape[0])
            xhat = centred * ad.power(var + self.eps, -0.5)
        else:  # the running statistics are constants
            inv = (1.0 / np.sqrt(self.buffers["var"] + self.eps)).astype(x.dtype)
            xhat = (x - Tensor(self.buffers["mean"], name=f"{self.name}.mean")) * \
                Tensor(inv, name=f"1/sqrt({self.name}.var + eps)")
        return xhat * self._leaf("gain") + self._leaf("bias")


# None: no normalisation; otherwise applied between each hidden Dense and its activation.
NORMS: dict[str, type[Layer] | None] = {"none": None, "batch": BatchNorm}


# --- softmax and losses: name -> fn(logits (B, C), y (B,) int) -> (loss, dlogits (B, C)) -------------


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (B, C); subtracting the row max keeps exp from overflowing."""
    e = logits.T.copy()  # (C, B): see cross_entropy
    e -= e.max(axis=0)
    np.exp(e, out=e)
    e /= e.sum(axis=0)
    return np.ascontiguousarray(e.T)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean of -log softmax(logits)[y], fused with softmax: the gradient is (p - onehot) / B."""
    B = logits.shape[0]
    cols = np.arange(B)
    # Work on the transpose (C, B): reducing over C then runs along contiguous rows of B, which is
    # 5x faster than reducing each 10-wide row of (B, C).
    z = logits.T.copy()
    z -= z.max(axis=0)  # each sample's max is now 0, so exp cannot overflow
    z_y = z[y, cols]  # (B,) a copy, taken before z becomes exp(z)
    np.exp(z, out=z)
    s = z.sum(axis=0)  # (B,), >= 1 so the log is safe
    loss = (float(np.log(s).sum(dtype=np.float64)) - float(z_y.sum(dtype=np.float64))) / B  # log-sum-exp - z_y
    z /= s  # probabilities
    z[y, cols] -= 1.0
    z *= 1.0 / B
    return loss, np.ascontiguousarray(z.T)


def mse(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over the batch of sum_c (softmax(logits)_c - onehot_c)^2, through the full softmax Jacobian."""
    B = logits.shape[0]
    rows = np.arange(B)
    p = softmax(logits)  # (B, C)
    d = p.copy()
    d[rows, y] -= 1.0  # p - onehot
    loss = float(np.einsum("ij,ij->", d, d, dtype=np.float64)) / B
    g = d
    g *= 2.0 / B  # dL/dp
    # dL/dz_j = sum_k dL/dp_k * p_k (delta_kj - p_j) = p_j (g_j - sum_k g_k p_k)
    g -= np.einsum("ij,ij->i", g, p)[:, None]
    g *= p
    return loss, g


LOSSES: dict[str, Callable] = {"cross_entropy": cross_entropy, "mse": mse}


# --- the network -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """What shapes the network, as a config states it and model.json stores it; built once, read everywhere."""

    layer_sizes: tuple[int, ...] | list[int]  # inputs, hidden..., classes; a list is stored as a tuple
    activation: str = "relu"
    norm: str = "none"  # batch norm between each hidden Dense and its activation
    dropout: float = 0.0  # after each hidden activation, in training only
    init: str = "he"
    tta: str = "none"  # the views a prediction averages (doodle.pixels.TTA)

    def __post_init__(self):
        sizes = self.layer_sizes
        if not isinstance(sizes, (list, tuple)) or len(sizes) < 2 \
                or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise DoodleError(f"layer_sizes must be two or more positive integers (input ... classes), got {sizes}")
        object.__setattr__(self, "layer_sizes", tuple(int(n) for n in sizes))
        lookup(ACTIVATIONS, self.activation, "activation")
        lookup(NORMS, self.norm, "norm")
        lookup(INITS, self.init, "init")
        lookup(TTA, self.tta, "tta")
        if not 0.0 <= self.dropout < 1.0:
            raise DoodleError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_config(cls, cfg: dict, n_classes: int) -> ModelSpec:
        """The network a config's model section describes, for its image size and n_classes."""
        m = cfg["model"]
        return cls((cfg["data"]["image_size"] ** 2, *m["hidden"], n_classes), activation=m["activation"],
                   norm=m["norm"], dropout=float(m["dropout"]), init=m["init"], tta=m["tta"])

    @classmethod
    def from_meta(cls, meta: dict) -> ModelSpec:
        """The network model.json describes (models from before norms and TTA have neither; prediction needs
        no dropout)."""
        return cls(tuple(meta["layer_sizes"]), activation=meta["activation"], norm=meta.get("norm", "none"),
                   tta=meta.get("tta", "none"))

    def to_meta(self) -> dict:
        """The entries of model.json that from_meta reads back."""
        return {"layer_sizes": list(self.layer_sizes), "activation": self.activation, "norm": self.norm,
                "tta": self.tta}

    def plan(self) -> list[tuple[str, type[Layer], dict]]:
        """(name, layer class, its arguments) in order: Dense [-> norm] -> activation [-> dropout] ... -> Dense.

        A hidden Dense before batch norm has no bias: the norm's own shift does its job, and a bias
        whose gradient is zero but for rounding would only wander under Adam."""
        sizes, norm = self.layer_sizes, NORMS[self.norm]
        out: list[tuple[str, type[Layer], dict]] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            hidden = i < len(sizes) - 2
            out.append((f"dense{i}", Dense, {"n_in": n_in, "n_out": n_out, "bias": not hidden or norm is None}))
            if hidden:
                if norm is not None:
                    out.append((f"norm{i}", norm, {"n": n_out}))
                out.append((f"act{i}", ACTIVATIONS[self.activation], {}))
                if self.dropout > 0:
                    out.append((f"dropout{i}", Dropout, {"p": self.dropout}))
        return out

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """{"dense0.W": (784, 512), ...}: every array model.npz holds for this network, without allocating it."""
        return {f"{name}.{k}": shape for name, cls, kw in self.plan() for k, shape in cls.weight_shapes(**kw).items()}

    def training_bytes(self, batch: int, itemsize: int = 4) -> int:
        """About the memory a training run of this network takes: parameters, gradients and up to three
        optimizer arrays of their size, and a batch's values and gradients through every layer."""
        params = sum(math.prod(int(k) for k in s) for s in self.weight_shapes().values())
        return itemsize * (6 * params + 8 * batch * sum(self.layer_sizes))

    def check_fits(self, batch: int, itemsize: int = 4, what: str = "model.hidden") -> None:
        """A one-line DoodleError, before anything is allocated, when training would need more memory than the
        machine has available."""
        need, have = self.training_bytes(batch, itemsize), available_memory()
        if have is not None and need > have:
            raise DoodleError(f"{what}: the {'-'.join(map(str, self.layer_sizes))} network needs about "
                              f"{need / 2 ** 30:.1f} GiB to train at batch {batch}, and this machine has "
                              f"{have / 2 ** 30:.1f} GiB available; use smaller hidden layers")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class MLP:
    """Dense [-> norm] -> activation [-> dropout] ... -> Dense, producing logits (softmax lives in the loss).

    The parameters, in order: dense0.W, dense0.b, dense1.W, ..., or with batch norm dense0.W, norm0.gain,
    norm0.bias, dense1.W, ... (see ModelSpec.plan). The norms' running statistics (norm0.mean,
    norm0.var, ...) are buffers: in state_dict, not in parameters(). The same names are the graph's.
    """

    def __init__(self, layer_sizes: list[int], activation: str = "relu", dropout: float = 0.0, init: str = "he",
                 seed: int = 0, dtype=np.float32, norm: str = "none", tta: str = "none", initialise: bool = True):
        spec = ModelSpec(layer_sizes, activation=activation, norm=norm, dropout=float(dropout), init=init, tta=tta)
        self.spec = spec
        self.layer_sizes = list(spec.layer_sizes)
        self.activation, self.dropout, self.init, self.seed, self.norm = activation, float(dropout), init, seed, norm
        self.dtype = np.dtype(dtype)
        # Divides the logits in predict_proba. Training fits it on the validation split so that a
        # probability of 0.8 is right about 80% of the time (temperature scaling); 1.0 = raw softmax.
        self.temperature = 1.0
        # Test-time augmentation: predict_logits averages the logits of these views of each image (TTA).
        self.tta = tta
        # Separate streams, so switching dropout on does not change the initial weights. Without
        # `initialise` (a model whose weights are loaded next) there are none: predict's start-up then
        # never imports numpy.random, and the weights are zeros until load_state_dict.
        init_rng = drop_rng = None
        if initialise:
            init_ss, drop_ss = np.random.SeedSequence(seed).spawn(2)
            init_rng, drop_rng = np.random.default_rng(init_ss), np.random.default_rng(drop_ss)
        self.dropout_rng = drop_rng  # shared by every Dropout layer; --resume saves and restores its state

        self.layers: list[Layer] = []
        for name, cls, kw in spec.plan():
            if cls is Dense:
                layer: Layer = Dense(kw["n_in"], kw["n_out"], init=init if initialise else None, rng=init_rng,
                                     dtype=self.dtype, bias=kw["bias"])
            elif cls is Dropout:
                layer = Dropout(kw["p"], drop_rng)
            elif cls is BatchNorm:
                layer = BatchNorm(kw["n"], dtype=self.dtype)
            else:
                layer = cls(**kw)
            layer.name = name
            self.layers.append(layer)
        self.dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        self.norms = [layer for layer in self.layers if isinstance(layer, BatchNorm)]
        for layer in self.layers:
            if isinstance(layer, ReLU):
                layer.inplace = True
        self.dense[0].input_grad = False
        self.dense[-1].keep_output = True
        owners = [layer for layer in self.layers if layer.params]
        self.param_names = [f"{layer.name}.{k}" for layer in owners for k in layer.params]
        self._buffers = {f"{n.name}.{k}": v for n in self.norms for k, v in n.buffers.items()}
        # All parameters live back to back in one flat buffer, and all gradients in another, so an
        # optimizer can update the whole network in a dozen numpy calls instead of a dozen per array.
        self.flat_params, self._params = _rehome([layer.params for layer in owners], self.dtype)
        self.flat_grads, self._grads = _rehome([layer.grads for layer in owners], self.dtype)
        self._workspaces: list[Workspace] = [{} for _ in self.layers]  # the graph's arrays, kept between steps

    @classmethod
    def from_spec(cls, spec: ModelSpec, seed: int = 0, dtype=np.float32, initialise: bool = True) -> MLP:
        """The network a ModelSpec describes, freshly initialised (or, without `initialise`, zeros to load into)."""
        return cls(list(spec.layer_sizes), activation=spec.activation, dropout=spec.dropout, init=spec.init,
                   seed=seed, dtype=dtype, norm=spec.norm, tta=spec.tta, initialise=initialise)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits (B, C) for float inputs (B, n_in)."""
        if x.dtype != self.dtype:  # a float64 batch would otherwise turn the whole step float64
            x = x.astype(self.dtype)
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dlogits: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Fill the gradients from dL/dlogits; with input_grad, also return dL/dx (B, n_in)."""
        self.dense[0].input_grad = input_grad
        d = dlogits
        for layer in reversed(self.layers):
            d = layer.backward(d)
        self.dense[0].input_grad = False
        return d

    def logits_graph(self, x: np.ndarray | Tensor, train: bool = False, reuse: bool = False) -> Tensor:
        """The logits (B, C) as a graph node, built by walking the layers' forward_graph.

        x: float inputs (B, n_in) (the pixels: a constant named "x"), or a Tensor the caller made, e.g.
        with requires_grad for the gradient with respect to the drawing. train: dropout masks and batch
        statistics, as forward(train=True). reuse: the layers keep their hidden arrays from the previous
        call (training steps: finish with one graph before building the next)."""
        if not isinstance(x, Tensor):
            x = Tensor(x if x.dtype == self.dtype else x.astype(self.dtype), name="x")
        for layer, ws in zip(self.layers, self._workspaces):
            with ad.scope(layer.name):
                x = layer.forward_graph(x, train, ws if reuse else None)
        return x

    def loss_graph(self, x: np.ndarray | Tensor, y: np.ndarray, loss: str = "cross_entropy",
                   train: bool = False) -> Tensor:
        """The scalar loss node of a batch (x as logits_graph takes it, y (B,) class indices): the graph whose
        backward() fills the model's gradients (and x's, if it asked for one)."""
        loss_fn = lookup(ad.LOSSES, loss, "loss")
        y = np.asarray(y)
        n_classes = self.layer_sizes[-1]
        if y.shape != (x.shape[0],) or y.dtype.kind not in "iu" or (len(y) and not 0 <= y.min() <= y.max() < n_classes):
            raise DoodleError(f"labels must be {x.shape[0]} integers in [0, {n_classes}), got {y.dtype} {y.shape}")
        logits = self.logits_graph(x, train)
        with ad.scope("loss"):
            return loss_fn(logits, y)

    def parameters(self) -> list[np.ndarray]:
        """The live parameter arrays, in param_names order."""
        return list(self._params)

    def gradients(self) -> list[np.ndarray]:
        """Gradients aligned with parameters(), the live arrays backward writes into."""
        return list(self._grads)

    def buffers(self) -> dict[str, np.ndarray]:
        """The live non-parameter state (batch norm's running means and variances), by name."""
        return dict(self._buffers)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers, named "dense0.W", "dense0.b", "norm0.gain", ... (for np.savez)."""
        out = {name: p.copy() for name, p in zip(self.param_names, self._params)}
        out.update({name: b.copy() for name, b in self._buffers.items()})
        return out

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Copy weights in place (optimizers keep their references); names and shapes must match exactly."""
        own = dict(zip(self.param_names, self._params), **self._buffers)
        check_names(own, d, f"model weights do not match the {self.layer_sizes} network")
        for name, ref in own.items():
            arr = np.asarray(d[name])
            if arr.shape != ref.shape or arr.dtype.kind not in "fiu":
                raise DoodleError(f"model weight {name} has shape {arr.shape} ({arr.dtype}), "
                                  f"expected {ref.shape} for the {self.layer_sizes} network")
        for name, ref in own.items():
            np.copyto(ref, d[name], casting="unsafe")

    def predict_logits(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Logits (N, C) in eval mode, batch by batch; uint8 images go through to_float per batch. With
        test-time augmentation (self.tta), the mean of the logits of every view: all the views of a batch
        go through the network as one stack of about batch_size rows (one drawing's 10 views: one pass)."""
        out = np.empty((len(x), self.layer_sizes[-1]), dtype=self.dtype)
        views = lookup(TTA, self.tta, "tta")
        step = max(1, batch_size // len(views)) if views else batch_size
        for i in range(0, len(x), step):
            xb = x[i:i + step]
            if xb.dtype == np.uint8:
                xb = to_float(xb)
            else:
                xb = np.asarray(xb.reshape(len(xb), -1), dtype=self.dtype)
            if not views:
                out[i:i + step] = self.forward(xb, train=False)
                continue
            logits = self.forward(np.concatenate(list(tta_views(xb, views))), train=False)
            acc = out[i:i + step]
            np.sum(logits.reshape(len(views), len(xb), -1), axis=0, out=acc)  # view after view, in order
            acc *= 1.0 / len(views)
        return out

    def predict_proba(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities (N, C) float32 in eval mode: softmax(logits / temperature)."""
        return self.probabilities(self.predict_logits(x, batch_size))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """softmax(logits / temperature) as float32, for logits already computed (left unchanged)."""
        if self.temperature != 1.0:
            logits = logits * (1.0 / self.temperature)
        return softmax(logits).astype(np.float32, copy=False)


# --- the two ways to the gradients of a training step -------------------------------------------------
# name -> fn(model, loss name) -> step(x, y) -> (loss value, logits (B, C)), the model's gradients filled.
# Chosen once, when a run starts.


def _manual(model: MLP, loss: str) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    """The layers' hand-written backward, from the fused loss's dL/dlogits."""
    loss_fn = lookup(LOSSES, loss, "loss")

    def step(x, y):
        logits = model.forward(x, train=True)  # (B, C)
        value, dlogits = loss_fn(logits, y)
        model.backward(dlogits)
        return value, logits
    return step


def _graph(model: MLP, loss: str) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    """The loss's computational graph, built by the layers themselves, differentiated by the engine."""
    loss_fn = lookup(ad.LOSSES, loss, "loss")

    def step(x, y):
        logits = model.logits_graph(x, train=True, reuse=True)
        value = loss_fn(logits, y)
        out = float(value.value)
        value.backward()  # frees the graph; the logits' values stay ours
        return out, logits.value
    return step


BACKPROP: dict[str, Callable[[MLP, str], Callable]] = {"manual": _manual, "graph": _graph}


def _rehome(dicts: list[dict[str, np.ndarray]], dtype) -> tuple[np.ndarray, list[np.ndarray]]:
    """Move every array of the dicts into views of one new flat buffer; returns (the buffer, the views in order)."""
    flat = np.empty(sum(a.size for d in dicts for a in d.values()), dtype=dtype)
    views, start = [], 0
    for d in dicts:
        for k in d:
            view = flat[start:start + d[k].size].reshape(d[k].shape)
            view[...] = d[k]
            d[k] = view
            views.append(view)
            start += view.size
    return flat, views
