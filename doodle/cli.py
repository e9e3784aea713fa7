"""The `doodle` command line: parse options, call one library function, show its progress and results.

Progress bars and logs go to stderr; results (tables, or JSON with --json) go to stdout, so scripts
can pipe them. A user mistake prints one line `error: ...` and exits non-zero, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from doodle.errors import DoodleError
from doodle.progress import Reporter

try:  # typer >= 0.22 vendors click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on the click package
    from click.exceptions import UsageError
    try:
        from click.exceptions import NoArgsIsHelpError
    except ImportError:
        NoArgsIsHelpError = ()

out = Console(soft_wrap=True)  # results
err = Console(stderr=True, soft_wrap=True)  # progress, logs, errors: one line each, never wrapped


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Usage mistakes (`--top-k 0`, an unknown option, a missing argument) as one `error: ...` line on stderr
    and exit 2, like every other user mistake, instead of click's usage box. In the group, so it holds for
    the console script, `python -m doodle` and typer's CliRunner alike."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage_errors():
    try:
        yield
    except UsageError as exc:
        if isinstance(exc, NoArgsIsHelpError):
            raise  # bare `doodle` or `doodle download` without words: the help is the answer
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        message = " ".join(exc.format_message().split())  # click's messages may span lines
        err.print(Text(f"error: {message}{where}", style="red"))
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(help="Learn to recognise Google Quick, Draw! doodles with a hand-written numpy MLP.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  cls=_OneLineUsageErrors)

DataDir = Annotated[Path, typer.Option("--data-dir", help="Where downloads and caches live.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
NoCalibrationOpt = Annotated[bool, typer.Option("--no-calibration", help="Show the raw softmax probabilities instead "
                                                                         "of the temperature-calibrated ones.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Stop at the first bad ndjson line instead of skipping "
                                                             "and counting it.")]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _AmountColumn(ProgressColumn):
    """Bytes with speed for downloads, 'done/total unit' for everything else."""

    def render(self, task) -> Text:
        unit = task.fields.get("unit", "")
        if unit == "bytes":
            total = _human_bytes(task.total) if task.total else "?"
            speed = f" {_human_bytes(task.speed)}/s" if task.speed else ""
            return Text(f"{_human_bytes(task.completed)}/{total}{speed}")
        total = f"{task.total:.0f}" if task.total is not None else "?"
        return Text(f"{task.completed:.0f}/{total} {unit}")


class RichReporter(Reporter):
    """Draws the library's progress callbacks as rich progress bars on stderr."""

    def __init__(self, show_epochs: bool = True):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 _AmountColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=err, transient=True)
        self.tasks: dict[str, int] = {}
        self.show_epochs = show_epochs
        self.header_shown = False

    def __enter__(self):
        return self  # the live display starts with the first task, so a quick failure prints only its error

    def __exit__(self, *exc):
        if self.progress.live.is_started:
            self.progress.stop()

    def start(self, key, description, total=None, unit=""):
        if not self.progress.live.is_started:
            self.progress.start()
        self.tasks[key] = self.progress.add_task(description, total=total, unit=unit, info="")

    def update(self, key, advance=0, completed=None, total=None, **fields):
        if key not in self.tasks:
            return
        info = "  ".join(_fmt_field(k, v) for k, v in fields.items())
        kwargs = {"advance": advance, "info": info}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self.progress.update(self.tasks[key], **kwargs)

    def end(self, key):
        task = self.tasks.pop(key, None)
        if task is not None:
            self.progress.remove_task(task)

    def log(self, message):
        self.progress.console.print(Text(message, style="yellow"))

    def epoch(self, row):
        if not self.show_epochs:
            return
        if not self.header_shown:
            self.progress.console.print(Text(_EPOCH_FMT.format("epoch", "train loss", "train acc", "val loss",
                                                               "val acc", "lr", "time"), style="bold"))
            self.header_shown = True
        self.progress.console.print(_EPOCH_FMT.format(
            row["epoch"], f"{row['train_loss']:.4f}", f"{row['train_accuracy']:.2%}", _opt(row["val_loss"], "{:.4f}"),
            _opt(row["val_accuracy"], "{:.2%}"), f"{row['lr']:.2e}", f"{row['seconds']:.1f}s"))


