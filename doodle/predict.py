"""Predictions for people's own drawings: whatever the front door reads (doodle.inputs: sketch images,
ndjson drawings from files or '-' for standard input, numpy_bitmap rows, folders of them), prepared the way
the model's training data was.

One result per input (per line for ndjson, per row for .npy): `{"input", "top": [{"category",
"probability"}]}`, with the line's `"word"` when it has one, or `{"input", "error"}`; a failure never stops
the other inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np

from doodle.checkpoint import load_model, resolve_model_path
from doodle.errors import DoodleError
from doodle.inputs import ACCEPTED, entries


def probabilities(model, bitmaps: np.ndarray, run: str | Path) -> np.ndarray:
    """(N, S, S) uint8 -> (N, C) class probabilities, calibrated and test-time augmented by the model itself
    (`doodle predict`, `evaluate` and `play` alike); DoodleError naming the run when any is not finite."""
    with np.errstate(over="ignore", invalid="ignore"):  # numpy's warnings would only repeat what is said below
        p = model.predict_proba(bitmaps)
    bad = ~np.isfinite(p).all(axis=1)  # (N,)
    if bad.any():
        raise DoodleError(f"{run}: the model's probabilities are NaN or infinite for {int(bad.sum())} of {len(p)} "
                          "inputs (weights too large for float32, or a damaged temperature); retrain the model or "
                          "restore the run")
    return p


def top_categories(p: np.ndarray, classes: list[str], k: int) -> list[dict]:
    """The k most probable classes of one (C,) row, ties in class order."""
    return [{"category": classes[j], "probability": float(p[j])} for j in np.argsort(-p, kind="stable")[:k]]


def predict(inputs: list[str], model_path: str | Path | None = None, top_k: int = 3,
            stdin: IO | None = None, calibrated: bool = True) -> tuple[list[dict], dict]:
    """Top-k categories for every input; returns (results, model metadata). Probabilities use the model's
    fitted temperature unless `calibrated` is False (then the raw softmax)."""
    if top_k < 1:
        raise DoodleError(f"--top-k must be at least 1 (got {top_k})")
    if not inputs:
        raise DoodleError(f"no inputs; {ACCEPTED}")
    run_dir = resolve_model_path(model_path)
    model, meta = load_model(run_dir, calibrated)
    classes = meta["classes"]
    k = min(top_k, len(classes))
    found = entries(list(inputs), meta["raster"], stdin=stdin)
    results: list[dict] = [{"input": e.name, "error": e.error} if e.error else
                           {"input": e.name, "word": e.word} if e.word else {"input": e.name} for e in found]
    good = [(i, e.bitmap) for i, e in enumerate(found) if e.bitmap is not None]
    if good:
        probs = probabilities(model, np.stack([b for _, b in good]), run_dir)
        for (i, _), p in zip(good, probs):
            results[i]["top"] = top_categories(p, classes, k)
    meta = dict(meta, run=str(run_dir))
    return results, meta
