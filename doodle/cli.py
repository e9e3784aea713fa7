"""The `doodle` command line: parse options, call one library function, show its progress and results.

Progress bars and logs go to stderr; results (tables, or JSON with --json) go to stdout, so scripts
can pipe them. A user mistake prints one line `error: ...` and exits non-zero, never a traceback.

Start-up is part of the interface (a script may call `doodle predict` once per file, a shell calls the
completion on every TAB): this module imports only typer and the standard library; each command imports
the library modules it calls, and Rich (doodle.cli_output) only when it draws with it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, get_args, get_origin

import typer

from doodle import __version__
from doodle.errors import DoodleError

if TYPE_CHECKING:  # mypy checks against one of the two: the click that typer vendors
    from typer._click.exceptions import BadParameter, NoArgsIsHelpError, UsageError
else:
    try:  # typer >= 0.22 vendors click
        from typer._click.exceptions import BadParameter, NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on the click package
        from click.exceptions import BadParameter, UsageError
        try:
            from click.exceptions import NoArgsIsHelpError
        except ImportError:
            NoArgsIsHelpError = ()


def _error(message: str) -> None:
    from doodle.cli_output import error

    error(message)


class _OneLineUsageErrors(typer.core.TyperGroup):
    """Usage mistakes (`--top-k 0`, an unknown option, a missing argument) as one `error: ...` line on stderr
    and exit 2, like every other user mistake, instead of click's usage box. In the group, so it holds for
    the console script, `python -m doodle` and typer's CliRunner alike. The group also gives its own and its
    commands' parameters their plain conversions (_plain_values)."""

    def make_context(self, *args, **kwargs):
        _plain_values(self.params)  # typer adds the completion options after __init__: here they are all
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage_errors():
            return super().invoke(ctx)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)  # made on first use, after make_context's _plain_values
        _plain_values([option])
        return option

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:
            _plain_values([*cmd.params, cmd.get_help_option(ctx)])
        return name, cmd, rest


@contextlib.contextmanager
def _one_line_usage_errors():
    try:
        yield
    except UsageError as exc:
        if isinstance(exc, NoArgsIsHelpError):
            raise  # bare `doodle` or `doodle download` without words: the help is the answer
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        message = " ".join(exc.format_message().split())  # click's messages may span lines
        _error(f"{message}{where}")
        raise typer.Exit(exc.exit_code) from None


class _Plain:
    """One parameter's conversion from the command line, without pydantic.

    Typer (0.2x) converts every non-flag value through a pydantic TypeAdapter, built when the command is
    parsed: importing pydantic and building the adapters costs about 0.1 s, more than numpy's import, on
    every call of every command (a `doodle predict` in a loop, each TAB of a shell completion). doodle's
    parameters are str, int, float and Path (optional, or lists of them), which need none of it; anything
    else keeps typer's own conversion. (Flags are bools already; typer converts them only when unset.)"""

    def __init__(self, kind: type, lo=None, hi=None):
        self.kind, self.lo, self.hi = kind, lo, hi

    def coerce(self, value, param, ctx):
        many = param.multiple or param.nargs == -1
        if value is None:
            return () if many else None
        return [self.one(v, param, ctx) for v in value] if many else self.one(value, param, ctx)

    def one(self, value, param, ctx):
        if self.kind in (int, float):
            try:
                number = self.kind(value)
            except (TypeError, ValueError):
                what = "a whole number" if self.kind is int else "a number"
                raise BadParameter(f"{value!r} is not {what}", ctx=ctx, param=param) from None
            if number != number:  # NaN passes every comparison
                raise BadParameter(f"{value!r} is not a number", ctx=ctx, param=param)
            if self.lo is not None and number < self.lo:
                raise BadParameter(f"{value} is below the smallest allowed value, {self.lo}", ctx=ctx, param=param)
            if self.hi is not None and number > self.hi:
                raise BadParameter(f"{value} is above the largest allowed value, {self.hi}", ctx=ctx, param=param)
            return number
        return self.kind(value)


