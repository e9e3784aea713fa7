"""Training-step speed: the computational graph (doodle.autodiff) against the hand-written backward.

For each network, float32, batch 256 on random inputs, one step is forward + loss + backward (no
optimizer), exactly as `doodle train` runs it (doodle.nn.BACKPROP): the manual path (MLP.forward in
train mode, the fused loss, MLP.backward) and the graph path (MLP.logits_graph: each layer's
forward_graph, drawing its own dropout masks and reusing its arrays, the loss built from autodiff
ops, loss.backward() writing into the model's own gradient buffers). Steps of the two
paths alternate one by one, so a neighbour hogging the CPU hurts both alike; each step is timed,
and both the ratio of the medians and the median of the per-pair ratios are printed. Then a
second, instrumented pass charges the graph path's time to its ops (forward and backward apart)
and the manual path's to its layers, to show where the difference goes; what the ops do not
account for is the engine's own bookkeeping. BLAS threads: numpy's defaults (OPENBLAS_NUM_THREADS
to change); on a shared machine multithreaded BLAS makes single steps erratic, and the load
average printed first says how shared it was.

    python bench/graph.py [--steps 60] [--batch 256] [--loss cross_entropy|mse]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import numpy as np

import _common  # noqa: F401  (puts the repo on sys.path)
from doodle import autodiff as ad
from doodle.nn import BACKPROP, LOSSES, MLP, Dropout

NETWORKS = [  # (label, layer sizes, dropout, norm)
    ("784-256-128-10", [784, 256, 128, 10], 0.0, "none"),
    ("784-1024-512-16, dropout 0.3", [784, 1024, 512, 16], 0.3, "none"),
    ("quickdraw16: 784-1024-512-16, batch norm, dropout 0.1", [784, 1024, 512, 16], 0.1, "batch"),
]
GROUPS = {"matmul": "dense", "add": "dense", "Dense": "dense", "mul": "dropout", "Dropout": "dropout",
          "masks": "dropout", **{k: "activation" for k in ("relu", "leaky_relu", "tanh", "sigmoid", "ReLU",
                                                           "LeakyReLU", "Tanh", "Sigmoid")}}


def manual_step(model: MLP, loss: str):
    """forward (train mode) + fused loss + hand-written backward, as `doodle train` runs it."""
    return BACKPROP["manual"](model, loss)


def graph_step(model: MLP, loss: str):
    """The same step through the model's own graph, gradients landing in model.gradients()."""
    return BACKPROP["graph"](model, loss)


def timed(step) -> float:
    """Seconds of one call."""
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def alternate(manual, graph, pairs: int) -> tuple[list[float], list[float]]:
    """Per-step seconds of both paths, steps alternating (ABBA order, so neither always goes first)."""
    m_times, g_times = [], []
    for i in range(pairs):
        if i % 2:
            g_times.append(timed(graph))
            m_times.append(timed(manual))
        else:
            m_times.append(timed(manual))
            g_times.append(timed(graph))
    return m_times, g_times


