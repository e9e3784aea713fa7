"""Extending a trained run with new words: `doodle train --from RUN` (and play's teach mode, doodle.teach).

The new run keeps RUN's network and pixels (model.hidden/activation/norm, the raster settings and the
keys that choose RUN's rows are RUN's), so RUN's weights mean the same in it:
- its classes are RUN's and the new words (data.categories and data.local are RUN's plus what is added);
- the hidden layers start as RUN's, the output layer keeps RUN's rows (by class name) and gains one row
  per new word, imprinted from the new words' mean penultimate features and fitted against RUN's rows
  (`new_rows`: what play's teach mode does alone, in well under a second);
- training mixes the new drawings (each new word's repeated up to `extend.replay`, so it weighs as much
  as an old class) with `extend.replay` of each old class's training drawings (a fixed, seeded sample of
  RUN's own training split), validates on RUN's validation split plus the new words' share, and tests on
  RUN's test split plus theirs: so the new run's old-class test figures are on exactly the drawings RUN
  was tested on. bench/own.py measures it against the rows alone, no replay and training from scratch.
The new run records where it came from (model.json "extended_from"); RUN is only read.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from doodle.checkpoint import load_model, resolve_model_path
from doodle.config import class_names, from_dict, load_config
from doodle.dataset import Dataset, split_indices
from doodle.errors import DoodleError, lookup
from doodle.nn import MLP
from doodle.optim import Adam
from doodle.pixels import TTA, to_float, tta_views
from doodle.progress import NULL_REPORTER, Reporter

# What an extension trains with unless --set says otherwise: RUN's features are already good and its new rows
# fitted, so a short, gentle run (a quarter of quickdraw16's peak rate, no warm-up) instead of RUN's own schedule
# (bench/own.py: from k = 20 drawings a word it adds 7 points on the new words and 1 on the old to the rows alone).
EXTEND_TRAIN = {"epochs": 10, "lr": 0.0005, "warmup_epochs": 0.0, "patience": None}
# Keys that must stay RUN's: they shape the weights, make the pixels, or choose which rows RUN's split indexes.
KEEP = {"model": ("hidden", "activation", "norm"),
        "data": ("source", "image_size", "line_width", "per_category", "recognized_only", "countrycodes", "strict")}
INIT = "imprinted from the new words' mean penultimate features, then fitted against the old rows (kept fixed) on " \
       "the features of the new drawings and of HEAD_ROWS of each old class, classes weighing alike (extend.new_rows)"
HEAD_ROWS = 100  # drawings of each old class a new row is fitted against: enough to place it, quick to featurise
HEAD_STEPS = 100  # full-batch steps fitting the new rows (bench/own.py: more overfit a few drawings)
HEAD_LR = 0.01
# How strongly a fitted row is pulled back to its imprint: a prior that a few drawings only move it so far
# (bench/own.py, quickdraw16 + 5 words: at k = 5 it recognises 49% of new drawings instead of 37%, for 2
# points of the old classes)
HEAD_PULL = 0.1


@dataclass
class Base:
    """The trained run an extension starts from, as read from its folder."""

    dir: Path
    model: MLP
    meta: dict
    cfg: dict

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])


@dataclass
class Start:
    """Where a fresh extension run starts: its split and its initial weights, and what model.json records."""

    split: dict[str, np.ndarray]
    state: dict[str, np.ndarray] | None  # None: freshly initialised (training from scratch on this split)
    origin: dict | None


def read_base(run: str | Path) -> Base:
    """The run to extend, with its config checked as `doodle evaluate` checks it."""
    run_dir = resolve_model_path(run)
    model, meta = load_model(run_dir, calibrated=False)
    cfg = from_dict(meta.get("config"), f"{run_dir / 'model.json'} config")
    return Base(run_dir.resolve(), model, meta, cfg)


def config_from_run(run: str | Path | Base, overrides: tuple[str, ...] | list[str] = (),
                    data_dir: str | Path | None = None) -> tuple[dict, Path]:
    """`doodle train --from RUN --set ...`: (RUN's config, EXTEND_TRAIN, then the overrides, with extend.from =
    RUN; the data folder: `data_dir`, else the one RUN recorded)."""
    from doodle.evaluate import run_data_dir

    base = run if isinstance(run, Base) else read_base(run)
    cfg = copy.deepcopy(base.cfg)
    cfg["train"].update(EXTEND_TRAIN)
    cfg["extend"]["from"] = str(base.dir)
    return extension_config(load_config(None, overrides, base=cfg), base), run_data_dir(base.dir, base.meta, data_dir)


def extension_config(cfg: dict, base: Base | None = None) -> dict:
    """A config with extend.from set, made whole: RUN's categories and local files first, then the added
    ones; a change to a key that must stay RUN's is a DoodleError naming it."""
    base = base or read_base(cfg["extend"]["from"])
    for sec, keys in KEEP.items():
        for key in keys:
            if cfg[sec][key] != base.cfg[sec][key]:
                raise DoodleError(f"{sec}.{key}: {cfg[sec][key]!r} differs from {base.cfg[sec][key]!r} in {base.dir} "
                                  f"(extend.from); an extension keeps its run's network, pixels and drawings")
    cfg = copy.deepcopy(cfg)
    data, old = cfg["data"], base.cfg["data"]
    if old["categories"] == "all" or data["categories"] == "all":
        data["categories"] = "all"
    else:
        data["categories"] = old["categories"] + [c for c in data["categories"] if c not in old["categories"]]
    data["local"] = old["local"] + [p for p in data["local"] if p not in old["local"]]
    cfg["extend"]["from"] = str(base.dir)
    missing = [c for c in base.classes if c not in class_names(cfg)]
    if missing:  # a local file of RUN's is gone
        raise DoodleError(f"{base.dir}: its class {missing[0]!r} is no longer in its data.local; restore the file")
    return cfg


