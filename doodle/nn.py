"""A multilayer perceptron with hand-written backpropagation, in numpy.

Each layer keeps what its backward pass needs in an explicit cache, and its `backward` sits right
beside its `forward`. `backward` only computes gradients (into `grads`, the same arrays every time);
updating the parameters is the optimizer's job (doodle.optim).

Everything stays in the model's dtype: float32 for training, float64 for gradient checks. Scalars
are python floats, which NumPy 2 never lets widen a float32 array (a np.float64 scalar would).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from doodle.errors import DoodleError, check_names
from doodle.raster import to_float

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


def lookup(table: dict, name: str, what: str):
    """table[name], or a DoodleError listing the valid names."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise DoodleError(f"unknown {what} {name!r}: use one of {', '.join(sorted(table))}") from None


# --- layers ------------------------------------------------------------------------------------


class Layer:
    """A differentiable step. `params` and `grads` share keys; layers without weights leave them empty."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Output for input `x`; caches what `backward` needs."""
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the last forward's input, given the gradient w.r.t. its output."""
        raise NotImplementedError


class Dense(Layer):
    """Affine map x @ W + b; without `bias`, just x @ W (batch norm after it brings its own shift)."""

    def __init__(self, n_in: int, n_out: int, init: str = "he", rng: np.random.Generator | None = None,
                 dtype=np.float32, bias: bool = True):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        self.params["W"] = np.ascontiguousarray(lookup(INITS, init, "init")(rng, n_in, n_out, dtype))
        if bias:
            self.params["b"] = np.zeros(n_out, dtype=dtype)
        # Written in place by backward, so optimizers and MLP.gradients() can hold on to them.
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        # The network's first layer sets this False: the pixels need no gradient, and skipping
        # dX saves the biggest backward matmul but one.
        self.input_grad = True
        self.x: np.ndarray | None = None  # cache: the input (B, n_in)

    def forward(self, x, train=False):
        self.x = x
        out = x @ self.params["W"]  # (B, n_out)
        if "b" in self.params:
            out += self.params["b"]
        return out

    def backward(self, dout):
        x = self.x
        np.matmul(x.T, dout, out=self.grads["W"])  # (n_in, n_out); x.T is a BLAS transpose flag, no copy
        if "b" in self.grads:
            np.sum(dout, axis=0, out=self.grads["b"])
        return dout @ self.params["W"].T if self.input_grad else None  # (B, n_in)


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
        self.mask = np.greater(x, 0, out=np.empty_like(x))
        return np.multiply(x, self.mask, out=x if self.inplace else None)

    def backward(self, dout):
        return np.multiply(dout, self.mask, out=dout if self.inplace else None)


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


class Tanh(Layer):
    """tanh(x)."""

    def forward(self, x, train=False):
        self.out = np.tanh(x)  # cache: tanh' = 1 - tanh^2
        return self.out

    def backward(self, dout):
        out = self.out
        return dout * (1.0 - out * out)


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

    def draw_mask(self, shape: tuple, dtype) -> np.ndarray:
        """The next mask from this layer's generator: 0 or 1/(1-p) per unit (the graph path draws the same)."""
        mask = (self.rng.random(shape, dtype=dtype) >= self.p).astype(dtype)
        mask *= 1.0 / (1.0 - self.p)
        return mask

    def forward(self, x, train=False):
        if not train or self.p == 0.0:
            self.mask = None
            return x
        self.mask = self.draw_mask(x.shape, x.dtype)
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask


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

    def track(self, mean: np.ndarray, var: np.ndarray, batch: int) -> None:
        """Fold one training batch's mean and (biased) variance into the running averages, in place."""
        m = self.momentum
        run_mean, run_var = self.buffers["mean"], self.buffers["var"]
        run_mean *= m
        run_mean += (1.0 - m) * mean
        run_var *= m
        run_var += ((1.0 - m) * batch / max(batch - 1, 1)) * var  # the unbiased estimate

    def forward(self, x, train=False):
        if train:
            mean = x.mean(axis=0)  # (n,)
            xc = x - mean
            var = np.einsum("ij,ij->j", xc, xc) * (1.0 / len(x))  # (n,)
            self.track(mean, var, len(x))
        else:
            xc = x - self.buffers["mean"]
            var = self.buffers["var"]
        self.inv = 1.0 / np.sqrt(var + self.eps)
        xc *= self.inv
        self.xhat, self.batch_stats = xc, train
        return _scale_shift(xc, self.params["gain"], self.params["bias"])

    def backward(self, dout):
        # out = g * xhat + b, xhat = (x - mean) * inv. With the batch's own mean and variance the gradient
        # flows through them too: dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), means
        # over the batch; with the running ones (constants) it is just inv * dxhat.
        xhat, B = self.xhat, len(self.xhat)
        np.einsum("ij,ij->j", dout, xhat, out=self.grads["gain"])
        np.sum(dout, axis=0, out=self.grads["bias"])
        dxhat = dout * self.params["gain"]  # (B, n)
        if self.batch_stats:
            dxhat -= self.grads["bias"] * (self.params["gain"] * (1.0 / B))  # mean(dxhat) = g * sum(dout) / B
            dxhat -= xhat * (self.grads["gain"] * self.params["gain"] * (1.0 / B))  # mean(dxhat * xhat) likewise
        dxhat *= self.inv
        return dxhat


