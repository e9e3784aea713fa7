"""The training loop: minibatch gradient descent over a seeded, stratified split, keeping the best
epoch by validation accuracy, then the temperature that calibrates its probabilities.

What it writes where, and what `--resume` reads back, is doodle.runs: each epoch ends in one atomic
commit of the resume state, so a run killed at any point continues exactly as if never stopped.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from doodle import __version__, cores, extend, fsutil, heap, report, runs
from doodle.augment import augment_batch
from doodle.batches import RowStore, RowView, epoch_order
from doodle.checkpoint import read_meta, save_model
from doodle.config import dump, load_config
from doodle.dataset import Dataset, load_dataset, split_indices
from doodle.errors import DoodleError, lookup
from doodle.metrics import CONFIDENT_PRECISION, confidence_threshold, expected_calibration_error, fit_temperature
from doodle.nn import BACKPROP, LOSSES, MLP, ModelSpec
from doodle.optim import Optimizer, clip_grad_norm, optimizer_from_settings, schedule_from_settings
from doodle.progress import NULL_REPORTER, Reporter
from doodle.raster import PADDING

CALIBRATION_ROWS = 10_000  # validation rows the temperature is fitted on, at most: its float64 (rows, classes)
# arrays cost 28 MB each at 345 classes


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


def model_meta(cfg: dict, classes: list[str], spec: ModelSpec, metrics: dict, run_id: str | None = None,
               data_dir: str | None = None, origin: dict | None = None) -> dict:
    """The metadata written beside the weights."""
    data = cfg["data"]
    meta = {
        "classes": classes, **spec.to_meta(),
        "raster": {"size": data["image_size"], "line_width": float(data["line_width"]), "padding": PADDING,
                   "source": data["source"]},
        "config": cfg, "metrics": metrics,
    }
    if run_id is not None:
        meta["run_id"] = run_id
    if data_dir is not None:
        meta["data_dir"] = data_dir  # absolute: `doodle evaluate` finds the test split's data from anywhere
    if origin is not None:
        meta["extended_from"] = origin  # the run it started from (doodle.extend)
    return meta


def train(config_path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = (),
          data_dir: str | Path | None = "data", out: str | Path | None = None, resume: str | Path | None = None,
          reporter: Reporter = NULL_REPORTER, workers: int = 0, from_run: str | Path | None = None) -> TrainResult:
    """Load the config, claim the run folder, load the data, then train; see `fit` for the loop. `from_run`
    extends that trained run with new words (doodle.extend), reading its data from `data_dir` or, when
    that is None, where the run recorded it."""
    base: extend.Base | None = None  # the run a new run extends (--from, or extend.from in the config)
    if from_run is not None:
        if config_path is not None or resume is not None:
            raise DoodleError("--from starts from the run's own config: change it with --set, without --config "
                              "or --resume")
        base = extend.read_base(from_run)  # read once: the config and the starting point both need it
        cfg, data_dir = extend.config_from_run(base, overrides, data_dir)
        run_dir = Path(out) if out is not None else runs.default_run_dir("extend")
    elif resume is not None:
        run_dir = Path(resume)
        if not (run_dir / runs.LAST_NPZ).is_file() or not (run_dir / runs.CONFIG_YAML).is_file():
            raise DoodleError(f"{run_dir}: not a resumable run (needs {runs.LAST_NPZ} and {runs.CONFIG_YAML} from "
                              "`doodle train`, written at the end of each epoch)")
        cfg = load_config(run_dir / runs.CONFIG_YAML, overrides)
    else:
        cfg = load_config(config_path, overrides)
        if cfg["extend"]["from"]:  # a config file may name the run to extend, as --from does
            base = extend.read_base(cfg["extend"]["from"])
            cfg = extend.extension_config(cfg, base)
        run_dir = Path(out) if out is not None else runs.default_run_dir(config_path)
    data_dir = "data" if data_dir is None else data_dir
    fresh = not run_dir.exists()
    # Claimed before anything is read or written, for the whole run: a second `doodle train` with the
    # same --out stops here instead of mixing its files with this run's.
    with runs.claim(run_dir):
        try:
            if resume is None and any((run_dir / f).exists()
                                      for f in (runs.LAST_NPZ, runs.STATE_JSON, runs.MODEL_JSON)):
                raise DoodleError(f"{run_dir}: already holds a run; pick another --out or continue it with "
                                  f"--resume {run_dir}")
            # a resumed run reads the rows and classes it started with (your drawings and words saved since join
            # the next run)
            counts = list(runs.load_split(run_dir)["counts"]) if resume is not None else None
            trained = _trained_classes(run_dir) if resume is not None else None
            ds = load_dataset(cfg, data_dir, reporter, workers=workers, counts=counts, trained=trained)
            start = extend.starting_point(cfg, ds, data_dir, reporter, base) if base is not None else None
            return fit(cfg, ds, run_dir, reporter, resume=resume is not None,
                       data_dir=str(Path(data_dir).resolve()), start=start)
        except BaseException:
            if fresh:
                runs.remove_if_unused(run_dir)
            raise


def make_step(model: MLP, optimizer: Optimizer, loss: str, backprop: str = "manual",
              clip_norm: float | None = None) -> Callable[..., tuple[float, int]]:
    """The training step of a run, chosen once: step(x, y, lr=None) -> (loss, n_correct) runs forward (train
    mode), loss and backward by the `backprop` path (nn.BACKPROP), optional clipping, and the update."""
    gradients = lookup(BACKPROP, backprop, "backprop")(model, loss)
    grads = model.gradients()
    if optimizer.flat is not None and optimizer.flat[1] is not model.flat_grads:
        raise ValueError("the optimizer's flat buffers are another model's")
    # An optimizer built on the model's flat buffers updates them in one go; one built on the arrays, array by array.
    update = optimizer.step if optimizer.flat is not None else functools.partial(optimizer.step, grads)

    def step(x: np.ndarray, y: np.ndarray, lr: float | None = None) -> tuple[float, int]:
        value, logits = gradients(x, y)
        n_correct = int(np.count_nonzero(logits.argmax(axis=1) == y))
        if clip_norm is not None:
            clip_grad_norm(grads, clip_norm)
        update(lr=lr)
        return value, n_correct
    return step


def train_step(model: MLP, optimizer: Optimizer, loss: str, x: np.ndarray, y: np.ndarray, lr: float | None = None,
               clip_norm: float | None = None, backprop: str = "manual") -> tuple[float, int]:
    """One minibatch outside a run (tests, benchmarks): make_step's step, made for this one call."""
    return make_step(model, optimizer, loss, backprop, clip_norm)(x, y, lr)


