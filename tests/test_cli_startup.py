"""The start-up budget of the commands people run in loops: `doodle predict`, `--version`, `--help` and shell
completion import only what they need. Checked on the modules a real process imports (python -X importtime),
not on a clock: bench/predict.py prints the times."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from doodle import __version__

REPO = Path(__file__).resolve().parents[1]
# What made `doodle predict` 3x a bare numpy + Pillow start: typer's pydantic conversions (~0.1 s), Rich
# (~0.05 s; markdown_it comes with Rich's help), and library modules the command does not call.
NEVER = ("pydantic", "pydantic_core", "rich", "markdown_it", "yaml", "starlette", "uvicorn", "anyio", "h11",
         "dask", "doodle.cli_output", "doodle.train", "doodle.config", "doodle.dataset", "doodle.download",
         "doodle.evaluate", "doodle.play", "doodle.metrics", "doodle.report", "doodle.synthetic")
NOT_BEFORE_A_COMMAND = ("numpy", "PIL", "doodle.predict", "doodle.checkpoint")
# What predict's own path does not need: a loaded model draws no random weights (~10 ms for numpy.random), image
# preparation takes its quantile and median without np.quantile's numpy.ma (~10 ms), a few drawings are drawn
# without the rasterizing pool's process machinery (doodle.rasterpool: concurrent.futures, multiprocessing),
# and a few rows need no share of the cores (doodle.cores, threadpoolctl).
NOT_FOR_PREDICT = ("numpy.random", "numpy.ma", "doodle.rasterpool", "concurrent.futures", "multiprocessing",
                   "threadpoolctl", "doodle.cores")


def imported(*args: str, env: dict | None = None, script: str | None = None) -> tuple[set[str], str]:
    """The modules a fresh `doodle ARGS` process imports, and what it printed on stdout."""
    cmd = [sys.executable, "-X", "importtime", *([script] if script else ["-m", "doodle"]), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    names = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "Traceback" not in proc.stderr, proc.stderr
    return names, proc.stdout


def banned(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from doodle.train import train

    root = tmp_path_factory.mktemp("startup")
    result = train(None, ["data.source=synthetic", "data.categories=[circle, star]", "data.per_category=30",
                          "model.hidden=[8]", "train.epochs=1", "model.tta=none"], data_dir=root / "data",
                   out=root / "run")
    return Path(result.run)


def test_predict_imports_only_the_prediction_path(run_dir, quickdraw_dir):
    sketch = sorted((quickdraw_dir / "sketches" / "apple").iterdir())[0]
    names, out = imported("predict", str(sketch), "--model", str(run_dir))
    assert out.split()[0] == str(sketch) and "%" in out  # it did predict
    assert banned(names, NEVER + NOT_FOR_PREDICT) == []
    assert {"numpy", "PIL.Image", "doodle.predict"} <= names


@pytest.mark.parametrize("args", [("--version",), ("predict", "--help"), ("--help",)])
def test_version_and_help_import_no_numpy(args):
    names, out = imported(*args)
    assert banned(names, NEVER + NOT_BEFORE_A_COMMAND) == []
    if args == ("--version",):
        assert out == f"doodle {__version__}\n"


def test_shell_completion_imports_no_numpy():
    """Each TAB of bash's completion is one process: it completes the command and nothing more."""
    env = {"_DOODLE_COMPLETE": "complete_bash", "COMP_WORDS": "doodle pre", "COMP_CWORD": "1"}
    script = str(Path(sys.executable).parent / "doodle")
    if not Path(script).is_file():
        pytest.skip(f"no doodle console script beside {sys.executable}")
    names, out = imported(env=env, script=script)
    assert out.split() == ["predict"]
    assert banned(names, NEVER + NOT_BEFORE_A_COMMAND) == []