def _scale_shift(xhat: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """gain * xhat + bias, per unit, as a new array."""
    out = xhat * gain
    out += bias
    return out


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


class MLP:
    """Dense [-> norm] -> activation [-> dropout] ... -> Dense, producing logits (softmax lives in the loss).

    The parameters, in order: dense0.W, dense0.b, dense1.W, ..., or with batch norm dense0.W, norm0.gain,
    norm0.bias, dense1.W, ... (a hidden Dense before batch norm has no bias: the norm's own shift does its
    job, and a bias whose gradient is zero but for rounding would only wander under Adam). The norms'
    running statistics (norm0.mean, norm0.var, ...) are buffers: in state_dict, not in parameters().
    """

    def __init__(self, layer_sizes: list[int], activation: str = "relu", dropout: float = 0.0, init: str = "he",
                 seed: int = 0, dtype=np.float32, norm: str = "none", tta: str = "none"):
        sizes = list(layer_sizes)
        if len(sizes) < 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in sizes):
            raise DoodleError(f"layer_sizes must be two or more positive integers (input ... classes), got {sizes}")
        act = lookup(ACTIVATIONS, activation, "activation")
        norm_layer = lookup(NORMS, norm, "norm")
        lookup(INITS, init, "init")
        if not 0.0 <= dropout < 1.0:
            raise DoodleError(f"dropout must be in [0, 1), got {dropout}")
        self.layer_sizes = [int(n) for n in sizes]
        self.activation, self.dropout, self.init, self.seed, self.norm = activation, float(dropout), init, seed, norm
        self.dtype = np.dtype(dtype)
        # Divides the logits in predict_proba. Training fits it on the validation split so that a
        # probability of 0.8 is right about 80% of the time (temperature scaling); 1.0 = raw softmax.
        self.temperature = 1.0
        # Test-time augmentation: predict_logits averages the logits of these views of each image (TTA).
        lookup(TTA, tta, "tta")
        self.tta = tta
        # Separate streams, so switching dropout on does not change the initial weights.
        init_ss, drop_ss = np.random.SeedSequence(seed).spawn(2)
        init_rng, drop_rng = np.random.default_rng(init_ss), np.random.default_rng(drop_ss)
        self.dropout_rng = drop_rng  # shared by every Dropout layer; --resume saves and restores its state

        self.layers: list[Layer] = []
        self.dense: list[Dense] = []
        self.norms: list[Layer] = []
        owners: list[tuple[str, Layer]] = []  # (name, layer) of each layer with parameters, in order
        for i, (n_in, n_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
            hidden = i < len(self.layer_sizes) - 2
            d = Dense(n_in, n_out, init=init, rng=init_rng, dtype=self.dtype, bias=not hidden or norm_layer is None)
            self.layers.append(d)
            self.dense.append(d)
            owners.append((f"dense{i}", d))
            if hidden:
                if norm_layer is not None:
                    self.norms.append(norm_layer(n_out, dtype=self.dtype))
                    self.layers.append(self.norms[-1])
                    owners.append((f"norm{i}", self.norms[-1]))
                self.layers.append(act())
                if isinstance(self.layers[-1], ReLU):
                    self.layers[-1].inplace = True
                if dropout > 0:
                    self.layers.append(Dropout(dropout, drop_rng))
        self.dense[0].input_grad = False
        self.param_names = [f"{name}.{k}" for name, layer in owners for k in layer.params]
        self._buffers = {f"norm{i}.{k}": v for i, layer in enumerate(self.norms) for k, v in layer.buffers.items()}
        # All parameters live back to back in one flat buffer, and all gradients in another, so an
        # optimizer can update the whole network in a dozen numpy calls instead of a dozen per array.
        self.flat_params, self._params = _rehome([layer.params for _, layer in owners], self.dtype)
        self.flat_grads, self._grads = _rehome([layer.grads for _, layer in owners], self.dtype)

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

    def dropout_masks(self, batch: int) -> list[np.ndarray | None]:
        """One training-mode mask (batch, n) per hidden layer, drawn as forward(train=True) would draw them."""
        drops = [layer for layer in self.layers if isinstance(layer, Dropout)]
        if not drops or self.dropout == 0.0:
            return [None] * (len(self.layer_sizes) - 2)
        return [d.draw_mask((batch, n), self.dtype) for d, n in zip(drops, self.layer_sizes[1:-1])]

    def running_stats(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Each batch norm's running (mean, var), the statistics evaluation uses; None without batch norm."""
        return [(n.buffers["mean"], n.buffers["var"]) for n in self.norms] if self.norms else None

    def track(self, batch_stats: list[tuple[np.ndarray, np.ndarray]], batch: int) -> None:
        """Fold each batch norm's training-batch (mean, var), found elsewhere (the autodiff graph), into its
        running statistics, as forward(train=True) does."""
        for norm, (mean, var) in zip(self.norms, batch_stats, strict=True):
            norm.track(mean, var, batch)

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


def shift_images(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Square images, flattened (N, S*S), moved dy pixels down and dx right with zero fill (a new array)."""
    n, s = x.shape[0], _side(x)
    img = x.reshape(n, s, s)
    out = np.zeros_like(img)
    out[:, max(dy, 0):s + min(dy, 0), max(dx, 0):s + min(dx, 0)] = \
        img[:, max(-dy, 0):s + min(-dy, 0), max(-dx, 0):s + min(-dx, 0)]
    return out.reshape(n, s * s)


def mirror_images(x: np.ndarray) -> np.ndarray:
    """Square images, flattened (N, S*S), mirrored left to right (a new array)."""
    n, s = x.shape[0], _side(x)
    return np.ascontiguousarray(x.reshape(n, s, s)[:, :, ::-1]).reshape(n, s * s)


def _side(x: np.ndarray) -> int:
    s = int(round(np.sqrt(x.shape[1])))
    if s * s != x.shape[1]:
        raise DoodleError(f"test-time augmentation needs square images, got {x.shape[1]} pixels")
    return s


_SHIFTS = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]  # the image and its four one-pixel neighbours
# Test-time augmentation: name -> the views whose logits predict_logits averages, each (mirrored, dy, dx).
TTA: dict[str, list[tuple[bool, int, int]]] = {
    "none": [],
    "shift": [(False, dy, dx) for dy, dx in _SHIFTS],
    "flip": [(False, 0, 0), (True, 0, 0)],
    "flip_shift": [(m, dy, dx) for m in (False, True) for dy, dx in _SHIFTS],
}


def tta_views(x: np.ndarray, views: list[tuple[bool, int, int]]):
    """Each (mirrored, dy, dx) view of the flattened square images x (N, S*S), in turn."""
    mirror = mirror_images(x) if any(m for m, _, _ in views) else None  # once, for every mirrored view
    for mirrored, dy, dx in views:
        v = mirror if mirrored else x
        yield shift_images(v, dy, dx) if (dy or dx) else v


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