_PLAIN_KINDS = (str, int, float, Path, bool)


def _plain_values(params) -> None:
    """Give str/int/float/Path/bool parameters a _Plain conversion (typer builds its own only when first
    used, so the one given here is the one used). Typer versions without these hooks are left alone."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            continue
        kind = descriptor.annotation
        if get_origin(kind) is list:
            (kind,) = get_args(kind)
        if kind in _PLAIN_KINDS and getattr(descriptor.parameter_info, "parser", None) is None:
            info = descriptor.parameter_info
            param._runtime_param = _Plain(kind, info.min, info.max)


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"doodle {__version__}\n")
        raise typer.Exit()


# rich_markup_mode=None: click's help layout, which reads well at 80 columns (Rich's help panel gives the
# text ~20 columns there and cuts defaults), and `--help` loads no Rich.
app = typer.Typer(help="Learn to recognise Google Quick, Draw! doodles with a hand-written numpy MLP.",
                  no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, cls=_OneLineUsageErrors)


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                                help="Print doodle's version and exit.")] = False):
    """doodle's own options, before the command (typer shows the app's help, not this)."""


DataDir = Annotated[Path, typer.Option("--data-dir", metavar="DIR", help="Where downloads and caches live.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
NoCalibrationOpt = Annotated[bool, typer.Option("--no-calibration", help="Show the raw softmax probabilities instead "
                                                                         "of the temperature-calibrated ones.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Stop at the first bad ndjson line instead of skipping "
                                                             "and counting it.")]
ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", metavar="RUN",
                                                  help="Run folder (default: the newest in runs/).")]


def handle_errors(fn):
    """One line on stderr and a non-zero exit for user mistakes; 130 on Ctrl-C."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DoodleError as exc:
            _error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            from doodle.cli_output import err

            err.print("interrupted", style="red")
            raise typer.Exit(130) from None
        except OSError as exc:  # the library names its files; this is the net for anything it did not foresee
            if exc.errno == errno.EPIPE:
                raise  # stdout closed by `| head`: typer exits quietly
            where = f"{exc.filename}: " if exc.filename else ""
            _error(f"{where}{exc.strerror or exc}")
            raise typer.Exit(1) from None
    return wrapper


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


@app.command(short_help="Print the 345 Quick, Draw! category names.")
@handle_errors
def categories(as_json: JsonOpt = False):
    """Print the 345 Quick, Draw! category names."""
    from doodle.categories import CATEGORIES

    if as_json:
        _print_json(list(CATEGORIES))
    else:
        sys.stdout.write("\n".join(CATEGORIES) + "\n")


