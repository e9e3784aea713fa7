"""Self-describing model files: `model.npz` (arrays only, never pickled) + `model.json` (metadata).

The metadata holds everything `predict` and `evaluate` need to rebuild the network and prepare
inputs exactly as training did: class names in order, layer sizes, activation, raster settings,
the resolved config and the final metrics. Opening a model never runs code.
"""

from __future__ import annotations

import json
import math
import re
import time
import zipfile
from pathlib import Path

import numpy as np

from doodle import __version__, fsutil
from doodle.errors import DoodleError, check_names
from doodle.nn import ACTIVATIONS, MLP, NORMS, TTA
from doodle.raster import RasterSpec

FORMAT = "doodle-model"
FORMAT_VERSION = 1
MODEL_NPZ = "model.npz"
MODEL_JSON = "model.json"
CONFIG_YAML = "config.yaml"
SPLIT_NPZ = "split.npz"
METRICS_JSONL = "metrics.jsonl"
STATE_JSON = "state.json"
_RUN_LINE = re.compile(r"# doodle run ([0-9a-f]{32})")
_NPZ_ERRORS = (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError)  # np.load on a damaged file


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
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DoodleError(f"{path}: corrupted model metadata ({type(exc).__name__}); retrain or restore the run") \
            from None
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
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(_is_int(n) and n > 0 for n in sizes):
        raise DoodleError(f"{path}: 'layer_sizes' must be two or more positive whole numbers; {damaged}")
    if sizes[-1] != len(classes):
        raise DoodleError(f"{path}: {len(classes)} classes but the output layer has {sizes[-1]}; {damaged}")
    if meta["activation"] not in ACTIVATIONS:
        raise DoodleError(f"{path}: unknown activation {str(meta['activation'])[:40]!r}; {damaged}")
    if meta.get("norm", "none") not in NORMS:
        raise DoodleError(f"{path}: unknown norm {str(meta['norm'])[:40]!r}; {damaged}")
    if not isinstance(meta.get("tta", "none"), str) or meta.get("tta", "none") not in TTA:
        raise DoodleError(f"{path}: unknown tta {str(meta['tta'])[:40]!r}; {damaged}")
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
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except _NPZ_ERRORS as exc:
        raise DoodleError(f"{npz}: corrupted model weights ({type(exc).__name__}); retrain or restore the run") \
            from None
    sizes = meta["layer_sizes"]
    norm, tta = meta.get("norm", "none"), meta.get("tta", "none")  # models from before norms and TTA have neither
    # Shapes first: the network is only built (and its memory taken) once the arrays on disk fit it.
    shapes = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"dense{i}.W"] = (n_in, n_out)
        if i < len(sizes) - 2 and norm == "batch":  # the norm's shift replaces the Dense bias
            shapes.update({f"norm{i}.{k}": (n_out,) for k in ("gain", "bias", "mean", "var")})
        else:
            shapes[f"dense{i}.b"] = (n_out,)
    try:
        check_names(shapes, arrays, f"model weights do not match the {sizes} network of {MODEL_JSON}")
    except DoodleError as exc:
        raise DoodleError(f"{npz}: {exc}") from None
    for name, shape in shapes.items():
        arr = arrays[name]
        if arr.shape != shape or arr.dtype.kind not in "fiu":
            raise DoodleError(f"{npz}: weight {name} has shape {arr.shape} ({arr.dtype}), but {MODEL_JSON} "
                              f"describes {shape}; the run is damaged; retrain or restore it")
        if not np.isfinite(arr).all():
            raise DoodleError(f"{npz}: weight {name} holds NaN or infinity (did training diverge?); "
                              "retrain, e.g. with a lower train.lr")
        if name.endswith(".var") and (arr < 0).any():
            raise DoodleError(f"{npz}: {name} holds a negative variance; the run is damaged; retrain or restore it")
    check_run_files(run_dir, meta)
    model = MLP(sizes, activation=meta["activation"], dropout=0.0, norm=norm, tta=tta)
    model.load_state_dict(arrays)
    temperature = meta.get("temperature", 1.0)  # models from before calibration have none
    if not _is_finite(temperature) or temperature <= 0:
        raise DoodleError(f"{run_dir / MODEL_JSON}: temperature must be a positive number, got {temperature!r}; "
                          "the run is damaged; retrain or restore it")
    model.temperature = float(temperature) if calibrated else 1.0
    return model, meta


def config_header(run_id: str) -> str:
    """The first line of a run's config.yaml: a YAML comment naming the run it belongs to."""
    return f"# doodle run {run_id}: the resolved config of this run\n"


def config_run_id(path: str | Path) -> str | None:
    """The run id in a config.yaml's first line (None without one, or when unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            match = _RUN_LINE.match(fh.readline(200))
    except OSError:
        return None
    return match.group(1) if match else None


def _ids_in(run_dir: Path) -> list[tuple[str, str | None]]:
    """(file, run id it carries or None) for each of the run's other files that exists and can be read."""
    found = []
    if (run_dir / CONFIG_YAML).is_file():
        found.append((CONFIG_YAML, config_run_id(run_dir / CONFIG_YAML)))
    if (run_dir / SPLIT_NPZ).is_file():
        try:
            with np.load(run_dir / SPLIT_NPZ, allow_pickle=False) as f:
                found.append((SPLIT_NPZ, str(f["run_id"]) if "run_id" in f.files else None))
        except _NPZ_ERRORS:
            pass  # damaged: load_split says so when the split is needed
    try:
        state = json.loads((run_dir / STATE_JSON).read_text(encoding="utf-8"))
        found.append((STATE_JSON, state.get("run_id") if isinstance(state, dict) else None))
    except (OSError, ValueError):
        pass  # missing or cut short by a kill: --resume rewrites it
    try:
        with open(run_dir / METRICS_JSONL, "rb") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line torn by a kill: --resume rewrites the file
                found.append((METRICS_JSONL, row.get("run_id") if isinstance(row, dict) else None))
    except OSError:
        pass
    return found


def check_run_files(run_dir: str | Path, meta: dict) -> None:
    """Refuse a run folder whose files were written by different runs (e.g. two trainings into one --out):
    its model would be scored on another run's test split."""
    run_id = meta.get("run_id")
    if run_id is None:
        return  # a model from before run ids: nothing to compare
    run_dir = Path(run_dir)
    for name, other in _ids_in(run_dir):
        if other != run_id:
            whose = f"run {str(other)[:8]}" if other else "no run"
            raise DoodleError(f"{run_dir / name}: belongs to {whose}, but {MODEL_JSON} to run {run_id[:8]}: "
                              "files of different runs are mixed in this folder; retrain into a fresh --out")


def load_split(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The train/val/test row indices (and rows per class, "counts") a run was trained with."""
    path = Path(run_dir) / SPLIT_NPZ
    if not path.is_file():
        raise DoodleError(f"{path}: missing; this run cannot reproduce its test split (pass DATA files instead)")
    try:
        with np.load(path, allow_pickle=False) as f:
            split = {k: f[k] for k in f.files}
    except _NPZ_ERRORS as exc:
        raise DoodleError(f"{path}: damaged ({type(exc).__name__}); this run cannot reproduce its test split "
                          "(pass DATA files instead)") from None
    for key in ("train", "val", "test", "counts"):
        if key not in split or split[key].ndim != 1 or split[key].dtype.kind not in "iu":
            raise DoodleError(f"{path}: damaged (no '{key}' row list); this run cannot reproduce its test split "
                              "(pass DATA files instead)")
    return split
