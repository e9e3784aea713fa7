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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from doodle import __version__, fsutil
from doodle.augment import augment_batch
from doodle.checkpoint import save_model
from doodle.config import dump, load_config
from doodle.dataset import PADDING, Dataset, load_dataset, split_indices
from doodle.errors import DoodleError
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

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def loss_value(probs: np.ndarray, y: np.ndarray, loss: str) -> float:
    """The configured loss of predicted probabilities (for validation and test reporting)."""
    if len(y) == 0:
        return float("nan")
    if loss == "mse":
        onehot = np.zeros_like(probs)
        onehot[np.arange(len(y)), y] = 1.0
        return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))))


def _optimizer_kwargs(t: dict) -> dict:
    kw = {"lr": t["lr"], "weight_decay": t["weight_decay"]}
    if t["optimizer"] in ("momentum", "nesterov"):
        kw["momentum"] = t["momentum"]
    elif t["optimizer"] == "adam":
        kw.update(beta1=t["beta1"], beta2=t["beta2"])
    return kw


def _schedule(t: dict, steps_per_epoch: int):
    from doodle.optim import make_schedule

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


def fit(cfg: dict, ds: Dataset, run_dir: Path, reporter: Reporter = NULL_REPORTER,
        resume: bool = False) -> TrainResult:
    """Minibatch gradient descent with a per-epoch validation pass; the best epoch is what is kept."""
    from doodle.nn import MLP
    from doodle.optim import make_optimizer

    t, d, m, aug = cfg["train"], cfg["data"], cfg["model"], cfg["augment"]
    split = split_indices(ds.counts, d["val_fraction"], d["test_fraction"], d["test_split"], d["seed"])
    train_idx, val_idx, test_idx = split["train"], split["val"], split["test"]
    if len(train_idx) == 0:
        raise DoodleError("the training split is empty; raise data.per_category or lower the held-out fractions")
    layer_sizes = [d["image_size"] ** 2, *m["hidden"], len(ds.classes)]
    model = MLP(layer_sizes, activation=m["activation"], dropout=m["dropout"], init=m["init"], seed=t["seed"])
    optimizer = make_optimizer(t["optimizer"], model.parameters(), **_optimizer_kwargs(t))
    steps_per_epoch = math.ceil(len(train_idx) / t["batch_size"])
    lr_at = _schedule(t, steps_per_epoch)
    rng = np.random.default_rng([t["seed"], 1])  # shuffling and augmentation

    run_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    start_epoch, best = 0, {"epoch": 0, "val_accuracy": -1.0}
    train_seconds = 0.0
    if resume:
        state = json.loads((run_dir / "state.json").read_text())
        if state.get("split_counts") != ds.counts:
            raise DoodleError(f"{run_dir}: the data changed since this run started (rows per class differ); "
                              "start a new run instead of --resume")
        model.load_state_dict(dict(np.load(run_dir / "last.npz", allow_pickle=False)))
        optimizer.load_state_dict(dict(np.load(run_dir / "optimizer.npz", allow_pickle=False)))
        rng.bit_generator.state = state["rng"]
        start_epoch, best, train_seconds = state["epoch"], state["best"], state["train_seconds"]
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        if start_epoch >= t["epochs"]:
            raise DoodleError(f"{run_dir}: already trained {start_epoch} epochs of {t['epochs']}; "
                              f"raise them with --set train.epochs={start_epoch + 10}")
    else:
        fsutil.write_text(run_dir / "config.yaml", dump(cfg))
        with fsutil.atomic_path(run_dir / "split.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **split, counts=np.asarray(ds.counts))
        fsutil.write_text(run_dir / "metrics.jsonl", "")

    best_state = None
    if resume and best["epoch"]:
        from doodle.checkpoint import load_model

        best_state = load_model(run_dir)[0].state_dict()
    patience_left = t["patience"]
    interrupted = False
    try:
        for epoch in range(start_epoch + 1, t["epochs"] + 1):
            row = _run_epoch(model, optimizer, ds, train_idx, t, aug, rng, lr_at, epoch, steps_per_epoch, reporter)
            train_seconds += row.pop("train_seconds")
            if len(val_idx):
                probs = model.predict_proba(ds.x[val_idx])
                row["val_loss"] = loss_value(probs, ds.y[val_idx], t["loss"])
                row["val_accuracy"] = float(np.mean(np.argmax(probs, axis=1) == ds.y[val_idx]))
            else:
                row["val_loss"] = row["val_accuracy"] = None
            score = row["val_accuracy"] if row["val_accuracy"] is not None else row["train_accuracy"]
            history.append(row)
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            if score > best["val_accuracy"]:
                best = {"epoch": epoch, "val_accuracy": score}
                best_state = model.state_dict()  # already a copy
                save_model(run_dir, model, model_meta(cfg, ds.classes, layer_sizes, {"best_epoch": epoch, **row}))
                patience_left = t["patience"]
            elif patience_left is not None:
                patience_left -= 1
            _save_state(run_dir, model, optimizer, rng, epoch, best, train_seconds, ds.counts)
            reporter.epoch(row)
            if patience_left is not None and patience_left <= 0:
                reporter.log(f"early stopping: no validation improvement for {t['patience']} epochs")
                break
    except KeyboardInterrupt:
        interrupted = True
        reporter.log("interrupted: keeping the best epoch so far")
    if best_state is None:
        raise DoodleError(f"interrupted before the first epoch finished; nothing saved in {run_dir}", exit_code=130)

    model.load_state_dict(best_state)
    test_acc = test_loss = None
    if len(test_idx):
        probs = model.predict_proba(ds.x[test_idx])
        test_acc = float(np.mean(np.argmax(probs, axis=1) == ds.y[test_idx]))
        test_loss = loss_value(probs, ds.y[test_idx], t["loss"])
    samples = sum(h["samples"] for h in history)
    sps = samples / train_seconds if train_seconds > 0 else 0.0
    best_row = next(h for h in history if h["epoch"] == best["epoch"])
    metrics = {"best_epoch": best["epoch"], **best_row, "test_accuracy": test_acc, "test_loss": test_loss,
               "samples_per_second": sps, "epochs_run": len(history)}
    save_model(run_dir, model, model_meta(cfg, ds.classes, layer_sizes, metrics))
    return TrainResult(run=str(run_dir), classes=ds.classes, layer_sizes=layer_sizes, batch_size=t["batch_size"],
                       epochs=len(history), best_epoch=best["epoch"], val_accuracy=best_row["val_accuracy"],
                       test_accuracy=test_acc, test_loss=test_loss, samples_per_second=sps,
                       interrupted=interrupted, history=history)


def _run_epoch(model, optimizer, ds, train_idx, t, aug, rng, lr_at, epoch, steps_per_epoch, reporter) -> dict:
    """One pass over the shuffled training rows; returns the epoch's figures."""
    from doodle.nn import train_step

    bs = t["batch_size"]
    order = rng.permutation(train_idx)  # shuffle indices, not arrays
    key = f"epoch{epoch}"
    reporter.start(key, f"epoch {epoch}/{t['epochs']}", total=steps_per_epoch, unit="batches")
    loss_sum, correct, seen, seconds = 0.0, 0, 0, 0.0
    step0 = (epoch - 1) * steps_per_epoch
    lr = lr_at(step0)
    try:
        for b in range(steps_per_epoch):
            idx = np.sort(order[b * bs:(b + 1) * bs])  # sorted gathers read the uint8 array in order
            tick = time.perf_counter()
            xb = augment_batch(ds.x[idx], rng, aug["shift"], aug["rotate"], aug["scale"], aug["probability"])
            lr = lr_at(step0 + b)
            loss, n_ok = train_step(model, optimizer, t["loss"], xb, ds.y[idx], lr=lr, clip_norm=t["clip_norm"])
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
        reporter.end(key)
    return {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen, "lr": float(lr),
            "samples": seen, "seconds": round(seconds, 3), "train_seconds": seconds}


def _save_state(run_dir: Path, model, optimizer, rng, epoch: int, best: dict, train_seconds: float,
                counts: list[int]) -> None:
    """What --resume needs: the latest weights, optimizer state and RNG state."""
    for name, arrays in (("last.npz", model.state_dict()), ("optimizer.npz", optimizer.state_dict())):
        with fsutil.atomic_path(run_dir / name, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    fsutil.write_json(run_dir / "state.json", {"epoch": epoch, "best": best, "train_seconds": train_seconds,
                                               "rng": rng.bit_generator.state, "split_counts": counts,
                                               "doodle_version": __version__})


def load_split(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The train/val/test indices a run was trained with."""
    path = Path(run_dir) / "split.npz"
    if not path.is_file():
        raise DoodleError(f"{path}: missing; this run cannot reproduce its test split (pass DATA files instead)")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


__all__ = ["TrainResult", "train", "fit", "loss_value", "load_split"]
