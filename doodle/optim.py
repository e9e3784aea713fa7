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

from doodle.errors import DoodleError


class Optimizer:
    """Base class: holds the parameters, the base learning rate and the step count."""

    def __init__(self, params: list[np.ndarray], lr: float, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr = _positive("lr", lr)
        self.weight_decay = _at_least_zero("weight_decay", weight_decay)
        self.decay = [p.ndim >= 2 for p in self.params]  # weights yes, biases no
        self.t = 0  # completed steps
        # One scratch buffer per parameter, so an update allocates nothing.
        self._tmp = [np.empty_like(p) for p in self.params]

    def step(self, grads: list[np.ndarray], lr: float | None = None) -> None:
        """Update every parameter in place from its gradient; `lr` overrides the base rate for this step."""
        if len(grads) != len(self.params):
            raise ValueError(f"{len(grads)} gradients for {len(self.params)} parameters")
        self.t += 1  # once per step, not per parameter
        self._update(grads, float(self.lr if lr is None else lr))

    def _update(self, grads: list[np.ndarray], lr: float) -> None:
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
        missing = sorted(set(own) - set(d))
        extra = sorted(set(d) - set(own))
        if missing or extra:
            raise DoodleError(f"optimizer state does not match {type(self).__name__}: "
                              f"missing {missing or 'none'}, unexpected {extra or 'none'}")
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
                 weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise DoodleError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise DoodleError("nesterov needs momentum > 0 (e.g. momentum: 0.9)")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.v = [np.zeros_like(p) for p in self.params] if momentum > 0 else []

    def _state(self):
        return {"v": self.v} if self.v else {}

    def _update(self, grads, lr):
        mu, wd = self.momentum, self.weight_decay
        for i, (p, g, tmp) in enumerate(zip(self.params, grads, self._tmp)):
            if wd and self.decay[i]:
                np.multiply(p, wd, out=tmp)
                tmp += g  # g + wd * p, without touching the caller's gradient
                g = tmp
            if mu == 0.0:
                np.multiply(g, -lr, out=tmp)
                p += tmp
                continue
            v = self.v[i]
            v *= mu
            np.multiply(g, -lr, out=tmp)  # -lr * g (safe even when g is tmp)
            v += tmp
            if self.nesterov:
                p += tmp  # -lr * g ...
                np.multiply(v, mu, out=tmp)
                p += tmp  # ... + mu * v
            else:
                p += v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight decay is decoupled (AdamW).

    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2
    p -= lr * mhat / (sqrt(vhat) + eps), mhat = m / (1-b1^t), vhat = v / (1-b2^t)
    """

    def __init__(self, params, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise DoodleError(f"{name} must be in [0, 1), got {b}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), _positive("eps", eps)
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]

    def _state(self):
        return {"m": self.m, "v": self.v}

    def _update(self, grads, lr):
        b1, b2, t = self.beta1, self.beta2, self.t
        # Fold the bias corrections into the scalars: lr * mhat / (sqrt(vhat) + eps)
        # == step * m / (sqrt(v) + eps_hat), with no extra pass over the arrays.
        c2 = math.sqrt(1.0 - b2 ** t)
        step = lr * c2 / (1.0 - b1 ** t)
        eps_hat = self.eps * c2
        decay = 1.0 - lr * self.weight_decay
        for i, (p, g, m, v, tmp) in enumerate(zip(self.params, grads, self.m, self.v, self._tmp)):
            if self.weight_decay and self.decay[i]:
                p *= decay
            m *= b1
            np.multiply(g, 1.0 - b1, out=tmp)
            m += tmp
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - b2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += eps_hat
            np.divide(m, tmp, out=tmp)
            tmp *= step
            p -= tmp


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": SGD,
    "momentum": functools.partial(SGD, momentum=0.9),
    "nesterov": functools.partial(SGD, momentum=0.9, nesterov=True),
    "adam": Adam,
}


def make_optimizer(name: str, params: list[np.ndarray], **kwargs) -> Optimizer:
    """OPTIMIZERS[name](params, **kwargs), with a DoodleError for unknown names or options."""
    if name not in OPTIMIZERS:
        raise DoodleError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")
    factory = OPTIMIZERS[name]
    allowed = [k for k in inspect.signature(factory).parameters if k != "params"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise DoodleError(f"unknown option(s) {', '.join(unknown)} for optimizer {name!r}: "
                          f"it takes {', '.join(allowed)}")
    try:
        return factory(params, **kwargs)
    except (TypeError, ValueError) as err:
        raise DoodleError(f"bad option for optimizer {name!r}: {err}") from None


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