_EPOCH_FMT = "{:>5}  {:>10}  {:>9}  {:>9}  {:>8}  {:>9}  {:>7}"


def _opt(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def _fmt_field(k: str, v) -> str:
    if k == "sps":
        return f"{v:,.0f} samples/s"
    if k == "acc":
        return f"acc {v:.1%}"
    if k in ("received", "rate"):  # a download's bytes so far, and bytes/s
        return _human_bytes(v) + ("/s" if k == "rate" else " received")
    if k == "failed":
        return f"{v} failed"
    return f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"


def handle_errors(fn):
    """One line on stderr and a non-zero exit for user mistakes; 130 on Ctrl-C."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DoodleError as exc:
            err.print(Text(f"error: {exc}", style="red"))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print(Text("interrupted", style="red"))
            raise typer.Exit(130) from None
        except OSError as exc:  # the library names its files; this is the net for anything it did not foresee
            if exc.errno == errno.EPIPE:
                raise  # stdout closed by `| head`: typer exits quietly
            where = f"{exc.filename}: " if exc.filename else ""
            err.print(Text(f"error: {where}{exc.strerror or exc}", style="red"))
            raise typer.Exit(1) from None
    return wrapper


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


@app.command()
@handle_errors
def categories(as_json: JsonOpt = False):
    """Print the 345 Quick, Draw! category names."""
    from doodle.categories import CATEGORIES

    if as_json:
        _print_json(list(CATEGORIES))
    else:
        sys.stdout.write("\n".join(CATEGORIES) + "\n")


@app.command()
@handle_errors
def download(
    words: Annotated[Optional[list[str]], typer.Argument(help="Category names, e.g. cat \"alarm clock\".")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="simplified, raw or numpy_bitmap.")] = "simplified",
    max_drawings: Annotated[Optional[int], typer.Option(help="Stop after N drawings per file (no full download).",
                                                        min=1)] = None,
    data_dir: DataDir = Path("data"),
    base_url: Annotated[Optional[str], typer.Option(help="Mirror base URL (default $DOODLE_BASE_URL or Google's "
                                                         "bucket); file:// works.")] = None,
    force: Annotated[bool, typer.Option(help="Download again even if the file is complete.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="All 345 categories.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Files fetched at once (parallel connections).",
                                      min=1, max=32)] = 4,
    retries: Annotated[int, typer.Option(help="Retries per file after a dropped connection or a 5xx.", min=0)] = 4,
    synthetic: Annotated[bool, typer.Option(help="Write the built-in synthetic shapes instead (no network).")] = False,
    as_json: JsonOpt = False,
):
    """Download Quick, Draw! files into DATA_DIR/FORMAT/WORD.EXT (resumable; complete files are skipped)."""
    if synthetic:
        _download_synthetic(words, max_drawings, data_dir, as_json)
        return
    from doodle.categories import CATEGORIES
    from doodle.download import download as run_download

    if all_:
        words = list(CATEGORIES)
    if not words:
        raise DoodleError("name at least one category (see `doodle categories`), or use --all or --synthetic")
    with RichReporter() as rep:
        results = run_download(words, fmt=fmt, data_dir=data_dir, base_url=base_url, max_drawings=max_drawings,
                               force=force, retries=retries, jobs=jobs, reporter=rep)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        _print_json([{"word": r.word, "format": r.format, "path": str(r.path), "status": r.status,
                      "bytes": r.bytes, "drawings": r.drawings, "seconds": r.seconds, "error": r.error, "url": r.url}
                     for r in results])
    elif len(results) <= _DOWNLOAD_ROWS:
        table = Table(title=f"doodle download ({fmt})")
        for col in ("category", "status", "drawings", "size", "time", "file"):
            table.add_column(col, justify="right" if col in ("drawings", "size", "time") else "left")
        for r in results:
            style = {"failed": "red", "skipped": "dim"}.get(r.status, "")
            table.add_row(r.word, r.status, "-" if r.drawings is None else f"{r.drawings:,}", _human_bytes(r.bytes),
                          f"{r.seconds:.1f}s", str(r.path), style=style)
        out.print(table)
    else:  # hundreds of files: one row per outcome
        table = Table(title=f"doodle download ({fmt}): {len(results)} files in {data_dir / fmt}")
        for col in ("status", "files", "drawings", "size"):
            table.add_column(col, justify="left" if col == "status" else "right")
        for status in ("downloaded", "resumed", "skipped", "failed"):
            rows = [r for r in results if r.status == status]
            if rows:
                known = [r.drawings for r in rows if r.drawings is not None]
                table.add_row(status, f"{len(rows):,}", f"{sum(known):,}" if known else "-",
                              _human_bytes(sum(r.bytes for r in rows)), style="red" if status == "failed" else "")
        out.print(table)
    by_reason: dict[str, list] = {}
    for r in failed:
        by_reason.setdefault(r.reason or "", []).append(r)
    for reason, rows in by_reason.items():  # one line per cause, naming the files
        if len(rows) == 1:
            err.print(Text(f"error: {rows[0].error}", style="red"))
        else:
            names = ", ".join(r.word for r in rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
            err.print(Text(f"error: {len(rows)} files failed: {reason}: {names}", style="red"))
    if failed:
        kept = "; the others are complete and kept" if len(failed) < len(results) else ""
        err.print(f"{len(failed)} of {len(results)} files failed{kept}: run the same command again to retry "
                  f"(complete files are not fetched again)", style="dim")
        raise typer.Exit(1)


_DOWNLOAD_ROWS = 20  # more files than this: a summary by outcome instead of a row each


def _download_synthetic(words, max_drawings, data_dir, as_json):
    from doodle.synthetic import SHAPES, write_synthetic

    words = list(words or SHAPES)
    n = max_drawings or 1000
    with RichReporter() as rep:
        paths = write_synthetic(data_dir, words=words, n=n, seed=0, reporter=rep)
    if as_json:
        _print_json([{"word": w, "format": "synthetic", "path": str(p), "drawings": n} for w, p in zip(words, paths)])
    else:
        table = Table(title="doodle download --synthetic (procedurally drawn shapes, not Google data)")
        for col in ("category", "drawings", "file"):
            table.add_column(col)
        for w, p in zip(words, paths):
            table.add_row(w, f"{n:,}", str(p))
        out.print(table)


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (see configs/).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key, e.g. --set train.lr=0.01 "
                                                                   "(repeatable).")]


DEFAULT_CONFIG = Path("configs/default.yaml")
WorkersOpt = Annotated[int, typer.Option(help="Processes for rasterising (0 = all cores).", min=0)]
SchedulerOpt = Annotated[Optional[str], typer.Option(help="Rasterise on this Dask cluster, e.g. tcp://host:8786 "
                                                          "(sets data.scheduler; needs the dask extra).")]


def _data_overrides(set_: list[str] | None, strict: bool, scheduler: str | None) -> tuple[str, ...]:
    """--set values, then what --strict and --scheduler mean in config terms."""
    extra = (("data.strict=true",) if strict else ()) + ((f"data.scheduler={json.dumps(scheduler)}",)
                                                         if scheduler else ())
    return tuple(set_ or ()) + extra


def _config_or_builtin(config: Path | None) -> Path | None:
    """--config, else configs/default.yaml when run from the repo, else the same values built in."""
    if config is not None:
        return config
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


@app.command()
@handle_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_dir: DataDir = Path("data"),
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/CONFIG-TIMESTAMP).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder.")] = None,
    check_gradients: Annotated[bool, typer.Option(help="First check backprop against finite differences.")] = False,
    workers: WorkersOpt = 0,
    scheduler: SchedulerOpt = None,
    strict: StrictOpt = False,
    help_config: Annotated[bool, typer.Option("--help-config", help="Describe every config key and exit.")] = False,
    as_json: JsonOpt = False,
):
    """Train an MLP: fetch missing data, rasterise (cached), split, train, keep the best epoch."""
    from doodle.train import train as run_train

    if help_config:
        _show_config_reference(as_json)
        return

    overrides = _data_overrides(set_, strict, scheduler)
    config = _config_or_builtin(config)
    if check_gradients:
        _gradcheck(config if resume is None else resume / "config.yaml", overrides, max_entries=20, as_json=False)
    with RichReporter(show_epochs=True) as rep:
        result = run_train(None if resume else config, overrides, data_dir=data_dir, out=out_dir, resume=resume,
                           reporter=rep, workers=workers)
    if as_json:
        _print_json(result.to_json())
    else:
        table = Table(title=f"doodle train: {result.run}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        rows = [("classes", str(len(result.classes))), ("layers", " -> ".join(map(str, result.layer_sizes))),
                ("epochs run", str(result.epochs)), ("best epoch", str(result.best_epoch)),
                ("val accuracy", _opt(result.val_accuracy, "{:.2%}")),
                ("test accuracy", _opt(result.test_accuracy, "{:.2%}")),
                ("training speed", f"{result.samples_per_second:,.0f} samples/s")]
        for k, v in rows:
            table.add_row(k, v)
        out.print(table)
    if result.interrupted:
        err.print(f"interrupted: best epoch ({result.best_epoch}) saved in {result.run}")
        raise typer.Exit(130)


def _show_config_reference(as_json: bool) -> None:
    from doodle.config import reference

    keys = reference()
    if as_json:
        _print_json(keys)
        return
    table = Table(title="config keys (configs/*.yaml, or --set section.key=value)")
    for col in ("key", "default", "what it is for"):
        table.add_column(col)
    for k in keys:
        table.add_row(k["key"], json.dumps(k["default"]), k["help"])
    out.print(table)


_AGREEMENTS = {"manual_vs_graph": "manual vs graph", "manual_vs_numeric": "manual vs finite diff.",
               "graph_vs_numeric": "graph vs finite diff."}


def _gradcheck(config, overrides, max_entries, as_json):
    from doodle.gradcheck import TOLERANCES, check_config, passed, worst

    sizes, errors = check_config(config, overrides, max_entries=max_entries)
    ok, worst_of = passed(errors), worst(errors)
    if as_json:
        _print_json({"layer_sizes": sizes, "errors": errors, "worst": worst_of, "tolerances": TOLERANCES,
                     "passed": ok})
    else:
        table = Table(title=f"gradient check {' -> '.join(map(str, sizes))} (float64; worst relative error "
                            f"per tensor; {max_entries} sampled entries for finite differences)")
        table.add_column("parameter")
        for kind, head in _AGREEMENTS.items():
            table.add_column(f"{head}\n(pass < {TOLERANCES[kind]:.0e})", justify="right")
        for name, e in errors.items():
            table.add_row(name, *(_agreement(e[kind], TOLERANCES[kind]) for kind in _AGREEMENTS))
        table.add_row("worst", *(_agreement(worst_of[kind], TOLERANCES[kind]) for kind in _AGREEMENTS), style="bold")
        out.print(table)
    if not ok:
        bad = [f"{_AGREEMENTS[k]} {w:.2e} >= {TOLERANCES[k]:.0e}" for k, w in worst_of.items() if w >= TOLERANCES[k]]
        raise DoodleError(f"gradient check failed: {'; '.join(bad)}", exit_code=1)


def _agreement(e: float | None, tol: float) -> Text:
    if e is None:
        return Text("-", style="dim")  # the graph gives the pixels no gradient
    return Text(f"{e:.1e} {'ok' if e < tol else 'FAIL'}", style="" if e < tol else "red")


@app.command()
@handle_errors
def gradcheck(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    max_entries: Annotated[int, typer.Option(help="Entries checked per parameter tensor.", min=1)] = 20,
    as_json: JsonOpt = False,
):
    """Check backprop three ways on the configured network: hand-written vs autodiff graph vs finite differences."""
    _gradcheck(_config_or_builtin(config), tuple(set_ or ()), max_entries, as_json)


@app.command()
@handle_errors
def graph(
    drawing: Annotated[Optional[str], typer.Argument(help="An .ndjson file (its first drawing) or an image; default: "
                                                          "the first held-out test drawing.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Run folder (default: the newest under runs/).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the drawing.")] = Path("graph.svg"),
    fmt: Annotated[str, typer.Option("--format", help="svg (drawn by doodle) or dot (for Graphviz).")] = "svg",
    label: Annotated[Optional[str], typer.Option(help="The true class when the drawing has none "
                                                       "(default: the network's top guess).")] = None,
    slice_: Annotated[Optional[str], typer.Option("--slice", help="Also plot the loss along one weight: "
                                                                  "LAYER:ROW:COL, or LAYER for its steepest weight "
                                                                  "(written beside --out as NAME.slice.svg).")] = None,
    data_dir: DataDir = Path("data"),
    as_json: JsonOpt = False,
):
    """Draw the computational graph of one drawing's loss after a forward and a backward pass."""
    from doodle.explain import explain

    with RichReporter(show_epochs=False) as rep:
        res = explain(out_path, model_path=model, config_path=config, overrides=tuple(set_ or ()), drawing=drawing,
                      label=label, fmt=fmt, slice_spec=slice_, data_dir=data_dir, reporter=rep)
    if as_json:
        _print_json(res.to_json())
        return
    out.print(f"[bold]{res.network}[/bold]: {res.drawing}, true class '{res.label}' ({res.label_source})")
    for line in res.tree:
        out.print(Text(line))
    out.print(f"loss {res.loss:.4f}; {res.nodes} nodes drawn to {res.out}")
    if res.slice:
        s = res.slice
        out.print(f"{s['weight']} = {s['value']:.4f}: dL/dw = {s['slope']:+.4g}, so gradient descent "
                  f"{s['step']}s it; loss along it drawn to {s['out']}")


@app.command()
@handle_errors
def evaluate(
    data: Annotated[Optional[list[Path]], typer.Argument(help="ndjson or .npy files, or folders of category "
                                                              "sub-folders of images (default: the run's test "
                                                              "split).")] = None,
    model: Annotated[Optional[list[Path]], typer.Option("--model", "-m", help="Run folder (repeat to compare; "
                                                                               "default: the newest in runs/).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where the run's training data is "
                                                                        "(default: where the run recorded it).")]
    = None,
    min_accuracy: Annotated[Optional[float], typer.Option(help="Exit 1 if top-1 accuracy is below this (0-1).",
                                                          min=0, max=1)] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write confusion.png, misclassified.png and "
                                                        "summary.json here.")] = None,
    strict: StrictOpt = False,
    no_calibration: NoCalibrationOpt = False,
    as_json: JsonOpt = False,
):
    """Measure models: top-1/top-3 accuracy, MAP@3, per-class precision/recall/F1, confusions."""
    from doodle.evaluate import evaluate as run_evaluate

    models = list(model or [None])
    summaries = []
    with RichReporter() as rep:
        for i, m in enumerate(models):
            rdir = None if report is None else (report if len(models) == 1 else report / f"model{i + 1}")
            summaries.append(run_evaluate(m, list(data or ()), data_dir=data_dir, report_dir=rdir, reporter=rep,
                                          strict=strict, calibrated=not no_calibration))
    if as_json:
        _print_json(summaries[0] if len(summaries) == 1 else {"models": summaries})
    elif len(summaries) == 1:
        _show_summary(summaries[0])
    else:
        _show_comparison(summaries)
    for s in summaries:
        for p in s["problems"][:10]:
            err.print(Text(f"warning: {p}", style="yellow"))
    if min_accuracy is not None:
        low = [s for s in summaries if s["accuracy"] < min_accuracy]
        for s in low:
            err.print(Text(f"error: {s['model']}: accuracy {s['accuracy']:.4f} is below --min-accuracy "
                           f"{min_accuracy}", style="red"))
        if low:
            raise typer.Exit(1)


