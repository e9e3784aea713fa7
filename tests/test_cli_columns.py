"""Everything doodle prints reads well in an 80-column terminal: every command run with COLUMNS=80 prints no
line wider than 80 (JSON and the one-line `error:` messages aside), and each output that used to overflow
(the confusion matrix, the progress line, the graph tree, --help, long lists) has its own check."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from doodle import cli_output
from doodle.cli import app
from doodle.config import SCHEMA, reference
from doodle.metrics import summarize

runner = CliRunner()
WIDTH = 80
WORDS = ["apple", "banana", "eye"]  # 40 drawings each in the committed fixture
QUICKDRAW16 = ["airplane", "alarm clock", "apple", "banana", "bicycle", "bird", "book", "cat", "diamond", "dog",
               "eye", "fish", "flower", "house", "rainbow", "train"]


@pytest.fixture
def columns(monkeypatch):
    """An 80-column terminal for Rich's consoles and for predict's rows."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    widths = (cli_output.out.width, cli_output.err.width)
    cli_output.out.width = cli_output.err.width = WIDTH
    yield
    cli_output.out.width, cli_output.err.width = widths


def fits(res, code: int = 0) -> str:
    """The result's stdout, after checking that it exited with `code` and no line is over 80 columns."""
    assert res.exit_code == code, res.output
    for line in (res.stdout + res.stderr).splitlines():
        if line.startswith(("{", "[", "error:")):  # JSON; one-line errors (scripts grep them) may be longer
            continue
        assert cell_len(line) <= WIDTH, f"{cell_len(line)} columns: {line}"
    assert "Traceback" not in res.output
    return res.stdout


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, quickdraw_dir):
    """A run of 3 real categories from the committed fixture (a file:// mirror), in a folder the test runs in."""
    root = tmp_path_factory.mktemp("columns")
    (root / "tiny.yaml").write_text(
        f"data:\n  categories: [{', '.join(WORDS)}]\n  per_category: 100\n  base_url: file://{quickdraw_dir}\n"
        "model:\n  hidden: [32]\n  tta: none\ntrain:\n  epochs: 2\n  batch_size: 32\n")
    return root


def test_train_fits_and_says_what_next(workdir, columns, monkeypatch):
    monkeypatch.chdir(workdir)
    res = run("train", "--config", "tiny.yaml", "--out", "runs/tiny", "--check-gradients")
    shown = fits(res)
    for figure in ("temperature", "val ECE, raw -> calibrated", "test accuracy", "next:", "doodle evaluate",
                   "doodle predict SKETCH.png", "doodle play"):
        assert figure in shown, figure
    assert "--model" not in shown  # the newest run under runs/ is the default, so the next steps need no --model
    short = [line for line in res.stderr.splitlines() if "per_category" in line]
    assert short == ["data.per_category=100: 3 of 3 categories have fewer drawings (fewest: apple, 40)"]


def test_evaluate_predict_graph_and_cache_fit(workdir, columns, monkeypatch, quickdraw_dir):
    monkeypatch.chdir(workdir)
    if not (workdir / "runs" / "tiny").is_dir():
        fits(run("train", "--config", "tiny.yaml", "--out", "runs/tiny"))
    shown = fits(run("evaluate", "--report", "rep"))
    assert "confusion matrix" in shown and "reliability.png" in shown
    fits(run("evaluate", "--model", "runs/tiny", "--model", "runs/tiny"))
    fits(run("gradcheck", "--set", "model.hidden=[8]", "--set", "data.image_size=8", "--max-entries", 3))
    fits(run("cache", "--config", "tiny.yaml"))
    shown = fits(run("download", "apple", "alarm clock", "--max-drawings", 3, "--base-url", f"file://{quickdraw_dir}",
                     "--data-dir", "dl"))
    assert "into dl/simplified" in shown and "alarm clock" in shown
    tree = fits(run("graph", "--out", "g.svg"))
    assert "|grad|" in tree and "dense0.W (parameter)" in tree
    lines = (quickdraw_dir / "full" / "simplified" / "eye.ndjson").read_text().splitlines()
    rows = fits(run("predict", "-", input="\n".join(lines[:12]) + "\n"), code=0).splitlines()
    assert len(rows) == 12 and all(row[0] in "✓✗" for row in rows)  # one compact row per drawing
    sketches = sorted((quickdraw_dir / "sketches" / "apple").iterdir())[:2]
    for sketch in sketches:
        shutil.copy(sketch, workdir / sketch.name)
    rows = fits(run("predict", *(s.name for s in sketches), "--top-k", 6)).splitlines()
    assert [r.split()[0] for r in rows] == [s.name for s in sketches]  # 3 classes: k is capped, one row each


