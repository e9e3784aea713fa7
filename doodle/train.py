"""The training loop: minibatch gradient descent over a seeded, stratified split, keeping the best
epoch by validation accuracy.

A run folder holds everything needed to use or continue the run:
  model.npz + model.json   the best epoch's weights and self-describing metadata (checkpoint.py)
  config.yaml              the resolved config
  split.npz                train/val/test row indices (evaluate reproduces the test split from them)
  metrics.jsonl            one JSON line per epoch
  last.npz, optimizer.npz, state.json   the latest epoch, for `--resume`
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doodle import __version__, autodiff, fsutil
from doodle.augment import augment_batch
from doodle.checkpoint import load_model, save_model
from doodle.config import dump, load_config
from doodle.dataset import PADDING, Dataset, load_dataset, split_indices
from doodle.errors import DoodleError
from doodle.nn import LOSSES, MLP, lookup
from doodle.optim import Optimizer, clip_grad_norm, make_schedule, optimizer_from_settings
from doodle.progress import NULL_REPORTER, Reporter

@dataclass
class TrainResult:
    """What `doodle train --json` prints."""

    run: str
    classes: list[str]
    layer_sizes: list[int]
    batch_size: int
    epochs: int  # epochs completed in this run folder
    best_epoch: int
    val_accuracy: float | None
    test_accuracy: float | None
    test_loss: float | None
    samples_per_second: float
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)
    workspace: dict = field(default_factory=dict)  # the graph path's reusable arrays (backprop: graph)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def _schedule(t: dict, steps_per_epoch: int):
    """lr(step) for the configured schedule, its epochs turned into steps."""
    kw = {}
    if t["schedule"] == "step":
        kw = {"step_size": t["step_epochs"] * steps_per_epoch, "gamma": t["gamma"]}
    elif t["schedule"] == "cosine":
        kw = {"min_lr": t["min_lr"]}
    total = t["epochs"] * steps_per_epoch
    warmup = min(int(round(t["warmup_epochs"] * steps_per_epoch)), total - 1)  # a 1-epoch run still trains
    return make_schedule(t["schedule"], t["lr"], total_steps=total, warmup_steps=warmup, **kw)


def default_run_dir(config_path: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """runs/<config name>-<timestamp>, never an existing folder."""
    stem = Path(config_path).stem if config_path else "default"
    base = Path(runs_dir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run, n = base, 1
    while run.exists():
        n += 1
        run = base.with_name(f"{base.name}-{n}")
    return run


def model_meta(cfg: dict, classes: list[str], layer_sizes: list[int], metrics: dict) -> dict:
    """The metadata written beside the weights."""
    data = cfg["data"]
    return {
        "classes": classes, "layer_sizes": layer_sizes, "activation": cfg["model"]["activation"],
        "raster": {"size": data["image_size"], "line_width": float(data["line_width"]), "padding": PADDING,
                   "source": data["source"]},
        "config": cfg, "metrics": metrics,
    }


def train(config_path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = (),
          data_dir: str | Path = "data", out: str | Path | None = None, resume: str | Path | None = None,
          reporter: Reporter = NULL_REPORTER, workers: int = 0) -> TrainResult:
    """Load the config and data, then train; see `fit` for the loop."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "state.json").is_file() or not (run_dir / "config.yaml").is_file():
            raise DoodleError(f"{run_dir}: not a resumable run (needs state.json and config.yaml from `doodle train`)")
        cfg = load_config(run_dir / "config.yaml", overrides)
    else:
        cfg = load_config(config_path, overrides)
        run_dir = Path(out) if out is not None else default_run_dir(config_path)
        if (run_dir / "state.json").exists():
            raise DoodleError(f"{run_dir}: already holds a run; pick another --out or continue it with --resume {run_dir}")
    ds = load_dataset(cfg, data_dir, reporter, workers=workers)
    return fit(cfg, ds, run_dir, reporter, resume=resume is not None)


BACKPROP = ("manual", "graph")  # how gradients are found: hand-written layer backward, or the autodiff graph


