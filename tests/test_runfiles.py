"""Run files edited or damaged by hand (issue 21): JSON nested 100,000 deep or holding a 5,000-digit number,
a byte order mark, .npz members that claim huge arrays, zip bombs, pickles and transposed weights.

Each is a one-line error naming the file (or, for a side file only people and the run-id check read, no
error at all), never a traceback, and never a large allocation: the hostile files are built small here
(a header that claims a 37 GiB array needs no data; a bomb is 16 MB of zeros, 16 KB compressed) and the
memory a refusal takes is measured with tracemalloc.

Two of these were mutation-test survivors: a shape check comparing sizes only (a transposed weight) and
`allow_pickle=True` in load_model (a real pickle payload, which would create a file).
"""

from __future__ import annotations

import io
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from doodle import checkpoint, fsutil
from doodle.checkpoint import load_model
from doodle.config import load_config
from doodle.dataset import load_dataset
from doodle.errors import DoodleError
from doodle.evaluate import evaluate
from doodle.play import make_app
from doodle.predict import predict
from doodle.runs import LAST_NPZ, load_split
from helpers import TINY, cli, copy_run, one_line_error

HOSTILE = {  # name -> (JSON text, words in the reason)
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "a 5,000-digit integer": (b'{"run_id": ' + b"7" * 5000 + b"}", "a whole number of more than 4300 digits"),
}
BOMB_BYTES = 16 << 20  # a "zip bomb" member: this many zeros, which deflate to ~16 KB
SMALL = 4 << 20  # what refusing a hostile file may allocate at the most (tracemalloc's peak)
DRAWING = json.dumps({"word": "circle", "drawing": [[[10, 100, 200], [20, 120, 30]]]})  # for predict on stdin


# ---------------------------------------------------------------------------------------------
# The one JSON reader


@given(st.binary(max_size=200))
def test_parse_json_refuses_any_bytes_with_bad_json_only(data):
    try:
        fsutil.parse_json(data)
    except fsutil.BadJSON as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 120


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=20)


@settings(max_examples=50)
@given(JSON_VALUES, st.booleans())
def test_parse_json_reads_what_json_writes_with_or_without_a_byte_order_mark(value, bom):
    text = ("\ufeff" if bom else "") + json.dumps(value)
    assert fsutil.parse_json(text) == value
    assert fsutil.parse_json(text.encode("utf-8")) == value


@pytest.mark.parametrize("name", list(HOSTILE))
def test_parse_json_names_what_is_wrong(name):
    text, words = HOSTILE[name]
    with pytest.raises(fsutil.BadJSON, match=words):
        fsutil.parse_json(text)
    with pytest.raises(fsutil.BadJSON, match="not UTF-8"):
        fsutil.parse_json(b'{"a": "\xff"}')


# ---------------------------------------------------------------------------------------------
# Damaged JSON files of a run


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("command", ["predict", "evaluate", "play"])
def test_a_damaged_model_json_is_one_line_in_every_command(run_dir, tmp_path, name, command):
    run = copy_run(run_dir, tmp_path)
    text, words = HOSTILE[name]
    (run / "model.json").write_bytes(text)
    args = {"predict": ("predict", tmp_path / "x.png"), "evaluate": ("evaluate",),
            "play": ("play", "--no-open", "--port", "0", "--save-dir", tmp_path / "mine")}[command]
    one_line_error(cli(*args, "--model", run), f"model.json: corrupted model metadata ({words}")


def test_a_model_json_with_a_byte_order_mark_is_read(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    (run / "model.json").write_bytes(b"\xef\xbb\xbf" + (run / "model.json").read_bytes())
    assert predict(["-"], run, stdin=io.StringIO(DRAWING))[0][0]["top"]


def _damage_side_file(run: Path, side: str, text: bytes) -> None:
    if side == "state.json":
        (run / side).write_bytes(text)
    else:  # one damaged line among the run's own
        with open(run / side, "ab") as fh:
            fh.write(text + b"\n")


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("side", ["state.json", "metrics.jsonl"])
def test_a_damaged_side_file_never_stops_the_model_and_resume_rewrites_it(run_dir, data_dir, tmp_path, name, side):
    """state.json and metrics.jsonl only serve people and the run-id check: predict, evaluate and play use the
    model without comparing them; --resume rewrites both from last.npz."""
    run = copy_run(run_dir, tmp_path)
    _damage_side_file(run, side, HOSTILE[name][0])
    assert predict(["-"], run, stdin=io.StringIO(DRAWING))[0][0]["top"]
    assert evaluate(run, data_dir=data_dir)["n"] > 0
    with TestClient(make_app(run, tmp_path / "mine")) as client:
        assert client.get("/api/model").status_code == 200
    res = cli("train", "--resume", run, "--set", "train.epochs=4", "--data-dir", data_dir)
    assert res.exit_code == 0, res.output
    assert fsutil.read_json(run / "state.json")["epoch"] == 4
    assert [fsutil.parse_json(r)["epoch"] for r in (run / "metrics.jsonl").read_bytes().splitlines()] == [1, 2, 3, 4]


def test_a_side_file_of_another_run_is_still_refused_beside_a_damaged_line(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    _damage_side_file(run, "metrics.jsonl", HOSTILE["nested 100,000 deep"][0])
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 9, "run_id": "0" * 32}) + "\n")
    with pytest.raises(DoodleError, match="belongs to run 00000000"):
        load_model(run)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_resume_of_a_finished_run_with_a_damaged_model_json_finishes_it_again(run_dir, data_dir, tmp_path, name):
    run = copy_run(run_dir, tmp_path)
    (run / "model.json").write_bytes(HOSTILE[name][0])
    res = cli("train", "--resume", run, "--data-dir", data_dir)
    assert res.exit_code == 0, res.output
    assert load_model(run)[1]["metrics"]["epochs_run"] == 3


