"""The front door: everything users hand doodle -> checked drawings -> bitmaps in a model's raster form.

What an INPUT (`predict`), DATA (`evaluate`) or DRAWING (`graph`) argument may name:
  image files (.png .jpg ...)     one drawing: the pen's centre lines, traced by doodle.images
  .ndjson files, '-' for stdin    one drawing a line: Google's simplified or raw records (doodle.strokes)
  .npy files                      Google's numpy_bitmap rows: bitmaps without strokes, labelled by the file name
  folders                         the files above in them, and images in sub-folders; images are labelled
                                  by the folder they are in
The play API's JSON passes the same checks (doodle.strokes.check_strokes, with the API's own limits) and
becomes a Drawing too.

Every drawing reaches the model by one path, `to_bitmaps`: its strokes in Google's simplified frame (raw
strokes through Google's recipe, doodle.simplify), drawn by `rasterize` with the model's raster settings.
Anything that prepares drawings elsewhere (a web page) must repeat exactly these two steps.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from doodle.errors import DoodleError
from doodle.images import IMAGE_SUFFIXES, image_strokes
from doodle.progress import NULL_REPORTER, Reporter
from doodle.raster import RasterSpec, rasterize, rasterize_many
from doodle.strokes import LoadStats, iter_drawings, load_bitmaps, read_records

STDIN = "<stdin>"
NPY_SIDE = 28  # Google's numpy_bitmap files are 28x28
_KINDS = {".ndjson": "ndjson", ".npy": "npy", **{s: "image" for s in IMAGE_SUFFIXES}}  # suffix -> reader
ACCEPTED = (f"give images ({', '.join(IMAGE_SUFFIXES)}), .ndjson or .npy files, folders of them, "
            "or '-' for ndjson on standard input")


@dataclass(frozen=True)
class Drawing:
    """One drawing as a user handed it, in Google's simplified frame (0..255, aligned to the top-left)."""

    strokes: list  # [[xs, ys], ...]: ints from ndjson, floats from images
    word: str | None = None  # its label: the record's 'word', or the folder an image was found in
    source: str = ""  # the file, '<stdin>', or 'request' (play)
    line: int | None = None  # 1-based line in an ndjson source

    @property
    def name(self) -> str:
        """How messages and results call it: 'file:line', or the file."""
        return self.source if self.line is None else f"{self.source}:{self.line}"


@dataclass
class Entry:
    """One thing an argument named, as `predict` lists it: a drawing and its bitmap, a bitmap alone (a .npy
    row has no strokes), or why it could not be read."""

    name: str
    word: str | None = None
    drawing: Drawing | None = None
    bitmap: np.ndarray | None = None  # (S, S) uint8, the model's input
    error: str | None = None


@dataclass
class LabelledBitmaps:
    """Bitmaps with their label names (what `evaluate` scores), plus what could not be read."""

    x: np.ndarray  # (N, S, S) uint8
    labels: list[str]
    problems: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Source:
    """One file (or stdin) an argument names, and how to read it."""

    kind: str  # a value of _KINDS, or "stdin"
    name: str  # the path as given, or '<stdin>'
    word: str | None = None  # images found in a folder: the folder's name


# ---------------------------------------------------------------------------------------------
# The one path to the model's input


def to_bitmaps(drawings: list[Drawing], raster: dict, reporter: Reporter = NULL_REPORTER) -> np.ndarray:
    """Drawings -> (N, S, S) uint8 bitmaps, drawn with the model's raster settings (size, line_width, padding)."""
    return rasterize_many([d.strokes for d in drawings], RasterSpec(**_settings(raster)), reporter)


def to_bitmap(drawing: Drawing, raster: dict) -> np.ndarray:
    """One drawing -> its (S, S) uint8 bitmap: what `to_bitmaps` draws for it (the same renderer, bit for bit),
    without the batch's process-wide tuning (doodle.heap), which a long-running server does not want."""
    return rasterize(drawing.strokes, **_settings(raster))


def _settings(raster: dict) -> dict:
    """A model's raster settings as the renderer's arguments."""
    return {"size": raster["size"], "line_width": raster["line_width"], "padding": raster["padding"]}


# ---------------------------------------------------------------------------------------------
# Arguments -> sources