def _show_summary(s: dict) -> None:
    head = Table(title=f"doodle evaluate: {s['model']}")
    head.add_column("metric")
    head.add_column("value", justify="right")
    for k, v in (("drawings", f"{s['n']:,}"), ("top-1 accuracy", f"{s['accuracy']:.2%}"),
                 ("top-3 accuracy", f"{s['top3_accuracy']:.2%}"), ("MAP@3", f"{s['map3']:.4f}"),
                 ("macro F1", f"{s['macro_f1']:.4f}"), ("NLL", f"{s['nll']:.4f}"),
                 ("ECE (15 bins)", f"{s['ece']:.2%}"),
                 ("temperature", "1 (raw softmax)" if s["temperature"] == 1.0 else f"{s['temperature']:.3f}"),
                 ("test-time augmentation", s.get("tta", "none"))):
        head.add_row(k, v)
    out.print(head)
    for title, rows in _per_class_tables(s["per_class"]):
        per = Table(title=title)
        for col in ("category", "precision", "recall", "F1", "support"):
            per.add_column(col, justify="left" if col == "category" else "right")
        for name, m in rows:
            per.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
        out.print(per)
    if s["most_confused"]:
        conf = Table(title="most confused (true -> predicted)")
        for col in ("true", "predicted", "count"):
            conf.add_column(col, justify="right" if col == "count" else "left")
        for c in s["most_confused"]:
            conf.add_row(c["true"], c["predicted"], str(c["count"]))
        out.print(conf)
    labels, matrix = s["confusion"]["labels"], s["confusion"]["matrix"]
    if len(labels) <= 20:
        cm = Table(title="confusion matrix (rows: true, columns: predicted)")
        cm.add_column("")
        for lab in labels:
            cm.add_column(lab[:8], justify="right")
        for i, (lab, row) in enumerate(zip(labels, matrix)):
            cm.add_row(lab, *[f"[bold]{v}[/]" if i == j else (str(v) if v else ".") for j, v in enumerate(row)])
        out.print(cm)
    else:
        out.print(f"({len(labels)} classes: the confusion matrix is in --json and --report)")
    if s["unknown_categories"]:
        out.print(Text("not in the model, not scored: " + ", ".join(f"{k} ({v})" for k, v in
                                                                     s["unknown_categories"].items()), style="yellow"))
    if s.get("report"):
        out.print("report: " + ", ".join(s["report"]))