@app.command(short_help="Fetch Quick, Draw! files (resumable), or --synthetic shapes.")
@handle_errors
def download(
    words: Annotated[Optional[list[str]], typer.Argument(metavar="WORDS", help="Category names, e.g. cat "
                                                                                "\"alarm clock\".")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT",
                                     help="simplified, raw or numpy_bitmap.")] = "simplified",
    max_drawings: Annotated[Optional[int], typer.Option(metavar="N", min=1, help="Stop after N drawings per file "
                                                                                  "(no full download).")] = None,
    data_dir: DataDir = Path("data"),
    base_url: Annotated[Optional[str], typer.Option(metavar="URL", help="Mirror base URL (default $DOODLE_BASE_URL "
                                                                        "or Google's bucket); file:// works.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if the file is complete.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="All 345 categories.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", metavar="N", min=1, max=32,
                                      help="Files fetched at once (parallel connections).")] = 4,
    retries: Annotated[int, typer.Option(metavar="N", min=0, help="Retries per file after a dropped connection or "
                                                                  "a 5xx.")] = 4,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Write the built-in synthetic shapes instead (no "
                                                                "network).")] = False,
    as_json: JsonOpt = False,
):
    """Download Quick, Draw! files into DATA_DIR/FORMAT/WORD.EXT (resumable; complete files are skipped)."""
    if synthetic:
        _download_synthetic(words, max_drawings, data_dir, as_json)
        return
    from doodle.categories import CATEGORIES
    from doodle.cli_output import RichReporter, Table, Text, err, out, titled
    from doodle.cli_output import human_bytes as _human_bytes
    from doodle.download import OFFLINE_HINT
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
    elif len(results) <= _DOWNLOAD_ROWS:  # the files are WORD.EXT in one folder: the title names it
        table, title = Table(), f"doodle download ({fmt}) into {data_dir / fmt}"
        for col in ("category", "status", "drawings", "size", "time"):
            table.add_column(col, justify="right" if col in ("drawings", "size", "time") else "left")
        for r in results:
            style = {"failed": "red", "skipped": "dim"}.get(r.status, "")
            table.add_row(r.word, r.status, "-" if r.drawings is None else f"{r.drawings:,}", _human_bytes(r.bytes),
                          f"{r.seconds:.1f}s", style=style)
        out.print(titled(title, table))
    else:  # hundreds of files: one row per outcome
        table, title = Table(), f"doodle download ({fmt}): {len(results)} files in {data_dir / fmt}"
        for col in ("status", "files", "drawings", "size"):
            table.add_column(col, justify="left" if col == "status" else "right")
        for status in ("downloaded", "resumed", "skipped", "failed"):
            rows = [r for r in results if r.status == status]
            if rows:
                known = [r.drawings for r in rows if r.drawings is not None]
                table.add_row(status, f"{len(rows):,}", f"{sum(known):,}" if known else "-",
                              _human_bytes(sum(r.bytes for r in rows)), style="red" if status == "failed" else "")
        out.print(titled(title, table))
    by_reason: dict[str, list] = {}
    for r in failed:
        by_reason.setdefault(r.reason or "", []).append(r)
    for reason, rows in by_reason.items():  # one line per cause, naming the files
        if len(rows) == 1:
            err.print(Text(f"error: {rows[0].error}", style="red"))
        else:
            names = ", ".join(r.word for r in rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
            err.print(Text(f"error: {len(rows)} files failed: {reason}: {names}", style="red"))
    if any(r.unreachable for r in failed):
        err.print(OFFLINE_HINT, style="yellow", markup=False)
    if failed:
        kept = "; the others are complete and kept" if len(failed) < len(results) else ""
        err.print(f"{len(failed)} of {len(results)} files failed{kept}: run the same command again to retry "
                  f"(complete files are not fetched again)", style="dim")
        raise typer.Exit(1)


_DOWNLOAD_ROWS = 20  # more files than this: a summary by outcome instead of a row each


def _download_synthetic(words, max_drawings, data_dir, as_json):
    from doodle.cli_output import RichReporter, Table, out, titled
    from doodle.synthetic import SHAPES, write_synthetic

    words = list(words or SHAPES)
    n = max_drawings or 1000
    with RichReporter() as rep:
        paths = write_synthetic(data_dir, words=words, n=n, seed=0, reporter=rep)
    if as_json:
        _print_json([{"word": w, "format": "synthetic", "path": str(p), "drawings": n} for w, p in zip(words, paths)])
    else:
        table = Table()
        for col in ("category", "drawings"):
            table.add_column(col, justify="right" if col == "drawings" else "left")
        for w in words:
            table.add_row(w, f"{n:,}")
        out.print(titled(f"doodle download --synthetic into {data_dir / 'synthetic'} (procedurally drawn shapes, "
                         "not Google data)", table))


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", metavar="FILE",
                                                   help="YAML config (see configs/).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                     help="Override a key, e.g. --set train.lr=0.01 (repeatable).")]


DEFAULT_CONFIG = Path("configs/default.yaml")
WorkersOpt = Annotated[int, typer.Option(metavar="N", help="Processes for rasterising (0 = all cores).", min=0)]
SchedulerOpt = Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Rasterise on this Dask cluster, e.g. "
                                                                            "tcp://host:8786 (sets data.scheduler; "
                                                                            "needs the dask extra).")]


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


