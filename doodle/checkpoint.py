"""Self-describing model files: `model.npz` (arrays only, never pickled) + `model.json` (metadata).

The metadata holds everything `predict` and `evaluate` need to rebuild the network and prepare
inputs exactly as training did: class names in order, layer sizes, activation, raster settings,
the resolved config and the final metrics. Opening a model never runs code.

model.npz is checked against the network model.json describes (fsutil.check_npz, with the model's
own ModelSpec.weight_shapes) before any array is read, so a hand-edited or hostile file (a header
claiming a 37 GiB array, a zip bomb, a pickle) is refused in milliseconds with one line.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from doodle import __version__, fsutil
from doodle.categories import file_name_problem, show_word
from doodle.errors import DoodleError
from doodle.fsutil import NPZ_ERRORS, NpzProblem, check_npz
from doodle.nn import MLP, ModelSpec
from doodle.raster import RasterSpec
from doodle.runs import MODEL_JSON, MODEL_NPZ, check_run_files

FORMAT = "doodle-model"
FORMAT_VERSION = 1


def save_model(run_dir: str | Path, model, meta: dict) -> Path:
    """Write model.npz then model.json (the JSON last, so a model with metadata is always complete)."""
    run_dir = Path(run_dir)
    fsutil.save_npz(run_dir / MODEL_NPZ, model.state_dict())
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "doodle_version": __version__,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}
    fsutil.write_json(run_dir / MODEL_JSON, full)
    return run_dir


def resolve_model_path(path: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """A run folder (or its model.json/.npz); None -> the most recent run under `runs_dir`."""
    if path is None:
        runs = Path(runs_dir)
        found = sorted(runs.glob(f"*/{MODEL_JSON}"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
        if not found:
            raise DoodleError(f"no trained model found under {runs.resolve()}/; train one with `doodle train` "
                              "or pass --model RUN_DIR")
        return found[-1].parent
    path = Path(path)
    if path.is_file() and path.name in (MODEL_JSON, MODEL_NPZ):
        path = path.parent
    if not path.exists():
        raise DoodleError(f"{path}: no such model; pass a run folder written by `doodle train`")
    if not (path / MODEL_JSON).is_file() or not (path / MODEL_NPZ).is_file():
        raise DoodleError(f"{path}: not a doodle model (needs {MODEL_JSON} and {MODEL_NPZ}); "
                          "pass a run folder written by `doodle train`")
    return path


def read_meta(run_dir: str | Path) -> dict:
    """Parse and check model.json."""
    path = Path(run_dir) / MODEL_JSON
    try:
        meta = fsutil.read_json(path)
    except OSError as exc:
        raise DoodleError(f"{path}: cannot read model metadata ({exc.strerror or exc}); check the run folder") \
            from None
    except fsutil.BadJSON as exc:
        raise DoodleError(f"{path}: corrupted model metadata ({exc}); retrain or restore the run") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DoodleError(f"{path}: not a doodle model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DoodleError(f"{path}: model format version {meta.get('format_version')} (doodle "
                          f"{meta.get('doodle_version')}), this doodle {__version__} reads version "
                          f"{FORMAT_VERSION}; retrain with this version")
    for key in ("classes", "layer_sizes", "activation", "raster"):
        if key not in meta:
            raise DoodleError(f"{path}: model metadata lacks '{key}'; retrain or restore the run")
    _check_meta(meta, path)
    return meta


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_meta(meta: dict, path: Path) -> None:
    """The metadata must describe a network that can exist, and agree with itself."""
    damaged = "the run is damaged; retrain or restore it"
    classes, sizes, raster = meta["classes"], meta["layer_sizes"], meta["raster"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise DoodleError(f"{path}: 'classes' must be a list of two or more names; {damaged}")
    for name in classes:  # they become file names: play saves <word>.ndjson
        if (problem := file_name_problem(name)) is not None:
            raise DoodleError(f"{path}: class name {show_word(name)} {problem}, so it cannot name a file; rename it "
                              "in 'classes' or retrain with other category names")
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(_is_int(n) and n > 0 for n in sizes):
        raise DoodleError(f"{path}: 'layer_sizes' must be two or more positive whole numbers; {damaged}")
    if sizes[-1] != len(classes):
        raise DoodleError(f"{path}: {len(classes)} classes but the output layer has {sizes[-1]}; {damaged}")
    for key in ("activation", "norm", "tta"):
        if not isinstance(meta.get(key, ""), str):
            raise DoodleError(f"{path}: unknown {key} {str(meta[key])[:40]!r} (not a name); {damaged}")
    try:
        ModelSpec.from_meta(meta)
    except DoodleError as exc:
        raise DoodleError(f"{path}: {str(exc)[:120]}; {damaged}") from None
    try:
        spec = RasterSpec.from_dict(raster)
    except DoodleError as exc:
        raise DoodleError(f"{path}: {exc}; {damaged}") from None
    if sizes[0] != spec.size ** 2:
        raise DoodleError(f"{path}: raster size {spec.size} makes {spec.size ** 2} inputs but the first "
                          f"layer takes {sizes[0]}; {damaged}")


def load_model(run_dir: str | Path, calibrated: bool = True):
    """Rebuild the network from a run folder: (model, meta). Raises DoodleError on any damage. The model
    applies the run's fitted temperature to its probabilities unless `calibrated` is False (raw softmax)."""
    run_dir = resolve_model_path(run_dir)
    meta = read_meta(run_dir)
    npz = run_dir / MODEL_NPZ
    spec = ModelSpec.from_meta(meta)
    sizes = list(spec.layer_sizes)
    # Shapes first: nothing is read (and the network's memory is not taken) until the file fits them.
    shapes = spec.weight_shapes()
    try:
        check_npz(npz, shapes)
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except NpzProblem as exc:
        what = f"model weights do not match the {sizes} network of {MODEL_JSON}" if exc.mismatch \
            else "corrupted model weights"
        raise DoodleError(f"{npz}: {what} ({exc}); retrain or restore the run") from None
    except NPZ_ERRORS as exc:
        raise DoodleError(f"{npz}: corrupted model weights ({type(exc).__name__}); retrain or restore the run") \
            from None
    for name, arr in arrays.items():
        if not np.isfinite(arr).all():
            raise DoodleError(f"{npz}: weight {name} holds NaN or infinity (did training diverge?); "
                              "retrain, e.g. with a lower train.lr")
        if name.endswith(".var") and (arr < 0).any():
            raise DoodleError(f"{npz}: {name} holds a negative variance; the run is damaged; retrain or restore it")
    check_run_files(run_dir, meta)
    model = MLP.from_spec(spec, initialise=False)  # every weight comes from the file
    model.load_state_dict(arrays)
    temperature = meta.get("temperature", 1.0)  # models from before calibration have none
    if not _is_finite(temperature) or temperature <= 0:
        raise DoodleError(f"{run_dir / MODEL_JSON}: temperature must be a positive number, got {temperature!r}; "
                          "the run is damaged; retrain or restore it")
    model.temperature = float(temperature) if calibrated else 1.0
    return model, meta
