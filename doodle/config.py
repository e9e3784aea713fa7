"""Strict YAML configs: every key is declared once here, with its type, allowed values and default.

An unknown key, a wrong type or an out-of-range value is a one-line `DoodleError` naming the file,
the key and what is allowed (with a did-you-mean). `--set section.key=value` overrides are parsed
as YAML scalars and checked by the same rules.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Protocol, cast

import yaml

from doodle.categories import CATEGORIES, SYNTHETIC_SHAPES, is_category, suggest
from doodle.errors import DoodleError
from doodle.local import local_words
from doodle.nn import ACTIVATIONS, BACKPROP, INITS, LOSSES, NORMS
from doodle.optim import OPTIMIZERS, SCHEDULES
from doodle.pixels import TTA
from doodle.raster import PADDING, RasterSpec

SOURCES = ("simplified", "raw", "numpy_bitmap", "synthetic")
MAX_NODES = 10_000  # values a config may hold once its YAML aliases are expanded (a real one has ~50)
SEED_MAX = 2 ** 32 - 1


class Checker(Protocol):
    """A key's checker: an error string for a value it refuses, else None; `allowed` (set by _allowing) says in
    words what it accepts."""

    allowed: str

    def __call__(self, value: Any, /) -> str | None: ...


@dataclass(frozen=True)
class Key:
    """One config key: its default, a checker returning an error string (or None) and a help line."""

    default: Any
    check: Checker
    help: str


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    """A finite int or float (NaN, infinities and ints too big for a float are not numbers to a config)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _allowing(text: str) -> Callable[[Callable[[Any], str | None]], Checker]:
    """Decorator: the checker's allowed values in words, for `doodle train --help-config`."""
    def mark(check: Callable[[Any], str | None]) -> Checker:
        marked = cast(Checker, check)  # a function takes attributes: this one becomes a Checker
        marked.allowed = text
        return marked
    return mark


def int_in(lo, hi=None, nullable=False):
    rng = f">= {lo}" if hi is None else f"from {lo} to {hi}"
    allowed = f"a whole number {rng}" + (" or null" if nullable else "")

    @_allowing(allowed)
    def check(v):
        if v is None and nullable:
            return None
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            return f"must be {allowed}"
        return None
    return check


def num_in(lo, hi=None, nullable=False, lo_open=False):
    low = f"> {lo}" if lo_open else f">= {lo}"
    rng = low if hi is None else f"{low} and <= {hi}"
    tail = " or null" if nullable else ""

    @_allowing(f"a number {rng}{tail}")
    def check(v):
        if v is None and nullable:
            return None
        bad = not _is_num(v) or (v <= lo if lo_open else v < lo) or (hi is not None and v > hi)
        if bad:
            kind = "finite number" if isinstance(v, float) and not math.isfinite(v) else "number"
            return f"must be a {kind} {rng}{tail}"
        return None
    return check


def one_of(*choices):
    @_allowing(" | ".join(map(str, choices)))
    def check(v):
        if v not in choices:
            hint = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1)
            dym = f" (did you mean '{hint[0]}'?)" if hint else ""
            return f"must be one of {', '.join(map(str, choices))}{dym}"
        return None
    return check


@_allowing("true | false")
def boolean(v):
    return None if isinstance(v, bool) else "must be true or false"


@_allowing("a list of category names (`doodle categories`), or all; [] with data.local")
def categories_check(v):
    if v == "all":
        return None
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        return "must be a list of category names, or 'all'"
    for c in v:
        if not is_category(c):
            close = suggest(c) if len(c) <= 60 else []  # the longest name has 27 characters
            hint = f" (did you mean {', '.join(repr(x) for x in close)}?)" if close else ""
            return f"has unknown category {short_repr(c)}{hint}; `doodle categories` lists the 345 names"
    if len(set(v)) != len(v):
        return "lists a category twice"
    return None


