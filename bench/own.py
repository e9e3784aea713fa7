"""Extending a trained model with new words (issue 22): a quickdraw16 model learns 5 words it does not know
from k = 1, 5 and 20 drawings each, beside training from scratch on the union.

The base model is configs/quickdraw16.yaml trained on the shared sample's bitmaps (--epochs, default 20
of its 80, to fit a shared machine; --base RUN reuses a run). The new words' drawings are the shared
sample's simplified ones: the first 20 of each file are the training pool (k = 1, 5, 20 take its first
k), the rest (41 to 57 per word) are the test drawings, the same for every k. Old-class accuracy is on
the base run's own test split (the last 25% of each bitmap file), before and after.

Methods (each timed from the trained base run to the finished model, in this process):
  rows      only the new output rows, everything else the base run's: imprinted from the words' mean
            penultimate features, then fitted against the old rows on fixed features (doodle.extend.new_rows),
            the 5 words at once
  teach     what `doodle play`'s teach mode does (doodle.teach.Teacher): the same rows, one word after the
            other, each a run folder; the time is the preparation (once) plus the 5 words (k >= 2)
  extend    `doodle train --from RUN`: from those rows, every layer trained with replay of the old classes
  no-replay the same with extend.replay = 0 (only the new drawings) for as many steps, last epoch's model:
            what training without replay does to the old classes
  scratch   the base recipe from a fresh initialisation on the union (base train split + all k drawings)

Beside accuracy: the calibrated ECE on the new words' test drawings (the temperature is always the base run's
or, for scratch, its own: nothing calibrates a word from k drawings) and the mean confidence there.

Usage: python bench/own.py [--epochs 20] [--base RUN] [--methods rows,teach,extend,no-replay,scratch]
                           [--ks 1,5,20]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO, quickdraw_root
from doodle import extend
from doodle.checkpoint import load_model
from doodle.config import defaults
from doodle.dataset import load_dataset
from doodle.evaluate import test_split_bitmaps
from doodle.extend import EXTEND_TRAIN
from doodle.inputs import labelled
from doodle.metrics import expected_calibration_error
from doodle.nn import MLP
from doodle.progress import Reporter
from doodle.runs import load_split
from doodle.teach import Teacher
from doodle.train import fit, train

# the shared sample's biggest simplified files (61 to 77 drawings) of words quickdraw16 does not have
NEW = ("coffee cup", "house plant", "mouth", "table", "television")
KS = (1, 5, 20)
POOL = 20  # training pool per word; the rest of the file is its test set
METHODS = ("rows", "teach", "extend", "no-replay", "scratch")


class Quiet(Reporter):
    pass


def write_words(root: Path) -> tuple[dict[int, Path], Path]:
    """k -> a folder of <word>.ndjson with each word's first k drawings; and the test folder (the rest)."""
    source = quickdraw_root() / "full" / "simplified"
    folders = {k: root / f"k{k}" for k in KS}
    test = root / "test"
    for folder in [*folders.values(), test]:
        folder.mkdir(parents=True)
    for word in NEW:
        lines = (source / f"{word}.ndjson").read_text(encoding="utf-8").splitlines(keepends=True)
        for k, folder in folders.items():
            (folder / f"{word}.ndjson").write_text("".join(lines[:k]), encoding="utf-8")
        (test / f"{word}.ndjson").write_text("".join(lines[POOL:]), encoding="utf-8")
    return folders, test


def scores(model: MLP, classes: list[str], x: np.ndarray, labels: list[str]) -> dict:
    """Top-1 accuracy, calibrated ECE and mean top confidence of the model on these bitmaps."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab] for lab in labels])
    probs = model.predict_proba(x)
    return {"accuracy": float(np.mean(probs.argmax(axis=1) == y)), "ece": expected_calibration_error(probs, y),
            "confidence": float(probs.max(axis=1).mean())}


def with_state(base: extend.Base, classes: list[str], state: dict) -> MLP:
    """The base network with len(classes) outputs, holding `state`."""
    sizes = [*base.model.layer_sizes[:-1], len(classes)]
    model = MLP(sizes, activation=base.model.activation, norm=base.model.norm, tta=base.model.tta)
    model.load_state_dict(state)
    return model


def prepared(base_dir: Path, words: Path, data_dir: Path, overrides: list[str]):
    """(base, cfg, ds, start) of an extension by these words' folder, all k drawings for training."""
    cfg, _ = extend.config_from_run(base_dir, [f"data.local=[{json.dumps(str(words))}]", "data.val_fraction=0",
                                               "data.test_fraction=0", *overrides], data_dir)
    ds = load_dataset(cfg, data_dir)
    base = extend.read_base(base_dir)
    return base, cfg, ds, extend.starting_point(cfg, ds, data_dir, base=base)


def method_rows(base_dir, words, data_dir, out):
    base, cfg, ds, start = prepared(base_dir, words, data_dir, [])
    return with_state(base, ds.classes, start.state), ds.classes