PER_CLASS_ROWS = 30  # more classes than this: the worst and best EXTREMES only (all of them are in --json)
EXTREMES = 10


def _per_class_tables(per_class: dict) -> list[tuple[str, list]]:
    """One 'per class' table, or for many classes the worst and the best by F1 (ties: more drawings first,
    the surer verdict)."""
    rows = list(per_class.items())
    if len(rows) <= PER_CLASS_ROWS:
        return [("per class", rows)]
    worst = sorted(rows, key=lambda r: (r[1]["f1"], -r[1]["support"]))
    best = sorted(rows, key=lambda r: (-r[1]["f1"], -r[1]["support"]))
    return [(f"worst {EXTREMES} of {len(rows)} categories by F1 (all in --json, --report)", worst[:EXTREMES]),
            (f"best {EXTREMES} categories by F1", best[:EXTREMES])]


def _show_comparison(summaries: list[dict]) -> None:
    table = Table(title="doodle evaluate: model comparison")
    for col in ("model", "drawings", "top-1", "top-3", "MAP@3", "macro F1"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for s in summaries:
        table.add_row(s["model"], f"{s['n']:,}", f"{s['accuracy']:.2%}", f"{s['top3_accuracy']:.2%}",
                      f"{s['map3']:.4f}", f"{s['macro_f1']:.4f}")
    out.print(table)


@app.command()
@handle_errors
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Images (png, jpg, gif, bmp, webp), .ndjson files, or - for "
                                                     "ndjson on stdin.")],
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder (default: the newest in "
                                                                        "runs/).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many categories to show.", min=1)] = 3,
    no_calibration: NoCalibrationOpt = False,
    as_json: JsonOpt = False,
):
    """Predict the categories of sketches: one result per image, one per ndjson line."""
    from doodle.predict import predict as run_predict

    results, meta = run_predict(inputs, model_path=model, top_k=top_k, calibrated=not no_calibration)
    failures = [r for r in results if "error" in r and r["error"]]
    if as_json:
        for r in results:
            _print_json(r if r.get("error") else {"input": r["input"], "top": r["top"]})
    else:
        err.print(f"model: {meta['run']} ({len(meta['classes'])} classes)", style="dim")
        for r in results:
            if r.get("error"):
                continue
            table = Table(title=r["input"], title_justify="left")
            table.add_column("category")
            table.add_column("probability", justify="right")
            for t in r["top"]:
                table.add_row(t["category"], f"{t['probability']:.1%}")
            out.print(table)
    for r in failures:
        err.print(Text(f"error: {r['error']}", style="red"))
    if failures:
        raise typer.Exit(1)