@app.command(short_help="Train an MLP from a config; keep the best epoch.")
@handle_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", metavar="DIR", help="Where downloads and caches "
                                                    "live (default data; with --from, RUN's).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR",
                                                    help="Run folder (default runs/CONFIG-TIMESTAMP).")] = None,
    resume: Annotated[Optional[Path], typer.Option(metavar="RUN", help="Continue the run in this folder.")] = None,
    from_run: Annotated[Optional[Path], typer.Option("--from", metavar="RUN", help="Extend this trained run with new "
                                                     "words: --set data.local=[data/mine] or data.categories=[...].")
                        ] = None,
    check_gradients: Annotated[bool, typer.Option("--check-gradients", help="First check backprop against finite "
                                                                            "differences.")] = False,
    workers: WorkersOpt = 0,
    scheduler: SchedulerOpt = None,
    strict: StrictOpt = False,
    help_config: Annotated[bool, typer.Option("--help-config", help="Describe every config key and exit.")] = False,
    as_json: JsonOpt = False,
):
    """Train an MLP: fetch missing data, rasterise (cached), split, train, keep the best epoch."""
    if help_config:
        _show_config_reference(as_json)
        return
    from doodle.checkpoint import read_meta, resolve_model_path
    from doodle.cli_output import RichReporter, err, show_train
    from doodle.train import train as run_train

    overrides = _data_overrides(set_, strict, scheduler)
    config = _config_or_builtin(config) if from_run is None else config
    if check_gradients:
        run = resume or from_run  # its network
        _gradcheck(config if run is None else run / "config.yaml", overrides, max_entries=20, as_json=False)
    with RichReporter(show_epochs=True) as rep:
        result = run_train(None if resume else config, overrides, data_dir=data_dir, out=out_dir, resume=resume,
                           reporter=rep, workers=workers, from_run=from_run)
    if as_json:
        _print_json(result.to_json())
    else:
        newest = None  # the run `--model` may leave out; another one: the next steps name this run
        with contextlib.suppress(DoodleError):
            newest = resolve_model_path(None)
        show_train(result, read_meta(result.run)["metrics"], newest)
    if result.interrupted:
        err.print(f"interrupted: best epoch ({result.best_epoch}) saved in {result.run}")
        raise typer.Exit(130)


def _show_config_reference(as_json: bool) -> None:
    from doodle.config import reference

    keys = reference()
    if as_json:
        _print_json(keys)
        return
    from doodle.cli_output import show_config_reference

    show_config_reference(keys)


def _gradcheck(config, overrides, max_entries, as_json):
    from doodle.cli_output import AGREEMENTS, show_gradcheck
    from doodle.gradcheck import TOLERANCES, check_config, passed, worst

    sizes, errors = check_config(config, overrides, max_entries=max_entries)
    ok, worst_of = passed(errors), worst(errors)
    if as_json:
        _print_json({"layer_sizes": sizes, "errors": errors, "worst": worst_of, "tolerances": TOLERANCES,
                     "passed": ok})
    else:
        show_gradcheck(sizes, errors, worst_of, TOLERANCES, max_entries)
    if not ok:
        bad = [f"{AGREEMENTS[k]} {w:.2e} >= {TOLERANCES[k]:.0e}" for k, w in worst_of.items() if w >= TOLERANCES[k]]
        raise DoodleError(f"gradient check failed: {'; '.join(bad)}", exit_code=1)


@app.command(short_help="Check backprop against autodiff and finite differences.")
@handle_errors
def gradcheck(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    max_entries: Annotated[int, typer.Option(metavar="N", help="Entries checked per parameter tensor.", min=1)] = 20,
    as_json: JsonOpt = False,
):
    """Check backprop three ways on the configured network: hand-written vs autodiff graph vs finite differences."""
    _gradcheck(_config_or_builtin(config), tuple(set_ or ()), max_entries, as_json)


