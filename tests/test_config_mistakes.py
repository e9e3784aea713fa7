"""Configs.

Part of the hostile-input and interruption suite (issues 11 and 21): every case ends in a clean one-line
error or the right result, never a traceback or a silently wrong answer, and nothing complete on disk is lost.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from doodle.config import MAX_NODES, SCHEMA, load_config
from doodle.errors import DoodleError
from helpers import cli, one_line_error

# ---------------------------------------------------------------------------------------------
# Configs


def _cfg_file(tmp_path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, where, fragment", [
    ("train:\n  epochs: 2\n  batch_size: 64\n  epochs: 15\n", ":4:", "duplicate key 'epochs' (first on line 2)"),
    ("train:\n  epochs: 2\nmodel:\n  hidden: [8]\ntrain:\n  batch_size: 256\n", ":5:", "duplicate key 'train'"),
    ("train: {lr: 0.1, lr: 0.2}\n", ":1:", "duplicate key 'lr'"),
    ("model:\n  hidden: &a [1, 2]\nx: &b [*a, *a]\ny: [*b, *b, *b]\ntrain: &t {epochs: *t}\n", ":5:",
     "recursive alias"),
    ("model:\n  hidden: " + "[" * 1000 + "]" * 1000 + "\n", "c.yaml:", "nested too deeply"),
    ("train:\n  seed: 1" + "0" * 5000 + "\n", "c.yaml:", "unreadable value"),
])
def test_config_file_mistakes(tmp_path, text, where, fragment):
    with pytest.raises(DoodleError) as err:
        load_config(_cfg_file(tmp_path, text))
    assert where in str(err.value) and fragment in str(err.value), str(err.value)


def test_alias_bomb_is_refused_fast_and_small(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = "bomb:\n" + "\n".join(f"  {line}" for line in lines) + "\nmodel:\n  hidden: *a8\n"
    assert len(text) < 1200
    t = time.perf_counter()
    with pytest.raises(DoodleError, match=f"expand to over {MAX_NODES:,} items") as err:
        load_config(_cfg_file(tmp_path, text))
    # A hang guard, not a speed target: the expanded bomb would take minutes and gigabytes.
    assert time.perf_counter() - t < 10 and len(str(err.value)) < 300
    # Nested but within the limit: the value is wrong, and the message shows only its start.
    text = "model:\n  hidden: &a [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]]\ntrain:\n  lr: *a\n"
    with pytest.raises(DoodleError, match=r"model.hidden must be a list .*\(got \[\[1, 2, 3, 4, 5, 6, \.\.\.\]") as err:
        load_config(_cfg_file(tmp_path, text))
    assert len(str(err.value)) < 300


NUMBER_KEYS = [f"{sec}.{k}" for sec, keys in SCHEMA.items() for k, key in keys.items()
               if isinstance(key.default, float) or key.default is None and k == "clip_norm"]


@pytest.mark.parametrize("key", NUMBER_KEYS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused_for_every_number_key(key, value, tmp_path):
    with pytest.raises(DoodleError, match=rf"--set {key}={value}: {key} must be a finite number"):
        load_config(None, [f"{key}={value}"])
    sec, name = key.split(".")
    with pytest.raises(DoodleError, match=rf"c.yaml: {key} must be a finite number"):
        load_config(_cfg_file(tmp_path, f"{sec}:\n  {name}: {value}\n"))


def test_nan_via_set_is_a_clean_cli_error(tmp_path):
    for key in ("data.val_fraction", "augment.rotate", "train.clip_norm", "augment.probability",
                "train.momentum"):
        one_line_error(cli("train", "--set", f"{key}=.nan", "--data-dir", tmp_path), f"{key} must be a finite")
    assert not (tmp_path / "runs").exists() and not list(tmp_path.iterdir())


def test_scientific_notation_is_a_number_in_files_and_set(tmp_path):
    cfg = load_config(_cfg_file(tmp_path, "train:\n  lr: 1e-3\n  min_lr: 5E-6\n  weight_decay: 1.5e-4\n"),
                      ["train.clip_norm=1e1", "augment.scale=5e-2"])
    assert (cfg["train"]["lr"], cfg["train"]["min_lr"], cfg["train"]["weight_decay"]) == (0.001, 5e-6, 0.00015)
    assert (cfg["train"]["clip_norm"], cfg["augment"]["scale"]) == (10.0, 0.05)
    with pytest.raises(DoodleError, match="train.epochs must be a whole number"):
        load_config(None, ["train.epochs=1e3"])  # a float is still not a whole number


def test_huge_integers_are_refused_without_overflow():
    for key in ("train.seed", "data.per_category", "train.lr", "train.clip_norm"):
        with pytest.raises(DoodleError, match=f"{key} must be a"):
            load_config(None, [f"{key}=1{'0' * 400}"])


def test_huge_values_never_fill_a_message(tmp_path):
    for overrides in (["data.categories=[cat, " + "x" * 1_000_000 + "]"], ["x" * 1_000_000],
                      ["train." + "x" * 1_000_000 + "=1"]):
        t = time.perf_counter()
        with pytest.raises(DoodleError) as err:
            load_config(None, overrides)
        # A hang guard, not a speed target: quadratic work on a megabyte would take minutes.
        assert len(str(err.value)) < 600 and time.perf_counter() - t < 10, str(err.value)[:300]


def test_config_with_bom_and_unreadable_config(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbftrain:\n  epochs: 4\n")
    assert load_config(path)["train"]["epochs"] == 4
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(DoodleError, match="config file not found"):
        load_config(tmp_path / "dir.yaml")