def gradients(model: MLP, loss: str, x: np.ndarray, y: np.ndarray, backprop: str = "manual",
              workspace: dict | None = None) -> tuple[float, int]:
    """Forward (train mode), loss and backward on one batch, filling model.gradients(); returns (loss, n_correct).

    "manual" runs the layers' hand-written backward (doodle.nn); "graph" builds the loss's computational
    graph from elementary operations and differentiates it (doodle.autodiff), with the same dropout
    masks, writing into the same gradient buffers. A workspace dict, kept for a run, lets the graph
    reuse its hidden-layer arrays from step to step.
    """
    if backprop not in BACKPROP:
        raise DoodleError(f"unknown backprop {backprop!r}: use one of {', '.join(BACKPROP)}")
    if backprop == "graph":
        if x.dtype != model.dtype:
            x = x.astype(model.dtype)
        graph_loss, _, logits = autodiff.mlp_loss(x, y, model.parameters(), model.activation, loss,
                                                  model.dropout_masks(len(x)), model.gradients(), workspace)
        n_correct = int(np.count_nonzero(logits.value.argmax(axis=1) == y))
        value = float(graph_loss.value)
        graph_loss.backward()
        return value, n_correct
    loss_fn = lookup(LOSSES, loss, "loss")
    logits = model.forward(x, train=True)  # (B, C)
    n_correct = int(np.count_nonzero(logits.argmax(axis=1) == y))
    value, dlogits = loss_fn(logits, y)
    model.backward(dlogits)
    return value, n_correct


def train_step(model: MLP, optimizer: Optimizer, loss: str, x: np.ndarray, y: np.ndarray, lr: float | None = None,
               clip_norm: float | None = None, backprop: str = "manual",
               workspace: dict | None = None) -> tuple[float, int]:
    """One minibatch: forward (train mode), loss, backward, optional clipping, update; returns (loss, n_correct)."""
    value, n_correct = gradients(model, loss, x, y, backprop, workspace)
    if clip_norm is not None:
        clip_grad_norm(model.gradients(), clip_norm)
    if optimizer.flat is not None and optimizer.flat[1] is model.flat_grads:
        optimizer.step(lr=lr)  # one update over the model's flat gradient buffer
    else:
        optimizer.step(model.gradients(), lr=lr)
    return value, n_correct


def score(model: MLP, x: np.ndarray, y: np.ndarray, loss: str, batch_size: int = 4096) -> tuple[float, float]:
    """(mean loss, accuracy) of the model in eval mode on uint8 bitmaps x with labels y; NaNs when empty."""
    if len(y) == 0:
        return float("nan"), float("nan")
    loss_fn = lookup(LOSSES, loss, "loss")
    total, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        logits = model.predict_logits(x[i:i + batch_size], batch_size)
        yb = y[i:i + batch_size]
        total += loss_fn(logits, yb)[0] * len(yb)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
    return total / len(y), correct / len(y)


@dataclass
class _Run:
    """One training run's moving parts and progress, as fit() carries them from epoch to epoch."""

    cfg: dict
    ds: Dataset
    dir: Path
    split: dict[str, np.ndarray]  # train/val/test row indices
    layer_sizes: list[int]
    model: MLP
    optimizer: Optimizer
    rng: np.random.Generator  # shuffling and augmentation
    lr_at: object  # step -> learning rate
    steps_per_epoch: int
    epoch: int = 0  # epochs completed
    best: dict = field(default_factory=lambda: {"epoch": 0, "val_accuracy": -1.0})
    best_state: dict | None = None  # the best epoch's weights
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    workspace: dict = field(default_factory=dict)  # the graph path's reusable arrays (backprop: graph)