@app.command(short_help="Draw the autodiff graph of one drawing's loss.")
@handle_errors
def graph(
    drawing: Annotated[Optional[str], typer.Argument(metavar="DRAWING", help="An .ndjson file (its first drawing) or "
                                                                             "an image; default: the first held-out "
                                                                             "test drawing.")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out_path: Annotated[Path, typer.Option("--out", "-o", metavar="FILE",
                                           help="Where to write the drawing.")] = Path("graph.svg"),
    fmt: Annotated[str, typer.Option("--format", metavar="svg|dot",
                                     help="svg (drawn by doodle) or dot (for Graphviz).")] = "svg",
    label: Annotated[Optional[str], typer.Option(metavar="CATEGORY", help="The true class when the drawing has "
                                                                          "none (default: the network's top "
                                                                          "guess).")] = None,
    slice_: Annotated[Optional[str], typer.Option("--slice", metavar="LAYER[:ROW:COL]",
                                                  help="Also plot the loss along one weight: LAYER:ROW:COL, or LAYER "
                                                       "for its steepest weight (written beside --out as "
                                                       "NAME.slice.svg).")] = None,
    data_dir: DataDir = Path("data"),
    as_json: JsonOpt = False,
):
    """Draw the computational graph of one drawing's loss after a forward and a backward pass."""
    from doodle.cli_output import RichReporter, Text, out
    from doodle.lossgraph import draw_loss_graph

    with RichReporter(show_epochs=False) as rep:
        res = draw_loss_graph(out_path, model_path=model, config_path=config, overrides=tuple(set_ or ()),
                              drawing=drawing, label=label, fmt=fmt, slice_spec=slice_, data_dir=data_dir, reporter=rep)
    if as_json:
        _print_json(res.to_json())
        return
    head = Text(res.network, style="bold")
    drawing = res.drawing.removeprefix(f"{res.network} ")  # "RUN test split, first drawing" after "RUN: "
    head.append(f": {drawing}, true class '{res.label}' ({res.label_source})", style="")
    out.print(head)
    for line in res.tree:
        out.print(Text(line, no_wrap=True))  # graphdraw fits each line in 80 columns, with its tree guides
    out.print(Text(f"loss {res.loss:.4f}; {res.nodes} nodes drawn to {res.out}"))
    if res.slice:
        s = res.slice
        out.print(Text(f"{s['weight']} = {s['value']:.4f}: dL/dw = {s['slope']:+.4g}, so gradient descent "
                       f"{s['step']}s it; loss along it drawn to {s['out']}"))


@app.command(short_help="Why did it guess that? Saliency and strokes, drawn to a PNG.")
@handle_errors
def explain(
    drawing: Annotated[Optional[str], typer.Argument(metavar="DRAWING", help="An image, an .ndjson file (its first "
                                                                             "drawing) or - for ndjson on stdin, as "
                                                                             "for predict.")] = None,
    model: ModelOpt = None,
    cls: Annotated[Optional[str], typer.Option("--class", metavar="CATEGORY", help="Explain this class instead of "
                                                                                   "the top guess.")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE",
                                                     help="Where to draw the picture (PNG; default explain.png, or "
                                                          "units.png with --units).")] = None,
    units: Annotated[bool, typer.Option("--units", help="Instead of a drawing: what the network learned (the "
                                                        "first-layer templates of its most important units, a "
                                                        "template per class), on the run's test split.")] = False,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", metavar="DIR",
                                                     help="With --units: where the run's data is (default: where "
                                                          "the run recorded it).")] = None,
    as_json: JsonOpt = False,
):
    """Why did the network guess that? Saliency, stroke attribution and the runner-up for one drawing (or, with
    --units, what the first layer learned), drawn to a PNG."""
    from doodle.cli_output import RichReporter, show_explanation, show_units
    from doodle.explain import explain as run_explain
    from doodle.explain import explain_units

    if units:
        if drawing is not None or cls is not None:
            raise DoodleError("--units explains the network, not a drawing: give either DRAWING [--class WORD] "
                              "or --units")
        with RichReporter(show_epochs=False) as rep:
            res = explain_units(model, out=out_path or Path("units.png"), data_dir=data_dir, reporter=rep)
        if as_json:
            _print_json(res.to_json())
        else:
            show_units(res.to_json())
        return
    if drawing is None:
        raise DoodleError("give a DRAWING to explain (an image, an .ndjson file or - for standard input), "
                          "or --units for what the network learned")
    explanation = run_explain(drawing, out=out_path or Path("explain.png"), model_path=model, cls=cls)
    if as_json:
        _print_json(explanation.to_json())
    else:
        show_explanation(explanation.to_json())