def starting_point(cfg: dict, ds: Dataset, data_dir: str | Path, reporter: Reporter = NULL_REPORTER,
                   base: Base | None = None) -> Start:
    """The split and initial weights of a fresh extension of extend.from over the dataset `ds` (loaded from
    `cfg`, which extension_config made whole)."""
    from doodle.evaluate import trained_rows

    base = base or read_base(cfg["extend"]["from"])
    old, base_split = trained_rows(base.dir, base.meta, data_dir, reporter, "extend a run whose data is unchanged")
    new_words = [c for c in ds.classes if c not in base.classes]
    added = sum(ds.counts) - sum(old.counts)
    if not added:
        raise DoodleError(f"nothing to add to {base.dir}: name new drawings, e.g. --set data.local=[data/mine] or "
                          "--set 'data.categories=[cow]'")
    split = union_split(cfg, ds, old, base_split)
    state = _initial_state(base, ds, split["train"], old, base_split["train"],
                           np.random.default_rng([cfg["data"]["seed"], 3]))
    reporter.log(f"extending {base.dir.name}: {len(base.classes)} classes + {len(new_words)} new "
                 f"({', '.join(new_words) or 'none'}), {added:,} new drawings, "
                 f"{cfg['extend']['replay']:,} replayed per old class")
    origin = {"run": str(base.dir), "run_id": base.meta.get("run_id"), "classes": base.classes,
              "new_classes": new_words, "new_drawings": added, "replay": cfg["extend"]["replay"], "init": INIT}
    return Start(split, state, origin)


