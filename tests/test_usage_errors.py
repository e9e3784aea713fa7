"""Usage errors: one line, exit 2, in CliRunner and in a real process.

Part of the hostile-input and interruption suite (issues 11 and 21): every case ends in a clean one-line
error or the right result, never a traceback or a silently wrong answer, and nothing complete on disk is lost.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import cli

# ---------------------------------------------------------------------------------------------
# Usage errors: one line, exit 2, in CliRunner and in a real process


USAGE = [
    (("predict", "x.png", "--top-k", "0"), "'--top-k' / '-k'"),
    (("download", "cat", "--max-drawings", "0"), "'--max-drawings'"),
    (("train", "--workers", "-1"), "'--workers'"),
    (("evaluate", "--min-accuracy", "2"), "'--min-accuracy'"),
    (("gradcheck", "--max-entries", "zero"), "'--max-entries'"),
    (("train", "--epochs", "3"), "No such option: --epochs"),
    (("predict",), "Missing argument 'INPUTS'"),
    (("trian",), "No such command 'trian'"),
]


@pytest.mark.parametrize("args, fragment", USAGE)
def test_usage_errors_are_one_line(args, fragment):
    res = cli(*args)
    assert res.exit_code == 2 and res.stdout == "", res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment.lower() in lines[0].lower(), lines
    assert "--help" in lines[0]


def test_usage_errors_are_one_line_in_a_real_process():
    for args in (("predict", "x.png", "--top-k", "0"), ("download", "cat", "--max-drawings", "0")):
        proc = subprocess.run([sys.executable, "-m", "doodle", *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: Invalid value for"), proc.stderr