@app.command(short_help="Score models: accuracy, MAP@3, per-class F1, confusions.")
@handle_errors
def evaluate(
    data: Annotated[Optional[list[Path]], typer.Argument(metavar="DATA", help="ndjson or .npy files, or folders of "
                                                                              "category sub-folders of images "
                                                                              "(default: the run's test "
                                                                              "split).")] = None,
    model: Annotated[Optional[list[Path]], typer.Option("--model", "-m", metavar="RUN",
                                                        help="Run folder (repeat to compare; default: the newest in "
                                                             "runs/).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", metavar="DIR",
                                                     help="Where the run's training data is (default: where the run "
                                                          "recorded it).")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option(metavar="FRACTION", min=0, max=1,
                                                          help="Exit 1 if top-1 accuracy is below this (0-1).")] = None,
    report: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Write confusion.png, misclassified.png, "
                                                                       "reliability.png, curves.png (the run's "
                                                                       "learning curves) and summary.json "
                                                                       "into DIR.")] = None,
    strict: StrictOpt = False,
    no_calibration: NoCalibrationOpt = False,
    as_json: JsonOpt = False,
):
    """Measure models: top-1/top-3 accuracy, MAP@3, per-class precision/recall/F1, confusions."""
    from doodle.cli_output import RichReporter, Text, err, show_comparison, show_evaluation, show_problems
    from doodle.evaluate import evaluate as run_evaluate

    models: list[Path | None] = list(model) if model else [None]
    summaries = []
    with RichReporter() as rep:
        for i, m in enumerate(models):
            rdir = None if report is None else (report if len(models) == 1 else report / f"model{i + 1}")
            summaries.append(run_evaluate(m, list(data or ()), data_dir=data_dir, report_dir=rdir, reporter=rep,
                                          strict=strict, calibrated=not no_calibration))
    if as_json:
        _print_json(summaries[0] if len(summaries) == 1 else {"models": summaries})
    elif len(summaries) == 1:
        show_evaluation(summaries[0])
    else:
        show_comparison(summaries)
    show_problems([p for s in summaries for p in s["problems"]])
    if min_accuracy is not None:
        low = [s for s in summaries if s["accuracy"] < min_accuracy]
        for s in low:
            err.print(Text(f"error: {s['model']}: accuracy {s['accuracy']:.4f} is below --min-accuracy "
                           f"{min_accuracy}", style="red"))
        if low:
            raise typer.Exit(1)


