"""Predictions for people's own drawings: sketch images (PNG, JPEG, GIF, BMP, WebP) and ndjson
drawings (a file, or '-' for standard input), prepared the way the model's training data was.

One result per input (per line for ndjson): `{"input", "top": [{"category", "probability"}]}`, with the
line's `"word"` when it has one, or `{"input", "error"}`; a failure never stops the other inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from doodle.checkpoint import load_model, resolve_model_path
from doodle.errors import DoodleError
from doodle.images import IMAGE_SUFFIXES, image_to_bitmap
from doodle.raster import rasterize
from doodle.strokes import read_records


def _bitmaps(inputs: list[str], raster: dict,
             stdin: IO | None) -> Iterator[tuple[str, np.ndarray | None, str | None, str | None]]:
    """(input name, (S, S) uint8 bitmap or None, error or None, the ndjson line's word or None) for every
    input."""
    size, lw, pad = raster["size"], raster["line_width"], raster["padding"]
    for item in inputs:
        if item == "-" or item.endswith(".ndjson"):
            if item == "-":
                stdin = stdin or sys.stdin
                stream, name, close = getattr(stdin, "buffer", stdin), "<stdin>", False  # bytes, like files
            else:
                try:
                    stream, name, close = open(item, "rb"), item, True
                except OSError as exc:
                    yield item, None, f"{item}: cannot read ({exc.strerror or exc}); check the path", None
                    continue
            try:
                empty = True
                for where, rec, err in read_records(stream, name):
                    empty = False
                    if not err:
                        try:
                            yield where, rasterize(rec["drawing"], size=size, line_width=lw, padding=pad), None, \
                                rec.get("word")
                            continue
                        except DoodleError as exc:
                            err = f"{where}: {exc}"
                    yield where, None, err, None
                if empty:
                    yield name, None, f"{name}: no drawings (no non-blank line); give one drawing per line", None
            except OSError as exc:
                yield name, None, f"{name}: cannot read ({exc.strerror or exc}); check the path", None
            finally:
                if close:
                    stream.close()
            continue
        path = Path(item)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            yield item, None, (f"{item}: unsupported input; give an image ({', '.join(IMAGE_SUFFIXES)}), "
                               "an .ndjson file or '-' for ndjson on standard input"), None
            continue
        try:
            yield item, image_to_bitmap(path, size=size, line_width=lw, padding=pad), None, None
        except DoodleError as exc:
            yield item, None, str(exc), None


def predict(inputs: list[str], model_path: str | Path | None = None, top_k: int = 3,
            stdin: IO | None = None, calibrated: bool = True) -> tuple[list[dict], dict]:
    """Top-k categories for every input; returns (results, model metadata). Probabilities use the model's
    fitted temperature unless `calibrated` is False (then the raw softmax)."""
    if top_k < 1:
        raise DoodleError(f"--top-k must be at least 1 (got {top_k})")
    if not inputs:
        raise DoodleError("no inputs; give image files, .ndjson files or '-' for standard input")
    run_dir = resolve_model_path(model_path)
    model, meta = load_model(run_dir, calibrated)
    classes = meta["classes"]
    k = min(top_k, len(classes))
    results: list[dict] = []
    pending: list[tuple[int, np.ndarray]] = []
    for name, bitmap, err, word in _bitmaps(list(inputs), meta["raster"], stdin):
        results.append({"input": name, "error": err} if err else {"input": name, "word": word} if word else
                       {"input": name})
        if bitmap is not None:
            pending.append((len(results) - 1, bitmap))
    if pending:
        probs = model.predict_proba(np.stack([b for _, b in pending]))
        for (i, _), p in zip(pending, probs):
            best = np.argsort(-p, kind="stable")[:k]
            results[i]["top"] = [{"category": classes[j], "probability": float(p[j])} for j in best]
    meta = dict(meta, run=str(run_dir))
    return results, meta