def test_help_and_reference_fit_and_hide_nothing(columns):
    commands = fits(run("--help")).split("Commands:")[1]
    assert "..." not in commands and len(commands.splitlines()) == 12  # no one-line summary cut short
    for command in ("categories", "download", "train", "gradcheck", "graph", "explain", "evaluate", "predict", "play",
                    "export", "cache"):
        shown = fits(run(command, "--help"))
        twins = shown.replace("--open / --no-open", "")  # the one flag whose negative is a choice of its own
        assert "…" not in shown and "<bool>" not in shown and " / --no-" not in twins
    assert "reliability.png" in " ".join(run("evaluate", "--help").stdout.split())
    shown = fits(run("train", "--help-config"))
    for k in reference():
        assert k["key"].split(".")[1] in shown
        assert " ".join(k["allowed"].split()[:3]) in " ".join(shown.split()), k  # the allowed values, unbroken
    assert run("--version").stdout == f"doodle {__import__('doodle').__version__}\n"


def test_allowed_values_say_what_the_check_accepts():
    """--help-config's words come from the checker itself: every listed choice passes, and each number
    range's ends pass while a step past them fails."""
    for sec, keys in SCHEMA.items():
        for name, key in keys.items():
            allowed, check = key.check.allowed, key.check
            assert check(key.default) is None, (sec, name)
            if " | " in allowed:
                choices = [c for c in allowed.split(" | ")]
                assert all(check({"true": True, "false": False}.get(c, c)) is None for c in choices)
                assert check("not-a-choice") is not None
            if allowed.startswith("a whole number from"):
                lo, hi = (int(w) for w in allowed.split() if w.isdigit())
                assert check(lo) is None and check(hi) is None and check(lo - 1) and check(hi + 1)


def _summary(names: list[str], n_per_class: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(names)), n_per_class)
    probs = rng.dirichlet(np.ones(len(names)), size=len(y)).astype(np.float32)
    probs[np.arange(len(y)), y] += 0.05
    s = summarize(probs / probs.sum(1, keepdims=True), y, names)
    s.update(model="runs/x", unknown_categories={}, problems=[], temperature=1.0, tta="none")
    return s


def _shown(show, *args) -> str:
    with cli_output.out.capture() as cap:
        show(*args)
    return cap.get()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_16_class_confusion_matrix_fits(width):
    """quickdraw16's test split has 750 drawings a class: 3-digit counts, every one shown in full."""
    counts = np.arange(256).reshape(16, 16) * 3
    lines = cli_output.confusion_lines(QUICKDRAW16, counts.tolist(), width)
    assert all(cell_len(line.plain) <= width for line in lines)
    numbered = lines[2].plain.startswith(" 1 airplane ")
    assert numbered == (width < 120)  # the names as column heads need 119 columns
    heads = [str(i) for i in range(1, 17)] if numbered else [w for n in QUICKDRAW16 for w in n.split()]
    assert lines[1].plain.split() == heads
    assert [int(v) for v in lines[-1].plain.split()[-16:]] == counts[-1].tolist()


def test_confusion_matrix_uses_names_when_they_fit_and_points_to_report_when_nothing_fits():
    lines = cli_output.confusion_lines(WORDS, [[5, 1, 0], [0, 6, 0], [2, 0, 4]], WIDTH)
    assert lines[1].plain.split() == WORDS and lines[4].plain.split() == ["eye", "2", ".", "4"]
    many = [f"class{i}" for i in range(40)]
    (only,) = cli_output.confusion_lines(many, np.eye(40, dtype=int).tolist(), WIDTH)
    assert "--report DIR draws it as confusion.png" in only.plain and "needs 130 columns" in only.plain


def test_evaluate_shows_extremes_for_many_classes(columns):
    names = [f"class{i:02d}" for i in range(40)]
    shown = _shown(cli_output.show_evaluation, _summary(names, 5))
    assert "worst 10 of 40 categories" in shown and "best 10 categories" in shown
    assert "most confused" in shown and "confusion matrix (rows" not in shown
    assert 20 <= sum(n in shown for n in names) < 40  # the extremes and the confused pairs, not every class


def test_a_handful_of_drawings_shows_undefined_scores_and_a_rough_ece(columns):
    """Six drawings of three classes: banana had none and was never guessed, so its scores are undefined."""
    probs = np.array([[.7, .1, .1, .1], [.6, .2, .1, .1], [.1, .7, .1, .1], [.5, .4, .05, .05],
                      [.1, .1, .7, .1], [.2, .1, .6, .1]])
    s = summarize(probs, np.array([0, 0, 1, 1, 2, 2]), ["apple", "bird", "cat", "banana"])
    s.update(model="runs/x", unknown_categories={}, problems=[], temperature=1.0, tta="none")
    shown = _shown(cli_output.show_evaluation, s)
    cells = [line.split("│") for line in shown.splitlines() if line.count("│") == 6]
    row = {c[1].strip(): c[2:5] for c in cells}
    assert [c.strip() for c in row["banana"]] == ["–", "–", "–"] and "0.000" not in "".join(row["banana"])
    assert [c.strip() for c in row["bird"]] == ["1.000", "0.500", "0.667"]
    assert "(rough)" in shown and f"steady from about {cli_output.ECE_STEADY:,}" in " ".join(shown.split())
    assert "–: undefined; no drawings of the class" in " ".join(shown.split())
    assert all(cell_len(line) <= WIDTH for line in shown.splitlines())


