"""doodle.strokes: ndjson loading, the drawing checks shared with the play API, bad lines, filters, bitmaps."""

from __future__ import annotations

import json

import ndjson
import numpy as np
import pytest

from doodle.errors import DoodleError
from doodle.simplify import simplify_raw
from doodle.strokes import RAW_BATCH, LoadStats, iter_drawings, load_bitmaps, load_drawings, parse_drawing


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _json_lines(path):
    """Independent reading: every non-blank line of a file through the json module, with its number."""
    with open(path, encoding="utf-8") as fh:
        return [(n, json.loads(line)) for n, line in enumerate(fh, 1) if line.strip()]


# ---------------------------------------------------------------------------------------------
# Real files


def test_simplified_file_loads_exactly(quickdraw_dir):
    path = quickdraw_dir / "full" / "simplified" / "cat.ndjson"
    expected = _json_lines(path)
    drawings, stats = load_drawings(path)
    assert (stats.lines, stats.kept, stats.filtered, stats.skipped) == (len(expected), len(expected), 0, 0)
    assert [d["line"] for d in drawings] == [n for n, _ in expected]
    for got, (_, want) in zip(drawings, expected):
        assert got["drawing"] == want["drawing"]
        assert (got["word"], got["countrycode"], got["recognized"], got["key_id"]) == (
            "cat", want["countrycode"], want["recognized"], want["key_id"])
        assert all(type(v) is int for s in got["drawing"] for v in s[0] + s[1])
    assert stats.summary() == f"cat.ndjson: {len(expected)} drawings"


# ---------------------------------------------------------------------------------------------
# Bad lines


GOOD = {"word": "cat", "countrycode": "US", "recognized": True, "key_id": "1",
        "drawing": [[[0, 10, 255], [0, 20, 30]]]}


def _record(**changes):
    rec = dict(GOOD)
    rec.update(changes)
    return json.dumps(rec)


BAD_LINES = [  # (line text, words expected in the reason)
    ('{"word": "cat", "drawing": [[[0, 1], [0, 1]]', "malformed JSON"),
    (json.dumps({"word": "cat"}), "no 'drawing'"),
    (_record(drawing=[]), "empty drawing"),
    (_record(drawing=[[[], []]]), "empty drawing"),
    (_record(drawing=[[[0, 1, 2], [0, 1]]]), "3 x but 2 y"),
    (_record(drawing=[[[0, "a"], [0, 1]]]), "stroke 1 x has \"a\", not a number"),
    (_record(drawing=[[[0, True], [0, 1]]]), "has true, not a number"),
    (_record(drawing=[[[0, None], [0, 1]]]), "has null, not a number"),
    ('{"word": "cat", "drawing": [[[0, NaN], [0, 1]]]}', "stroke 1 x has NaN, not a finite number"),
    ('{"word": "cat", "drawing": [[[0, 1], [0, Infinity]]]}', "stroke 1 y has Infinity, not a finite"),
    ('{"word": "cat", "drawing": [[[0, 1e999], [0, 1]]]}', "not a finite number"),
    (_record(drawing=[[[0, 1]]]), "stroke 1 is not"),
    (_record(drawing=[[0, 1], [0, 1]]), "stroke 1 x is not a list"),
    (_record(drawing="abc"), "not a list of strokes"),
    (_record(word=3), "'word'"),
    ("[1, 2]", "stroke 1 is not"),
    ("42", "expected a JSON object"),
]


def test_each_kind_of_bad_line_is_skipped_with_its_line_number(tmp_path):
    lines, expect = [_record()], {}
    for text, reason in BAD_LINES:
        lines.append(text)
        expect[len(lines)] = reason
        lines.append("")  # blank lines are ignored, but still numbered
    lines.append(_record(key_id="last"))
    path = _write_lines(tmp_path / "bad.ndjson", lines)
    drawings, stats = load_drawings(path)
    assert [d["line"] for d in drawings] == [1, len(lines)]
    assert drawings[1]["key_id"] == "last"
    assert stats.skipped == len(BAD_LINES) and stats.kept == 2 and stats.filtered == 0
    assert stats.lines == stats.kept + stats.skipped  # blank lines are not counted
    assert [n for n, _ in stats.problems] == sorted(expect)
    for n, reason in stats.problems:
        assert expect[n] in reason, (n, reason)
    summary = stats.summary()
    assert summary.startswith(f"bad.ndjson: 2 drawings, {len(BAD_LINES)} bad lines skipped (line 2: malformed")