def _start(cfg: dict, ds: Dataset, run_dir: Path, resume: bool) -> _Run:
    """Build the model, optimizer and schedule; a new run writes its config and split, a resumed one reloads its state."""
    t, d, m = cfg["train"], cfg["data"], cfg["model"]
    split = split_indices(ds.counts, d["val_fraction"], d["test_fraction"], d["test_split"], d["seed"])
    if len(split["train"]) == 0:
        raise DoodleError("the training split is empty; raise data.per_category or lower the held-out fractions")
    layer_sizes = [d["image_size"] ** 2, *m["hidden"], len(ds.classes)]
    model = MLP(layer_sizes, activation=m["activation"], dropout=m["dropout"], init=m["init"], seed=t["seed"])
    optimizer = optimizer_from_settings(t, model.parameters(), flat=(model.flat_params, model.flat_grads))
    steps_per_epoch = math.ceil(len(split["train"]) / t["batch_size"])
    run = _Run(cfg, ds, run_dir, split, layer_sizes, model, optimizer, np.random.default_rng([t["seed"], 1]),
               _schedule(t, steps_per_epoch), steps_per_epoch)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        fsutil.write_text(run_dir / "config.yaml", dump(cfg))
        with fsutil.atomic_path(run_dir / "split.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **split, counts=np.asarray(ds.counts))
        fsutil.write_text(run_dir / "metrics.jsonl", "")
        return run
    state = json.loads((run_dir / "state.json").read_text())
    if state.get("split_counts") != ds.counts:
        raise DoodleError(f"{run_dir}: the data changed since this run started (rows per class differ); "
                          "start a new run instead of --resume")
    model.load_state_dict(dict(np.load(run_dir / "last.npz", allow_pickle=False)))
    optimizer.load_state_dict(dict(np.load(run_dir / "optimizer.npz", allow_pickle=False)))
    run.rng.bit_generator.state = state["rng"]
    run.epoch, run.best, run.train_seconds = state["epoch"], state["best"], state["train_seconds"]
    run.history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if run.epoch >= t["epochs"]:
        raise DoodleError(f"{run_dir}: already trained {run.epoch} epochs of {t['epochs']}; "
                          f"raise them with --set train.epochs={run.epoch + 10}")
    if run.best["epoch"]:
        run.best_state = load_model(run_dir)[0].state_dict()
    return run


def fit(cfg: dict, ds: Dataset, run_dir: Path, reporter: Reporter = NULL_REPORTER,
        resume: bool = False) -> TrainResult:
    """Minibatch gradient descent with a per-epoch validation pass; the best epoch is what is kept."""
    t = cfg["train"]
    run = _start(cfg, ds, run_dir, resume)
    patience_left = t["patience"]
    interrupted = False
    try:
        for epoch in range(run.epoch + 1, t["epochs"] + 1):
            row = _run_epoch(run, epoch, reporter)
            improved = _end_epoch(run, row)
            reporter.epoch(row)
            if improved:
                patience_left = t["patience"]
            elif patience_left is not None:
                patience_left -= 1
                if patience_left <= 0:
                    reporter.log(f"early stopping: no validation improvement for {t['patience']} epochs")
                    break
    except KeyboardInterrupt:
        interrupted = True
        reporter.log("interrupted: keeping the best epoch so far")
    if run.best_state is None:
        raise DoodleError(f"interrupted before the first epoch finished; nothing saved in {run_dir}", exit_code=130)
    return _finish(run, interrupted)


def _run_epoch(run: _Run, epoch: int, reporter: Reporter) -> dict:
    """One pass over the shuffled training rows, then the validation score; returns the epoch's row."""
    t, aug, x, y = run.cfg["train"], run.cfg["augment"], run.ds.x, run.ds.y
    bs = t["batch_size"]
    order = run.rng.permutation(run.split["train"])  # shuffle indices, not arrays
    key = f"epoch{epoch}"
    reporter.start(key, f"epoch {epoch}/{t['epochs']}", total=run.steps_per_epoch, unit="batches")
    loss_sum, correct, seen, seconds = 0.0, 0, 0, 0.0
    step0 = (epoch - 1) * run.steps_per_epoch
    lr = run.lr_at(step0)
    batches = _batches(x, order, bs, run.steps_per_epoch, aug, run.rng)
    try:
        for b in range(run.steps_per_epoch):
            tick = time.perf_counter()
            idx, xb = next(batches)
            lr = run.lr_at(step0 + b)
            loss, n_ok = train_step(run.model, run.optimizer, t["loss"], xb, y[idx], lr=lr, clip_norm=t["clip_norm"],
                                    backprop=t["backprop"], workspace=run.workspace)
            seconds += time.perf_counter() - tick
            if not math.isfinite(loss):
                raise DoodleError(f"loss became {loss} at epoch {epoch}, batch {b + 1}: the learning rate is too "
                                  f"high for this model; lower train.lr (now {t['lr']}), e.g. --set "
                                  f"train.lr={t['lr'] / 10:g}, or set train.clip_norm", exit_code=1)
            loss_sum += loss * len(idx)
            correct += n_ok
            seen += len(idx)
            reporter.update(key, advance=1, loss=loss_sum / seen, acc=correct / seen, sps=seen / max(seconds, 1e-9))
    finally:
        batches.close()
        reporter.end(key)
    run.train_seconds += seconds
    row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen, "lr": float(lr),
           "samples": seen, "seconds": round(seconds, 3), "val_loss": None, "val_accuracy": None}
    if len(run.split["val"]):
        val = run.split["val"]
        row["val_loss"], row["val_accuracy"] = score(run.model, x[val], y[val], t["loss"])
    return row


