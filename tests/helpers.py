"""What many test files need, written once: the CLI runner, the one-line-error check, a recording reporter
and the settings of a tiny run (the fixtures that train it live in conftest.py).

Tiny runs use the built-in synthetic shapes, 8x8 bitmaps and a one-hidden-layer network of 8 units, so a
whole training takes milliseconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from doodle.cli import app
from doodle.progress import Reporter

runner = CliRunner()
WORDS = ["circle", "square", "star"]
TINY = ("data.source=synthetic", f"data.categories=[{', '.join(WORDS)}]", "data.per_category=60",
        "data.image_size=8", "model.hidden=[8]", "model.dropout=0.25", "train.epochs=3", "train.batch_size=16",
        "train.lr=0.01")


def cli(*args, input=None):
    """`doodle ARGS...` in this process (typer's CliRunner), every argument as text."""
    return runner.invoke(app, [str(a) for a in args], input=input)


def sets(*overrides):
    """--set options for the tiny run's settings and then `overrides`."""
    return [arg for o in (*TINY, *overrides) for arg in ("--set", o)]


def one_line_error(result, fragment: str, code: int = 2, after_progress: bool = False, alone: bool = True):
    """Exit `code`, one non-blank stderr line `error: ...` containing `fragment`, no traceback. With
    after_progress, the error is the last line after the progress output; without `alone`, other lines
    (warnings, a summary) may come before it."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    if alone and not after_progress:
        assert len(lines) == 1, result.stderr
    if after_progress:
        assert lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


class Recorder(Reporter):
    """Keeps what the library reported: `events` in order (("start", key, total, unit), ("update", key, advance,
    completed), ("end", key), ("log", message)), live `fields`, log `lines` and `epochs`."""

    def __init__(self):
        self.events: list[tuple] = []
        self.fields: list[dict] = []
        self.lines: list[str] = []
        self.epochs: list[dict] = []

    def start(self, key, description, total=None, unit=""):
        self.events.append(("start", key, total, unit))

    def update(self, key, advance=0, completed=None, total=None, **fields):
        self.events.append(("update", key, advance, completed))
        if fields:
            self.fields.append(fields)

    def end(self, key):
        self.events.append(("end", key))

    def log(self, message):
        self.events.append(("log", message))
        self.lines.append(message)

    def epoch(self, row):
        self.epochs.append(row)


Logs = Recorder  # what the reliability tests called it


def copy_run(run_dir: Path, tmp_path: Path, name: str = "copy") -> Path:
    """A copy of a run folder to damage without touching the shared one."""
    dst = tmp_path / name
    shutil.copytree(run_dir, dst)
    return dst


def npz_arrays(path: Path) -> dict:
    """Every array of an .npz doodle wrote, but its JSON "state"."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k != "state"}


def same_arrays(a: dict, b: dict) -> bool:
    """The same names, dtypes and bytes: bit for bit."""
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def epoch_rows(run: Path) -> list[dict]:
    """metrics.jsonl's rows without what differs between identical runs (time, run id)."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "run_id")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def edit_meta(run: Path, **changes) -> None:
    """Change top-level entries of a run's model.json by hand, as a user (or a damaged disk) might."""
    meta = json.loads((run / "model.json").read_text())
    meta.update(changes)
    (run / "model.json").write_text(json.dumps(meta))
