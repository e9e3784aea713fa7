"""doodle.simplify: Google's raw -> simplified recipe against Google's own simplified twins, on hand-made
drawings, rdp against a recursive reference, and the ink budget that bounds the recipe's work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doodle.errors import DoodleError
from doodle.simplify import MAX_INK, MAX_RDP_WORK, TooMuchWork, ink, rdp, simplify_raw, simplify_raw_batch
from doodle.strokes import LoadStats, iter_drawings

# Measured with bench/simplify.py: 5,526 of the 5,528 shared raw drawings come out identical to Google's
# simplified file (the other two differ by one RDP choice between near-equal distances).
MIN_IDENTICAL = 0.995


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


def _raw_vs_google(full):
    """(identical, total) over the raw drawings of `full` that have a simplified twin (same key_id). Every
    drawing of both formats must load: the checks and the ink budget refuse no real drawing."""
    same = total = 0
    for raw_path in sorted((full / "raw").glob("*.ndjson")):
        google = {d["key_id"]: d["drawing"] for _, d in _json_lines(full / "simplified" / raw_path.name)}
        stats = LoadStats(raw_path.name)
        assert sum(1 for _ in iter_drawings(full / "simplified" / raw_path.name, stats=stats)) == len(google)
        for rec in iter_drawings(raw_path, stats=stats):
            want = google.get(rec["key_id"])
            if want is not None:
                total += 1
                same += rec["drawing"] == want
                assert len(rec["drawing"]) == len(want)  # strokes are never merged or dropped
        assert stats.skipped == 0, stats.summary()
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
    with pytest.raises(DoodleError, match="finite numbers"):
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


TWINS = Path(__file__).resolve().parent / "fixtures" / "simplify" / "twins.ndjson"


def test_drawings_that_hang_on_the_last_bit_of_the_arithmetic_match_google():
    """Three raw drawings that fail under any of seven small changes to the recipe's arithmetic (see the
    fixture's PROVENANCE.md): a bare clone catches what only the whole-sample sweep used to."""
    twins = [json.loads(line) for line in TWINS.read_text().splitlines()]
    assert [t["word"] for t in twins] == ["key", "nose", "mouse"]
    for twin in twins:
        assert simplify_raw(twin["raw"]) == twin["simplified"], twin["key_id"]
    assert simplify_raw_batch([t["raw"] for t in twins]) == [t["simplified"] for t in twins]


# ---------------------------------------------------------------------------------------------
# Ink: the work a drawing costs, and its budget


def _ink_reference(strokes, fit: bool) -> float:
    """Independent ink: math.dist over consecutive points of each stroke, after fitting to the 0..255 box."""
    points = [(x, y) for s in strokes for x, y in zip(s[0], s[1])]
    x0, y0 = min(p[0] for p in points), min(p[1] for p in points)
    extent = max(max(p[0] for p in points) - x0, max(p[1] for p in points) - y0)
    scale = 255.0 / extent if fit and extent else 1.0
    total = 0.0
    for s in strokes:
        pts = [((x - x0) * scale, (y - y0) * scale) if fit else (x, y) for x, y in zip(s[0], s[1])]
        total += sum(math.dist(a, b) for a, b in zip(pts, pts[1:]))
    return total


coordinate = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
raw_stroke = st.integers(1, 12).flatmap(lambda n: st.tuples(st.lists(coordinate, min_size=n, max_size=n),
                                                            st.lists(coordinate, min_size=n, max_size=n)))