@app.command(short_help="Guess the category of sketches: images or ndjson drawings.")
@handle_errors
def predict(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUTS", help="Images (png, jpg, gif, bmp, webp), .ndjson "
                                                                       "or .npy files, folders of them, or - for "
                                                                       "ndjson on stdin.")],
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", metavar="N", min=1, help="How many categories to show.")] = 3,
    no_calibration: NoCalibrationOpt = False,
    as_json: JsonOpt = False,
):
    """Predict the categories of sketches: one result per image, per ndjson line, per .npy row."""
    from doodle.predict import predict as run_predict  # no Rich here: this command's start-up is the budget

    results, meta = run_predict(inputs, model_path=model, top_k=top_k, calibrated=not no_calibration)
    failures = [r for r in results if "error" in r and r["error"]]
    if as_json:
        for r in results:
            _print_json(r if r.get("error") else {k: r[k] for k in ("input", "word", "top") if k in r})
    else:
        shown = [r for r in results if not r.get("error")]
        sys.stderr.write(f"model: {meta['run']} ({len(meta['classes'])} classes)\n")
        sys.stdout.write("".join(line + "\n" for line in _prediction_lines(shown, shutil.get_terminal_size().columns)))
        sys.stdout.flush()
        worded = [r for r in shown if r.get("word")]
        if len(worded) > 1:
            right = sum(r["top"][0]["category"] == r["word"] for r in worded)
            sys.stderr.write(f"top guess right for {right} of {len(worded)} drawings that carry their word "
                             f"({right / len(worded):.1%})\n")
    for r in failures:
        _error(r["error"])
    if failures:
        raise typer.Exit(1)


def _some_names(head: str, names: list[str], width: int) -> str:
    """head + as many names as fit in `width` columns, then how many more (all of them when they fit)."""
    text = head + ", ".join(names)
    if len(text) <= width:
        return text
    for n in range(len(names) - 1, 0, -1):
        text = f"{head}{', '.join(names[:n])}, ... (+{len(names) - n} more)"
        if len(text) <= width:
            return text
    return f"{head}... ({len(names)})"


def _prediction_lines(results: list[dict], width: int) -> list[str]:
    """One line per prediction: a ✓ or ✗ when the drawing carries its word, the input, then its top guesses
    in aligned columns; guesses that would pass `width` continue below the first one, and an input name too
    long for its column gets a line of its own."""
    if not results:
        return []
    marks = any(r.get("word") for r in results)
    k = max(len(r["top"]) for r in results)
    cells = [[f"{t['category']} {t['probability']:.1%}" for t in r["top"]] for r in results]
    cols = [max(len(row[j]) for row in cells if j < len(row)) for j in range(k)]
    name_w = min(max(len(r["input"]) for r in results), max(16, width // 3))
    lead = (2 if marks else 0) + name_w
    lines = []
    for r, row in zip(results, cells):
        word = r.get("word")
        mark = ("" if not marks else "  " if not word else "✓ " if r["top"][0]["category"] == word else "✗ ")
        line = f"{mark}{r['input']:<{name_w}}"
        if len(r["input"]) > name_w:
            lines.append(line)
            line = " " * lead
        if word and all(t["category"] != word for t in r["top"]):
            row = row + [f"(true: {word})"]
        for j, cell in enumerate(row):
            piece = "  " + cell.ljust(cols[j] if j < k else 0)
            if len(line) > lead and len(line) + len(piece.rstrip()) > width:
                lines.append(line.rstrip())
                line = " " * lead
            line += piece
        lines.append(line.rstrip())
    return lines


@app.command(short_help="Draw in the browser while the network guesses.")
@handle_errors
def play(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on; anything but loopback lets "
                                                              "other machines in.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="N", min=0, max=65535, help="Port (0 = any free one).")] = 8000,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in the default "
                                                                        "browser.")] = True,
    save_dir: Annotated[Path, typer.Option(metavar="DIR", help="Saved drawings go to DIR/WORD.ndjson (Google's raw "
                                                               "format).")] = Path("data/mine"),
):
    """Draw in the browser and watch the network guess, as in Quick, Draw! (Ctrl-C stops)."""
    from doodle.cli_output import RichReporter, Text, err, link, out
    from doodle.play import serve

    def ready(info: dict) -> None:
        acc = info.get("test_accuracy")
        out.print(Text.assemble(("doodle play", "bold"), " at ", link(info["url"])))
        for url in info.get("lan_urls", []):
            out.print(Text.assemble("  other devices: ", link(url)))
        out.print(f"model: {info['path']}" + (f" (test accuracy {acc:.1%})" if acc is not None else ""))
        out.print(_some_names(f"{len(info['categories'])} categories: ", info["categories"], out.width),
                  highlight=False)
        out.print(f"drawings saved to: {info['save_dir']}/<word>.ndjson")
        err.print("Ctrl-C stops", style="dim")

    with RichReporter() as rep:
        serve(model, host=host, port=port, save_dir=save_dir, open_browser=open_browser, reporter=rep,
              on_ready=ready)
    err.print("stopped", style="dim")