def score(model: MLP, x: np.ndarray | RowView, y: np.ndarray, loss: str,
          batch_size: int = 4096) -> tuple[float, float]:
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
    model: MLP  # its spec (model.spec) is the one description of the network
    optimizer: Optimizer
    step: Callable[..., tuple[float, int]]  # (x, y, lr) -> (loss, n_correct): make_step's, chosen once
    rng: np.random.Generator  # shuffling and augmentation
    lr_at: Callable[[int], float]  # step -> learning rate
    steps_per_epoch: int
    run_id: str = ""
    data_dir: str | None = None  # absolute, recorded for `doodle evaluate`
    epoch: int = 0  # epochs completed
    best: dict = field(default_factory=lambda: {"epoch": 0, "val_accuracy": -1.0})
    best_state: dict | None = None  # the best epoch's weights
    patience_left: int | None = None  # early stopping: epochs without improvement still allowed
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    resume_notes: list[str] = field(default_factory=list)  # what a changed setting changes, said on --resume
    origin: dict | None = None  # the run an extension started from (doodle.extend), for model.json


def _trained_classes(run_dir: Path) -> list[str] | None:
    """The classes of the run in run_dir, from its model.json (written with its first epoch); None without a
    readable one, and the resume then goes by the config alone."""
    try:
        return read_meta(run_dir)["classes"]
    except DoodleError:
        return None


# The settings --resume may change, and what a change does; any other change is refused, because the
# run would no longer continue exactly as if never stopped.
_RESUMABLE = {
    ("train", "epochs"): "more or fewer epochs",
    ("train", "patience"): "early stopping after {new} epochs without improvement (was {old})",
}


def _resume_changes(run_dir: Path, before: dict, after: dict) -> list[str]:
    """What the overrides of a --resume change, one sentence each; a DoodleError for a change that would break
    the exact continuation (the network, the data, the optimizer, the seeds)."""
    changed = [(sec, key) for sec, keys in after.items() for key in keys if before.get(sec, {}).get(key) != keys[key]]
    refused = [f"{sec}.{key} ({before.get(sec, {}).get(key)} -> {after[sec][key]})" for sec, key in changed
               if (sec, key) not in _RESUMABLE]
    if refused:
        raise DoodleError(f"{run_dir}: --resume continues a run exactly, but {', '.join(refused)} changed; only "
                          f"{' and '.join(f'{s}.{k}' for s, k in _RESUMABLE)} may change on --resume: start a new "
                          "run (--out) for other settings")
    notes = []
    for sec, key in changed:
        old, new = before[sec][key], after[sec][key]
        if (sec, key) == ("train", "epochs"):
            t = after["train"]
            if t["schedule"] == "cosine":
                notes.append(f"train.epochs {old} -> {new}: the cosine schedule now decays over {new} epochs, so the "
                             "learning rate differs from the original plan from the next epoch on")
            else:
                notes.append(f"train.epochs {old} -> {new}: the {t['schedule']} schedule does not depend on the "
                             "length; training continues exactly")
        else:
            notes.append(f"{sec}.{key}: " + _RESUMABLE[sec, key].format(old=old, new=new))
    return notes


