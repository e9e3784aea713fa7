"""How the `doodle` command line shows things: Rich consoles that never read markup, the progress line on
stderr, and the result tables that fit an 80-column terminal.

Only doodle.cli imports this module, and only in the commands that draw with Rich: `doodle predict`,
`--version` and shell completion never load Rich (its import costs about as much as numpy's).
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import TypedDict

from rich.console import Console, Group
from rich.progress import Progress, ProgressColumn
from rich.style import Style
from rich.table import Table
from rich.text import Text

from doodle.progress import Reporter


class _Plain(TypedDict):
    """The Console keywords every console here shares (typed, so that **_PLAIN type-checks)."""

    markup: bool
    emoji: bool
    highlight: bool


# What users and files supply (paths, category names, config values, messages from servers) is printed as
# it is: markup=False, so "[/x]" in a path is text and not a closing tag; emoji=False, so ":cat:" stays
# two colons and a word; highlight=False, so nothing is recoloured by guesswork. Styles come only from Text
# and style= arguments, which interpret nothing.
_PLAIN: _Plain = {"markup": False, "emoji": False, "highlight": False}
out = Console(**_PLAIN)  # results: prose wraps at spaces, tables fit the width
err = Console(stderr=True, soft_wrap=True, **_PLAIN)  # progress, logs, errors: one line each, never wrapped


def error(message: str) -> None:
    """The one-line `error: ...` of a user mistake, on stderr."""
    err.print(Text(f"error: {message}", style="red"))


def warning(message: str) -> None:
    """A warning on stderr: wrapped at spaces on a terminal, one line for a log file or a script."""
    err.print(Text(f"warning: {message}", style="yellow"), soft_wrap=not err.is_terminal)


def note(message: str) -> None:
    """A quiet line on stderr (which model, what to do next)."""
    err.print(Text(message, style="dim"))


def link(url: str) -> Text:
    """A URL that terminals can open with a click (a style, not markup: "[::1]" in it stays as it is)."""
    return Text(url, style=Style(link=url))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def fit_names(head: str, names: list[str], width: int) -> str:
    """head + as many names as fit in `width` columns + how many more (all of them when they fit)."""
    text = head + ", ".join(names)
    for n in range(len(names) - 1, -1, -1):
        if len(text) <= width:
            break
        text = f"{head}{', '.join(names[:n])}{', ' if n else ''}and {len(names) - n:,} more"
    return text


# --- the progress line ------------------------------------------------------------------------------------

_FIELDS = {  # a live figure from the library -> its text on the progress line
    "sps": lambda v: f"{_short(v)} samples/s",
    "acc": lambda v: f"acc {v:.1%}",
    "received": lambda v: f"{human_bytes(v)} received",
    "rate": lambda v: f"{human_bytes(v)}/s",
    "failed": lambda v: f"{v} failed",
}
MIN_BAR = 10  # cells; below this the bar says nothing, so figures give way first
MAX_BAR = 40
MAX_DESCRIPTION = 28


def _short(v: float) -> str:
    """12,345 -> 12.3k: a speed in five characters."""
    return f"{v:,.0f}" if v < 10_000 else f"{v / 1000:,.1f}k" if v < 1e6 else f"{v / 1e6:,.1f}M"


def _field(k: str, v) -> str:
    if k in _FIELDS:
        return _FIELDS[k](v)
    return f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def progress_line(description: str, completed: float, total: float | None, unit: str, fields: dict,
                  remaining: float | None, speed: float | None, width: int) -> Text:
    """One task as one line of at most `width` cells: description, bar, amount, time left, live figures.
    The bar takes the room the figures leave; when it would be narrower than MIN_BAR, the unit, then the
    time left, then the bar itself give way, and the figures are cut last."""
    if len(description) > MAX_DESCRIPTION:
        description = description[:MAX_DESCRIPTION - 1] + "…"
    if unit == "bytes":
        amount = f"{human_bytes(completed)}/{human_bytes(total) if total else '?'}"
        short_amount = amount
        if speed:
            amount += f" {human_bytes(speed)}/s"
    else:
        short_amount = f"{completed:,.0f}/{'?' if total is None else f'{total:,.0f}'}"
        amount = f"{short_amount} {unit}".rstrip()
    info = " ".join(_field(k, v) for k, v in fields.items())
    for amt, eta in ((amount, _clock(remaining)), (short_amount, _clock(remaining)), (short_amount, "")):
        parts = [p for p in (amt, eta, info) if p]
        bar = width - len(description) - sum(len(p) + 1 for p in parts) - 1
        if bar >= MIN_BAR:
            break
    bar = min(bar, MAX_BAR)
    line = Text(description)
    if bar >= MIN_BAR:
        done = round(bar * min(completed / total, 1.0)) if total else 0
        line.append(" ")
        line.append("━" * done, style="bar.finished" if total and completed >= total else "bar.complete")
        line.append("━" * (bar - done), style="bar.back")
    for p in parts:
        line.append(" ")
        line.append(p, style="progress.remaining" if p == eta else "")
    line.truncate(width, overflow="ellipsis")
    return line


class _LineColumn(ProgressColumn):
    """The whole task as one progress_line, measured against the console each refresh (terminals resize)."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def render(self, task) -> Text:
        return progress_line(task.description, task.completed, task.total, task.fields.get("unit", ""),
                             task.fields.get("info", {}), task.time_remaining, task.speed, self.console.width)