def test_bad_bytes_and_keeps_only_first_problems(tmp_path):
    path = tmp_path / "bytes.ndjson"
    path.write_bytes(b"\xc3\x28 not utf-8\n" + b"not json\n" * 30 + _record().encode() + b"\n")
    drawings, stats = load_drawings(path)
    assert len(drawings) == 1 and drawings[0]["line"] == 32
    assert stats.skipped == 31 and len(stats.problems) == 20
    assert stats.problems[0] == (1, "malformed JSON (not UTF-8 text)")


def test_strict_mode_raises_on_first_bad_line_after_the_good_ones(tmp_path):
    raw_line = json.dumps({"word": "cat", "drawing": [[[10.5, 20.5], [1.0, 2.0], [0, 5]]]})
    path = _write_lines(tmp_path / "strict.ndjson", [_record(), raw_line, "", "{oops", _record()])
    seen = []
    with pytest.raises(DoodleError) as err:
        for rec in iter_drawings(path, strict=True):
            seen.append(rec["line"])
    assert seen == [1, 2]
    message = str(err.value)
    assert message.startswith(f"{path}:4: malformed JSON")
    assert message.endswith("; fix the line or run without --strict")
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DoodleError, match="nope.ndjson: no such file"):
        list(iter_drawings(tmp_path / "nope.ndjson"))
    with pytest.raises(DoodleError, match="is a directory"):
        list(iter_drawings(tmp_path))


# ---------------------------------------------------------------------------------------------
# Formats and filters


def test_raw_and_simplified_lines_mix_and_raw_batches_keep_order(tmp_path):
    rng = np.random.default_rng(1)
    raws, lines = {}, []
    for i in range(2 * RAW_BATCH + 5):
        if i % 7 == 3:
            lines.append(_record(key_id=str(i)))
            continue
        pts = np.cumsum(rng.normal(0, 30, (12, 2)), axis=0) + 500
        strokes = [[pts[:, 0].tolist(), pts[:, 1].tolist(), list(range(12))]]
        if i % 5 == 0:
            strokes = [s[:2] for s in strokes]  # floats without times: raw canvas coordinates as well
        raws[str(i)] = strokes
        lines.append(json.dumps({"word": "cat", "key_id": i, "drawing": strokes}))
    drawings, stats = load_drawings(_write_lines(tmp_path / "mixed.ndjson", lines))
    assert stats.kept == len(lines) and [d["line"] for d in drawings] == list(range(1, len(lines) + 1))
    for d in drawings:
        want = simplify_raw(raws[d["key_id"]]) if d["key_id"] in raws else GOOD["drawing"]
        assert d["drawing"] == want


def test_two_row_strokes_outside_0_255_are_treated_as_raw(tmp_path):
    path = _write_lines(tmp_path / "canvas.ndjson", [json.dumps({"drawing": [[[100, 300, 600], [40, 40, 40]]]})])
    (rec,), _ = load_drawings(path)
    assert rec["drawing"] == [[[0, 255], [0, 0]]]
    assert (rec["word"], rec["countrycode"], rec["recognized"], rec["key_id"]) == (None, None, None, None)