class OpTimer:
    """Charges time to graph ops (by wrapping doodle.autodiff's op functions) and to manual layers."""

    def __init__(self):
        self.active = True  # False while the other path runs (they share the dropout layers)
        self.fwd = defaultdict(float)
        self.bwd = defaultdict(float)
        self.count = defaultdict(int)
        self._undo = []

    def _wrap_op(self, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.fwd[out.op] += time.perf_counter() - t0
            self.count[out.op] += 1
            rule = out._backward
            if rule is not None:
                def timed_rule(g, op=out.op):
                    t1 = time.perf_counter()
                    res = rule(g)
                    self.bwd[op] += time.perf_counter() - t1
                    return res
                out._backward = timed_rule
            return out
        return timed

    def _patch(self, owner, name, value, setter=setattr):
        old = owner[name] if isinstance(owner, dict) else getattr(owner, name)
        setter(owner, name, value)
        self._undo.append((owner, name, old, setter))

    def install_graph(self, model: MLP):
        """Wrap every op (module functions and Tensor methods) and the dropout layers' mask drawing."""
        for name in ("add", "sub", "mul", "div", "neg", "matmul", "exp", "log", "power", "square", "pick",
                     "relu", "leaky_relu", "tanh", "sigmoid"):
            self._patch(ad, name, self._wrap_op(getattr(ad, name)))
        for name in ("sum", "mean", "max", "reshape", "transpose"):
            self._patch(ad.Tensor, name, self._wrap_op(getattr(ad.Tensor, name)))
        for layer in model.layers:
            if isinstance(layer, Dropout):
                self._patch(layer, "_draw_mask", self._wrap_call(layer._draw_mask, "masks", self.fwd, True))

    def install_manual(self, model: MLP, loss: str):
        """Wrap each layer's forward/backward and the loss function, charged to the class name."""
        for layer in model.layers:
            key = type(layer).__name__
            for attr, table in (("forward", self.fwd), ("backward", self.bwd)):
                self._patch(layer, attr, self._wrap_call(getattr(layer, attr), key, table, attr == "forward"))
        self._patch(LOSSES, loss, self._wrap_call(LOSSES[loss], f"loss {loss}", self.fwd, True), dict.__setitem__)

    def _wrap_call(self, fn, key, table, counts):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if self.active:
                table[key] += time.perf_counter() - t0
                self.count[key] += counts
            return out
        return timed

    def uninstall(self):
        for owner, name, old, setter in reversed(self._undo):
            setter(owner, name, old)
        self._undo.clear()


def breakdown(model, x, y, loss, steps: int) -> tuple[OpTimer, float, OpTimer, float]:
    """Instrumented, alternating runs of both paths: (graph timer, s/step, manual timer, s/step)."""
    g, m = OpTimer(), OpTimer()
    g.install_graph(model)
    m.install_manual(model, loss)  # the graph path calls forward_graph, neither forward/backward nor nn.LOSSES
    manual, graph = manual_step(model, loss), graph_step(model, loss)

    def graph_only():
        g.active = True
        graph(x, y)
        g.active = False

    g.active = False
    try:
        m_times, g_times = alternate(lambda: manual(x, y), graph_only, steps)
    finally:
        g.uninstall()
        m.uninstall()
    return g, sum(g_times) / steps, m, sum(m_times) / steps


def print_breakdown(g: OpTimer, g_total: float, m: OpTimer, m_total: float, steps: int) -> None:
    ms = 1e3 / steps
    print(f"  {'graph op':<12}{'n/step':>7}{'fwd ms':>9}{'bwd ms':>9}     {'manual':<20}{'n/step':>7}{'fwd ms':>9}"
          f"{'bwd ms':>9}")
    g_keys = sorted(g.count, key=lambda k: -(g.fwd[k] + g.bwd[k]))
    m_keys = sorted(m.count, key=lambda k: -(m.fwd[k] + m.bwd[k]))
    for i in range(max(len(g_keys), len(m_keys))):
        left = right = ""
        if i < len(g_keys):
            k = g_keys[i]
            left = f"{k:<12}{g.count[k] / steps:>7.0f}{g.fwd[k] * ms:>9.3f}{g.bwd[k] * ms:>9.3f}"
        if i < len(m_keys):
            k = m_keys[i]
            right = f"{k:<20}{m.count[k] / steps:>7.0f}{m.fwd[k] * ms:>9.3f}{m.bwd[k] * ms:>9.3f}"
        print(f"  {left:<37}     {right}")
    groups = defaultdict(lambda: [0.0, 0.0])
    for timer, col in ((g, 0), (m, 1)):
        for k in timer.count:
            groups[GROUPS.get(k, "loss")][col] += (timer.fwd[k] + timer.bwd[k]) * ms
    groups["engine/other"] = [g_total * 1e3 - sum(v[0] for v in groups.values()),
                              m_total * 1e3 - sum(v[1] for v in groups.values())]
    print(f"  {'where it goes':<14}{'graph ms':>10}{'manual ms':>11}{'diff ms':>9}")
    for name in ("dense", "activation", "dropout", "loss", "engine/other"):
        gv, mv = groups[name]
        print(f"  {name:<14}{gv:>10.3f}{mv:>11.3f}{gv - mv:>+9.3f}")
    print(f"  {'total':<14}{g_total * 1e3:>10.3f}{m_total * 1e3:>11.3f}{(g_total - m_total) * 1e3:>+9.3f}"
          f"   (instrumented run: timers add a little to both)")


def compare(label: str, sizes: list[int], dropout: float, norm: str, args) -> tuple[float, float, float]:
    """Time both paths on one network and print the figures; (manual ms, graph ms, pair ratio) medians."""
    rng = np.random.default_rng(0)
    model = MLP(sizes, dropout=dropout, seed=0, norm=norm)
    x = rng.random((args.batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], size=args.batch)
    manual_fn, graph_fn = manual_step(model, args.loss), graph_step(model, args.loss)

    def manual():
        manual_fn(x, y)

    def graph():
        graph_fn(x, y)

    for _ in range(3):  # warm-up: page faults, BLAS threads
        manual()
        graph()
    m_times, g_times = alternate(manual, graph, args.steps)
    m_med, g_med = statistics.median(m_times), statistics.median(g_times)
    ratios = [g / m for m, g in zip(m_times, g_times)]
    q1, q3 = np.percentile(ratios, [25, 75])
    print(f"\n{label}, batch {args.batch}, float32, {args.loss}, {args.steps} alternating steps per path:")
    print(f"  manual  median {m_med * 1e3:8.3f} ms/step   (min {min(m_times) * 1e3:.3f})")
    print(f"  graph   median {g_med * 1e3:8.3f} ms/step   (min {min(g_times) * 1e3:.3f})")
    m10, g10 = np.percentile(m_times, 10), np.percentile(g_times, 10)  # the quiet moments of a busy machine
    print(f"  ratio graph/manual {g_med / m_med:.3f} of medians, {g10 / m10:.3f} of 10th percentiles;"
          f" step-pair ratios: median {statistics.median(ratios):.3f}, quartiles {q1:.3f}-{q3:.3f}"
          f"   target <= 1.25")
    if norm == "none":
        print_breakdown(*breakdown(model, x, y, args.loss, args.steps), steps=args.steps)
    else:  # the graph builds batch norm from the loss's own elementary ops: charging by op would mislabel it
        print("  (no breakdown: the graph builds batch norm from the same elementary ops as the loss)")
    return m_med * 1e3, g_med * 1e3, statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="timed steps of each path")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--loss", default="cross_entropy", choices=sorted(LOSSES))
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}")
    summary = [(label, *compare(label, sizes, dropout, norm, args)) for label, sizes, dropout, norm in NETWORKS]
    print("\nsummary (median ms/step):")
    for label, m_med, g_med, pair in summary:
        print(f"  {label:<54} manual {m_med:8.3f}   graph {g_med:8.3f}   ratio {g_med / m_med:.3f} (pairs {pair:.3f})")


if __name__ == "__main__":
    main()