@app.command()
@handle_errors
def play(
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder (default: the newest in "
                                                                        "runs/).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback lets other machines "
                                           "in.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free one).", min=0, max=65535)] = 8000,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in the default "
                                                                        "browser.")] = True,
    save_dir: Annotated[Path, typer.Option(help="Saved drawings go to SAVE_DIR/WORD.ndjson (Google's raw "
                                                "format).")] = Path("data/mine"),
):
    """Draw in the browser and watch the network guess, as in Quick, Draw! (Ctrl-C stops)."""
    from doodle.play import serve

    def ready(info: dict) -> None:
        acc = info.get("test_accuracy")
        out.print(f"[bold]doodle play[/] at [link={info['url']}]{info['url']}[/link]")
        out.print(f"model: {info['path']}" + (f" (test accuracy {acc:.1%})" if acc is not None else ""))
        out.print(f"{len(info['categories'])} categories: {', '.join(info['categories'])}", highlight=False)
        out.print(f"drawings saved to: {info['save_dir']}/<word>.ndjson")
        err.print("Ctrl-C stops", style="dim")

    with RichReporter() as rep:
        serve(model, host=host, port=port, save_dir=save_dir, open_browser=open_browser, reporter=rep,
              on_ready=ready)
    err.print("stopped", style="dim")