class RichReporter(Reporter):
    """Draws the library's progress callbacks as progress lines on stderr."""

    def __init__(self, show_epochs: bool = True, console: Console | None = None):
        self.console = console or err
        self.progress = Progress(_LineColumn(self.console), console=self.console, transient=True)
        self.tasks: dict[str, int] = {}
        self.show_epochs = show_epochs
        self.header_shown = False

    def __enter__(self):
        return self  # the live display starts with the first task, so a quick failure prints only its error

    def __exit__(self, *exc):
        if self.progress.live.is_started:
            self.progress.stop()

    def start(self, key, description, total=None, unit=""):
        if not self.progress.live.is_started and self.console.is_terminal:  # a log file gets no bars (and no
            self.progress.start()                                            # blank line where they were)
        self.tasks[key] = self.progress.add_task(description, total=total, unit=unit, info={})

    def update(self, key, advance=0, completed=None, total=None, **fields):
        if key not in self.tasks:
            return
        kwargs = {"advance": advance, "info": fields}
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
        console = self.progress.console  # as warning(): wrapped on a terminal, one line in a log
        console.print(Text(message, style="yellow"), soft_wrap=not console.is_terminal)

    def epoch(self, row):
        if not self.show_epochs:
            return
        if not self.header_shown:
            self.progress.console.print(Text(EPOCH_FMT.format("epoch", "train loss", "train acc", "val loss",
                                                              "val acc", "lr", "time"), style="bold"))
            self.header_shown = True
        self.progress.console.print(Text(EPOCH_FMT.format(
            row["epoch"], f"{row['train_loss']:.4f}", f"{row['train_accuracy']:.2%}", opt(row["val_loss"], "{:.4f}"),
            opt(row["val_accuracy"], "{:.2%}"), f"{row['lr']:.2e}", f"{row['seconds']:.1f}s")))


EPOCH_FMT = "{:>5}  {:>10}  {:>9}  {:>9}  {:>8}  {:>9}  {:>7}"  # 69 columns


def opt(v, fmt: str) -> str:
    return "–" if v is None else fmt.format(v)


def titled(title: str, table: Table) -> Group:
    """A table under a bold heading line: a heading that names a path wraps at the terminal's width, where
    a table's own title would be folded into the table's few columns."""
    return Group(Text(title, style="bold"), table)


def figures(title: str, rows) -> Group:
    """A two-column table of named figures, under its title."""
    table = Table()
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return titled(title, table)


# --- doodle train ----------------------------------------------------------------------------------------