@app.command(short_help="Take a model anywhere: ONNX, or a web page with no server.")
@handle_errors
def export(
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT",
                                     help="onnx (a standard ONNX graph) or web (a folder for any static host that "
                                          "guesses in the browser).")],
    model: ModelOpt = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="PATH",
                                                     help="The .onnx file or the web folder (default: model.onnx, "
                                                          "doodle-web).")] = None,
    quantize: Annotated[Optional[str], typer.Option(metavar="PRECISION",
                                                    help="Web weights as float16 or int8 (one scale per output "
                                                         "unit) instead of float32.")] = None,
    as_json: JsonOpt = False,
):
    """Export a trained model: an ONNX graph, or a static web page that guesses as you draw; either is checked
    against doodle's own prediction before it is put in place."""
    from doodle.cli_output import RichReporter, Table, Text, human_bytes, out, titled
    from doodle.export import export as run_export

    with RichReporter() as rep:
        res = run_export(model, fmt, out_path, quantize=quantize, reporter=rep)
    if as_json:
        _print_json(res)
        return
    table = Table()
    table.add_column("file")
    table.add_column("size", justify="right")
    for f in res["files"]:
        table.add_row(Path(f["path"]).name, human_bytes(f["bytes"]))
    table.add_row(Text(f"total ({res['weights']} weights)", style="bold"),
                  Text(human_bytes(res["bytes"]), style="bold"))
    out.print(titled(f"doodle export ({res['format']}): {res['network']}, {res['classes']} classes -> {res['out']}",
                     table))
    for c in res["checks"]:
        if c.get("skipped"):
            out.print(Text(f"check {c['check']}: skipped ({c['skipped']})", style="yellow"))
        elif "max_abs_diff" in c:
            out.print(f"check {c['check']}: max |dp| {c['max_abs_diff']:.1e} from doodle's, same top-1 "
                      f"{c['same_top1']}/{c['drawings']}")
        else:
            out.print(f"check {c['check']}: passed")
    views = f"{res['tta']} ({res['tta_views']} views)" if res["tta_views"] else "none"
    where = "inside the graph" if res["format"] == "onnx" else "in the page's JavaScript"
    out.print(f"{where}: TTA {views}, temperature {res['temperature']:.4g};\nthe probabilities are the ones "
              "`doodle predict` prints")
    if res["format"] == "web":
        out.print(f"serve it from any static host, e.g. python -m http.server -d {res['out']}")


@app.command(short_help="Rasterise a config's categories ahead of training.")
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
    from doodle.cli_output import RichReporter, figures, human_bytes, out
    from doodle.dataset import prepare

    with RichReporter() as rep:
        info = prepare(_config_or_builtin(config), _data_overrides(set_, strict, scheduler), data_dir=data_dir,
                       reporter=rep, workers=workers)
    if as_json:
        _print_json(info)
        return
    out.print(figures(f"doodle cache: {info['cache']}", (
        ("categories", f"{info['categories']:,}"), ("drawings", f"{info['drawings']:,}"),
        ("bitmaps", human_bytes(info["bytes"])), ("time", f"{info['seconds']:.1f} s"))))


def main():  # pragma: no cover - entry point for `python -m doodle`
    app()
