"""Self-describing model files: `model.npz` (arrays only, never pickled) + `model.json` (metadata).

The metadata holds everything `predict` and `evaluate` need to rebuild the network and prepare
inputs exactly as training did: class names in order, layer sizes, activation, raster settings,
the resolved config and the final metrics. Opening a model never runs code.

Every .npz a run holds is checked against what it should hold (check_npz) before any array is read:
member names, then each .npy header's shape and dtype, then each member's unpacked size against its
header, so a hand-edited or hostile file (a header claiming a 37 GiB array, a zip bomb, a pickle) is
refused in milliseconds with one line instead of being decompressed or allocated.
"""

from __future__ import annotations

import math
import re
import time
import zipfile
from pathlib import Path
from typing import Collection

import numpy as np

from doodle import __version__, fsutil
from doodle.errors import DoodleError
from doodle.nn import MLP, ModelSpec

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
NPY_HEADER_MAX = 4096  # bytes before an .npy member's data: np.save writes 128 (numpy reads up to 10,000)
NUMERIC = "fiu"  # dtype kinds of weights and row indices
SPLIT_ARRAYS = {"train": (None,), "val": (None,), "test": (None,), "counts": (None,), "run_id": ()}
SPLIT_KINDS = {"train": "iu", "val": "iu", "test": "iu", "counts": "iu", "run_id": "U"}


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
    if not isinstance(raster, dict) or not _is_int(raster.get("size")) or not 1 <= raster["size"] <= 4096 \
            or not _is_finite(raster.get("line_width")) or raster["line_width"] <= 0 \
            or not _is_finite(raster.get("padding")) or raster["padding"] < 0:
        raise DoodleError(f"{path}: 'raster' must give size, line_width and padding; {damaged}")
    if sizes[0] != raster["size"] ** 2:
        raise DoodleError(f"{path}: raster size {raster['size']} makes {raster['size'] ** 2} inputs but the first "
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
    except _NPZ_ERRORS as exc:
        raise DoodleError(f"{npz}: corrupted model weights ({type(exc).__name__}); retrain or restore the run") \
            from None
    for name, arr in arrays.items():
        if not np.isfinite(arr).all():
            raise DoodleError(f"{npz}: weight {name} holds NaN or infinity (did training diverge?); "
                              "retrain, e.g. with a lower train.lr")
        if name.endswith(".var") and (arr < 0).any():
            raise DoodleError(f"{npz}: {name} holds a negative variance; the run is damaged; retrain or restore it")
    check_run_files(run_dir, meta)
    model = MLP.from_spec(spec)
    model.load_state_dict(arrays)
    temperature = meta.get("temperature", 1.0)  # models from before calibration have none
    if not _is_finite(temperature) or temperature <= 0:
        raise DoodleError(f"{run_dir / MODEL_JSON}: temperature must be a positive number, got {temperature!r}; "
                          "the run is damaged; retrain or restore it")
    model.temperature = float(temperature) if calibrated else 1.0
    return model, meta


class NpzProblem(ValueError):
    """Why an .npz does not hold what its description says. `mismatch`: a sound archive, but of other
    arrays (other names, shapes or kinds) than described; otherwise it is damaged or hostile."""

    def __init__(self, reason: str, mismatch: bool = False):
        super().__init__(reason)
        self.mismatch = mismatch


def check_npz(path: str | Path, shapes: dict[str, tuple[int | None, ...]], optional: Collection[str] = (),
              kinds: dict[str, str] | None = None) -> None:
    """Raise NpzProblem unless the .npz at `path` holds exactly the arrays `shapes` describes (a None
    dimension: any length), less any of `optional`, reading only the zip directory and .npy headers.

    Each array's dtype kind must be in `kinds[name]` (default: numbers); an array whose size its shape
    leaves open (a None dimension, or text) may unpack to no more than the archive's size on disk (doodle
    stores members uncompressed). So np.load afterwards reads only what was checked: no extra member is
    decompressed, no header can claim more memory than described, no pickle runs."""
    kinds = kinds or {}
    try:
        limit = Path(path).stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename.removesuffix(".npy") if i.filename.endswith(".npy") else i.filename for i in infos]
            missing = sorted(set(shapes) - set(names) - set(optional))
            unexpected = sorted(set(names) - set(shapes))
            if missing or unexpected:
                raise NpzProblem(f"missing {_few(missing)}, unexpected {_few(unexpected)}", mismatch=True)
            if len(set(names)) != len(names):
                raise NpzProblem("an array is stored twice")
            for name, info in zip(names, infos):
                _check_member(zf, info, name, shapes[name], kinds.get(name, NUMERIC), limit)
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
        raise NpzProblem(f"not a readable .npz: {type(exc).__name__}") from None


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, shape: tuple[int | None, ...],
                  kinds: str, limit: int) -> None:
    """One member against its described shape and kinds: declared size, then its .npy header."""
    open_ended = None in shape or "U" in kinds
    most = limit if open_ended else math.prod(shape) * 16  # 16: the widest number (long double)
    if info.file_size > NPY_HEADER_MAX + most:
        raise NpzProblem(f"{name} unpacks to {info.file_size:,} bytes, more than the {NPY_HEADER_MAX + most:,} "
                         "its description allows")
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            got, _, dtype = read_header(fh, max_header_size=NPY_HEADER_MAX)
        except ValueError:
            raise NpzProblem(f"{name} has no readable .npy header") from None
        start = fh.tell()
    if dtype.hasobject:
        raise NpzProblem(f"{name} holds Python objects (pickled data is never loaded)")
    if dtype.kind not in kinds or len(got) != len(shape) \
            or any(n < 0 or (want is not None and n != want) for n, want in zip(got, shape)):
        want = "(" + ", ".join("any" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
        raise NpzProblem(f"{name} has shape {got} ({dtype}), expected {want}", mismatch=True)
    if info.file_size != start + math.prod(got) * dtype.itemsize:  # cut short, or more than its header says
        raise NpzProblem(f"{name} holds {info.file_size - start:,} bytes of data where its header describes "
                         f"{math.prod(got) * dtype.itemsize:,}")


def _few(names: list[str], most: int = 5) -> str:
    """A list of names for a message: the first few (repr, so no newline gets through), or 'none'."""
    if not names:
        return "none"
    shown = ", ".join(repr(n[:60]) for n in names[:most])
    return f"[{shown}]" + (f" and {len(names) - most} more" if len(names) > most else "")


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
            check_npz(run_dir / SPLIT_NPZ, SPLIT_ARRAYS, optional=SPLIT_ARRAYS, kinds=SPLIT_KINDS)
            with np.load(run_dir / SPLIT_NPZ, allow_pickle=False) as f:
                found.append((SPLIT_NPZ, str(f["run_id"]) if "run_id" in f.files else None))
        except _NPZ_ERRORS:  # NpzProblem is a ValueError
            pass  # damaged: load_split says so when the split is needed
    # state.json and metrics.jsonl only serve people and this check (--resume rewrites both from last.npz),
    # so a damaged one never stops a model from being used: it is simply not compared.
    try:
        state = fsutil.read_json(run_dir / STATE_JSON)
        found.append((STATE_JSON, state.get("run_id") if isinstance(state, dict) else None))
    except (OSError, ValueError):
        pass  # missing, cut short by a kill or damaged: --resume rewrites it
    try:
        with open(run_dir / METRICS_JSONL, "rb") as fh:
            for line in fh:
                try:
                    row = fsutil.parse_json(line)
                except ValueError:
                    continue  # a line torn by a kill (or damaged): --resume rewrites the file
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
        check_npz(path, SPLIT_ARRAYS, optional=["run_id"], kinds=SPLIT_KINDS)
        with np.load(path, allow_pickle=False) as f:
            split = {k: f[k] for k in f.files}
    except NpzProblem as exc:
        raise DoodleError(f"{path}: damaged ({exc}); this run cannot reproduce its test split "
                          "(pass DATA files instead)") from None
    except _NPZ_ERRORS as exc:
        raise DoodleError(f"{path}: damaged ({type(exc).__name__}); this run cannot reproduce its test split "
                          "(pass DATA files instead)") from None
    return split