def show_train(result, metrics: dict, newest: Path | None) -> None:
    """The finished run's figures, its calibration, and the commands to run next."""
    temp = metrics.get("temperature")
    ece, ece_raw = metrics.get("val_ece"), metrics.get("val_ece_raw")
    rows = [("classes", f"{len(result.classes):,}"), ("layers", " -> ".join(map(str, result.layer_sizes))),
            ("epochs run", str(result.epochs)), ("best epoch", str(result.best_epoch)),
            ("val accuracy", opt(result.val_accuracy, "{:.2%}")),
            ("test accuracy", opt(result.test_accuracy, "{:.2%}")),
            ("temperature", opt(temp, "{:.3f}") + ("" if ece is not None else " (no validation split)")),
            ("val ECE, raw -> calibrated", "–" if ece is None else f"{ece_raw:.2%} -> {ece:.2%}"),
            ("training speed", f"{result.samples_per_second:,.0f} samples/s")]
    out.print(figures(f"doodle train: {result.run}", rows))
    model = "" if newest is not None and Path(result.run).resolve() == newest.resolve() \
        else f" --model {shlex.quote(result.run)}"
    out.print(Text("next:", style="bold"))
    for command, why in ((f"doodle evaluate{model}", "per-class scores and confusions"),
                         (f"doodle predict{model} SKETCH.png", "guess your own drawing"),
                         (f"doodle play{model}", "draw in the browser")):
        line = f"  {command}"
        out.print(Text(f"{line:<{max(len(line) + 2, 44)}}{why}" if len(line) + 2 + len(why) <= out.width
                       else line))


# --- doodle train --help-config ----------------------------------------------------------------------------


def show_config_reference(keys: list[dict]) -> None:
    """Every key with its default, what it is for and (dimmed) its allowed values, one section at a time."""
    import json

    out.print(Text("config keys, set in configs/*.yaml or with --set section.key=value", style="bold"))
    sections: dict[str, list[dict]] = {}
    for k in keys:
        sections.setdefault(k["key"].split(".", 1)[0], []).append(k)
    for section, rows in sections.items():
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
        table.add_column("key", no_wrap=True)
        table.add_column("default", max_width=16, overflow="fold")
        table.add_column("what for", ratio=1)
        for k in rows:
            body = Text(k["help"])
            body.append(f"\n{k['allowed']}", style="dim")
            table.add_row(f"  {k['key'].split('.', 1)[1]}", json.dumps(k["default"]).replace('"', ""), body)
        out.print(Text(f"\n{section}:", style="bold"))
        out.print(table)


# --- doodle gradcheck ---------------------------------------------------------------------------------------

AGREEMENTS = {"manual_vs_graph": "manual vs graph", "manual_vs_numeric": "manual vs finite diff.",
              "graph_vs_numeric": "graph vs finite diff."}


def show_gradcheck(sizes, errors: dict, worst_of: dict, tolerances: dict, max_entries: int) -> None:
    table = Table()
    table.add_column("parameter")
    for kind, head in AGREEMENTS.items():
        table.add_column(f"{head}\n(pass < {tolerances[kind]:.0e})", justify="right")
    for name, e in errors.items():
        table.add_row(name, *(_agreement(e[kind], tolerances[kind]) for kind in AGREEMENTS))
    table.add_row("worst", *(_agreement(worst_of[kind], tolerances[kind]) for kind in AGREEMENTS), style="bold")
    out.print(titled(f"gradient check {' -> '.join(map(str, sizes))} (float64; worst relative error per tensor; "
                     f"{max_entries} sampled entries for finite differences)", table))


def _agreement(e: float, tol: float) -> Text:
    return Text(f"{e:.1e} {'ok' if e < tol else 'FAIL'}", style="" if e < tol else "red")


# --- doodle explain ----------------------------------------------------------------------------------------


def show_explanation(doc: dict) -> None:
    """The guess, the runner-up and each stroke's contribution; the picture has the maps."""
    rival = "runner-up" if doc["class_source"] == "top guess" else "most probable other class"
    head = Text(doc["input"], style="bold")
    head.append(f": '{doc['class']}' ({doc['class_source']}) p = {doc['probability']:.1%}; {rival} "
                f"'{doc['runner_up']['category']}' {doc['runner_up']['probability']:.1%}", style="")
    out.print(head)
    if doc["strokes"] is None:
        out.print(Text("stroke attribution needs strokes: this input has none of the pen's (an image or a "
                       "bitmap), so only the pixel views are drawn", style="dim"))
    else:
        table = Table()
        for col in ("stroke", "points", "contribution", "p without it"):
            table.add_column(col, justify="right")
        for st in doc["strokes"]:
            table.add_row(str(st["stroke"]), str(st["points"]), f"{st['contribution']:+.3f}",
                          f"{st['probability_without']:.1%}")
        out.print(titled(f"what each stroke adds to p('{doc['class']}'): p minus p of the drawing without it",
                         table))
    out.print(Text(f"picture: {doc['out']}"))


