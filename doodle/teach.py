"""Teaching a trained model a new word from a few drawings, in seconds: what `doodle play`'s teach mode runs.

Nothing is retrained: the network stays as it is and its output layer gains one row for the word
(doodle.extend.new_rows: imprinted from the drawings' mean penultimate feature, then fitted against the
old rows, which stay as they are, on the features of HEAD_ROWS training drawings of each class the
model knows). Those old features are computed once per model (`Teacher.prepare`, seconds), so teaching
a word costs the features of its few drawings and a hundred small steps (well under a second).

Calibration, honestly: the model's temperature (fitted on its validation split when it was trained) is
kept and applied to the taught word's logit too, but nothing calibrates the taught word itself: a
handful of drawings cannot say how often a 70% guess of it is right. What the teacher can say is
measured on the drawings themselves: each one left out in turn, is it recognised from the others
(`Taught.held_out`)? bench/own.py measures the taught rows on held-out drawings of 5 words.

The result is a run folder like any other (model.npz, model.json, config.yaml and split.npz, the
test split being the base run's): `predict`, `evaluate` and `play --model` use it as they use a
trained run. model.json says what it came from ("extended_from") and which drawings taught each
word ("taught": their file and key_ids), so a taught run can be taught again in a later session.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from doodle import fsutil, runs
from doodle.categories import file_name_problem, show_word
from doodle.checkpoint import save_model
from doodle.config import dump, from_dict
from doodle.errors import DoodleError
from doodle.extend import class_features, features, new_rows
from doodle.nn import MLP
from doodle.rasterpool import rasterize_batch
from doodle.strokes import iter_drawings
from doodle.train import model_meta

INIT = "taught: one output row imprinted from the drawings' mean penultimate feature, then fitted against the " \
       "old rows (unchanged) on the features of training drawings of every known class (doodle.teach)"


@dataclass
class Taught:
    """A word taught: the new model, its run folder and what the teaching measured."""

    word: str
    run_dir: Path
    model: MLP
    meta: dict
    seconds: float  # the teaching alone (features of the drawings, fits, writing the run folder)
    held_out: tuple[int, int]  # (drawings recognised when left out of the teaching, drawings)


class Teacher:
    """Teaches one model new words; each word taught becomes the model the next one extends."""

    def __init__(self, run_dir: str | Path, model: MLP, meta: dict, data_dir: str | Path | None = None):
        self.run_dir, self.meta = Path(run_dir), meta
        self.model = _copy(model)  # features are computed on a copy: the caller's model keeps serving
        self.data_dir = data_dir
        self._feats: tuple[np.ndarray, np.ndarray] | None = None  # (N, H) features of known classes, (N,) labels
        self._problem: str | None = None
        self._ready = threading.Lock()

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def prepare(self) -> str | None:
        """Compute the known classes' features once (a few seconds); None when ready, else why teaching is
        impossible here (the run's data is not on this machine)."""
        with self._ready:
            if self._feats is None and self._problem is None:
                try:
                    self._feats = self._known_features()
                except DoodleError as exc:
                    self._problem = str(exc)
            return self._problem

    def _known(self) -> tuple[np.ndarray, np.ndarray]:
        """The known classes' features (prepared now if need be); DoodleError when teaching is impossible here."""
        problem = self.prepare()
        if problem is not None or self._feats is None:
            raise DoodleError(f"cannot teach here: {problem}")
        return self._feats

    def _known_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Features of HEAD_ROWS training drawings of each class of the run's data, and of the drawings that
        taught each taught word (read back from their files by key_id)."""
        from doodle.evaluate import trained_rows

        ds, split = trained_rows(self.run_dir, self.meta, self.data_dir,
                                 then="teaching needs the drawings it was trained on")
        index = {c: i for i, c in enumerate(self.classes)}
        feats, y = class_features(self.model, ds, split["train"], index, np.random.default_rng(0))
        for record in self.meta.get("taught", []):
            bitmaps = _read_taught(record, self.meta["raster"])
            feats = np.concatenate([feats, features(self.model, bitmaps)])
            y = np.concatenate([y, np.full(len(bitmaps), index[record["word"]])])
        return feats, y

    def teach(self, word: str, bitmaps: np.ndarray, drawings_file: Path, key_ids: list[str],
              runs_dir: str | Path | None = None) -> Taught:
        """Teach `word` from its drawings (uint8 (n, S, S) bitmaps, saved in drawings_file under key_ids) and
        write the run folder (in runs_dir, default beside the taught model's). Returns what was made."""
        problem = file_name_problem(word)
        if problem:
            raise DoodleError(f"the word {show_word(word)} {problem}, so it cannot name a file (<word>.ndjson)")
        if word in self.classes:
            raise DoodleError(f"{self.run_dir.name} already knows {word!r}; teach it a word it does not know")
        if len(bitmaps) < 2:
            raise DoodleError(f"teaching {word!r} needs at least 2 drawings, got {len(bitmaps)}")
        old_feats, old_y = self._known()
        tick = time.perf_counter()
        last = self.model.dense[-1]
        W, b = last.params["W"], last.params["b"]  # (H, C), (C,)
        new = features(self.model, bitmaps)  # (n, H)
        Wn, bn = new_rows(old_feats, old_y, W, b, [new])
        hits = 0
        for i in range(len(new)):  # each drawing left out in turn: does the rest teach it?
            Wi, bi = new_rows(old_feats, old_y, W, b, [np.delete(new, i, axis=0)])
            hits += int(np.argmax(np.append(new[i] @ W + b, new[i] @ Wi + bi)) == len(b))
        model = _grown(self.model, Wn, bn)
        # runs/teach-<word>-<time> (".run" is there for default_run_dir's Path.stem, which would cut "t.v" to "t")
        run_dir = runs.default_run_dir(f"teach-{word}.run", Path(runs_dir) if runs_dir else self.run_dir.parent)
        meta = self._write_run(run_dir, model, word, drawings_file, key_ids, (hits, len(new)))
        taught = Taught(word, run_dir, _copy(model), meta, time.perf_counter() - tick, (hits, len(new)))
        with self._ready:  # the next word extends this one: its drawings join the known ones
            self.run_dir, self.meta, self.model = run_dir, meta, model
            if self._feats is not None:
                self._feats = (np.concatenate([old_feats, new]), np.append(old_y, np.full(len(new), len(b))))
        return taught

    def _write_run(self, run_dir: Path, model: MLP, word: str, drawings_file: Path, key_ids: list[str],
                   held_out: tuple[int, int]) -> dict:
        """The run folder of a taught model; the test split is the taught-from run's (the word has none)."""
        base, cfg = self.meta, from_dict(self.meta.get("config"), f"{self.run_dir / runs.MODEL_JSON} config")
        run_id = uuid.uuid4().hex
        metrics = {k: v for k, v in (base.get("metrics") or {}).items() if k in ("confident_at", "confident_precision")}
        metrics["taught"] = {"word": word, "held_out_recognised": held_out[0], "drawings": held_out[1]}
        origin = {"run": str(self.run_dir.resolve()), "run_id": base.get("run_id"), "classes": self.classes,
                  "new_classes": [word], "new_drawings": len(key_ids), "init": INIT}
        meta = model_meta(cfg, self.classes + [word], model.spec, metrics, run_id, base.get("data_dir"), origin)
        meta["temperature"] = model.temperature  # the run's, applied to the new logit too (see module docstring)
        meta["taught"] = [*base.get("taught", []), {"word": word, "drawings": str(Path(drawings_file).resolve()),
                                                     "key_ids": list(key_ids)}]
        with runs.claim(run_dir):
            split_path = self.run_dir / runs.SPLIT_NPZ
            if split_path.is_file():
                split = runs.load_split(self.run_dir)
                fsutil.save_npz(run_dir / runs.SPLIT_NPZ, {**{k: v for k, v in split.items() if k != "run_id"},
                                                            "run_id": np.array(run_id)})
            fsutil.write_text(run_dir / runs.CONFIG_YAML, runs.config_header(run_id) + dump(cfg))
            save_model(run_dir, model, meta)
        return meta


def _copy(model: MLP) -> MLP:
    """An independent copy of a model (its own layer caches), temperature and test-time views included."""
    out = MLP.from_spec(model.spec, initialise=False)
    out.load_state_dict(model.state_dict())
    out.temperature = model.temperature
    return out


def _grown(model: MLP, Wn: np.ndarray, bn: np.ndarray) -> MLP:
    """The model with output rows Wn (H, K), bn (K,) added after its own."""
    sizes = model.spec.layer_sizes
    grown = MLP.from_spec(dataclasses.replace(model.spec, layer_sizes=(*sizes[:-1], sizes[-1] + len(bn))),
                          initialise=False)
    state = model.state_dict()
    last = model.dense[-1].name
    state[f"{last}.W"] = np.concatenate([state[f"{last}.W"], Wn], axis=1)
    state[f"{last}.b"] = np.concatenate([state[f"{last}.b"], bn])
    grown.load_state_dict(state)
    grown.temperature = model.temperature
    return grown


def _read_taught(record: dict, raster: dict) -> np.ndarray:
    """The bitmaps of the drawings that taught a word, read back from their file by key_id."""
    path, wanted = Path(record["drawings"]), set(record["key_ids"])
    if not path.is_file():
        raise DoodleError(f"{path}: the drawings that taught {record['word']!r} are gone; teaching again needs them")
    drawings = [r["drawing"] for r in iter_drawings(path) if r["key_id"] in wanted]
    if len(drawings) != len(wanted):
        raise DoodleError(f"{path}: {len(wanted) - len(drawings)} of the drawings that taught {record['word']!r} "
                          "are missing from it")
    return rasterize_batch(drawings, size=raster["size"], line_width=raster["line_width"],
                           padding=raster["padding"], workers=1)
