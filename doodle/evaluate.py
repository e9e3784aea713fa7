"""Measuring a trained model: on its own held-out test split, or on data a user brings through the front
door (doodle.inputs: ndjson files, Google `numpy_bitmap` .npy files, folders of images laid out one
sub-folder per category).

Inputs are prepared exactly as training prepared them (the model's raster settings); labels the
model does not know are counted and reported, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from doodle import cores, fsutil
from doodle.checkpoint import load_model, resolve_model_path
from doodle.config import from_dict
from doodle.dataset import Dataset, load_dataset
from doodle.errors import DoodleError
from doodle.export import is_web_export, load_web, source_run
from doodle.inputs import LabelledBitmaps, labelled
from doodle.metrics import summarize
from doodle.predict import probabilities
from doodle.progress import NULL_REPORTER, Reporter
from doodle.report import CURVES_PNG, write_curves, write_report
from doodle.runs import load_split, read_metrics


def run_data_dir(run_dir: Path, meta: dict, data_dir: str | Path | None) -> Path:
    """Where the run's training data is: `data_dir` when given, else the folder the run recorded (so
    `doodle evaluate` works from any folder), else ./data for runs that recorded none."""
    if data_dir is not None:
        return Path(data_dir)
    recorded = meta.get("data_dir")
    if not isinstance(recorded, str):
        return Path("data")
    if not Path(recorded).is_dir():
        raise DoodleError(f"{run_dir}: was trained on data in {recorded}, which is gone; pass --data-dir where "
                          "that data is now, or DATA files to evaluate on")
    return Path(recorded)


def trained_rows(run_dir: Path, meta: dict, data_dir: str | Path | None, reporter: Reporter = NULL_REPORTER,
                 then: str = "pass DATA files instead") -> tuple[Dataset, dict[str, np.ndarray]]:
    """(the rows a run was trained on, its split), from the data on disk only (never downloaded): drawings and
    words added to data.local since (play's saves and teaching) are not part of its split. A DoodleError ending
    in `then` when rows or classes are gone, so the split cannot be reproduced."""
    cfg = from_dict(meta.get("config"), f"{run_dir / 'model.json'} config")
    split = load_split(run_dir)
    data_dir = run_data_dir(run_dir, meta, data_dir)
    counts = list(split["counts"])  # a taught run's classes go on past its split's: the taught words come last
    ds = load_dataset(cfg, data_dir, reporter, download=False, counts=counts, trained=meta["classes"][:len(counts)])
    if counts != ds.counts:
        raise DoodleError(f"{run_dir}: the data under {data_dir} changed since training (rows per class differ), "
                          f"so its split cannot be reproduced; {then}")
    return ds, split


def test_split_bitmaps(run_dir: Path, meta: dict, data_dir: str | Path | None,
                       reporter: Reporter = NULL_REPORTER) -> LabelledBitmaps:
    """Rebuild the run's held-out test split exactly (same data, same seed, saved indices), from the data
    on disk only: evaluating never downloads."""
    ds, split = trained_rows(run_dir, meta, data_dir, reporter)
    size = meta["raster"]["size"]
    if ds.x.shape[1:] != (size, size):  # model.json's config and raster disagree: edited by hand
        raise DoodleError(f"{run_dir / 'model.json'}: its config makes {ds.x.shape[1]}x{ds.x.shape[2]} bitmaps "
                          f"(data.image_size) but the model takes {size}x{size} (raster.size); restore model.json, "
                          "or pass DATA files to evaluate on")
    idx = split["test"]
    if len(idx) and (idx.min() < 0 or idx.max() >= len(ds.y)):
        raise DoodleError(f"{run_dir / 'split.npz'}: test rows outside the data; the run is damaged (pass DATA files)")
    if len(idx) == 0:
        raise DoodleError(f"{run_dir}: the run held out no test split (data.test_fraction = 0); pass DATA files")
    return LabelledBitmaps(x=ds.x[idx], labels=[ds.classes[c] for c in ds.y[idx]],
                           sources=[f"{run_dir} test split"])


def evaluate(model_path: str | Path | None = None, inputs: Sequence[str | Path] = (),
             data_dir: str | Path | None = None, report_dir: str | Path | None = None,
             reporter: Reporter = NULL_REPORTER, strict: bool = False, calibrated: bool = True) -> dict:
    """Evaluate one model; returns the metrics summary (the `--json` document). Probabilities use the
    model's fitted temperature unless `calibrated` is False (then the raw softmax)."""
    if report_dir is not None:  # before the work: a folder that cannot be written fails now, not after it
        try:
            Path(report_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fsutil.write_error(report_dir, exc) from None
    web = is_web_export(model_path)  # a `doodle export --format web` folder: the weights its page uses
    if web:
        assert model_path is not None  # is_web_export(None) is False
        run_dir = Path(model_path)
    else:
        run_dir = resolve_model_path(model_path)
    model, meta = load_web(run_dir, calibrated) if web else load_model(run_dir, calibrated)
    classes = meta["classes"]
    data = labelled(list(inputs), meta["raster"], strict=strict, reporter=reporter) if inputs else \
        test_split_bitmaps(*(source_run(meta) if web else (run_dir, meta)), data_dir, reporter)
    if not data.labels:
        detail = f" ({data.problems[0]})" if data.problems else ""
        raise DoodleError(f"no usable drawings in {', '.join(data.sources)}{detail}; check the files")
    index = {c: i for i, c in enumerate(classes)}
    known = np.array([lab in index for lab in data.labels], dtype=bool)
    unknown = Counter(lab for lab in data.labels if lab not in index)
    if not known.any():
        raise DoodleError(f"none of the {len(data.labels)} inputs has a category this model knows "
                          f"(it knows {', '.join(classes[:5])}{'...' if len(classes) > 5 else ''}; "
                          f"inputs are {', '.join(sorted(unknown)[:5])})")
    x = data.x[known]
    y = np.array([index[lab] for lab, k in zip(data.labels, known) if k], dtype=np.int64)
    with cores.claim():  # this process's fair share of the cores (doodle.cores)
        probs = probabilities(model, x, run_dir)
    summary = summarize(probs, y, classes)
    summary["model"] = str(run_dir)
    summary["temperature"] = model.temperature
    summary["tta"] = model.tta  # the views each prediction averaged (doodle.nn.TTA)
    summary["data"] = data.sources
    summary["unknown_categories"] = dict(sorted(unknown.items()))
    summary["problems"] = data.problems
    if report_dir is not None:
        summary["report"] = [str(p) for p in write_report(report_dir, summary, x, y, probs.argmax(axis=1),
                                                          classes, probs=probs)]
        history = read_metrics(run_dir, meta.get("run_id"))
        if history:
            epochs = (meta.get("config") or {}).get("train", {}).get("epochs")
            summary["report"].append(str(write_curves(Path(report_dir) / CURVES_PNG, history, epochs)))
    return summary