def test_unscored_categories_and_problems_are_summarised(columns):
    s = _summary(WORDS, 3)
    s["unknown_categories"] = {f"category {i}": 1000 + i for i in range(345)}
    shown = _shown(cli_output.show_evaluation, s)
    head, names = shown.split("not scored: ")[1].splitlines()[:2]
    assert head == "404,340 drawings of 345 categories the model does not know:"
    assert cell_len(names) <= WIDTH and names.startswith("  category 0 (1,000), ") and names.endswith(" more")
    with cli_output.err.capture() as cap:
        cli_output.show_problems([f"file{i}.ndjson: bad" for i in range(30)])
    assert cap.get().count("\n") == cli_output.SHOWN_PROBLEMS + 1 and "25 more problems" in cap.get()


def test_ece_noise_is_the_spread_of_a_calibrated_model():
    """ece_noise against simulation: labels drawn to match their confidence exactly still show an ECE."""
    rng = np.random.default_rng(0)
    n = 200
    conf = rng.uniform(0.4, 1.0, n)
    probs = np.stack([conf, 1 - conf], axis=1)
    bins = summarize(probs, np.zeros(n, dtype=int), ["a", "b"])["calibration"]
    eces = []
    for _ in range(300):
        y = (rng.uniform(size=n) > conf).astype(int)  # right with probability conf: perfectly calibrated
        eces.append(summarize(probs, y, ["a", "b"])["ece"])
    assert cli_output.ece_noise(bins) == pytest.approx(np.mean(eces), rel=0.25)


@pytest.mark.parametrize("width", [60, 80, 120])
def test_training_progress_line_fits(width):
    fields = {"loss": 2.345678, "acc": 0.4567, "sps": 28_034.0}
    line = cli_output.progress_line("epoch 3/80", 371, 469, "batches", fields, 3725.0, 10.0, width).plain
    assert cell_len(line) <= width
    assert line.endswith("loss 2.3457 acc 45.7% 28.0k samples/s")  # the figures are never what gets cut
    assert ("━" * cli_output.MIN_BAR in line) == (width >= 80)  # at 60 the figures come before a bar
    assert ("1:02:05" in line) == (width >= 80) and ("371/469 batches" in line) == (width >= 120)
    huge = cli_output.progress_line("epoch 1234/10000", 12345, 23456, "batches", {**fields, "sps": 123456.0},
                                    3725.0, 10.0, width).plain
    assert cell_len(huge) <= width and ("123.5k samples/s" in huge) == (width >= 80)


def test_progress_drawn_on_an_80_column_terminal():
    """The reporter's live display, as a terminal shows it: each line within the width."""
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=WIDTH, markup=False, color_system=None)
    rep = cli_output.RichReporter(console=console)
    with rep:
        rep.start("e", "epoch 3/80", total=469, unit="batches")
        rep.update("e", advance=200, loss=1.2345, acc=0.678, sps=28000.0)
        rep.start("f", "The Eiffel Tower.ndjson", total=50_000_000, unit="bytes")
        rep.update("f", completed=12_000_000)
        console.print(rep.progress.get_renderable())
    lines = [line for line in buf.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    import re
    plain = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line) for line in lines]
    assert any("28.0k samples/s" in line for line in plain) and any("12.0 MB/50.0 MB" in line for line in plain)
    assert all(cell_len(line) <= WIDTH for line in plain), plain


def test_graph_tree_breaks_between_figures_and_keeps_its_guides():
    from doodle import autodiff as ad
    from doodle.graphdraw import graph_tree

    x = ad.Tensor(np.full((1, 300), 0.123456), name="x")
    w = ad.Tensor(np.full((300, 200), 1e-7), name="W0", requires_grad=True)
    loss = ad.relu(x @ w).mean()
    loss.backward(retain_graph=True)
    wide, narrow = graph_tree(loss, width=200), graph_tree(loss, width=40)
    assert all(len(line) <= 40 for line in narrow) and len(narrow) > len(wide)
    words = [" ".join(" ".join(tree).replace("│", " ").split()) for tree in (narrow, wide)]
    assert words[0] == words[1]  # the same figures, only broken differently