def _start(cfg: dict, ds: Dataset, run_dir: Path, resume: bool, data_dir: str | None,
           start: extend.Start | None = None) -> _Run:
    """Build the model, optimizer and schedule; a new run writes its config and split, a resumed one reloads
    its state. `start` gives a new run its split and first weights (an extension's). The caller holds the
    folder's lock."""
    t, d = cfg["train"], cfg["data"]
    fsutil.clean_temporaries(run_dir)  # left by a killed run: nobody else can be writing here
    if resume:
        split = runs.load_split(run_dir)
    elif start is not None:
        split = start.split
    else:
        split = split_indices(ds.counts, d["val_fraction"], d["test_fraction"], d["test_split"], d["seed"])
    if len(split["train"]) == 0:
        raise DoodleError("the training split is empty; raise data.per_category or lower the held-out fractions")
    spec = ModelSpec.from_config(cfg, len(ds.classes))
    spec.check_fits(t["batch_size"])  # before a byte of it is allocated
    model = MLP.from_spec(spec, seed=t["seed"])
    if start is not None and start.state is not None and not resume:
        model.load_state_dict(start.state)
    optimizer = optimizer_from_settings(t, model.parameters(), flat=(model.flat_params, model.flat_grads))
    step = make_step(model, optimizer, t["loss"], t["backprop"], t["clip_norm"])
    steps_per_epoch = math.ceil(len(split["train"]) / t["batch_size"])
    run = _Run(cfg, ds, run_dir, split, model, optimizer, step, np.random.default_rng([t["seed"], 1]),
               schedule_from_settings(t, steps_per_epoch), steps_per_epoch, data_dir=data_dir,
               patience_left=t["patience"], origin=None if start is None else start.origin)
    if not resume:
        run.run_id = uuid.uuid4().hex
        fsutil.write_text(run_dir / runs.CONFIG_YAML, runs.config_header(run.run_id) + dump(cfg))
        fsutil.save_npz(run_dir / runs.SPLIT_NPZ, {**split, "counts": np.asarray(ds.counts),
                                                   "run_id": np.array(run.run_id)})
        fsutil.write_text(run_dir / runs.METRICS_JSONL, "")
        return run
    run.resume_notes = _resume_changes(run_dir, load_config(run_dir / runs.CONFIG_YAML), cfg)
    model_shapes = spec.weight_shapes()
    arrays, state = runs.read_last(run_dir, {**{f"model/{k}": v for k, v in model_shapes.items()},
                                         **{f"best/{k}": v for k, v in model_shapes.items()},
                                         **{f"optimizer/{k}": v.shape for k, v in optimizer.state_dict().items()}})
    run.run_id = state["run_id"]
    for name, other in ((runs.CONFIG_YAML, runs.config_run_id(run_dir / runs.CONFIG_YAML)),
                        (runs.SPLIT_NPZ, str(split.get("run_id")))):
        if other != run.run_id:
            raise DoodleError(f"{run_dir / name}: belongs to another run than {runs.LAST_NPZ}; this folder mixes two "
                              "runs and cannot be resumed: start a new run")
    if state["split_counts"] != ds.counts or list(split["counts"]) != ds.counts:
        raise DoodleError(f"{run_dir}: the data changed since this run started (rows per class differ); "
                          "start a new run instead of --resume")
    try:
        model.load_state_dict(runs.prefixed(arrays, "model/"))
        optimizer.load_state_dict(runs.prefixed(arrays, "optimizer/"))
        run.epoch, run.best = state["epoch"], state["best"]
        run.best_state = runs.prefixed(arrays, "best/") if run.best["epoch"] != run.epoch else model.state_dict()
        own = model.state_dict()
        if {k: v.shape for k, v in run.best_state.items()} != {k: v.shape for k, v in own.items()}:
            raise ValueError("the best epoch's weights are missing or misshapen")
        assert model.dropout_rng is not None  # MLP.from_spec initialised the model
        model.dropout_rng.bit_generator.state = state["dropout_rng"]
        run.rng.bit_generator.state = state["rng"]
        run.train_seconds = state["train_seconds"]
        run.patience_left, run.history = state["patience_left"], state["history"]
        run.origin = state.get("origin")
    except (DoodleError, KeyError, TypeError, ValueError) as exc:
        raise DoodleError(f"{run_dir / runs.LAST_NPZ}: does not fit this run's config ({str(exc)[:200]}); "
                          "the settings that shape the network cannot change on --resume") from None
    if run.epoch >= t["epochs"] and runs.finished(run_dir, run.run_id):
        raise DoodleError(f"{run_dir}: already trained {run.epoch} epochs of {t['epochs']}; "
                          f"raise them with --set train.epochs={run.epoch + 10}")
    # last.npz is the commit point of an epoch: what was written after it (or torn by a kill) is rewritten.
    fsutil.write_text(run_dir / runs.CONFIG_YAML, runs.config_header(run.run_id) + dump(cfg))
    _write_records(run)
    return run