raw_drawing = st.lists(raw_stroke.map(lambda s: [s[0], s[1]]), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(raw_drawing, st.booleans())
def test_ink_is_the_length_of_the_strokes_in_the_box(drawing, fit):
    assert ink([drawing], fit=fit)[0] == pytest.approx(_ink_reference(drawing, fit), rel=1e-9, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.lists(raw_drawing, min_size=1, max_size=6))
def test_resampling_makes_about_one_point_per_unit_of_ink(drawings):
    """The budget bounds the work: what resampling makes is the ink plus at most two points a stroke."""
    from doodle import simplify

    for drawing, used in zip(drawings, ink(drawings)):
        strokes = [s for s in drawing if s[0]]
        x, y, sizes, per = simplify._flatten([strokes])
        start = np.cumsum(sizes) - sizes
        x, y = simplify.fit_box(x, y, np.array([0]), np.zeros(len(x), dtype=np.int64))
        qx, _, _, _ = simplify._resample(x, y, start, np.array(sizes))
        assert len(qx) <= used + 2 * len(strokes) + 1e-6


def zigzag(points: int = 20_000, top: float = 1e9) -> list:
    """The audit's worst case: one stroke from corner to corner and back, 20,000 points (~340 KB of JSON)."""
    corners = [0.0 if i % 2 == 0 else top for i in range(points)]
    return [[corners, corners]]


def test_a_drawing_over_the_ink_budget_is_refused_before_any_resampling(monkeypatch):
    from doodle import simplify

    monkeypatch.setattr(simplify, "_resample", lambda *a: pytest.fail("resampled a drawing over the budget"))
    with pytest.raises(DoodleError, match=r"^drawing's strokes run 7,2\d\d,\d{3} units .* over the limit of 100,000"):
        simplify_raw(zigzag())
    with pytest.raises(TooMuchWork, match=r"^drawing's strokes run") as err:
        simplify_raw_batch([[[[0, 10], [0, 10]]], zigzag()])
    assert err.value.index == 1
    assert ink([zigzag()])[0] > 70 * MAX_INK


def test_real_drawings_are_far_inside_the_ink_budget(quickdraw_dir):
    raws = [json.loads(line)["drawing"] for p in (quickdraw_dir / "full" / "raw").glob("*.ndjson")
            for line in p.read_text().splitlines()]
    simplified = [json.loads(line)["drawing"] for p in (quickdraw_dir / "full" / "simplified").glob("*.ndjson")
                  for line in p.read_text().splitlines()]
    assert ink(raws).max() < MAX_INK / 4 and ink(simplified, fit=False).max() < MAX_INK / 4


def equal_peaks(points: int = 20_000, height: float = 4.8) -> list:
    """A zig-zag of equal peaks across the box, inside the ink budget (~96,000 units): every peak ties for the
    farthest, RDP splits at the first one each time and goes one level deeper per kept point."""
    xs = [i * 255 / (points - 1) for i in range(points)]
    return [[xs, [0.0 if i % 2 == 0 else height for i in range(points)]]]


def test_rdp_work_is_bounded_per_drawing_and_names_the_drawing():
    assert ink([equal_peaks()])[0] < MAX_INK
    with pytest.raises(TooMuchWork, match=rf"too intricate to simplify: .* more than {MAX_RDP_WORK:,} points") as err:
        simplify_raw_batch([[[[0, 10], [0, 10]]], equal_peaks(), [[[5, 0], [0, 5]]]])
    assert err.value.index == 1
    # short ones are cheap whatever their shape: 40 peaks keep all of their ~21 levels
    assert len(simplify_raw(equal_peaks(40, height=20.0))[0][0]) > 20


def test_a_bad_drawing_in_a_raw_batch_costs_only_its_own_line(tmp_path):
    """One drawing too intricate to simplify among a batch of good ones: skipped and counted, the rest kept."""
    good = {"word": "cat", "drawing": [[[10.5, 60.0, 110.0], [5.0, 80.0, 55.0]]]}
    lines = [good] * 3 + [{"word": "cat", "drawing": equal_peaks(6_000, height=16.0)}] + [good] * 3
    path = tmp_path / "mixed.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    stats = LoadStats(str(path))
    kept = list(iter_drawings(path, stats=stats))
    assert [r["line"] for r in kept] == [1, 2, 3, 5, 6, 7] and stats.skipped == 1
    assert stats.problems[0][0] == 4 and "too intricate" in stats.problems[0][1]
    assert [r["line"] for r in iter_drawings(path, limit=4, stats=LoadStats("x"))] == [1, 2, 3, 5]
    with pytest.raises(DoodleError, match=r"mixed.ndjson:4: drawing is too intricate .*run without --strict"):
        list(iter_drawings(path, strict=True))