def union_split(cfg: dict, ds: Dataset, old: Dataset, base_split: dict) -> dict[str, np.ndarray]:
    """ds's train/val/test rows: RUN's own val and test rows, a seeded sample of extend.replay of its training
    rows per class, and the added rows split by the config's fractions and seed, a new word's training rows
    repeated up to the replayed rows of an old class."""
    d = cfg["data"]
    starts = np.cumsum(ds.counts) - np.asarray(ds.counts)  # (C,) first row of each class in ds
    old_starts = np.cumsum(old.counts) - np.asarray(old.counts)
    where = {c: i for i, c in enumerate(ds.classes)}
    # RUN's rows of class c are the first old.counts[c] rows of ds's class c (its sources come first).
    shift = np.zeros(len(old.classes), dtype=np.int64)
    for i, c in enumerate(old.classes):
        shift[i] = starts[where[c]] - old_starts[i]
    rng = np.random.default_rng([d["seed"], 2])
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    weight = 0  # training rows of the most replayed old class: what a new word is repeated up to
    for name in parts:
        rows = np.asarray(base_split[name], dtype=np.int64)
        owner = np.searchsorted(np.cumsum(old.counts), rows, side="right")  # (n,) RUN's class of each row
        if name == "train":
            keep = [rng.permutation(np.flatnonzero(owner == i))[:cfg["extend"]["replay"]]
                    for i in range(len(old.classes))]
            rows, owner = rows[np.concatenate(keep)], owner[np.concatenate(keep)]
            weight = max(len(k) for k in keep)
        parts[name].append(rows + shift[owner])
    # The added rows: after RUN's in each old class, all of a new class.
    counts_old = {c: n for c, n in zip(old.classes, old.counts)}
    fresh_first = [starts[j] + counts_old.get(c, 0) for j, c in enumerate(ds.classes)]
    fresh_counts = [n - counts_old.get(c, 0) for c, n in zip(ds.classes, ds.counts)]
    fresh = split_indices(fresh_counts, d["val_fraction"], d["test_fraction"], d["test_split"], d["seed"])
    virtual_starts = np.cumsum(fresh_counts) - np.asarray(fresh_counts)
    known = set(old.classes)
    for name, rows in fresh.items():
        rows = rows.astype(np.int64)
        owner = np.searchsorted(np.cumsum(fresh_counts), rows, side="right")
        rows = rows - virtual_starts[owner] + np.asarray(fresh_first)[owner]
        if name == "train":  # a new word weighs as much as an old class in an epoch: its rows repeated
            rows = np.concatenate([_repeat(rows[owner == j], weight, rng) if c not in known else rows[owner == j]
                                   for j, c in enumerate(ds.classes)])
        parts[name].append(rows)
    dtype = np.int32 if len(ds) < 2 ** 31 else np.int64
    return {k: np.sort(np.concatenate(v)).astype(dtype) for k, v in parts.items()}