def method_teach(base_dir, words, data_dir, out):
    """The words taught one after the other, as in `doodle play`; returns the last taught model."""
    model, meta = load_model(base_dir)
    teacher = Teacher(base_dir, model, meta, data_dir)
    teacher.prepare()
    for path in sorted(words.glob("*.ndjson")):
        drawings = labelled([path], meta["raster"])
        key_ids = [json.loads(line)["key_id"] for line in path.read_text().splitlines()]
        taught = teacher.teach(path.stem, drawings.x, path, key_ids, runs_dir=out)
    return taught.model, taught.meta["classes"]


def method_extend(base_dir, words, data_dir, out, extra=()):
    train(None, [f"data.local=[{json.dumps(str(words))}]", "data.val_fraction=0", "data.test_fraction=0", *extra],
          data_dir=data_dir, out=out, from_run=base_dir, reporter=Quiet())
    model, meta = load_model(out)
    return model, meta["classes"]


def method_no_replay(base_dir, words, data_dir, out):
    """extend.replay = 0 for as many steps as `extend` takes, and the model of the last epoch: the best epoch
    by validation (the base run's classes only) would be an early one, which hides what the training does."""
    old_classes = len(json.loads((base_dir / "model.json").read_text())["classes"])
    batch, replay = 256, defaults()["extend"]["replay"]
    steps = EXTEND_TRAIN["epochs"] * math.ceil((old_classes + len(NEW)) * replay / batch)  # extend's
    per_epoch = math.ceil(sum(len(p.read_text().splitlines()) for p in words.glob("*.ndjson")) / batch)
    method_extend(base_dir, words, data_dir, out, ["extend.replay=0", f"train.epochs={steps // per_epoch}"])
    model, meta = load_model(out)
    with np.load(out / "last.npz", allow_pickle=False) as last:  # the latest epoch's weights, beside the best's
        model.load_state_dict({k[len("model/"):]: last[k] for k in last.files if k.startswith("model/")})
    return model, meta["classes"]


def method_scratch(base_dir, words, data_dir, out):
    base, cfg, ds, _ = prepared(base_dir, words, data_dir, ["extend.replay=1000000000"])
    cfg["train"] = dict(base.cfg["train"])  # the base recipe, from scratch
    cfg["extend"]["from"] = None
    old = load_dataset(base.cfg, data_dir, download=False)
    split = extend.union_split(cfg, ds, old, load_split(base_dir))
    split["train"] = np.unique(split["train"])  # the plain union: every drawing once
    fit(cfg, ds, out, Quiet(), data_dir=str(data_dir), start=extend.Start(split, None, None))
    model, meta = load_model(out)
    return model, meta["classes"]


RUNNERS = {"rows": method_rows, "teach": method_teach, "extend": method_extend,
           "no-replay": method_no_replay, "scratch": method_scratch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the base run and of scratch (config: 80)")
    ap.add_argument("--base", type=Path, help="a quickdraw16 run to extend instead of training one")
    ap.add_argument("--data-dir", type=Path, help="its data folder (default: the one it recorded)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--ks", default=",".join(map(str, KS)))
    args = ap.parse_args()
    methods = args.methods.split(",")
    print(f"load average at the start: {os.getloadavg()[0]:.1f} (2 cores)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders, test_dir = write_words(tmp / "words")
        if args.base is None:
            data_dir, base_dir = tmp / "data", tmp / "base"
            t0 = time.perf_counter()
            train(REPO / "configs" / "quickdraw16.yaml",
                  [f"data.base_url={quickdraw_root().resolve().as_uri()}", f"train.epochs={args.epochs}"],
                  data_dir=data_dir, out=base_dir, reporter=Quiet())
            print(f"base: configs/quickdraw16.yaml at {args.epochs} epochs, {time.perf_counter() - t0:.0f} s",
                  flush=True)
        else:
            base_dir = args.base.resolve()
            data_dir = args.data_dir or Path(json.loads((base_dir / "model.json").read_text())["data_dir"])
        base_model, meta = load_model(base_dir)
        old = test_split_bitmaps(base_dir, meta, data_dir)
        new = labelled([test_dir], meta["raster"])
        before = scores(base_model, meta["classes"], old.x, old.labels)["accuracy"]
        print(f"old classes before: {before:.1%} on {len(old.labels):,} test drawings; new test drawings: "
              f"{len(new.labels)}", flush=True)
        rows = []
        for k in map(int, args.ks.split(",")):
            for name in methods:
                if name == "teach" and k < 2:
                    continue  # teaching leaves each drawing out in turn: it takes 2 or more
                t0 = time.perf_counter()
                model, classes = RUNNERS[name](base_dir, folders[k], data_dir, tmp / f"{name}-k{k}")
                seconds = time.perf_counter() - t0
                fresh = scores(model, classes, new.x, new.labels)
                row = {"k": k, "method": name, "new": fresh["accuracy"], "old_before": before,
                       "old_after": scores(model, classes, old.x, old.labels)["accuracy"],
                       "ece_new": fresh["ece"], "confidence_new": fresh["confidence"],
                       "seconds": round(seconds, 2), "load": round(os.getloadavg()[0], 1)}
                rows.append(row)
                print(f"k={k:<3} {name:<10} new {row['new']:6.1%}  old {before:.1%} -> {row['old_after']:.1%}  "
                      f"new: ECE {fresh['ece']:5.1%}, confidence {fresh['confidence']:5.1%}  "
                      f"{seconds:7.1f} s  (load {row['load']})", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
