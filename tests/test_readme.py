"""The README says what works: every `doodle` command and option it names exists, every file it points at is in
the repository, its two set-up lines are what .ci/run runs, and the commands that need no network run as written
(the offline training cut short, then the next steps on the run it made)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from helpers import cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
CODE = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
QUICK = ("--set", "data.per_category=60", "--set", "train.epochs=1")  # the offline run, cut to a second


def _lines(block: str) -> list[str]:
    """The commands of a code block, comments dropped."""
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def _doodle_commands() -> list[list[str]]:
    """Every `doodle ...` the README shows, in code blocks or inline code, as argument lists after `doodle`."""
    found = []
    for text in [*CODE, *re.findall(r"`([^`\n]*doodle [^`\n]*)`", README)]:
        for part in re.split(r"&&|\n", text):
            words = shlex.split(part.split("  #")[0])
            for i, word in enumerate(words):
                if word.endswith("doodle") and i + 1 < len(words) and not words[i + 1].startswith(("-", "[")):
                    found.append(words[i + 1:])
    return found


def _help(command: str) -> str:
    result = cli(command, "--help")
    assert result.exit_code == 0, (command, result.output)
    return result.output


def test_every_command_and_option_the_readme_names_exists():
    commands = _doodle_commands()
    assert len(commands) >= 15, commands
    helps: dict[str, str] = {}
    for words in commands:
        name = words[0]
        text = helps.setdefault(name, _help(name))
        for option in (w.split("=")[0] for w in words[1:] if w.startswith("--")):
            assert option in text, f"README: doodle {name} {option}: not in `doodle {name} --help`"


def test_the_commands_table_lists_every_command_once():
    listed = re.findall(r"^\| `doodle (\S+)`", README, flags=re.M)
    result = cli("--help")
    shown = re.findall(r"^\s*│?\s*([a-z]+)\s{2,}\S", result.output.split("Commands")[1], flags=re.M)
    assert sorted(listed) == sorted(set(listed)) == sorted(shown), (listed, shown)


def test_every_path_the_readme_names_exists():
    paths = set(re.findall(r"\((docs/[^)#]+|bench/[^)#]+)\)", README))  # links
    paths |= set(re.findall(r"`((?:configs|tests|docs|bench)/[^`\s]+)`", README))
    for block in CODE:
        paths |= set(re.findall(r"\b((?:configs|tests)/\S+\.(?:yaml|ndjson|png))", block))
    paths |= set(re.findall(r"\b(tests/fixtures/\S+\.(?:png|ndjson))", README))
    assert len(paths) >= 15, paths
    missing = sorted(p for p in paths if not any(REPO.glob(p.rstrip(".,"))))  # a glob names at least one
    assert not missing, missing


def test_the_two_set_up_lines_are_fresh_terminal_lines_and_ci_runs_the_test_line():
    setup = [line for block in CODE for line in _lines(block) if line.startswith("python3 -m venv")]
    assert len(setup) == 2, setup
    main, tests = setup
    assert "pip install -e ." in main and "[test]" not in main  # users do not install the test extras
    assert main.endswith(".venv/bin/doodle train --config configs/offline.yaml")
    assert '".[test]"' in tests and tests.endswith(".venv/bin/python -m pytest")
    assert " activate" not in main + tests  # pasted into a new terminal: no venv needs to be active
    assert tests in (REPO / ".ci" / "run").read_text(encoding="utf-8")


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A working folder that sees the repository's configs and tests, as a clone does."""
    for name in ("configs", "tests"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    return tmp_path


def test_the_offline_quickstart_and_next_steps_run_as_written(checkout):
    main = next(line for block in CODE for line in _lines(block) if line.startswith("python3 -m venv"))
    train = shlex.split(main.split("&&")[-1])[1:]
    result = cli(*train, *QUICK)
    assert result.exit_code == 0, result.output
    assert len(list((checkout / "runs").glob("offline-*/model.npz"))) == 1
    steps = next(block for block in CODE if "doodle evaluate" in block)
    ran = []
    for line in _lines(steps):
        args = shlex.split(line)[1:]
        if args[0] == "play":  # a server: its page is tested in test_play_browser.py
            continue
        result = cli(*args)
        assert result.exit_code == 0, (line, result.output)
        ran.append(args[0])
    assert ran == ["evaluate", "predict", "graph"]
    assert (checkout / "graph.svg").stat().st_size > 1000