def fit(cfg: dict, ds: Dataset, run_dir: Path, reporter: Reporter = NULL_REPORTER,
        resume: bool = False, data_dir: str | None = None, start: extend.Start | None = None) -> TrainResult:
    """Minibatch gradient descent with a per-epoch validation pass; the best epoch is what is kept."""
    run_dir = Path(run_dir)
    heap.keep_freed_memory()  # each step's arrays reuse the last step's memory instead of faulting in pages
    with runs.claim(run_dir), cores.claim():  # this process's fair share of the cores, BLAS on one thread
        return _fit(cfg, ds, run_dir, reporter, resume, data_dir, start)


def _fit(cfg: dict, ds: Dataset, run_dir: Path, reporter: Reporter, resume: bool, data_dir: str | None,
         start: extend.Start | None = None) -> TrainResult:
    t = cfg["train"]
    run = _start(cfg, ds, run_dir, resume, data_dir, start)
    for note in run.resume_notes:
        reporter.log(note)
    interrupted = False
    try:
        for epoch in range(run.epoch + 1, t["epochs"] + 1):
            row = _run_epoch(run, epoch, reporter)
            _end_epoch(run, row)
            reporter.epoch(row)
            if run.patience_left is not None and run.patience_left <= 0:
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
    order = epoch_order(run.split["train"], run.cfg["data"], run.rng)  # shuffle indices, not arrays
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
            loss, n_ok = run.step(xb, y[idx], lr)
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
        with _no_tta(run.model):  # TTA would cost half an epoch here, for a choice of epoch it rarely changes
            row["val_loss"], row["val_accuracy"] = score(run.model, RowView(x, val), y[val], t["loss"])
    return row


@contextlib.contextmanager
def _no_tta(model: MLP):
    """Within this block the model predicts from each image alone (no test-time augmentation)."""
    saved, model.tta = model.tta, "none"
    try:
        yield
    finally:
        model.tta = saved


