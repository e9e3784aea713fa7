"""Check hand-written backward passes against central finite differences, in float64.

Relative error between an analytic gradient a and a numerical one n, per entry:

    |a - n| / max(|a| + |n|, 1e-12)

so two exact zeros count as agreement, and the worst entry of each tensor is reported. A wrong
backward gives 1e-2 or worse; a right one gives 1e-8 or so, but not always below 1e-6: a float64
loss is only good to ~1e-16 of its size, so with eps = 1e-6 the numerical side carries ~1e-10 of
absolute noise, and an entry whose true gradient is tiny (sums that nearly cancel, the 0.01 slope
of leaky ReLU) shows a large *relative* error. To keep that noise down, the checks difference
vectors entry by entry before summing (per-sample losses, out * R), so whatever the perturbation
does not reach cancels exactly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from doodle.autodiff import Tensor
from doodle.config import class_names, load_config
from doodle.errors import DoodleError
from doodle.nn import LOSSES, MLP, Dropout, Layer, ModelSpec


def rel_error(a: np.ndarray, n: np.ndarray) -> float:
    """Worst |a - n| / max(|a| + |n|, 1e-12) over the entries."""
    a, n = np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), 1e-12)))


def numerical_gradient(f: Callable[[], float | np.ndarray], x: np.ndarray, eps: float = 1e-6,
                       entries: np.ndarray | None = None) -> np.ndarray:
    """Central differences of sum(f()) w.r.t. the flat entries `entries` of x (all by default).

    `x` is perturbed in place and restored; f must read it. When f returns an array, the two
    evaluations are subtracted entry by entry before summing: entries the perturbation does not
    reach then cancel exactly instead of adding their rounding error.
    """
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array")
    entries = np.arange(flat.size) if entries is None else entries
    out = np.empty(len(entries), dtype=np.float64)
    for k, i in enumerate(entries):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out[k] = np.sum(np.subtract(fp, fm)) / (2 * eps)
    return out


def _pick(rng: np.random.Generator, size: int, max_entries: int | None) -> np.ndarray:
    """All flat indices, or a sorted random sample of max_entries of them."""
    if max_entries is None or max_entries >= size:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def check_layer(layer: Layer, x: np.ndarray, train: bool = True, seed: int = 0, eps: float = 1e-6,
                reset: Callable[[], None] | None = None) -> dict[str, float]:
    """Worst relative errors of one layer's backward, for the input ("x") and each parameter.

    The scalar is L = sum(out * R) for a fixed random R, so dL/dout = R. `reset`, if given, runs
    before every forward (e.g. to replay the same dropout mask).
    """
    R = np.random.default_rng(seed).standard_normal(layer.forward(x, train).shape)

    def f() -> np.ndarray:
        if reset:
            reset()
        return layer.forward(x, train) * R

    f()
    dx = layer.backward(R)
    errors = {"x": rel_error(dx, numerical_gradient(f, x, eps).reshape(x.shape))}
    for name, p in layer.params.items():
        f()
        layer.backward(R)
        analytic = layer.grads[name].copy()
        errors[name] = rel_error(analytic, numerical_gradient(f, p, eps).reshape(p.shape))
    return errors


def _per_sample(fn: Callable, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(B,) terms whose sum is fn's batch mean: each row's loss / B, so untouched rows cancel exactly."""
    B = len(logits)
    return np.array([fn(logits[b:b + 1], y[b:b + 1])[0] / B for b in range(B)])


