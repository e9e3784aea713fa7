"""doodle.strokes: ndjson loading, bad lines, filters, Google's raw -> simplified recipe, rdp, bitmaps."""

from __future__ import annotations

import json
import math

import ndjson
import numpy as np
import pytest

from doodle.errors import DoodleError
from doodle.strokes import (RAW_BATCH, LoadStats, iter_drawings, load_bitmaps, load_drawings, parse_drawing, rdp,
                            simplify_raw, simplify_raw_batch)

# Measured with bench/simplify.py: 5,526 of the 5,528 shared raw drawings come out identical to Google's
# simplified file (the other two differ by one RDP choice between near-equal distances).
MIN_IDENTICAL = 0.995


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _json_lines(path):
    """Independent reading: every non-blank line of a file through the json module, with its number."""
    with open(path, encoding="utf-8") as fh:
        return [(n, json.loads(line)) for n, line in enumerate(fh, 1) if line.strip()]


def _scaled_ends(raw):
    """Independent recipe for the stroke end points: align top-left, scale max to 255, round half to even."""
    xs = [v for s in raw for v in s[0]]
    ys = [v for s in raw for v in s[1]]
    x0, y0 = min(xs), min(ys)
    extent = max(max(xs) - x0, max(ys) - y0)
    f = (lambda v, v0: round((v - v0) * 255.0 / extent)) if extent else (lambda v, v0: 0)
    return [((f(s[0][0], x0), f(s[1][0], y0)), (f(s[0][-1], x0), f(s[1][-1], y0))) for s in raw if s[0]]


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


def _raw_vs_google(full):
    """(identical, total) over the raw drawings of `full` that have a simplified twin (same key_id)."""
    same = total = 0
    for raw_path in sorted((full / "raw").glob("*.ndjson")):
        google = {d["key_id"]: d["drawing"] for _, d in _json_lines(full / "simplified" / raw_path.name)}
        for rec in iter_drawings(raw_path):
            want = google.get(rec["key_id"])
            if want is not None:
                total += 1
                same += rec["drawing"] == want
                assert len(rec["drawing"]) == len(want)  # strokes are never merged or dropped
    return same, total


def test_raw_files_match_google_simplified(quickdraw_dir):
    """The fixture's raw drawings (each has its simplified twin): raw through our recipe == Google's simplified."""
    assert _raw_vs_google(quickdraw_dir / "full") == (19, 19)


@pytest.mark.shared
def test_raw_files_match_google_simplified_on_the_whole_sample(shared_quickdraw_dir):
    """Every shared raw/simplified pair: identical, almost always."""
    same, total = _raw_vs_google(shared_quickdraw_dir / "full")
    assert total == 5528
    assert same / total >= MIN_IDENTICAL, f"{same}/{total} identical"


def test_raw_invariants_on_real_drawings(quickdraw_dir):
    n = 0
    for raw_path in sorted((quickdraw_dir / "full" / "raw").glob("*.ndjson")):
        records = _json_lines(raw_path)
        loaded = list(iter_drawings(raw_path))
        assert len(loaded) == len(records)
        for rec, (_, obj) in zip(loaded, records):
            raw = obj["drawing"]
            out = rec["drawing"]
            assert len(out) == len(raw)
            values = [v for s in out for v in s[0] + s[1]]
            assert all(type(v) is int and 0 <= v <= 255 for v in values)
            for stroke, (first, last) in zip(out, _scaled_ends(raw)):
                assert len(stroke[0]) == len(stroke[1]) >= 2
                assert (stroke[0][0], stroke[1][0]) == first  # RDP keeps both ends of every stroke
                assert (stroke[0][-1], stroke[1][-1]) == last
            n += 1
    assert n == 19


# ---------------------------------------------------------------------------------------------
# simplify_raw on hand-made drawings


def test_simplify_raw_aligns_scales_and_keeps_corners():
    # An L from (100, 50) down to (100, 250) then right to (300, 250): extent 200 -> scale 255/200.
    raw = [[[100, 100, 300], [50, 250, 250], [0, 10, 20]]]
    assert simplify_raw(raw) == [[[0, 0, 255], [0, 255, 255]]]
    # A straight line: collinear resampled points all go, only the ends stay; y = 100 * 255 / 200 = 127.5.
    assert simplify_raw([[[10.0, 60.0, 110.0, 210.0], [5.0, 30.0, 55.0, 105.0]]]) == [[[0, 255], [0, 128]]]


def test_simplify_raw_rounds_half_to_even_and_doubles_single_points():
    # Extent 510 -> scale 0.5: a dot at y=253 lands on 126.5 (-> 126), one at y=255 on 127.5 (-> 128).
    raw = [[[0, 510], [0, 0]], [[0], [253]], [[510], [255]]]
    assert simplify_raw(raw) == [[[0, 255], [0, 0]], [[0, 0], [126, 126]], [[255, 255], [128, 128]]]


def test_simplify_raw_degenerate_drawings():
    assert simplify_raw([[[7.5], [3.25]]]) == [[[0, 0], [0, 0]]]  # one point: nothing to scale
    # A repeated point is a dot too; an empty stroke is dropped.
    assert simplify_raw([[[4, 4, 4], [9, 9, 9]], [[], []]]) == [[[0, 0], [0, 0]]]
    with pytest.raises(DoodleError, match="empty drawing"):
        simplify_raw([[[], []]])
    with pytest.raises(DoodleError, match="non-finite"):
        simplify_raw([[[0.0, float("nan")], [0.0, 1.0]]])
    with pytest.raises(DoodleError, match="1 x but 2 y"):
        simplify_raw([[[0.0], [0.0, 1.0]]])