@_allowing("a list of positive whole numbers, e.g. [256, 128], or []")
def hidden_check(v):
    if not isinstance(v, list) or not all(_is_int(h) and h > 0 for h in v):
        return "must be a list of positive whole numbers, e.g. [256, 128] (or [] for softmax regression)"
    return None


@_allowing("null, or a list of two-letter country codes, e.g. [US, GB]")
def countrycodes_check(v):
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(c, str) and len(c) == 2 for c in v):
        return "must be null or a list of two-letter country codes, e.g. [US, GB]"
    return None


@_allowing("a list of .ndjson files or folders of <word>.ndjson files, e.g. [data/mine]")
def local_check(v):
    if not isinstance(v, list) or not all(isinstance(p, str) and p.strip() for p in v):
        return "must be a list of .ndjson files or folders of them, e.g. [data/mine] (or [] for none)"
    if len(set(v)) != len(v):
        return "lists a path twice"
    return None


@_allowing("a string, or null")
def optional_str(v):
    return None if v is None or isinstance(v, str) else "must be a string or null"


# The defaults are configs/default.yaml's values (a test keeps them equal), so `doodle train` works
# the same from any folder.
SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "source": Key("simplified", one_of(*SOURCES), "which files to train from"),
        "categories": Key(["apple", "banana", "cat", "house", "bicycle", "fish", "flower", "tree", "car", "star"],
                          categories_check, "class names in order, or 'all' for the 345"),
        # Your own drawings (doodle play saves them as data/mine/<word>.ndjson): each file one class, named by
        # its word; a word that is also in data.categories adds its drawings to that category.
        "local": Key([], local_check, "your own drawings: .ndjson files or folders of <word>.ndjson (raw or "
                     "simplified records), each word a class"),
        "per_category": Key(3000, int_in(1, 10 ** 9, nullable=True), "drawings kept per category (null = whole file)"),
        "image_size": Key(28, int_in(8, 256), "raster side in pixels (numpy_bitmap is always 28)"),
        "line_width": Key(16.0, num_in(0, 128, lo_open=True), "pen diameter in the 256-unit drawing box"),
        "recognized_only": Key(False, boolean, "keep only drawings Google's game recognised"),
        "countrycodes": Key(None, countrycodes_check, "keep only these countries (null = all)"),
        "strict": Key(False, boolean, "stop at the first bad ndjson line instead of skipping and counting it"),
        "val_fraction": Key(0.1, num_in(0, 0.5), "share of each category held out for validation"),
        "test_fraction": Key(0.1, num_in(0, 0.5), "share of each category held out for testing"),
        "test_split": Key("random", one_of("random", "tail"), "random per category, or the last rows of each file"),
        "seed": Key(0, int_in(0, SEED_MAX), "seed of the split"),
        "base_url": Key(None, optional_str, "download mirror (null = $DOODLE_BASE_URL or Google's bucket)"),
        "shuffle": Key("full", one_of("full", "blocks"), "epoch order: full permutation, or shuffled blocks "
                       "of rows mixed in windows (reads the disk in blocks; for data larger than memory)"),
        "block_rows": Key(64, int_in(1), "shuffle: blocks: consecutive rows read together"),
        "shuffle_window": Key(65536, int_in(1), "shuffle: blocks: rows mixed at a time (the shuffle buffer; held "
                              "by the page cache)"),
        "scheduler": Key(None, optional_str, "Dask scheduler address (e.g. tcp://10.0.0.5:8786) that "
                         "rasterises the categories; null = this machine's cores (needs doodle[dask])"),
    },
    "model": {
        "hidden": Key([512, 256], hidden_check, "hidden layer sizes"),
        "activation": Key("relu", one_of(*ACTIVATIONS), "non-linearity"),
        "dropout": Key(0.1, num_in(0, 0.95), "dropout after each hidden layer"),
        "init": Key("he", one_of(*INITS), "weight initialisation"),
        "norm": Key("none", one_of(*NORMS), "batch norm between each hidden layer and its activation"),
        "tta": Key("flip_shift", one_of(*TTA),
                   "test-time augmentation: average the logits of the image and its 1-pixel shifts, its mirror "
                   "image, or both (10 views)"),
    },
    "train": {
        "epochs": Key(30, int_in(1, 10000), "passes over the training split"),
        "batch_size": Key(256, int_in(1, 65536), "samples per gradient step"),
        "optimizer": Key("adam", one_of(*OPTIMIZERS), "update rule"),
        "lr": Key(0.002, num_in(0, 10, lo_open=True), "peak learning rate"),
        "momentum": Key(0.9, num_in(0, 0.999), "momentum for momentum/nesterov"),
        "beta1": Key(0.9, num_in(0, 0.9999), "Adam first-moment decay"),
        "beta2": Key(0.999, num_in(0, 0.99999), "Adam second-moment decay"),
        "weight_decay": Key(0.0001, num_in(0, 1), "L2 (SGD) or decoupled (Adam) weight decay; biases are not decayed"),
        "schedule": Key("cosine", one_of(*SCHEDULES), "learning-rate schedule"),
        "warmup_epochs": Key(1.0, num_in(0, 1000), "linear warm-up length in epochs (capped below the run's length)"),
        "step_epochs": Key(10, int_in(1, 10000), "step schedule: epochs between decays"),
        "gamma": Key(0.1, num_in(0, 1, lo_open=True), "step schedule: decay factor"),
        "min_lr": Key(0.0, num_in(0, 10), "cosine schedule: final learning rate"),
        "loss": Key("cross_entropy", one_of(*LOSSES), "training loss"),
        "backprop": Key("manual", one_of(*BACKPROP),
                        "how gradients are found: hand-written layer backward (fast) or the autodiff graph"),
        "clip_norm": Key(None, num_in(0, nullable=True, lo_open=True), "clip the global gradient norm (null = off)"),
        "patience": Key(None, int_in(1, nullable=True), "early stopping: epochs without val improvement (null = off)"),
        "seed": Key(0, int_in(0, SEED_MAX), "seed of initialisation, shuffling, dropout and augmentation"),
    },
    "augment": {
        "shift": Key(0.05, num_in(0, 0.5), "random translation, as a fraction of the image side"),
        "rotate": Key(8.0, num_in(0, 180), "random rotation, in degrees either way"),
        "scale": Key(0.08, num_in(0, 0.9), "random zoom, +- this fraction"),
        "probability": Key(0.8, num_in(0, 1), "share of training samples that are augmented"),
        "flip": Key(0.5, num_in(0, 1), "share of training images mirrored left to right"),
    },
    # Extending a trained run with new words (doodle train --from RUN, doodle.extend): the run's network and
    # pixels are kept, so its weights mean the same; its classes' drawings are replayed so it does not forget them.
    "extend": {
        "from": Key(None, optional_str, "the trained run to start from: its hidden layers and its classes' output "
                    "rows; new words gain rows (null = train from scratch)"),
        "replay": Key(300, int_in(0), "training drawings of each of the run's classes mixed in with the new ones "
                      "(0 = none: the old classes are then forgotten)"),
    },
}