def test_filters_and_limit(tmp_path):
    rows = [("US", True), ("gb", True), ("US", False), ("FR", True), (None, True), ("US", True), ("GB", None)]
    recs = []
    for i, (country, recognized) in enumerate(rows):
        rec = dict(GOOD, key_id=str(i), countrycode=country, recognized=recognized)
        recs.append({k: v for k, v in rec.items() if v is not None})
    path = tmp_path / "filters.ndjson"
    with open(path, "w") as fh:
        ndjson.dump(recs, fh)

    def keys(**kw):
        stats = LoadStats(str(path))
        return [d["key_id"] for d in iter_drawings(path, stats=stats, **kw)], stats

    assert keys()[0] == [str(i) for i in range(7)]
    got, stats = keys(recognized_only=True)
    assert got == ["0", "1", "3", "4", "5"] and stats.filtered == 2
    got, stats = keys(countrycodes=["us", "GB"])
    assert got == ["0", "1", "2", "5", "6"] and stats.filtered == 2
    assert keys(countrycodes="GB")[0] == ["1", "6"]
    got, stats = keys(recognized_only=True, countrycodes={"US"}, limit=1)
    assert got == ["0"] and (stats.lines, stats.kept, stats.filtered) == (1, 1, 0)
    got, stats = keys(recognized_only=True, countrycodes={"US"}, limit=2)
    assert got == ["0", "5"] and (stats.lines, stats.kept, stats.filtered) == (6, 2, 4)
    assert "4 filtered out" in stats.summary()
    assert keys(limit=0)[0] == []
    assert keys(countrycodes=[])[0] == []


def test_parse_drawing_for_predict():
    rec = parse_drawing(json.loads(_record()), "<stdin>:1")
    assert rec == {"word": "cat", "countrycode": "US", "recognized": True, "key_id": "1",
                   "drawing": GOOD["drawing"]}
    bare = parse_drawing([[[0.0, 50.0], [0.0, 100.0], [0, 10]]], "x.ndjson:3")
    assert bare["drawing"] == [[[0, 128], [0, 255]]] and bare["word"] is None
    with pytest.raises(DoodleError, match=r"^<stdin>:2: no 'drawing' field$"):
        parse_drawing({"word": "cat"}, "<stdin>:2")
    with pytest.raises(DoodleError, match=r"^<stdin>:3: stroke 1 has 2 x but 1 y values$"):
        parse_drawing({"drawing": [[[1, 2], [3]]]}, "<stdin>:3")


# ---------------------------------------------------------------------------------------------
# Bitmaps


def test_load_bitmaps_real_file(quickdraw_dir):
    path = quickdraw_dir / "full" / "numpy_bitmap" / "apple.npy"
    want = np.load(path).reshape(-1, 28, 28)
    got = load_bitmaps(path)
    assert got.shape == want.shape and got.dtype == np.uint8 and np.array_equal(got, want)
    assert isinstance(got.base, np.memmap) or isinstance(got, np.memmap)  # mapped, not read into memory
    assert np.array_equal(load_bitmaps(path, limit=5), want[:5])


def test_load_bitmaps_good_and_bad_files(tmp_path):
    cube = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.save(tmp_path / "cube.npy", cube)
    assert np.array_equal(load_bitmaps(tmp_path / "cube.npy"), cube)
    np.save(tmp_path / "flat.npy", cube.reshape(2, 784))
    assert np.array_equal(load_bitmaps(tmp_path / "flat.npy"), cube)

    np.save(tmp_path / "float.npy", cube.astype(np.float32))
    np.save(tmp_path / "shape.npy", np.zeros((3, 100), np.uint8))
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00garbage header")
    (tmp_path / "empty.npy").write_bytes(b"")
    full = (tmp_path / "flat.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(full[:-100])  # header promises more rows than there are
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases = {"float.npy": "dtype float32", "shape.npy": r"shape \(3, 100\)", "garbage.npy": "not a valid .npy",
             "empty.npy": "not a valid .npy", "short.npy": "not a valid .npy", "objects.npy": "not a valid .npy",
             "missing.npy": "no such file"}
    for name, reason in cases.items():
        with pytest.raises(DoodleError, match=reason) as err:
            load_bitmaps(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DoodleError, match="is a directory"):
        load_bitmaps(tmp_path)