def show_units(doc: dict) -> None:
    """The most important first-layer units with their importance, and what the two definitions are."""
    table = Table()
    for col in ("unit", "importance", "share"):
        table.add_column(col, justify="right")
    for u in doc["units"]:
        table.add_row(str(u["unit"]), f"{u['importance']:.4g}", f"{u['share']:.1%}")
    out.print(titled(f"the {len(doc['units'])} most important of the first hidden layer's {doc['hidden_units']} "
                     f"units ({doc['model']}, {doc['drawings']:,} test drawings)", table))
    out.print(Text(f"importance: {doc['importance']}"))
    out.print(Text(f"class templates: {doc['class_template']}"))
    out.print(Text(f"picture: {doc['out']}"))


# --- doodle evaluate ----------------------------------------------------------------------------------------

PER_CLASS_ROWS = 30  # more classes than this: the worst and best EXTREMES only (all of them are in --json)
EXTREMES = 10
ECE_STEADY = 1000  # drawings: below this an ECE is mostly sampling noise, and says so
SHOWN_PROBLEMS = 5


def show_evaluation(s: dict) -> None:
    """One model's evaluation: figures, per-class scores, confusions, and what was not scored."""
    width = out.width
    calibration = ("1 (raw softmax)" if s["temperature"] == 1.0 else f"{s['temperature']:.3f}")
    ece = f"{s['ece']:.2%}" + (" (rough)" if s["n"] < ECE_STEADY else "")
    rows = (("drawings", f"{s['n']:,}"), ("top-1 accuracy", f"{s['accuracy']:.2%}"),
            ("top-3 accuracy", f"{s['top3_accuracy']:.2%}"), ("MAP@3", f"{s['map3']:.4f}"),
            ("macro F1", f"{s['macro_f1']:.4f}"), ("NLL", f"{s['nll']:.4f}"), ("ECE (15 bins)", ece),
            ("temperature", calibration), ("test-time augmentation", s.get("tta", "none")))
    out.print(figures(f"doodle evaluate: {s['model']}", rows))
    if s["n"] < ECE_STEADY:
        out.print(Text(f"ECE from {s['n']:,} drawings is rough (steady from about {ECE_STEADY:,}): a perfectly "
                       f"calibrated model would show about {ece_noise(s['calibration']):.1%} here from sampling "
                       "alone.", style="dim"))
    labels, matrix = s["confusion"]["labels"], s["confusion"]["matrix"]
    predicted = dict(zip(labels, map(sum, zip(*matrix))))  # drawings predicted as each class
    for title, class_rows in per_class_tables(s["per_class"]):
        per = Table(title=title)
        for col in ("category", "precision", "recall", "F1", "support"):
            per.add_column(col, justify="left" if col == "category" else "right")
        for name, m in class_rows:
            none = m["support"] == 0
            per.add_row(name, opt(None if predicted[name] == 0 else m["precision"], "{:.3f}"),
                        opt(None if none else m["recall"], "{:.3f}"), opt(None if none else m["f1"], "{:.3f}"),
                        str(m["support"]), style="dim" if none else "")
        out.print(per)
        if any(m["support"] == 0 or predicted[name] == 0 for name, m in class_rows):
            out.print(Text("–: undefined; no drawings of the class (recall, F1) or none predicted as it "
                           "(precision)", style="dim"))
    if s["most_confused"]:
        conf = Table(title="most confused")
        for col in ("true", "predicted", "count"):
            conf.add_column(col, justify="right" if col == "count" else "left")
        for c in s["most_confused"]:
            conf.add_row(c["true"], c["predicted"], str(c["count"]))
        out.print(conf)
    for line in confusion_lines(labels, matrix, width):
        out.print(line)
    if s["unknown_categories"]:
        unknown = s["unknown_categories"]
        out.print(Text(f"not scored: {sum(unknown.values()):,} drawings of {len(unknown):,} "
                       f"{'category' if len(unknown) == 1 else 'categories'} the model does not know:", style="yellow"))
        out.print(Text(fit_names("  ", [f"{k} ({v:,})" for k, v in unknown.items()], width), style="yellow"))
    if s.get("report"):
        folder = Path(s["report"][0]).parent
        out.print(Text(f"report in {folder}/: {', '.join(Path(p).name for p in s['report'])}"))