def test_simplify_raw_keeps_curves_within_epsilon():
    """A quarter circle of radius 1000 becomes radius 255: kept points lie on it, chords within epsilon."""
    angles = np.linspace(0, math.pi / 2, 200)
    arc = [(1000 * np.cos(angles)).tolist(), (1000 * np.sin(angles)).tolist()]
    (out,) = simplify_raw([arc])
    pts = np.array(out, dtype=float).T
    radius = np.hypot(pts[:, 0], pts[:, 1])  # distance from the circle centre (0, 0) in 0..255 units
    assert len(pts) > 5 and np.all(np.abs(radius - 255) <= 1.0)  # every kept point lies on the arc
    # Chords between kept points stay within epsilon 2.0 (+ rounding) of the arc: sagitta r(1-cos(a/2)).
    angle = np.arctan2(pts[:, 1], pts[:, 0])
    sagitta = 255 * (1 - np.cos(np.abs(np.diff(angle)) / 2))
    assert sagitta.max() <= 2.0 + 1.0


def test_simplify_raw_batch_equals_one_by_one():
    rng = np.random.default_rng(7)
    drawings = []
    for _ in range(60):
        strokes = []
        for _ in range(int(rng.integers(1, 5))):
            n = int(rng.integers(1, 30))
            walk = np.cumsum(rng.normal(0, 20, (n, 2)), axis=0)
            if rng.random() < 0.3:
                walk = np.round(walk / 10) * 10  # integer grid: exact ties between distances
            strokes.append([walk[:, 0].tolist(), walk[:, 1].tolist()])
        drawings.append(strokes)
    assert simplify_raw_batch(drawings) == [simplify_raw(d) for d in drawings]
    assert simplify_raw_batch([]) == []


# ---------------------------------------------------------------------------------------------
# rdp


def _rdp_reference(points, eps):
    """Textbook recursive RDP: first farthest point from the chord line (distance to the start if the chord
    is a single point)."""
    if len(points) < 3:
        return list(points)
    (ax, ay), (bx, by) = points[0], points[-1]
    dx, dy = bx - ax, by - ay
    length = math.hypot(dx, dy)
    best, at = -1.0, 0
    for i in range(1, len(points) - 1):
        px, py = points[i]
        d = abs(dx * (py - ay) - dy * (px - ax)) / length if length else math.hypot(px - ax, py - ay)
        if d > best:
            best, at = d, i
    if best <= eps:
        return [points[0], points[-1]]
    return _rdp_reference(points[:at + 1], eps)[:-1] + _rdp_reference(points[at:], eps)


def test_rdp_hand_made_cases():
    line = np.array([[0, 0], [1, 1], [2, 2], [5, 5], [9, 9]])
    assert rdp(line, 0.5).tolist() == [[0, 0], [9, 9]]
    assert rdp(line, 0.5).dtype == line.dtype  # rows of the input, not converted copies
    bump = np.array([[0.0, 0.0], [5.0, 3.0], [10.0, 0.0]])
    assert rdp(bump, 2.0).tolist() == bump.tolist()  # 3 > 2: kept
    assert rdp(bump, 3.0).tolist() == [[0.0, 0.0], [10.0, 0.0]]  # 3 is not > 3: dropped
    # Closed loop: the chord is a point, so distance to it decides; the far corner (10, 10) is kept first.
    loop = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], dtype=float)
    assert rdp(loop, 1.0).tolist() == loop.tolist()
    assert rdp(loop, 20.0).tolist() == [[0, 0], [0, 0]]
    # Ties: the first farthest point wins.
    plateau = np.array([[0, 0], [1, 5], [2, 5], [3, 5], [4, 0]], dtype=float)
    assert rdp(plateau, 1.0).tolist()[:2] == [[0, 0], [1, 5]]
    assert rdp(np.zeros((0, 2)), 2.0).shape == (0, 2)
    assert rdp(np.array([[1.0, 2.0]]), 2.0).tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError):
        rdp(np.zeros((4, 3)), 2.0)


def test_rdp_matches_recursive_reference():
    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(3, 60))
        pts = np.cumsum(rng.normal(0, 3, (n, 2)), axis=0)
        if trial % 4 == 0:
            pts[-1] = pts[0]  # closed stroke: degenerate first chord
        if trial % 3 == 0:
            pts = np.round(pts)  # integer points: ties
        eps = float(rng.choice([0.5, 2.0, 5.0]))
        want = _rdp_reference([tuple(p) for p in pts.tolist()], eps)
        assert [tuple(p) for p in rdp(pts, eps).tolist()] == want


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
    (_record(drawing=[[[0, "a"], [0, 1]]]), "non-numeric"),
    (_record(drawing=[[[0, True], [0, 1]]]), "non-numeric"),
    (_record(drawing=[[[0, None], [0, 1]]]), "non-numeric"),
    ('{"word": "cat", "drawing": [[[0, NaN], [0, 1]]]}', "non-finite"),
    ('{"word": "cat", "drawing": [[[0, 1], [0, Infinity]]]}', "non-finite"),
    ('{"word": "cat", "drawing": [[[0, 1e999], [0, 1]]]}', "non-finite"),
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