@pytest.mark.parametrize("name", list(HOSTILE))
def test_damaged_resume_state_inside_last_npz_is_one_line(run_dir, data_dir, tmp_path, name):
    run = copy_run(run_dir, tmp_path)
    text, words = HOSTILE[name]
    _rewrite_npz(run / LAST_NPZ, {"state": _npy(np.array(text.decode()))})
    res = cli("train", "--resume", run, "--set", "train.epochs=4", "--data-dir", data_dir)
    one_line_error(res, f"resume state: {words}")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_damaged_cache_sidecar_means_the_entry_is_rebuilt(data_dir, tmp_path, name):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    cfg = load_config(None, list(TINY))
    load_dataset(cfg, data)
    sidecars = sorted(p for p in data.rglob("*.json") if p.with_suffix(".npy").is_file())
    assert len(sidecars) == 3
    sidecars[0].write_bytes(HOSTILE[name][0])
    assert len(load_dataset(cfg, data).y) == 180
    assert fsutil.read_json(sidecars[0])["rows"] == 60


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_damaged_download_sidecar_means_the_file_is_fetched_again(static_server, tmp_path, name):
    from doodle.download import download

    def fetch():
        return download(["cat"], data_dir=tmp_path, base_url=static_server, max_drawings=5, retries=1,
                        backoff=0.001, timeout=5.0)[0]

    assert fetch().status == "downloaded"
    sidecar = tmp_path / "simplified" / ".cat.ndjson.json"
    sidecar.write_bytes(HOSTILE[name][0])
    assert fetch().status == "downloaded"  # what the file holds is unknown, so it is fetched again
    assert fsutil.read_json(sidecar)["drawings"] == 5 and fetch().status == "skipped"


# ---------------------------------------------------------------------------------------------
# .npz files: checked from the zip directory and the .npy headers before any data is read


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _header(shape: tuple, descr: str = "<f4") -> bytes:
    """An .npy header alone: it may claim any shape, with no data behind it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _rewrite_npz(path: Path, members: dict[str, bytes | None], bomb: str | None = None,
                 bomb_header: bytes = b"") -> None:
    """Rewrite the .npz at `path` with some members' .npy bytes replaced, added or (None) removed; `bomb`
    names a member written as `bomb_header` plus BOMB_BYTES zeros, deflated (streamed: never held here)."""
    with zipfile.ZipFile(path) as zf:
        old = {i.filename: zf.read(i) for i in zf.infolist()}
    old.update({f"{k}.npy": v for k, v in members.items()})
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in old.items():
            if data is not None and name != f"{bomb}.npy":
                zf.writestr(name, data)
        if bomb:
            info = zipfile.ZipInfo(f"{bomb}.npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                fh.write(bomb_header)
                for _ in range(BOMB_BYTES >> 20):
                    fh.write(bytes(1 << 20))


def _peak(fn) -> tuple[BaseException | None, int]:
    """(what fn raised, the peak bytes Python and numpy allocated meanwhile)."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except BaseException as exc:  # noqa: BLE001 (the test looks at it)
        raised = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return raised, peak


def _refused_small(run: Path, words: str) -> None:
    """load_model refuses `run` with one line naming model.npz and `words`, allocating little; so does predict."""
    err, peak = _peak(lambda: load_model(run))
    assert peak < SMALL, f"refusing took {peak:,} bytes"
    assert isinstance(err, DoodleError), repr(err)
    msg = str(err)
    assert words in msg and str(run / "model.npz") in msg and "\n" not in msg, msg
    assert "retrain or restore" in msg, msg
    one_line_error(cli("predict", "x.png", "--model", run), words)