def defaults() -> dict:
    """The full config with every default filled in."""
    return {sec: {k: copy.deepcopy(key.default) for k, key in keys.items()} for sec, keys in SCHEMA.items()}


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 6, 6, 40, 40, 40


def short_repr(value: Any) -> str:
    """repr() for a message: bounded in size and time whatever the value (a YAML alias bomb, a huge number)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int with more digits than Python converts to text
        text = "<a huge number>"
    return _clip(text)


def _clip(text: str, limit: int = 80) -> str:
    """Text for a message, cut to `limit` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _unknown(where: str, name: str, known: dict) -> DoodleError:
    name = _clip(name, 40)
    hint = difflib.get_close_matches(name, list(known), n=1)
    if hint and isinstance(known[hint[0]], Key):
        dym = f" (did you mean '{hint[0]}': {known[hint[0]].help}?)"
    else:
        dym = f" (did you mean '{hint[0]}'?)" if hint else ""
    return DoodleError(f"{where}: unknown key '{name}'{dym}; allowed: {', '.join(known)}; "
                       "`doodle train --help-config` describes every key")


def reference() -> list[dict]:
    """Every config key with its default, its allowed values and what it is for (`doodle train --help-config`)."""
    return [{"key": f"{sec}.{k}", "default": key.default, "allowed": key.check.allowed, "help": key.help}
            for sec, keys in SCHEMA.items() for k, key in keys.items()]


