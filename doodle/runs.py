"""The run folder: what `doodle train` writes where, the run id that ties the files together, and the
state `--resume` reads back.

A run folder holds everything needed to use or continue the run:
  model.npz + model.json   the best epoch's weights and self-describing metadata (doodle.checkpoint)
  config.yaml              the resolved config
  split.npz                train/val/test row indices (evaluate reproduces the test split from them)
  metrics.jsonl            one JSON line per epoch
  curves.png               the learning curves so far (doodle.report), redrawn as each epoch ends
  last.npz                 everything `--resume` needs, as one file: the latest weights, the best ones,
                           the optimizer state, every random state and the history
  state.json               the same state (no arrays) for people and scripts
  .lock                    held (flock) by the one `doodle train` working in the folder

A run id (a uuid) is written into every one of these files, so a folder whose files come from
different runs is refused instead of scored. Each epoch ends in one atomic rename of last.npz: a run
killed at any point resumes from the last complete epoch and continues exactly as if never stopped
(the files written after last.npz, state.json and metrics.jsonl, are rewritten from it on resume).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from doodle import fsutil
from doodle.errors import DoodleError
from doodle.fsutil import NPZ_ERRORS, NpzProblem, check_npz

MODEL_NPZ = "model.npz"
MODEL_JSON = "model.json"
CONFIG_YAML = "config.yaml"
SPLIT_NPZ = "split.npz"
METRICS_JSONL = "metrics.jsonl"
STATE_JSON = "state.json"
LAST_NPZ = "last.npz"
_RUN_LINE = re.compile(r"# doodle run ([0-9a-f]{32})")
SPLIT_ARRAYS = {"train": (None,), "val": (None,), "test": (None,), "counts": (None,), "run_id": ()}
SPLIT_KINDS = {"train": "iu", "val": "iu", "test": "iu", "counts": "iu", "run_id": "U"}
_BUSY = ("{path}: another `doodle train` (pid {pid}) is using this run folder; wait for it to finish, "
         "or pick another --out")


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[Path]:
    """Hold the run folder (created if needed) for this process: a second `doodle train` with the same --out
    is refused at once instead of mixing its files with this run's."""
    with fsutil.lock_folder(run_dir, _BUSY) as folder:
        yield folder


def default_run_dir(config_path: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """runs/<config name>-<timestamp>, never an existing folder."""
    stem = Path(config_path).stem if config_path else "default"
    base = Path(runs_dir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run, n = base, 1
    while run.exists():
        n += 1
        run = base.with_name(f"{base.name}-{n}")
    return run


def finished(run_dir: Path, run_id: str) -> bool:
    """True when the run's final model.json (written after the test score) is there; a run killed between
    its last epoch and that write is finished by --resume instead."""
    try:
        meta = fsutil.read_json(run_dir / MODEL_JSON)
        return meta.get("run_id") == run_id and "epochs_run" in meta.get("metrics", {})
    except (OSError, ValueError, AttributeError):
        return False


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder this process created when nothing but its lock file ended up in it."""
    try:
        if {p.name for p in run_dir.iterdir()} <= {fsutil.LOCK_NAME}:
            (run_dir / fsutil.LOCK_NAME).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass


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
        except NPZ_ERRORS:  # NpzProblem is a ValueError
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
    except NPZ_ERRORS as exc:
        raise DoodleError(f"{path}: damaged ({type(exc).__name__}); this run cannot reproduce its test split "
                          "(pass DATA files instead)") from None
    return split


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def read_last(run_dir: Path, shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, state) from last.npz, checked against this run's `shapes` ("best/..." may be absent) before
    anything is read; or a DoodleError saying the run cannot be resumed."""
    path = run_dir / LAST_NPZ
    damaged = (f"{path}: damaged or unreadable ({{}}); this run cannot be resumed exactly: start a new run "
               "(its best model so far is still in model.npz)")
    try:
        if not path.is_file():
            raise FileNotFoundError
        check_npz(path, {**shapes, "state": ()}, optional=[k for k in shapes if k.startswith("best/")] + ["state"],
                  kinds={"state": "U"})
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        state = fsutil.parse_json(str(arrays.pop("state")))
    except FileNotFoundError:
        raise DoodleError(f"{path}: missing; this run cannot be resumed: start a new run") from None
    except KeyError:
        raise DoodleError(damaged.format("no resume state: written by an older doodle?")) from None
    except NpzProblem as exc:
        if exc.mismatch:  # a sound file of other shapes: the network's settings changed
            raise DoodleError(f"{path}: does not fit this run's config ({exc}); the settings that shape the "
                              "network cannot change on --resume") from None
        raise DoodleError(damaged.format(exc)) from None
    except fsutil.BadJSON as exc:
        raise DoodleError(damaged.format(f"resume state: {exc}")) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DoodleError(damaged.format(type(exc).__name__)) from None
    keys = ("run_id", "epoch", "best", "train_seconds", "rng", "dropout_rng", "split_counts", "history",
            "patience_left")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        raise DoodleError(damaged.format("incomplete resume state"))
    return arrays, state


def write_resume_state(run_dir: Path, arrays: dict[str, np.ndarray], state: dict) -> None:
    """The epoch's commit: the arrays and the JSON state in one atomic last.npz; then its readable copy,
    state.json."""
    fsutil.save_npz(run_dir / LAST_NPZ, {**arrays, "state": np.array(json.dumps(state))})
    fsutil.write_json(run_dir / STATE_JSON, state)


def write_records(run_dir: Path, state: dict, history: list[dict], run_id: str) -> None:
    """state.json and metrics.jsonl, rewritten from the committed state (on resume)."""
    fsutil.write_json(run_dir / STATE_JSON, state)
    fsutil.write_text(run_dir / METRICS_JSONL, "".join(json.dumps({**row, "run_id": run_id}) + "\n" for row in history))


def append_metrics(run_dir: Path, row: dict, run_id: str) -> None:
    """One epoch's line of metrics.jsonl (after the epoch's commit: --resume rewrites the file from last.npz)."""
    with open(run_dir / METRICS_JSONL, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**row, "run_id": run_id}) + "\n")


def read_metrics(run_dir: Path, run_id: str | None) -> list[dict]:
    """metrics.jsonl's rows of run `run_id` (lines torn by a kill, or damaged, skipped); [] without the file."""
    try:
        lines = (Path(run_dir) / METRICS_JSONL).read_bytes().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = fsutil.parse_json(line)
        except ValueError:  # BadJSON too
            continue
        if isinstance(row, dict) and row.get("run_id") == run_id:
            rows.append(row)
    return rows
