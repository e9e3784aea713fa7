"""Self-describing model files: `model.npz` (arrays only, never pickled) + `model.json` (metadata).

The metadata holds everything `predict` and `evaluate` need to rebuild the network and prepare
inputs exactly as training did: class names in order, layer sizes, activation, raster settings,
the resolved config and the final metrics. Opening a model never runs code.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np

from doodle import __version__, fsutil
from doodle.errors import DoodleError
from doodle.nn import MLP

FORMAT = "doodle-model"
FORMAT_VERSION = 1
MODEL_NPZ = "model.npz"
MODEL_JSON = "model.json"


def save_model(run_dir: str | Path, model, meta: dict) -> Path:
    """Write model.npz then model.json (the JSON last, so a model with metadata is always complete)."""
    run_dir = Path(run_dir)
    with fsutil.atomic_path(run_dir / MODEL_NPZ, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **model.state_dict())
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
    return meta


def load_model(run_dir: str | Path):
    """Rebuild the network from a run folder: (model, meta). Raises DoodleError on any damage."""
    run_dir = resolve_model_path(run_dir)
    meta = read_meta(run_dir)
    npz = run_dir / MODEL_NPZ
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DoodleError(f"{npz}: corrupted model weights ({type(exc).__name__}); retrain or restore the run") \
            from None
    model = MLP(meta["layer_sizes"], activation=meta["activation"], dropout=0.0)
    try:
        model.load_state_dict(arrays)
    except DoodleError as exc:
        raise DoodleError(f"{npz}: {exc}") from None
    if meta["layer_sizes"][-1] != len(meta["classes"]):
        raise DoodleError(f"{run_dir / MODEL_JSON}: {len(meta['classes'])} classes but the output layer has "
                          f"{meta['layer_sizes'][-1]}; the run is damaged")
    return model, meta


def load_split(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The train/val/test row indices (and rows per class, "counts") a run was trained with."""
    path = Path(run_dir) / "split.npz"
    if not path.is_file():
        raise DoodleError(f"{path}: missing; this run cannot reproduce its test split (pass DATA files instead)")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