def _batches(x: np.ndarray | RowStore, order: np.ndarray, bs: int, steps: int, aug: dict, rng: np.random.Generator):
    """(rows, float32 batch) for each step of an epoch, augmented; the next batch is prepared in a thread
    while the current one trains (numpy releases the GIL), one at a time and in order, so `rng` draws
    exactly as without the thread and runs stay deterministic."""

    def prepare(b: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(order[b * bs:(b + 1) * bs])  # sorted gathers read the uint8 array in order
        return idx, augment_batch(x[idx], rng, aug["shift"], aug["rotate"], aug["scale"], aug["probability"],
                                  aug["flip"])

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
    """Record the epoch (best model, resume state, metrics); True when it is the best so far.

    last.npz is the one atomic commit of the epoch; state.json, metrics.jsonl and model.json follow it, so they
    are never ahead of it, and --resume rewrites them from it."""
    run.epoch = row["epoch"]
    run.history.append(row)
    score_ = row["val_accuracy"] if row["val_accuracy"] is not None else row["train_accuracy"]
    improved = score_ > run.best["val_accuracy"]
    if improved:
        run.best = {"epoch": run.epoch, "val_accuracy": score_}
        run.best_state = run.model.state_dict()  # already a copy
        run.patience_left = run.cfg["train"]["patience"]
    elif run.patience_left is not None:
        run.patience_left -= 1
    _save_state(run)  # the commit; a kill before it leaves nothing of this epoch, after it a resumable run
    if improved:
        save_model(run.dir, run.model, _meta(run, {"best_epoch": run.epoch, **row}))
    runs.append_metrics(run.dir, row, run.run_id)
    report.write_curves(run.dir / report.CURVES_PNG, run.history, run.cfg["train"]["epochs"])
    return improved


def _meta(run: _Run, metrics: dict) -> dict:
    return model_meta(run.cfg, run.ds.classes, run.model.spec, metrics, run.run_id, run.data_dir, run.origin)


def _finish(run: _Run, interrupted: bool) -> TrainResult:
    """Restore the best epoch, score it on the test split and write the final model."""
    t, test = run.cfg["train"], run.split["test"]
    assert run.best_state is not None  # fit() stops before _finish when no epoch finished
    run.model.load_state_dict(run.best_state)
    calibration = _calibrate(run)
    if run.model.tta != "none" and len(run.split["val"]):  # the epochs were validated without it
        val = run.split["val"]
        calibration["val_accuracy_tta"] = score(run.model, RowView(run.ds.x, val), run.ds.y[val], t["loss"])[1]
    test_loss = test_acc = None
    if len(test):
        test_loss, test_acc = score(run.model, RowView(run.ds.x, test), run.ds.y[test], t["loss"])
    samples = sum(h["samples"] for h in run.history)
    sps = samples / run.train_seconds if run.train_seconds > 0 else 0.0
    best_row = next(h for h in run.history if h["epoch"] == run.best["epoch"])
    metrics = {"best_epoch": run.best["epoch"], **best_row, "test_accuracy": test_acc, "test_loss": test_loss,
               "samples_per_second": sps, "epochs_run": len(run.history), **calibration}
    meta = _meta(run, metrics)
    meta["temperature"] = run.model.temperature
    save_model(run.dir, run.model, meta)
    return TrainResult(run=str(run.dir), classes=run.ds.classes, layer_sizes=list(run.model.spec.layer_sizes),
                       batch_size=t["batch_size"], epochs=len(run.history), best_epoch=run.best["epoch"],
                       val_accuracy=best_row["val_accuracy"], test_accuracy=test_acc, test_loss=test_loss,
                       samples_per_second=sps, interrupted=interrupted, history=run.history)


def _calibrate(run: _Run) -> dict:
    """Fit the model's temperature on the validation split (minimum NLL); returns the figures for the metrics."""
    val = run.split["val"]
    if not len(val):
        return {"temperature": 1.0}
    if len(val) > CALIBRATION_ROWS:  # one scalar needs no million rows, and (rows, classes) logits would be GBs
        val = val[np.linspace(0, len(val) - 1, CALIBRATION_ROWS).astype(np.int64)]  # evenly: every class
    y = run.ds.y[val]
    logits = run.model.predict_logits(run.ds.x[val])  # one pass (with TTA, 10 views) serves all three figures
    run.model.temperature = 1.0
    raw = expected_calibration_error(run.model.probabilities(logits), y)
    run.model.temperature = fit_temperature(logits, y)
    probs = run.model.probabilities(logits)  # what play and predict show: "I see X" from confident_at up
    return {"temperature": run.model.temperature, "val_ece_raw": raw, "val_ece": expected_calibration_error(probs, y),
            "confident_at": confidence_threshold(probs, y), "confident_precision": CONFIDENT_PRECISION}


def _state(run: _Run) -> dict:
    """Everything --resume needs besides the arrays (JSON-safe)."""
    assert run.model.dropout_rng is not None  # MLP.from_spec initialised the model
    return {"run_id": run.run_id, "epoch": run.epoch, "best": run.best, "train_seconds": run.train_seconds,
            "patience_left": run.patience_left, "rng": run.rng.bit_generator.state,
            "dropout_rng": run.model.dropout_rng.bit_generator.state, "split_counts": run.ds.counts,
            "data_dir": run.data_dir, "history": run.history, "doodle_version": __version__, "origin": run.origin}


def _save_state(run: _Run) -> None:
    """The epoch's commit: latest and best weights, optimizer and random states, history, in one atomic
    last.npz; then its readable copy, state.json."""
    state = _state(run)
    arrays = {f"model/{k}": v for k, v in run.model.state_dict().items()}
    if run.best["epoch"] != run.epoch:  # when this epoch is the best, its weights are already there once
        arrays.update({f"best/{k}": v for k, v in (run.best_state or {}).items()})
    arrays.update({f"optimizer/{k}": v for k, v in run.optimizer.state_dict().items()})
    runs.write_resume_state(run.dir, arrays, state)


def _write_records(run: _Run) -> None:
    """state.json and metrics.jsonl, rewritten from the committed state (on resume)."""
    runs.write_records(run.dir, _state(run), run.history, run.run_id)


__all__ = ["TrainResult", "train", "fit", "train_step", "score"]