def _repeat(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """rows repeated whole, then a seeded sample of them, to n entries (rows itself when it has n or more)."""
    if len(rows) >= n or not len(rows):
        return rows
    return np.concatenate([np.tile(rows, n // len(rows)), rng.choice(rows, n % len(rows), replace=False)])


def features(model: MLP, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Penultimate activations (N, H) of uint8 bitmaps x (N, S, S) in eval mode, averaged over the model's
    test-time views: the output layer is linear, so W f + b is then exactly what predict_logits averages."""
    views = lookup(TTA, model.tta, "tta") or [(False, 0, 0)]
    out = np.empty((len(x), model.layer_sizes[-2]), dtype=model.dtype)
    step = max(1, batch_size // len(views))
    for i in range(0, len(x), step):
        xb = to_float(np.asarray(x[i:i + step]))  # (B, S*S)
        h = np.concatenate(list(tta_views(xb, views)))  # (V*B, S*S)
        for layer in model.layers[:-1]:
            h = layer.forward(h, False)
        np.mean(h.reshape(len(views), len(xb), -1), axis=0, out=out[i:i + step])
    return out


def new_rows(old_feats: np.ndarray, old_y: np.ndarray, W: np.ndarray, b: np.ndarray, new_feats: list[np.ndarray],
             steps: int = HEAD_STEPS, lr: float = HEAD_LR, pull: float = HEAD_PULL) -> tuple[np.ndarray, np.ndarray]:
    """Output rows for new classes, the old rows W (H, C) and b (C,) kept as they are.

    old_feats (N, H) with old_y (N,) in 0..C-1 are drawings of the old classes, new_feats one (n_i, H) array
    per new class. Each new row starts imprinted (Qi et al. 2018): the direction from the old drawings'
    centre (the mean of the old class means) to the new class's mean feature, at the old rows' mean norm,
    with the bias that puts the centre at the old rows' mean logit. Then the new rows alone are fitted by
    `steps` of full-batch Adam on the cross-entropy over all C + K classes, every class weighing the same
    (a word taught from 5 drawings counts as much as a class of 300), plus `pull` * |row - imprint|^2 / 2.
    The old logits are fixed, so each step costs one (N, H) x (H, K) product. Returns (H, K) and (K,)."""
    C = W.shape[1]
    centre = np.mean([old_feats[old_y == c].mean(axis=0) for c in np.unique(old_y)], axis=0)  # (H,)
    scale = float(np.linalg.norm(W, axis=0).mean())
    old_logit = float((centre @ W + b).mean())
    cols = []
    for f in new_feats:
        d = f.mean(axis=0) - centre
        cols.append(d * (scale / max(float(np.linalg.norm(d)), 1e-12)))
    W0 = np.stack(cols, axis=1).astype(W.dtype)  # (H, K) the imprint
    Wn = W0.copy()
    bn = (old_logit - centre @ Wn).astype(b.dtype)  # (K,)
    feats = np.concatenate([old_feats, *new_feats]).astype(W.dtype)  # (N, H)
    y = np.concatenate([old_y, *[np.full(len(f), C + i) for i, f in enumerate(new_feats)]])
    # The old rows' logits are fixed: each drawing's softmax over them is kept as its max and sum of exp, and a
    # step's softmax over all C + K classes only adds the K new columns (N x C work once, N x K per step).
    z_old = feats @ W + b  # (N, C)
    m_old = z_old.max(axis=1)  # (N,)
    s_old = np.exp(z_old - m_old[:, None]).sum(axis=1)  # (N,)
    del z_old
    counts = np.bincount(y, minlength=C + len(new_feats))
    weight = (len(y) / (len(counts[counts > 0]) * counts[y])).astype(W.dtype)[:, None]  # (N, 1): classes weigh alike
    weight /= len(y)  # the cross-entropy's mean over the drawings
    onehot = (y[:, None] == C + np.arange(len(new_feats))).astype(W.dtype)  # (N, K)
    gW, gb = np.zeros_like(Wn), np.zeros_like(bn)
    opt = Adam([Wn, bn], lr=lr, weight_decay=0.0)
    # One BLAS thread: these narrow products (K of 1 to 5 columns) take ~3 ms at N = 34,500 on one, where BLAS's
    # own threads took 10 to 50 ms on cores other processes were using, and einsum's loop 45 ms
    with threadpool_limits(1):
        for _ in range(steps):
            zn = feats @ Wn
            zn += bn  # (N, K)
            m = np.maximum(m_old, zn.max(axis=1))
            en = np.exp(zn - m[:, None])
            total = s_old * np.exp(m_old - m) + en.sum(axis=1)  # each drawing's sum of exp over all C + K classes
            dn = (en / total[:, None] - onehot) * weight  # d loss / d new logits: (p - onehot) / N, weighted
            np.matmul(feats.T, dn, out=gW)
            np.sum(dn, axis=0, out=gb)
            gW += pull * (Wn - W0)
            opt.step([gW, gb])
    return Wn, bn


def class_features(model: MLP, ds: Dataset, rows: np.ndarray, index: dict[str, int],
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, H) of a seeded sample of HEAD_ROWS of `rows` for each class of ds that `index` names, with
    their labels (N,) in index's numbering: what a new row is fitted against."""
    labels = ds.y[rows]
    sample = np.sort(np.concatenate([rng.permutation(rows[labels == j])[:HEAD_ROWS]
                                     for j, c in enumerate(ds.classes) if c in index]))
    return features(model, ds.x[sample]), np.array([index[ds.classes[j]] for j in ds.y[sample]])


def _initial_state(base: Base, ds: Dataset, train_rows: np.ndarray, old: Dataset, old_train: np.ndarray,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """RUN's weights for ds's classes: hidden layers as they are, RUN's output rows by class name, and rows for
    the new classes from new_rows, fitted against HEAD_ROWS of RUN's own training drawings of each old class
    (old, old_train: RUN's dataset and training rows; whatever extend.replay is)."""
    state = base.model.state_dict()
    last = base.model.dense[-1].name
    W, b = state[f"{last}.W"], state[f"{last}.b"]  # (H, C_old), (C_old,)
    index = {c: i for i, c in enumerate(base.classes)}
    rows = np.unique(train_rows)
    labels = ds.y[rows]
    new = [j for j, c in enumerate(ds.classes) if c not in index]
    out_w = np.empty((W.shape[0], len(ds.classes)), dtype=W.dtype)
    out_b = np.empty(len(ds.classes), dtype=b.dtype)
    for j, c in enumerate(ds.classes):
        if c in index:
            out_w[:, j], out_b[j] = W[:, index[c]], b[index[c]]
    if new:
        old_feats, old_y = class_features(base.model, old, old_train, index, rng)
        new_feats = []
        for j in new:
            mine = rows[labels == j]
            if not len(mine):
                raise DoodleError(f"the new class {ds.classes[j]!r} has no training drawing (all held out): give it "
                                  "more drawings or lower data.val_fraction / data.test_fraction")
            new_feats.append(features(base.model, ds.x[mine]))
        out_w[:, new], out_b[new] = new_rows(old_feats, old_y, W, b, new_feats)
    state[f"{last}.W"], state[f"{last}.b"] = out_w, out_b
    return state