def _batches(x: np.ndarray, order: np.ndarray, bs: int, steps: int, aug: dict, rng: np.random.Generator):
    """(rows, float32 batch) for each step of an epoch, augmented; the next batch is prepared in a thread
    while the current one trains (numpy releases the GIL), one at a time and in order, so `rng` draws
    exactly as without the thread and runs stay deterministic."""

    def prepare(b: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(order[b * bs:(b + 1) * bs])  # sorted gathers read the uint8 array in order
        return idx, augment_batch(x[idx], rng, aug["shift"], aug["rotate"], aug["scale"], aug["probability"])

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="doodle-batches") as pool:
        ahead = pool.submit(prepare, 0)
        try:
            for b in range(steps):
                batch = ahead.result()
                if b + 1 < steps:
                    ahead = pool.submit(prepare, b + 1)
                yield batch
        finally:
            ahead.cancel()


def _end_epoch(run: _Run, row: dict) -> bool:
    """Record the epoch (metrics, best model, resume state); True when it is the best so far."""
    run.epoch = row["epoch"]
    run.history.append(row)
    with open(run.dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    score_ = row["val_accuracy"] if row["val_accuracy"] is not None else row["train_accuracy"]
    improved = score_ > run.best["val_accuracy"]
    if improved:
        run.best = {"epoch": run.epoch, "val_accuracy": score_}
        run.best_state = run.model.state_dict()  # already a copy
        save_model(run.dir, run.model, model_meta(run.cfg, run.ds.classes, run.layer_sizes,
                                                  {"best_epoch": run.epoch, **row}))
    _save_state(run)
    return improved


def _finish(run: _Run, interrupted: bool) -> TrainResult:
    """Restore the best epoch, score it on the test split and write the final model."""
    t, test = run.cfg["train"], run.split["test"]
    run.model.load_state_dict(run.best_state)
    test_loss = test_acc = None
    if len(test):
        test_loss, test_acc = score(run.model, run.ds.x[test], run.ds.y[test], t["loss"])
    samples = sum(h["samples"] for h in run.history)
    sps = samples / run.train_seconds if run.train_seconds > 0 else 0.0
    best_row = next(h for h in run.history if h["epoch"] == run.best["epoch"])
    metrics = {"best_epoch": run.best["epoch"], **best_row, "test_accuracy": test_acc, "test_loss": test_loss,
               "samples_per_second": sps, "epochs_run": len(run.history)}
    save_model(run.dir, run.model, model_meta(run.cfg, run.ds.classes, run.layer_sizes, metrics))
    return TrainResult(run=str(run.dir), classes=run.ds.classes, layer_sizes=run.layer_sizes,
                       batch_size=t["batch_size"], epochs=len(run.history), best_epoch=run.best["epoch"],
                       val_accuracy=best_row["val_accuracy"], test_accuracy=test_acc, test_loss=test_loss,
                       samples_per_second=sps, interrupted=interrupted, history=run.history)


def _save_state(run: _Run) -> None:
    """What --resume needs: the latest weights, optimizer state and RNG state."""
    for name, arrays in (("last.npz", run.model.state_dict()), ("optimizer.npz", run.optimizer.state_dict())):
        with fsutil.atomic_path(run.dir / name, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    fsutil.write_json(run.dir / "state.json", {
        "epoch": run.epoch, "best": run.best, "train_seconds": run.train_seconds, "rng": run.rng.bit_generator.state,
        "split_counts": run.ds.counts, "doodle_version": __version__})


__all__ = ["TrainResult", "train", "fit", "train_step", "score"]