def test_a_header_claiming_a_37_gib_array_is_refused_without_allocating(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    _rewrite_npz(run / "model.npz", {"dense0.W": _header((100_000, 100_000))})
    _refused_small(run, "dense0.W has shape (100000, 100000) (float32), expected (64, 8)")


def test_a_zip_bomb_member_is_refused_by_name_without_decompressing(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    _rewrite_npz(run / "model.npz", {}, bomb="bomb", bomb_header=_header((BOMB_BYTES,), "|u1"))
    assert (run / "model.npz").stat().st_size < 100_000  # it is a bomb: 16 MB inside, a few KB on disk
    _refused_small(run, "unexpected ['bomb']")


def test_a_zip_bomb_inside_a_weight_is_refused_by_its_size_without_decompressing(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    _rewrite_npz(run / "model.npz", {}, bomb="dense0.W", bomb_header=_header((64, 8)))
    _refused_small(run, "dense0.W unpacks to 16,777,344 bytes")


def test_a_weight_cut_short_or_longer_than_its_header_is_refused(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    w = _npy(np.zeros((64, 8), np.float32))
    _rewrite_npz(run / "model.npz", {"dense0.W": w[:-4]})
    _refused_small(run, "dense0.W holds 2,044 bytes of data where its header describes 2,048")
    _rewrite_npz(run / "model.npz", {"dense0.W": w + bytes(4)})
    _refused_small(run, "dense0.W holds 2,052 bytes")


def test_a_transposed_weight_is_refused_naming_the_file_and_what_to_do(run_dir, tmp_path):
    """Same size, other shape: a check that compared sizes only would let MLP.load_state_dict refuse it
    later, without the file's path or the advice."""
    run = copy_run(run_dir, tmp_path)
    with np.load(run / "model.npz") as f:
        w = f["dense0.W"]
    assert w.shape == (64, 8)
    _rewrite_npz(run / "model.npz", {"dense0.W": _npy(np.ascontiguousarray(w.T))})
    _refused_small(run, "dense0.W has shape (8, 64) (float32), expected (64, 8)")


class _Marker:
    """Unpickles as open(path, "w"): a real payload, whose only effect is to create a file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _plant_pickle(run: Path, marker: Path) -> None:
    payload = np.array([_Marker(marker)], dtype=object)
    probe = marker.with_name("probe")
    np.load(io.BytesIO(_npy(np.array([_Marker(probe)], dtype=object))), allow_pickle=True)
    assert probe.exists()  # the payload is real: unpickled, it writes a file
    _rewrite_npz(run / "model.npz", {"dense0.W": _npy(payload)})


def test_a_pickle_in_model_npz_never_runs(run_dir, tmp_path):
    run, marker = copy_run(run_dir, tmp_path), tmp_path / "pwned"
    _plant_pickle(run, marker)
    _refused_small(run, "dense0.W holds Python objects")
    assert not marker.exists()


def test_a_pickle_never_runs_even_past_the_header_check(run_dir, tmp_path, monkeypatch):
    """Two locks: np.load with allow_pickle=False holds on its own, should check_npz ever let one through."""
    run, marker = copy_run(run_dir, tmp_path), tmp_path / "pwned"
    _plant_pickle(run, marker)
    monkeypatch.setattr(checkpoint, "check_npz", lambda *a, **k: None)
    with pytest.raises(DoodleError) as err:
        load_model(run)
    assert not marker.exists()
    assert str(run / "model.npz") in str(err.value) and "\n" not in str(err.value)


def test_a_bomb_in_split_npz_is_refused_by_evaluate_and_ignored_by_predict(run_dir, data_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    _rewrite_npz(run / "split.npz", {}, bomb="test", bomb_header=_header((BOMB_BYTES // 8,), "<i8"))
    err, peak = _peak(lambda: load_split(run))
    assert isinstance(err, DoodleError) and "split.npz: damaged (test unpacks to" in str(err), repr(err)
    assert peak < SMALL, f"refusing took {peak:,} bytes"
    one_line_error(cli("evaluate", "--model", run, "--data-dir", data_dir), "split.npz: damaged (test unpacks to")
    assert predict(["-"], run, stdin=io.StringIO(DRAWING))[0][0]["top"]  # the split is only needed by evaluate


def test_a_bomb_in_last_npz_is_refused_by_resume(run_dir, data_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    _rewrite_npz(run / LAST_NPZ, {}, bomb="extra", bomb_header=_header((BOMB_BYTES,), "|u1"))
    res = cli("train", "--resume", run, "--set", "train.epochs=4", "--data-dir", data_dir)
    one_line_error(res, "does not fit this run's config (missing none, unexpected ['extra'])")
    _rewrite_npz(run / LAST_NPZ, {"extra": None}, bomb="state", bomb_header=_header((), "<U4194304"))
    one_line_error(cli("train", "--resume", run, "--data-dir", data_dir), "state unpacks to")


# ---------------------------------------------------------------------------------------------
# evaluate without DATA, when model.json's config no longer makes the model's bitmaps


def test_evaluate_refuses_bitmaps_of_another_size_than_the_model_takes(run_dir, data_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    meta = json.loads((run / "model.json").read_text())
    meta["config"]["data"]["image_size"] = 12
    (run / "model.json").write_text(json.dumps(meta))
    one_line_error(cli("evaluate", "--model", run, "--data-dir", data_dir),
                   "model.json: its config makes 12x12 bitmaps (data.image_size) but the model takes 8x8")