def _merge(cfg: dict, data: Any, where: str) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        raise DoodleError(f"{where}: expected a mapping of sections ({', '.join(SCHEMA)})")
    for sec, body in data.items():
        if sec not in SCHEMA:
            raise _unknown(where, str(sec), SCHEMA)
        if body is None:
            continue
        if not isinstance(body, dict):
            raise DoodleError(f"{where}: section '{sec}' must be a mapping of keys")
        for key, value in body.items():
            if key not in SCHEMA[sec]:
                raise _unknown(f"{where}: {sec}", str(key), SCHEMA[sec])
            _set(cfg, sec, key, value, where)


def _set(cfg: dict, sec: str, key: str, value: Any, where: str) -> None:
    spec = SCHEMA[sec][key]
    if isinstance(spec.default, float) and _is_num(value):
        value = float(value)  # `lr: 1` means 1.0
    problem = spec.check(value)
    if problem:
        raise DoodleError(f"{where}: {sec}.{key} {problem} (got {short_repr(value)})")
    cfg[sec][key] = value


class YamlProblem(Exception):
    """What the strict loader refuses, with the 0-based line when known."""

    def __init__(self, problem: str, line: int | None = None, hint: str = "fix the YAML syntax"):
        super().__init__(problem)
        self.problem, self.line, self.hint = problem, line, hint


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made as strict as the schema: a key written twice in one mapping is an error
    (plain YAML keeps the last silently), `1e-3` is a number (YAML 1.1 wants a dot in it, people don't),
    and aliases may not expand past MAX_NODES values (a 1 KB 'billion laughs' file would otherwise build
    a value whose every use, even in an error message, costs gigabytes)."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise YamlProblem(f"duplicate key '{str(key)[:40]}' (first on line "
                                      f"{seen[key] + 1})", key_node.start_mark.line, "keep only one of them")
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_StrictLoader.add_implicit_resolver(  # 1e-3, -2E+4, 5e10: floats (YAML 1.1 reads them as strings)
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _check_expanded_size(root) -> None:
    """Refuse a document holding more than MAX_NODES nodes once aliases are expanded, or a recursive alias."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if not children_done:
            if id(node) in open_:
                raise YamlProblem("a recursive alias (a value that contains itself)", node.start_mark.line,
                                  "remove the alias")
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
            continue
        open_.discard(id(node))
        total = 1 + sum(size.get(id(c), 0) for c in children)
        if total > MAX_NODES:
            raise YamlProblem(f"the values expand to over {MAX_NODES:,} items (through aliases?)",
                              node.start_mark.line, "write the config out plainly")
        size[id(node)] = total


def load_yaml(text: str):
    """YAML text -> python values through the strict loader; YamlProblem when it is not acceptable."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise YamlProblem(getattr(exc, "problem", None) or "invalid YAML",
                          None if mark is None else mark.line) from None
    except RecursionError:
        raise YamlProblem("nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise YamlProblem(f"unreadable value ({str(exc)[:60]})") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """'train.lr=0.01' -> ('train', 'lr', 0.01); values are YAML scalars or lists."""
    if "=" not in text:
        raise DoodleError(f"--set {_clip(text)}: expected section.key=value, e.g. --set train.lr=0.01")
    dotted, raw = text.split("=", 1)
    if dotted.count(".") != 1:
        raise DoodleError(f"--set {_clip(text)}: expected section.key=value, e.g. --set train.lr=0.01")
    sec, key = dotted.strip().split(".")
    if sec not in SCHEMA:
        raise _unknown(f"--set {_clip(text)}", sec, SCHEMA)
    if key not in SCHEMA[sec]:
        raise _unknown(f"--set {_clip(text)}: {sec}", key, SCHEMA[sec])
    try:
        value = load_yaml(raw) if raw.strip() else None
    except YamlProblem as exc:
        if exc.hint == "fix the YAML syntax":
            value = raw  # not YAML: a plain string, which the key's check judges
        else:
            raise DoodleError(f"--set {_clip(text)}: {exc.problem}; {exc.hint}") from None
    return sec, key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | None = None) -> dict:
    """Defaults (or a checked config `base`, e.g. a trained run's), then the YAML file (if any), then `--set`
    overrides; validated throughout."""
    cfg = defaults() if base is None else copy.deepcopy(base)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DoodleError(f"{path}: config file not found; see configs/ for examples")
        try:
            data = load_yaml(path.read_text(encoding="utf-8-sig"))
        except YamlProblem as exc:
            line = f":{exc.line + 1}" if exc.line is not None else ""
            raise DoodleError(f"{path}{line}: {exc.problem}; {exc.hint}") from None
        except UnicodeDecodeError:
            raise DoodleError(f"{path}: not a UTF-8 text file; give a YAML config") from None
        except OSError as exc:
            raise DoodleError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
        _merge(cfg, data, str(path))
    for text in overrides:
        sec, key, value = parse_override(text)
        _set(cfg, sec, key, value, f"--set {_clip(text)}")
    check_consistency(cfg, str(path) if path else "config")
    return cfg


def from_dict(data: Any, where: str) -> dict:
    """A config given as python values (e.g. the one a model.json keeps), checked like a file."""
    cfg = defaults()
    _merge(cfg, data, where)
    check_consistency(cfg, where)
    return cfg


def check_consistency(cfg: dict, where: str) -> None:
    """Rules that involve more than one key."""
    data = cfg["data"]
    if data["val_fraction"] + data["test_fraction"] >= 0.9:
        raise DoodleError(f"{where}: data.val_fraction + data.test_fraction must leave at least 10% for training")
    found = RasterSpec.problem(data["image_size"], data["line_width"], PADDING)
    if found:  # the raster's own bounds, relative to the image (padding is fixed, so line_width is the key)
        key = "image_size" if found[0] == "size" else "line_width"
        raise DoodleError(f"{where}: data.{key} {found[1]}")
    if data["source"] == "numpy_bitmap" and data["image_size"] != 28:
        raise DoodleError(f"{where}: data.image_size must be 28 with source numpy_bitmap (Google's renders are 28x28)")
    # Relative to where the command runs (as --data-dir is), recorded absolute so that the run's config.yaml
    # finds them from anywhere
    data["local"] = [str(Path(p).expanduser().resolve()) for p in data["local"]]
    cats = data["categories"]
    if data["source"] == "synthetic":
        if cats == "all":
            cats = list(SYNTHETIC_SHAPES)
            data["categories"] = cats
        bad = [c for c in cats if c not in SYNTHETIC_SHAPES]
        if bad:
            raise DoodleError(f"{where}: data.categories: '{bad[0]}' has no synthetic generator; "
                              f"synthetic shapes are {', '.join(SYNTHETIC_SHAPES)}")
    if cats != "all" and len(cats) < 2 and not data["local"]:
        raise DoodleError(f"{where}: data.categories needs at least two classes to learn from")


def source_categories(cfg: dict) -> list[str]:
    """The classes data.source provides (Google's categories or the synthetic shapes), in order."""
    cats = cfg["data"]["categories"]
    return list(CATEGORIES) if cats == "all" else list(cats)


def class_names(cfg: dict) -> list[str]:
    """The configured classes in order: data.categories, then the words of data.local not among them."""
    cats = source_categories(cfg)
    known = set(cats)
    return cats + [w for w in local_words(cfg["data"]["local"]) if w not in known]


def dump(cfg: dict) -> str:
    """The resolved config as YAML (what a run folder keeps)."""
    return yaml.safe_dump(cfg, sort_keys=False)
