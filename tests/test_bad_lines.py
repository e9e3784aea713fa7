"""Bad ndjson lines: skipped and counted by train and evaluate, refused under --strict, one result each in predict.

Part of the hostile-input and interruption suite (issues 11 and 21): every case ends in a clean one-line
error or the right result, never a traceback or a silently wrong answer, and nothing complete on disk is lost.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from doodle.config import load_config
from doodle.dataset import load_dataset
from doodle.errors import DoodleError
from doodle.evaluate import evaluate
from doodle.predict import predict
from doodle.strokes import MAX_POINTS, LoadStats, iter_drawings, read_records
from doodle.synthetic import write_synthetic
from helpers import TINY, WORDS, Logs, cli, one_line_error

# ---------------------------------------------------------------------------------------------
# Bad ndjson lines: skipped and counted by train and evaluate, refused under --strict, one result each in predict

GOOD = {"word": "circle", "countrycode": "US", "recognized": True, "key_id": "1",
        "drawing": [[[10, 100, 200], [20, 120, 30]]]}


def _line(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


BAD_LINES = {  # name -> (line bytes, words in the reason)
    "400-digit coordinate": (b'{"word": "circle", "drawing": [[[1' + b"0" * 400 + b', 2], [1, 2]]]}', ", outside -1e"),
    "5000-digit coordinate": (b'{"word": "circle", "drawing": [[[1' + b"0" * 5000 + b', 2], [1, 2]]]}', "malformed"),
    "nested 100,000 deep": (b'{"word": "circle", "drawing": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                            "nested too deeply"),
    "integer beyond 64 bits": (b'{"word": "circle", "drawing": [[[18446744073709551616, 2], [1, 2]]]}',
                               ", outside -1e"),
    "NaN literal": (b'{"word": "circle", "drawing": [[[0, NaN], [0, 1]]]}', "not a finite number"),
    "1e999": (b'{"word": "circle", "drawing": [[[0, 1e999], [0, 1]]]}', "not a finite number"),
    "too many points": (_line(drawing=[[list(range(200)) * (MAX_POINTS // 200 + 1)] * 2]), "points, over the limit"),
    "a 9 MB line": (_line(pad="x" * 9_000_000), "MB, over the limit of 8 MB"),
    "not UTF-8": (b'{"word": "circ\xffle", "drawing": [[[0, 1], [0, 1]]]}', "not UTF-8"),
    "truncated line": (_line()[:-7], "malformed JSON"),
    "huge non-numeric value": (_line(drawing=[[[0, "x" * 100_000], [0, 1]]]), "not a number"),
}


def _bad_file(path: Path, bom: bool = True) -> Path:
    """A good line (with a UTF-8 BOM in front), every bad line, a good line."""
    lines = [_line(key_id="first"), *(text for text, _ in BAD_LINES.values()), _line(key_id="last")]
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")
    return path


def test_every_bad_line_is_skipped_and_counted_with_its_reason(tmp_path):
    stats = LoadStats("bad")
    kept = list(iter_drawings(_bad_file(tmp_path / "bad.ndjson"), stats=stats))
    assert [d["key_id"] for d in kept] == ["first", "last"]  # the BOM did not spoil the first line
    assert stats.skipped == len(BAD_LINES) and stats.kept == 2
    for (_line, reason), (name, (_, words)) in zip(stats.problems, BAD_LINES.items()):
        assert words in reason, (name, reason)
        assert len(reason) < 200, name  # the reason never quotes a huge value


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_strict_refuses_each_bad_line_naming_it(tmp_path, name):
    path = tmp_path / "one.ndjson"
    path.write_bytes(_line() + b"\n" + BAD_LINES[name][0] + b"\n")
    with pytest.raises(DoodleError, match=rf"one.ndjson:2: .*{BAD_LINES[name][1]}") as err:
        list(iter_drawings(path, strict=True))
    assert len(str(err.value)) < 300


def test_predict_gives_one_result_per_line_and_says_why(run_dir, tmp_path):
    results, _ = predict([str(_bad_file(tmp_path / "bad.ndjson"))], model_path=run_dir)
    assert len(results) == len(BAD_LINES) + 2
    assert "top" in results[0] and "top" in results[-1]
    for r, (name, (_, words)) in zip(results[1:-1], BAD_LINES.items()):
        assert words in r["error"] and r["error"].startswith(f"{tmp_path / 'bad.ndjson'}:"), (name, r)


def test_predict_cli_on_bad_lines_exits_1_without_traceback(run_dir, tmp_path):
    res = cli("predict", _bad_file(tmp_path / "bad.ndjson"), "--model", run_dir, "--json")
    assert res.exit_code == 1 and "Traceback" not in res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert sum("top" in r for r in rows) == 2 and sum("error" in r for r in rows) == len(BAD_LINES)


def test_evaluate_scores_the_good_lines_and_reports_the_bad(run_dir, tmp_path):
    s = evaluate(run_dir, [_bad_file(tmp_path / "circle.ndjson")])
    assert s["n"] == 2 and f"{len(BAD_LINES)} bad lines skipped" in s["problems"][0]
    res = cli("evaluate", "--model", run_dir, tmp_path / "circle.ndjson", "--strict")
    one_line_error(res, "circle.ndjson:2:")


def test_training_skips_bad_lines_and_strict_refuses_them_even_from_the_cache(tmp_path):
    data = tmp_path / "data"
    paths = write_synthetic(data, words=WORDS, n=60, seed=0)
    lines = paths[0].read_bytes().splitlines(keepends=True)  # bad lines among the first 60 drawings
    paths[0].write_bytes(b"".join(lines[:10] + [text + b"\n" for text, _ in BAD_LINES.values()] + lines[10:]))
    cfg = load_config(None, TINY)
    for attempt in range(2):  # the first load builds the cache, the second reads it: same warning
        logs = Logs()
        ds = load_dataset(cfg, data, logs)
        assert ds.counts == [60, 60, 60]
        assert any(f"{len(BAD_LINES)} bad lines skipped" in m for m in logs.lines), (attempt, logs.lines)
    with pytest.raises(DoodleError, match=r"circle.ndjson:11: .*outside .*run without --strict"):
        load_dataset(load_config(None, [*TINY, "data.strict=true"]), data)


def test_predict_empty_blank_and_bom_ndjson(run_dir, tmp_path):
    (tmp_path / "empty.ndjson").write_bytes(b"")
    (tmp_path / "blank.ndjson").write_bytes(b"\n  \n\n")
    (tmp_path / "bom.ndjson").write_bytes(b"\xef\xbb\xbf" + _line() + b"\n")
    res = cli("predict", tmp_path / "empty.ndjson", "--model", run_dir, "--json")
    one_line_error(res, "empty.ndjson: no drawings", code=1)
    res = cli("predict", tmp_path / "blank.ndjson", "--model", run_dir, "--json")
    one_line_error(res, "blank.ndjson: no drawings", code=1)
    res = cli("predict", tmp_path / "bom.ndjson", "-", "--model", run_dir, "--json",
              input=b"\xef\xbb\xbf" + _line() + b"\n")
    assert res.exit_code == 0, res.output
    assert [len(json.loads(line)["top"]) for line in res.stdout.splitlines()] == [3, 3]
    res = cli("predict", "-", "--model", run_dir, "--json", input="")
    one_line_error(res, "<stdin>: no drawings", code=1)


def test_read_records_accepts_text_streams():
    got = list(read_records(io.StringIO("\ufeff" + _line().decode() + "\n{oops\n"), "s"))
    assert got[0][0] == "s:1" and got[0][2] is None and got[1][1] is None and "malformed" in got[1][2]
