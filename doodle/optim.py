"""Optimizers, learning-rate schedules and gradient clipping.

Optimizers keep their state in lists aligned with the parameter list and update the parameters in
place, so a model's arrays never change identity. Scalars are python floats so float32 stays float32.

Weight decay never touches biases: it applies only to arrays with two or more dimensions (the weight
matrices); 1-D arrays (biases) are left alone, since shrinking them towards 0 only adds bias.
- SGD (all variants): classic L2, `weight_decay * p` is added to the gradient before momentum.
- Adam: decoupled (AdamW, Loshchilov & Hutter 2019), `p *= 1 - lr * weight_decay` before the Adam step,
  so the decay is not rescaled by Adam's per-parameter step sizes.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable

import numpy as np

from doodle import team
from doodle.errors import DoodleError, check_names


class Optimizer:
    """Base class: holds the parameters, the base learning rate and the step count.

    A model whose parameters are consecutive views of one flat buffer, and its gradients views of
    another (as MLP's are), hands both buffers over as `flat=(params, grads)`: each update then runs
    once over the whole network, a dozen numpy calls per step instead of a dozen per array (which
    matters for the small biases), and `step()` reads the gradients from the flat buffer; the buffer is cut
    into one chunk per thread of doodle's team (elementwise work gives each entry the same bits however
    it is cut), and each chunk does its own part of the weight decay before its update, while it is in
    the cache. Without `flat`, `step(grads)` updates array by array.
    """

    def __init__(self, params: list[np.ndarray], lr: float, weight_decay: float = 0.0,
                 flat: tuple[np.ndarray, np.ndarray] | None = None):
        self.params = list(params)
        self.lr = _positive("lr", lr)
        self.weight_decay = _at_least_zero("weight_decay", weight_decay)
        self.decay = [p.ndim >= 2 for p in self.params]  # weights yes, biases no
        self.t = 0  # completed steps
        self.flat = None if flat is None else _check_flat(self.params, *flat)
        self._tmp = self._zeros()  # scratch, so an update allocates nothing
        ends = np.cumsum([p.size for p in self.params]).tolist()
        self._spans = list(zip([0] + ends[:-1], ends, self.decay))  # each array's (start, stop, decay) in flat

    def _zeros(self) -> list[np.ndarray]:
        """Zero arrays shaped like the parameters, tiling one flat buffer when the parameters do."""
        if self.flat is None:
            return [np.zeros_like(p) for p in self.params]
        return _views(np.zeros_like(self.flat[0]), self.params)

    def step(self, grads: list[np.ndarray] | None = None, lr: float | None = None) -> None:
        """Update every parameter in place from its gradient; `lr` overrides the base rate for this step.

        `grads` are aligned with the parameters; None means the flat gradient buffer given as `flat`.
        """
        if grads is None:  # one update over the flat buffers
            if self.flat is None:
                raise ValueError("step() without gradients needs the flat buffers (flat=(params, grads))")
        elif len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        self.t += 1  # once per step, not per parameter
        lr = float(self.lr if lr is None else lr)
        if grads is None:
            assert self.flat is not None  # checked above
            p, g = self.flat
            slots = [_base(s[0]) for s in self._slots()]
            team.run([functools.partial(self._update, p[c], g[c], [s[c] for s in slots], self._pieces(c), lr)
                      for c in _chunks(p.size, team.TEAM.threads)])
        else:
            for i, (p, g) in enumerate(zip(self.params, grads)):
                self._update(p, g, [s[i] for s in self._slots()], [(slice(None), self.decay[i])], lr)

    def _pieces(self, chunk: slice) -> list[tuple[slice, bool]]:
        """The parts of a chunk of the flat buffer that lie in one array each: (slice within the chunk, decay)."""
        return [(slice(max(a, chunk.start) - chunk.start, min(b, chunk.stop) - chunk.start), decay)
                for a, b, decay in self._spans if a < chunk.stop and b > chunk.start]

    def _update(self, p: np.ndarray, g: np.ndarray, slots: list[np.ndarray], pieces: list[tuple[slice, bool]],
                lr: float) -> None:
        """Weight decay, then the update rule, on one array or one chunk of the flat buffer."""
        self._kernel(p, self._before(p, g, slots[-1], pieces, lr), *slots, lr)

    def _before(self, p: np.ndarray, g: np.ndarray, tmp: np.ndarray, pieces: list[tuple[slice, bool]],
                lr: float) -> np.ndarray:
        """Work before the update (weight decay) on the pieces of p (slice, decays?); returns the gradient to use
        (g, or the scratch array tmp holding a changed copy)."""
        return g

    def _slots(self) -> list[list[np.ndarray]]:
        """Per-parameter arrays the kernel needs after p and g: the state, then the scratch buffer."""
        return [self._tmp]

    def _kernel(self, p: np.ndarray, g: np.ndarray, *rest) -> None:
        """The update rule on one array (or the flat buffer of all)."""
        raise NotImplementedError

    def _state(self) -> dict[str, list[np.ndarray]]:
        """Named state lists aligned with params (e.g. {"m": [...], "v": [...]})."""
        return {}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the state, named "m.0", "v.0", ..., plus "step" (for np.savez and --resume)."""
        d = {"step": np.array(self.t, dtype=np.int64)}
        for name, arrays in self._state().items():
            for i, a in enumerate(arrays):
                d[f"{name}.{i}"] = a.copy()
        return d

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore state saved by state_dict(), in place; names and shapes must match exactly."""
        own = self.state_dict()
        check_names(own, d, f"optimizer state does not match {type(self).__name__}")
        for name, ref in own.items():
            if np.shape(d[name]) != ref.shape:
                raise DoodleError(f"optimizer state {name} has shape {np.shape(d[name])}, expected {ref.shape}")
        for name, arrays in self._state().items():
            for i, a in enumerate(arrays):
                np.copyto(a, d[f"{name}.{i}"], casting="unsafe")
        self.t = int(d["step"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional classic or Nesterov momentum.

    Momentum (Polyak): v = mu*v - lr*g; p += v.
    Nesterov (Sutskever et al. 2013, in the form CS231n uses): v = mu*v - lr*g; p += mu*v - lr*g,
    i.e. the step that looks ahead along the updated velocity.
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, flat: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__(params, lr, weight_decay, flat)
        if not 0.0 <= momentum < 1.0:
            raise DoodleError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise DoodleError("nesterov needs momentum > 0 (e.g. momentum: 0.9)")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.v = self._zeros() if momentum > 0 else []

    def _state(self):
        return {"v": self.v} if self.v else {}

    def _slots(self):
        return [self.v, self._tmp] if self.v else [self._tmp]

    def _before(self, p, g, tmp, pieces, lr):
        if not self.weight_decay:
            return g
        # L2: g + wd * p for the weights, g alone for the biases, in the scratch array (the kernel then
        # scales it there): the caller's grads stay untouched.
        for s, decay in pieces:
            if decay:
                np.multiply(p[s], self.weight_decay, out=tmp[s])
                tmp[s] += g[s]
            else:
                np.copyto(tmp[s], g[s])
        return tmp

    def _kernel(self, p, g, *rest):
        *v, tmp, lr = rest
        np.multiply(g, -lr, out=tmp)  # -lr * g (g may be tmp itself: elementwise, in place)
        if not v:
            p += tmp
            return
        v = v[0]
        v *= self.momentum
        v += tmp
        if self.nesterov:
            p += tmp  # -lr * g ...
            np.multiply(v, self.momentum, out=tmp)
            p += tmp  # ... + mu * v
        else:
            p += v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight decay is decoupled (AdamW).

    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2
    p -= lr * mhat / (sqrt(vhat) + eps), mhat = m / (1-b1^t), vhat = v / (1-b2^t)

    The stored moments are m / (1-b1) and v / (1-b2) (so "m.0" in state_dict is a plain decaying sum
    of gradients): that saves two passes over every array per step, the constants going into the
    scalars instead. The update is the same.
    """

    def __init__(self, params, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, flat: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__(params, lr, weight_decay, flat)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise DoodleError(f"{name} must be in [0, 1), got {b}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), _positive("eps", eps)
        self.m = self._zeros()  # m / (1 - beta1)
        self.v = self._zeros()  # v / (1 - beta2)

    def _state(self):
        return {"m": self.m, "v": self.v}

    def _slots(self):
        return [self.m, self.v, self._tmp]

    def _before(self, p, g, tmp, pieces, lr):
        if self.weight_decay:
            shrink = 1.0 - lr * self.weight_decay  # decoupled: straight on the weights
            for s, decay in pieces:
                if decay:
                    p[s] *= shrink
        return g

    def _kernel(self, p, g, M, V, tmp, lr):
        b1, b2, t = self.beta1, self.beta2, self.t
        # With M = m/(1-b1), V = v/(1-b2) and r = sqrt((1-b2) / (1-b2^t)):
        # lr * mhat / (sqrt(vhat) + eps) == step * M / (sqrt(V) + eps / r),
        # step = lr * (1-b1) / ((1-b1^t) * r). Ten passes, no allocation.
        r = math.sqrt((1.0 - b2) / (1.0 - b2 ** t))
        step = lr * (1.0 - b1) / ((1.0 - b1 ** t) * r)
        M *= b1
        M += g
        V *= b2
        np.multiply(g, g, out=tmp)
        V += tmp
        np.sqrt(V, out=tmp)
        tmp += self.eps / r
        np.divide(M, tmp, out=tmp)
        tmp *= step
        p -= tmp


def _check_flat(params: list[np.ndarray], flat_params: np.ndarray,
                flat_grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat_params, flat_grads) after checking that `params` are consecutive views of flat_params, in order."""
    if flat_params.ndim != 1 or flat_grads.shape != flat_params.shape or flat_grads.dtype != flat_params.dtype:
        raise ValueError("flat buffers must be two 1-D arrays of one shape and dtype")
    if flat_params.base is not None or flat_grads.base is not None:
        raise ValueError("flat buffers must own their memory (the views' .base is how updates find them)")
    start = 0
    for p in params:
        if p.base is not flat_params or p.ctypes.data != flat_params[start:].ctypes.data or not p.flags.c_contiguous:
            raise ValueError("the parameters are not consecutive views of the flat buffer")
        start += p.size
    if start != flat_params.size:
        raise ValueError(f"the parameters cover {start} of the flat buffer's {flat_params.size} entries")
    return flat_params, flat_grads


def _views(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    """Consecutive views of `flat` shaped like the arrays of `like`."""
    out, start = [], 0
    for a in like:
        out.append(flat[start:start + a.size].reshape(a.shape))
        start += a.size
    return out


def _base(view: np.ndarray) -> np.ndarray:
    """The flat buffer behind a view made by _views."""
    base = view.base
    assert base is not None  # a view of the flat buffer
    return base


def _chunks(n: int, parts: int) -> list[slice]:
    """range(n) in `parts` near-equal slices whose starts are multiples of 16 (aligned for SIMD)."""
    edges = [min(n, (n * i // parts) // 16 * 16) for i in range(parts)] + [n]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


# name -> the factory, and which train.* settings it reads (its other options keep their defaults).
OPTIMIZERS: dict[str, tuple[Callable[..., Optimizer], tuple[str, ...]]] = {
    "sgd": (SGD, ("lr", "weight_decay")),
    "momentum": (functools.partial(SGD, momentum=0.9), ("lr", "weight_decay", "momentum")),
    "nesterov": (functools.partial(SGD, momentum=0.9, nesterov=True), ("lr", "weight_decay", "momentum")),
    "adam": (Adam, ("lr", "weight_decay", "beta1", "beta2")),
}


def make_optimizer(name: str, params: list[np.ndarray], flat: tuple[np.ndarray, np.ndarray] | None = None,
                   **kwargs) -> Optimizer:
    """OPTIMIZERS[name](params, **kwargs), with a DoodleError for unknown names or options."""
    if name not in OPTIMIZERS:
        raise DoodleError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
    factory = OPTIMIZERS[name][0]
    allowed = [k for k in inspect.signature(factory).parameters if k not in ("params", "flat")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise DoodleError(f"unknown option(s) {', '.join(unknown)} for optimizer {name!r}: "
                          f"it takes {', '.join(allowed)}")
    try:
        return factory(params, flat=flat, **kwargs)
    except (TypeError, ValueError) as err:
        raise DoodleError(f"bad option for optimizer {name!r}: {err}") from None


def optimizer_from_settings(settings: dict, params: list[np.ndarray],
                            flat: tuple[np.ndarray, np.ndarray] | None = None) -> Optimizer:
    """The optimizer a config's train section names, with the settings that optimizer reads."""
    name = settings["optimizer"]
    reads = OPTIMIZERS[name][1] if name in OPTIMIZERS else ()
    return make_optimizer(name, params, flat, **{k: settings[k] for k in reads})


# --- learning-rate schedules: step index (0-based) -> lr -----------------------------------------


def _constant(base_lr: float, steps: int) -> Callable[[int], float]:
    return lambda t: base_lr


def _step(base_lr: float, steps: int, step_size: int = 1000, gamma: float = 0.1) -> Callable[[int], float]:
    """Multiply by gamma every step_size steps."""
    if int(step_size) != step_size or step_size < 1:
        raise DoodleError(f"step_size must be a positive whole number of steps, got {step_size}")
    if gamma <= 0:
        raise DoodleError(f"gamma must be > 0, got {gamma}")
    return lambda t: base_lr * gamma ** (t // int(step_size))


def _cosine(base_lr: float, steps: int, min_lr: float = 0.0) -> Callable[[int], float]:
    """Half a cosine from base_lr down to min_lr over `steps` steps, then min_lr."""
    if not 0.0 <= min_lr <= base_lr:
        raise DoodleError(f"min_lr must be between 0 and the base learning rate {base_lr}, got {min_lr}")
    return lambda t: min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * min(t, steps) / steps))


SCHEDULES: dict[str, Callable[..., Callable[[int], float]]] = {
    "constant": _constant, "step": _step, "cosine": _cosine}


def make_schedule(name: str, base_lr: float, total_steps: int, warmup_steps: int = 0,
                  **kw) -> Callable[[int], float]:
    """lr(step) for 0-based steps: linear warm-up, then SCHEDULES[name] over the remaining steps.

    Warm-up gives base_lr * (step + 1) / warmup_steps, so it starts near 0 and reaches base_lr at step
    warmup_steps - 1. The schedule proper sees step - warmup_steps; "cosine" reaches min_lr at
    total_steps, "step" decays every step_size steps after the warm-up.
    """
    if name not in SCHEDULES:
        raise DoodleError(f"unknown schedule {name!r}: use one of {', '.join(SCHEDULES)}")
    base_lr = _positive("learning rate", base_lr)
    if int(total_steps) != total_steps or total_steps < 1:
        raise DoodleError(f"total_steps must be a positive whole number, got {total_steps}")
    if int(warmup_steps) != warmup_steps or not 0 <= warmup_steps < total_steps:
        raise DoodleError(f"warmup_steps must be a whole number in [0, total_steps={total_steps}), got {warmup_steps}")
    factory = SCHEDULES[name]
    allowed = list(inspect.signature(factory).parameters)[2:]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise DoodleError(f"unknown option(s) {', '.join(unknown)} for schedule {name!r}: "
                          f"it takes {', '.join(allowed) or 'none'}")
    warmup = int(warmup_steps)
    after = factory(base_lr, int(total_steps) - warmup, **kw)

    def lr(step: int) -> float:
        if step < warmup:
            return base_lr * (step + 1) / warmup
        return float(after(step - warmup))

    return lr


def schedule_from_settings(settings: dict, steps_per_epoch: int) -> Callable[[int], float]:
    """lr(step) for the schedule a config's train section names, its epochs turned into steps."""
    kw: dict = {}
    if settings["schedule"] == "step":
        kw = {"step_size": settings["step_epochs"] * steps_per_epoch, "gamma": settings["gamma"]}
    elif settings["schedule"] == "cosine":
        kw = {"min_lr": settings["min_lr"]}
    total = settings["epochs"] * steps_per_epoch
    warmup = min(int(round(settings["warmup_epochs"] * steps_per_epoch)), total - 1)  # a 1-epoch run still trains
    return make_schedule(settings["schedule"], settings["lr"], total_steps=total, warmup_steps=warmup, **kw)


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most max_norm; returns the norm before."""
    # Sum of squares via dot: one pass, no temporary, accumulated in float64 across arrays.
    total = 0.0
    for g in grads:
        flat = g.reshape(-1)
        total += float(np.dot(flat, flat))
    norm = math.sqrt(total)
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for g in grads:
            g *= scale
    return norm


def _positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DoodleError(f"{name} must be a number, got {value!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise DoodleError(f"{name} must be > 0, got {value}")
    return value


def _at_least_zero(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DoodleError(f"{name} must be a number, got {value!r}") from None
    if not value >= 0 or not math.isfinite(value):
        raise DoodleError(f"{name} must be >= 0, got {value}")
    return value