def ece_noise(bins: list[dict]) -> float:
    """The ECE a perfectly calibrated model shows from sampling alone: in each bin of n drawings at
    confidence c the accuracy is a binomial mean, off from c by sqrt(2 c (1 - c) / (pi n)) on average."""
    n = sum(b["count"] for b in bins)
    return sum(math.sqrt(2 * b["confidence"] * (1 - b["confidence"]) * b["count"] / math.pi)
               for b in bins if b["count"]) / max(n, 1)


def per_class_tables(per_class: dict) -> list[tuple[str, list]]:
    """One 'per class' table, or for many classes the worst and the best by F1 (ties: more drawings first,
    the surer verdict) among the classes that had drawings."""
    rows = list(per_class.items())
    if len(rows) <= PER_CLASS_ROWS:
        return [("per class", rows)]
    scored = [r for r in rows if r[1]["support"]]
    worst = sorted(scored, key=lambda r: (r[1]["f1"], -r[1]["support"]))
    best = sorted(scored, key=lambda r: (-r[1]["f1"], -r[1]["support"]))
    unscored = f"; {len(rows) - len(scored)} had no drawings" if len(scored) < len(rows) else ""
    return [(f"worst {EXTREMES} of {len(rows)} categories by F1 (all in --json, --report){unscored}",
             worst[:EXTREMES]), (f"best {EXTREMES} categories by F1", best[:EXTREMES])]


def confusion_lines(labels: list[str], matrix: list[list[int]], width: int) -> list[Text]:
    """The confusion matrix as text lines no wider than `width`: with the class names as column heads when
    they fit, else numbered columns whose numbers the rows name, else a pointer to where it is drawn."""
    n = len(labels)
    cell = max(2, *(len(str(v)) for row in matrix for v in row))
    numbered = [f"{i + 1:>{len(str(n))}} {lab}" for i, lab in enumerate(labels)]
    title = Text("confusion matrix (rows: true class, columns: predicted; diagonal in bold)", style="bold")
    for heads, rows in ((labels, labels), ([str(i + 1) for i in range(n)], numbered)):
        cells = [max(cell, len(h)) for h in heads]
        lead = max(len(r) for r in rows)
        if lead + sum(c + 1 for c in cells) <= width:
            break
    else:
        return [Text(f"({n} classes: the confusion matrix needs {lead + (cell + 1) * n} columns; it is in --json, "
                     "and --report DIR draws it as confusion.png)", style="dim")]
    lines = [title, Text(" " * lead + "".join(f" {h:>{c}}" for h, c in zip(heads, cells)), style="bold")]
    for i, (name, row) in enumerate(zip(rows, matrix)):
        line = Text(f"{name:<{lead}}")
        for j, (v, c) in enumerate(zip(row, cells)):
            line.append(f" {v if v else '.':>{c}}", style="bold" if i == j else "dim" if not v else "")
        lines.append(line)
    return lines


def show_problems(problems: list[str]) -> None:
    """Unreadable inputs: the first few, and how many more (all of them are in --json)."""
    for p in problems[:SHOWN_PROBLEMS]:
        warning(p)
    if len(problems) > SHOWN_PROBLEMS:
        warning(f"and {len(problems) - SHOWN_PROBLEMS:,} more problems (all of them in --json)")


def show_comparison(summaries: list[dict]) -> None:
    table = Table()
    for col in ("model", "drawings", "top-1", "top-3", "MAP@3", "macro F1"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for s in summaries:
        table.add_row(s["model"], f"{s['n']:,}", f"{s['accuracy']:.2%}", f"{s['top3_accuracy']:.2%}",
                      f"{s['map3']:.4f}", f"{s['macro_f1']:.4f}")
    out.print(titled("doodle evaluate: model comparison", table))
