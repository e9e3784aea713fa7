"""Text that users and files supply (paths, category names, config values, messages) is printed as it is by
every command: never read as Rich markup ("[/x]" closing no tag, "[x]" not vanishing), emoji codes or links."""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from doodle import cli_output
from doodle.cli import app
from doodle.errors import DoodleError

runner = CliRunner()
SHAPES = ["circle", "star"]
# Markup tags (closing, opening, unknown, links), emoji codes and escapes: each one changed or broke the
# output when printed with markup on.
MARKUP = ["[/x]", "[x]", "[/]", "[bold]", "[red]r[/red]", "[link=http://a]a[/link]", "[::1]", ":cat:",
          ":smile:", "\\[b]", "[[", "]", "[@click]", "[b"]
hostile = st.lists(st.one_of(st.sampled_from(MARKUP), st.text(string.ascii_letters + " _-.,", max_size=4)),
                   min_size=1, max_size=4).map("".join).filter(lambda s: ("[" in s or ":" in s) and s.strip())
HOSTILE = "in [/x] and [bold]b [x] :cat: [link=y]"  # a folder name for the end-to-end run


def run(*args, input=None):
    res = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in res.output, res.output
    return res


def flat(text: str) -> str:
    """What was printed, with the lines a table or the width broke it into joined again."""
    return " ".join(text.split())


@pytest.fixture
def wide():
    """Consoles wide enough that nothing wraps, so printed text can be found as it is."""
    widths = (cli_output.out.width, cli_output.err.width)
    cli_output.out.width = cli_output.err.width = 1000
    yield
    cli_output.out.width, cli_output.err.width = widths


@given(text=hostile)
@settings(max_examples=60, deadline=None)
def test_every_printer_prints_user_text_as_it_is(text):
    printers = {
        "error": (lambda t: cli_output.error(t), f"error: {text}"),
        "warning": (lambda t: cli_output.warning(t), f"warning: {text}"),
        "note": (cli_output.note, text),
        "link": (lambda t: cli_output.out.print(cli_output.link(t)), text),
        "figures": (lambda t: cli_output.out.print(cli_output.figures(t, [(t, t)])), text),
        "names": (lambda t: cli_output.out.print(cli_output.fit_names("head: ", [t], 1000)), text),
    }
    for name, (show, expected) in printers.items():
        with cli_output.out.capture() as out, cli_output.err.capture() as err:
            show(text)
        printed = out.get() + err.get()
        assert "".join(expected.split()) in "".join(printed.split()), (name, printed)  # wrapping aside
    line = cli_output.progress_line(text, 3, 10, "drawings", {"loss": 0.5}, 1.0, None, width=500)
    assert line.plain.startswith(text[:cli_output.MAX_DESCRIPTION - 1])


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """Synthetic data and a trained run, all under a folder whose name is full of markup."""
    root = tmp_path_factory.mktemp("text") / HOSTILE
    base = ("--set", "data.source=synthetic", "--set", f"data.categories=[{', '.join(SHAPES)}]", "--set",
            "data.per_category=40", "--set", "model.hidden=[16]", "--set", "train.epochs=1", "--data-dir", root)
    res = run("download", "--synthetic", *SHAPES, "--max-drawings", 40, "--data-dir", root)
    assert res.exit_code == 0 and HOSTILE in flat(res.stdout), res.output
    res = run("train", *base, "--out", root / "run [/x]")
    assert res.exit_code == 0, res.output  # was exit 1 after the model was saved
    assert f"{root}/run [/x]" in flat(res.stdout)
    return root, base


def test_train_cache_and_gradcheck_print_paths_as_they_are(hostile_run, wide):
    root, base = hostile_run
    res = run("cache", *base)
    assert res.exit_code == 0 and f"{root}/cache" in res.stdout, res.output
    config = root / "c [bold] [x].yaml"
    res = run("gradcheck", "--config", config)
    assert res.exit_code == 2 and res.stderr.startswith(f"error: {config}: config file not found")
    res = run("train", "--config", config, "--data-dir", root)
    assert res.exit_code == 2 and str(config) in res.stderr