def _sources(arg) -> list[_Source]:
    """One argument -> what it names, folders opened; DoodleError when it names nothing readable."""
    if str(arg) == "-":
        return [_Source("stdin", STDIN)]
    path = Path(arg)
    if path.is_dir():
        return _folder(path)
    if not path.exists():
        raise DoodleError(f"{path}: no such file or folder; check the path")
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise DoodleError(f"{path}: unsupported input; {ACCEPTED}")
    return [_Source(kind, str(path))]


def _folder(folder: Path) -> list[_Source]:
    """A folder's files (images labelled with its name), then the images of each sub-folder (labelled with
    theirs). Hidden files (.DS_Store, macOS's ._x.png) and unknown suffixes are passed over."""
    found, subfolders = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            subfolders.append(p)
        elif (kind := _KINDS.get(p.suffix.lower())) is not None:
            found.append(_Source(kind, str(p), folder.name if kind == "image" else None))
    for sub in subfolders:
        found += [_Source("image", str(p), sub.name) for p in sorted(sub.iterdir())
                  if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not found:
        raise DoodleError(f"{folder}: nothing to read in this folder; give a folder of .ndjson, .npy or image files, "
                          f"or one sub-folder of images per category (e.g. {folder / 'cat' / '1.png'})")
    return found


def _stream(stdin: IO | None):
    """Standard input as bytes (like files), or the given stream."""
    stdin = stdin or sys.stdin
    return getattr(stdin, "buffer", stdin)


def _npy(source: _Source, raster: dict) -> np.ndarray:
    """A numpy_bitmap file's (N, 28, 28) rows, memory-mapped; DoodleError when the model reads another size."""
    if raster["size"] != NPY_SIDE:
        raise DoodleError(f"{source.name}: numpy_bitmap files are {NPY_SIDE}x{NPY_SIDE} but the model expects "
                          f"{raster['size']}x{raster['size']}; give ndjson strokes or images instead")
    return load_bitmaps(source.name)


def _image(source: _Source) -> Drawing:
    """An image file's drawing: the pen's centre lines as strokes (doodle.images)."""
    return Drawing(image_strokes(Path(source.name)), source.word, source.name)


def _no_drawings(name: str) -> str:
    """The one wording for an ndjson source without a drawing."""
    return f"{name}: no drawings (no non-blank line); give one drawing per line"


# ---------------------------------------------------------------------------------------------
# What commands read


def entries(args: Iterable, raster: dict, *, stdin: IO | None = None, limit: int | None = None) -> list[Entry]:
    """Every drawing and bitmap the arguments name, in order, each with its bitmap; what cannot be read is an
    Entry with an error (one per bad ndjson line), so one bad input never hides the others (`predict`).
    `limit` stops after that many readable entries."""
    found: list[Entry] = []
    count = 0
    with contextlib.closing(_read_entries(args, raster, stdin)) as reading:  # closes a file left half read
        for entry in reading:
            found.append(entry)
            count += entry.error is None
            if limit is not None and count >= limit:
                break
    drawn = [(e, e.drawing) for e in found if e.drawing is not None]
    if drawn:
        for (e, _), bitmap in zip(drawn, to_bitmaps([d for _, d in drawn], raster)):
            e.bitmap = bitmap
    return found


def readable(found: list[Entry]) -> list[tuple[Entry, np.ndarray]]:
    """(entry, its bitmap) for the entries `entries` read without an error; a DoodleError with the first one's
    error when none was (for commands that need a drawing, not a list of results: graph, explain)."""
    good = [(e, e.bitmap) for e in found if e.error is None and e.bitmap is not None]
    if not good:
        raise DoodleError(found[0].error or f"{found[0].name}: no drawing")
    return good


def _read_entries(args: Iterable, raster: dict, stdin: IO | None) -> Generator[Entry, None, None]:
    """`entries` one at a time, before any is rasterized."""
    for arg in args:
        try:
            sources = _sources(arg)
        except DoodleError as exc:
            yield Entry(str(arg), error=str(exc))
            continue
        for src in sources:
            try:
                if src.kind == "npy":
                    word = Path(src.name).stem
                    yield from (Entry(f"{src.name}[{i}]", word, bitmap=b) for i, b in enumerate(_npy(src, raster)))
                elif src.kind == "image":
                    drawing = _image(src)
                    yield Entry(src.name, drawing.word, drawing)
                else:
                    yield from _ndjson_entries(src, stdin)
            except DoodleError as exc:
                yield Entry(src.name, src.word, error=str(exc))


def _ndjson_entries(src: _Source, stdin: IO | None) -> Iterator[Entry]:
    """One Entry per non-blank line (a drawing, or why the line is bad)."""
    stream = _stream(stdin) if src.kind == "stdin" else None
    try:
        fh = stream or open(src.name, "rb")
    except OSError as exc:
        raise DoodleError(f"{src.name}: cannot read ({exc.strerror or exc})") from None
    empty = True
    try:
        for where, rec, err in read_records(fh, src.name):
            empty = False
            if rec is None:
                yield Entry(where, error=err)
            else:
                yield Entry(where, rec["word"], Drawing(rec["drawing"], rec["word"], src.name, rec["line"]))
    except OSError as exc:
        raise DoodleError(f"{src.name}: cannot read ({exc.strerror or exc})") from None
    finally:
        if stream is None:
            fh.close()
    if empty:
        raise DoodleError(_no_drawings(src.name))


def labelled(args: Iterable, raster: dict, *, strict: bool = False, stdin: IO | None = None,
             reporter: Reporter = NULL_REPORTER) -> LabelledBitmaps:
    """DATA arguments -> labelled bitmaps (`evaluate`). An argument that names nothing readable, a .npy file
    of the wrong size and (with `strict`) a bad ndjson line stop with a DoodleError; bad lines and images
    that cannot be read are counted in `problems`, one line per file."""
    parts: list[np.ndarray] = []
    labels: list[str] = []
    problems: list[str] = []
    pending: list[Drawing] = []

    def flush():
        if pending:
            parts.append(to_bitmaps(pending, raster, reporter))
            pending.clear()

    sources = [str(arg) for arg in args]
    for arg in sources:
        found = _sources(arg)
        images = sum(src.kind == "image" for src in found)
        if images:
            reporter.start("images", f"reading images in {arg}", total=images, unit="images")
        try:
            for src in found:
                if src.kind == "npy":
                    flush()  # keeps the bitmaps in the order of their labels
                    rows = _npy(src, raster)
                    parts.append(np.asarray(rows))
                    labels += [Path(src.name).stem] * len(rows)
                    continue
                if src.kind == "image":
                    drawings = _labelled_image(src, problems)
                    reporter.update("images", advance=1)
                else:
                    drawings = _labelled_lines(src, strict, stdin, problems)
                pending += drawings
                labels += [d.word for d in drawings if d.word is not None]  # all: only labelled ones come back
        finally:
            if images:
                reporter.end("images")
    flush()
    x = np.concatenate(parts) if parts else np.zeros((0, raster["size"], raster["size"]), np.uint8)
    return LabelledBitmaps(x=x, labels=labels, problems=problems, sources=sources)


def _labelled_lines(src: _Source, strict: bool, stdin: IO | None, problems: list[str]) -> list[Drawing]:
    """An ndjson source's drawings that carry a word; bad lines and unlabelled drawings go to `problems`."""
    stats = LoadStats(src.name)
    stream = _stream(stdin) if src.kind == "stdin" else None
    drawings, unlabelled = [], []
    for rec in iter_drawings(src.name, strict=strict, stats=stats, stream=stream):
        if rec["word"]:
            drawings.append(Drawing(rec["drawing"], rec["word"], src.name, rec["line"]))
        else:
            unlabelled.append(rec["line"])
    if stats.skipped:
        problems.append(stats.summary())
    if unlabelled:
        problems.append(f"{src.name}: {len(unlabelled)} drawing{'s' if len(unlabelled) > 1 else ''} without a "
                        f"'word' label skipped (line {unlabelled[0]}{', ...' if len(unlabelled) > 1 else ''})")
    if not stats.lines:
        problems.append(_no_drawings(src.name))
    return drawings


def _labelled_image(src: _Source, problems: list[str]) -> list[Drawing]:
    """An image's drawing, when it has a label and can be read; otherwise `problems` says why not."""
    if src.word is None:
        problems.append(f"{src.name}: no label; put images in a folder named after their category")
        return []
    try:
        return [_image(src)]
    except DoodleError as exc:
        problems.append(str(exc))
        return []
