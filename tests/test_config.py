"""Strict configs: every mistake is one line naming the file and key, with what is allowed."""

import json
from pathlib import Path

import pytest

from doodle.config import defaults, load_config, parse_override
from doodle.errors import DoodleError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["default", "quick", "quickdraw16", "offline"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert set(cfg) == {"data", "model", "train", "augment", "extend"}


def test_every_shipped_key_has_a_comment():
    for path in (REPO / "configs").glob("*.yaml"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("  ") and ":" in line:
                assert "#" in line, f"{path.name}:{n} has no comment: {line!r}"


def test_unknown_key_names_file_key_and_suggests(tmp_path):
    p = write(tmp_path, "train:\n  learning_rate: 0.1\n  lr: 0.1\n")
    with pytest.raises(DoodleError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "learning_rate" in msg and " lr," in msg and "\n" not in msg


def test_unknown_section(tmp_path):
    with pytest.raises(DoodleError, match="unknown key 'trian'.*did you mean 'train'"):
        load_config(write(tmp_path, "trian:\n  lr: 0.1\n"))


@pytest.mark.parametrize("text, fragment", [
    ("train:\n  lr: fast\n", "train.lr must be a number"),
    ("train:\n  lr: -1\n", "train.lr must be a number > 0"),
    ("train:\n  epochs: 2.5\n", "train.epochs must be a whole number"),
    ("train:\n  optimizer: adamw\n", "did you mean 'adam'"),
    ("model:\n  hidden: 256\n", "model.hidden must be a list"),
    ("data:\n  recognized_only: yes please\n", "must be true or false"),
    ("data:\n  categories: [cat, dgo]\n", "unknown category 'dgo' (did you mean"),
    ("data:\n  val_fraction: 0.5\n  test_fraction: 0.45\n", "leave at least 10% for training"),
    ("data:\n  source: numpy_bitmap\n  image_size: 32\n", "image_size must be 28"),
    ("data:\n  source: synthetic\n  categories: [cat, circle]\n", "'cat' has no synthetic generator"),
    ("data:\n  categories: [cat]\n", "at least two classes"),
])
def test_bad_values(tmp_path, text, fragment):
    with pytest.raises(DoodleError) as e:
        load_config(write(tmp_path, text))
    assert fragment in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_yaml_syntax_error_has_line(tmp_path):
    with pytest.raises(DoodleError, match=r"c\.yaml:[34]: "):
        load_config(write(tmp_path, "train:\n  lr: 0.1\n  epochs: [1, 2\n"))


def test_missing_file(tmp_path):
    with pytest.raises(DoodleError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_parse_and_validate():
    cfg = load_config(None, ["train.lr=0.01", "model.hidden=[64, 32]", "data.countrycodes=[US]"])
    assert cfg["train"]["lr"] == 0.01 and cfg["model"]["hidden"] == [64, 32]
    assert cfg["data"]["countrycodes"] == ["US"]
    assert parse_override("train.clip_norm=null") == ("train", "clip_norm", None)
    with pytest.raises(DoodleError, match="--set train.lr=-3: train.lr"):
        load_config(None, ["train.lr=-3"])
    with pytest.raises(DoodleError, match="expected section.key=value"):
        load_config(None, ["lr=3"])
    with pytest.raises(DoodleError, match="did you mean 'epochs'"):
        load_config(None, ["train.epoch=3"])


def test_integer_given_for_float_is_accepted():
    assert load_config(None, ["train.lr=1"])["train"]["lr"] == 1.0


def test_defaults_are_valid_and_fresh():
    a, b = defaults(), defaults()
    a["model"]["hidden"].append(3)
    assert b["model"]["hidden"] == [512, 256]


def test_built_in_defaults_equal_default_yaml():
    assert load_config(REPO / "configs" / "default.yaml") == load_config(None)


def test_every_key_is_described_and_the_did_you_mean_says_what_the_key_is_for():
    from doodle.config import SCHEMA, reference

    ref = {r["key"]: r for r in reference()}
    assert set(ref) == {f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys}
    assert all(r["help"].strip() for r in ref.values())
    with pytest.raises(DoodleError, match=r"did you mean 'lr': peak learning rate\?"):
        load_config(None, ["train.lrr=0.1"])


def test_cli_help_config_lists_every_key():
    from typer.testing import CliRunner

    from doodle.cli import app
    from doodle.config import reference

    res = CliRunner().invoke(app, ["train", "--help-config", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout) == json.loads(json.dumps(reference()))