def test_evaluate_prints_paths_and_categories_as_they_are(hostile_run, wide):
    root, _ = hostile_run
    model = root / "run [/x]"
    res = run("evaluate", "--model", model, "--report", root / "rep [x]")
    assert res.exit_code == 0, res.output
    assert f"doodle evaluate: {model}" in res.stdout and f"{root}/rep [x]/" in res.stdout
    drawing = json.loads((root / "synthetic" / "circle.ndjson").read_text().splitlines()[0])
    lines = [json.dumps({**drawing, "word": word}) for word in ("circle", "[/x]", ":cat: [b]")]
    data = root / "mine [b] :cat:.ndjson"
    data.write_text("\n".join(lines + ["{oops [/x]"]) + "\n")
    res = run("evaluate", "--model", model, data)
    assert res.exit_code == 0, res.output
    assert "[/x] (1)" in res.stdout and ":cat: [b] (1)" in res.stdout  # unscored categories, as written
    assert res.stderr.startswith(f"warning: {data.name}: 3 drawings, 1 bad line skipped")


@given(name=hostile)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_predict_prints_any_file_name_as_it_is(hostile_run, wide, name):
    root, _ = hostile_run
    folder = root / "predict"
    folder.mkdir(exist_ok=True)
    sketch = folder / f"{name.replace('/', '|')}.png"
    shutil.copy(Path(__file__).parent / "fixtures" / "quickdraw" / "sketches" / "apple" /
                sorted(p.name for p in (Path(__file__).parent / "fixtures" / "quickdraw" / "sketches" /
                                        "apple").iterdir())[0], sketch)
    missing = folder / f"gone {name.replace('/', '|')}.png"
    res = run("predict", sketch, missing, "--model", root / "run [/x]")
    assert res.exit_code == 1
    assert str(sketch) in res.stdout
    assert f"error: {missing}" in res.stderr


def test_predict_ndjson_words_and_graph_paths(hostile_run, wide):
    root, _ = hostile_run
    drawing = json.loads((root / "synthetic" / "star.ndjson").read_text().splitlines()[0])
    res = run("predict", "-", "--model", root / "run [/x]", input=json.dumps({**drawing, "word": "[/x]"}) + "\n")
    assert res.exit_code == 0 and "(true: [/x])" in res.stdout, res.output
    out = root / "g [bold] :cat:.svg"
    res = run("graph", "--model", root / "run [/x]", "--out", out, "--data-dir", root)
    assert res.exit_code == 0, res.output
    assert f"nodes drawn to {out}" in res.stdout and res.stdout.startswith(f"{root}/run [/x]: ")


def test_play_prints_addresses_and_paths_as_they_are(monkeypatch, wide, tmp_path):
    """`doodle play --host ::1` could not start: its URL http://[::1]:PORT/ was read as a markup tag."""
    import doodle.play

    def serve(model, host, port, save_dir, open_browser, reporter, on_ready):
        reporter.log(f"warning: serving on {host} [/x]")
        on_ready({"url": f"http://[{host}]:{port}/", "path": str(model), "test_accuracy": 0.5,
                  "categories": ["[/x]", ":cat:"], "save_dir": str(save_dir)})

    monkeypatch.setattr(doodle.play, "serve", serve)
    res = run("play", "--host", "::1", "--port", 0, "--model", tmp_path / "[x]", "--save-dir", tmp_path / "[/y]")
    assert res.exit_code == 0, res.output
    assert "doodle play at http://[::1]:0/" in res.stdout and f"model: {tmp_path}/[x]" in res.stdout
    assert "[/x], :cat:" in res.stdout and f"{tmp_path}/[/y]/<word>.ndjson" in res.stdout
    assert "warning: serving on ::1 [/x]" in res.stderr


def test_library_errors_and_usage_errors_print_as_they_are(monkeypatch, wide):
    import doodle.predict

    def fail(*args, **kwargs):
        raise DoodleError("bad [/x] :cat: [bold]thing")

    monkeypatch.setattr(doodle.predict, "predict", fail)
    res = run("predict", "x.png")
    assert res.exit_code == 2 and res.stderr == "error: bad [/x] :cat: [bold]thing\n"
    res = run("[/x]")
    assert res.exit_code == 2 and res.stderr.startswith("error: No such command '[/x]'")