@app.command()
@handle_errors
def export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx (a standard ONNX graph) or web (a static page that "
                                                            "guesses in the browser, no server).")],
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Run folder (default: the newest in "
                                                                        "runs/).")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="The .onnx file or the web folder (default: "
                                                                         "model.onnx, doodle-web).")] = None,
    quantize: Annotated[Optional[str], typer.Option(help="Web weights as float16 or int8 (one scale per output "
                                                         "unit) instead of float32.")] = None,
    as_json: JsonOpt = False,
):
    """Take a trained model anywhere: an ONNX graph, or a folder for any static host that guesses as you draw;
    either is checked against doodle's own prediction before it is put in place."""
    from doodle.export import export as run_export

    with RichReporter() as rep:
        res = run_export(model, fmt, out_path, quantize=quantize, reporter=rep)
    if as_json:
        _print_json(res)
        return
    table = Table(title=f"doodle export: {res['network']}, {res['classes']} classes -> {res['format']}")
    table.add_column("file")
    table.add_column("size", justify="right")
    for f in res["files"]:
        table.add_row(f["path"], _human_bytes(f["bytes"]))
    table.add_row("[bold]total[/]", f"[bold]{_human_bytes(res['bytes'])}[/] ({res['weights']} weights)")
    out.print(table)
    for c in res["checks"]:
        if c.get("skipped"):
            out.print(Text(f"check {c['check']}: skipped ({c['skipped']})", style="yellow"))
        elif "max_abs_diff" in c:
            out.print(f"check {c['check']}: max |probability difference| from doodle's own prediction "
                      f"{c['max_abs_diff']:.1e} on {c['drawings']} drawings, same top-1 on {c['same_top1']}")
        else:
            out.print(f"check {c['check']}: passed")
    views = f"'{res['tta']}' ({res['tta_views']} views, mean of logits)" if res["tta_views"] else "none"
    where = "inside the graph" if res["format"] == "onnx" else "in the page's JavaScript"
    out.print(f"test-time augmentation {views}: {where}; temperature {res['temperature']:.4g} applied: "
              "the probabilities are what `doodle predict` prints")
    if res["format"] == "web":
        out.print(f"serve it from any static host, e.g. python -m http.server -d {res['out']}")


@app.command()
@handle_errors
def cache(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_dir: DataDir = Path("data"),
    workers: WorkersOpt = 0,
    scheduler: SchedulerOpt = None,
    strict: StrictOpt = False,
    as_json: JsonOpt = False,
):
    """Fetch and rasterise a config's categories into DATA_DIR/cache without training (streaming, resumable,
    one category per core or per Dask worker); `doodle train` then starts from the finished cache."""
    from doodle.dataset import prepare

    with RichReporter() as rep:
        info = prepare(_config_or_builtin(config), _data_overrides(set_, strict, scheduler), data_dir=data_dir,
                       reporter=rep, workers=workers)
    if as_json:
        _print_json(info)
        return
    table = Table(title=f"doodle cache: {info['cache']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in (("categories", f"{info['categories']:,}"), ("drawings", f"{info['drawings']:,}"),
                 ("bitmaps", _human_bytes(info["bytes"])), ("time", f"{info['seconds']:.1f} s")):
        table.add_row(k, v)
    out.print(table)


def main():  # pragma: no cover - entry point for `python -m doodle`
    app()