def check_loss(loss: str, logits: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> float:
    """Worst relative error of LOSSES[loss]'s dlogits against finite differences of its value."""
    fn = LOSSES[loss]
    _, dlogits = fn(logits.copy(), y)
    n = numerical_gradient(lambda: _per_sample(fn, logits, y), logits, eps)
    return rel_error(dlogits, n.reshape(logits.shape))


# The three agreements `doodle gradcheck` reports, and the worst relative error each may show. Manual
# and graph compute the same float64 sums in another order (~1e-13 apart); finite differences carry
# ~1e-10 of absolute noise (see the module docstring).
TOLERANCES = {"manual_vs_graph": 1e-9, "manual_vs_numeric": 1e-6, "graph_vs_numeric": 1e-6}


def gradcheck_model(spec: ModelSpec, seed: int = 0) -> MLP:
    """The float64 network a spec describes, its biases and gains moved off 0 and 1 so that they matter."""
    rng = np.random.default_rng([seed, 2])
    model = MLP.from_spec(spec, seed=seed, dtype=np.float64)
    for name, p in zip(model.param_names, model.parameters()):
        if p.ndim == 1:
            p += rng.normal(0.0, 0.1 if name.endswith("b") or name.endswith("bias") else 0.3, size=p.shape)
    return model


def check_gradients(model: MLP, loss: str = "cross_entropy", seed: int = 0, batch: int = 4,
                    max_entries: int | None = None, eps: float = 1e-6) -> dict[str, dict[str, float]]:
    """Three-way check of a float64 model's gradients on random inputs, in training mode.

    For every parameter and the input: {"manual_vs_graph", "manual_vs_numeric", "graph_vs_numeric"},
    each the worst relative error between the hand-written backward (the layers' `backward`), the
    model's own graph (`MLP.loss_graph`, differentiated by doodle.autodiff, the input a node that
    asks for its gradient) and central finite differences. Dropout replays one fixed mask for every
    forward; batch norm uses the batch's statistics, through which the gradient flows. max_entries
    samples that many entries per tensor for the finite differences, so big networks (784-256-...)
    check in a moment; manual and graph are compared on every entry.
    """
    if model.dtype != np.float64:
        raise DoodleError(f"gradient checks run in float64, got a {model.dtype} model (see gradcheck_model)")
    if loss not in LOSSES:
        raise DoodleError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
    rng = np.random.default_rng(seed)
    sizes = model.layer_sizes
    x = rng.standard_normal((batch, sizes[0]))
    y = rng.integers(0, sizes[-1], size=batch)
    loss_fn = LOSSES[loss]
    drops = [layer for layer in model.layers if isinstance(layer, Dropout)]

    def replay() -> None:
        for k, layer in enumerate(drops):  # same generator state -> same mask every time
            layer.rng = np.random.default_rng([seed, k])

    def forward() -> np.ndarray:
        replay()
        return model.forward(x, train=True)

    def f() -> np.ndarray:
        return _per_sample(loss_fn, forward(), y)

    _, dlogits = loss_fn(forward(), y)
    dx = model.backward(dlogits, input_grad=True)
    manual = dict(zip(model.param_names, (g.copy() for g in model.gradients())))
    manual["input"] = dx
    replay()
    pixels = Tensor(x.copy(), requires_grad=True, name="x")
    model.loss_graph(pixels, y, loss, train=True).backward()
    graph = dict(zip(model.param_names, (g.copy() for g in model.gradients())))
    graph["input"] = pixels.grad

    errors: dict[str, dict[str, float]] = {}
    values = dict(zip(model.param_names, model.parameters()))
    values["input"] = x
    for name, t in values.items():
        idx = _pick(rng, t.size, max_entries)
        n = numerical_gradient(f, t, eps, idx)
        errors[name] = {
            "manual_vs_graph": rel_error(manual[name], graph[name]),
            "manual_vs_numeric": rel_error(manual[name].reshape(-1)[idx], n),
            "graph_vs_numeric": rel_error(graph[name].reshape(-1)[idx], n),
        }
    return errors


def worst(errors: dict[str, dict[str, float]]) -> dict[str, float]:
    """The worst error of each kind over all tensors."""
    return {kind: max((e[kind] for e in errors.values()), default=0.0) for kind in TOLERANCES}


def passed(errors: dict[str, dict[str, float]]) -> bool:
    """True when every agreement is within its tolerance."""
    return all(w < TOLERANCES[kind] for kind, w in worst(errors).items())


def check_config(config_path=None, overrides=(), max_entries: int | None = 20) -> tuple[list[int], dict]:
    """The three-way gradient check of the network a config describes: (layer sizes, errors as check_gradients)."""
    cfg = load_config(config_path, overrides)
    spec = ModelSpec.from_config(cfg, len(class_names(cfg)))
    spec.check_fits(batch=4, itemsize=8)
    model = gradcheck_model(spec, seed=cfg["train"]["seed"])
    return list(spec.layer_sizes), check_gradients(model, loss=cfg["train"]["loss"], seed=cfg["train"]["seed"],
                                                   max_entries=max_entries)
