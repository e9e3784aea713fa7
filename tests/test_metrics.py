"""Metrics against hand-computed examples and against slow, obviously-correct python references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from doodle import metrics
from doodle.errors import DoodleError

# Hand example: 5 classes, 5 drawings. Class 4 never occurs and is never predicted.
#            class:   0     1     2     3    4      true  rank of the true class
PROBS = np.array(
    [
        [0.10, 0.60, 0.20, 0.10, 0.0],  # 1     1  (0.6 is the maximum)
        [0.50, 0.10, 0.30, 0.10, 0.0],  # 2     2  (behind 0.5)
        [0.40, 0.30, 0.10, 0.20, 0.0],  # 3     3  (behind 0.4 and 0.3)
        [0.70, 0.10, 0.10, 0.10, 0.0],  # 2     3  (behind 0.7, and tied 0.1 with class 1 whose index is lower)
        [0.25, 0.25, 0.25, 0.25, 0.0],  # 3     4  (four-way tie, class 3 comes last)
    ],
    dtype=np.float32,
)
Y = np.array([1, 2, 3, 2, 3])
NAMES = ["cat", "dog", "fish", "bird", "tree"]
# argmax predictions: [1, 0, 0, 0, 0]


def reference_rank(probs, y):
    """1-based rank from a python sort on (-probability, class index): the documented tie rule."""
    return np.array([sorted(range(len(p)), key=lambda j: (-p[j], j)).index(t) + 1 for p, t in zip(probs, y)])


def test_hand_example_rank_and_topk():
    assert metrics.true_class_rank(PROBS, Y).tolist() == [1, 2, 3, 3, 4]
    assert metrics.topk_predictions(PROBS, 3).tolist() == [[1, 2, 0], [0, 2, 1], [0, 1, 3], [0, 1, 2], [0, 1, 2]]
    assert metrics.topk_predictions(PROBS, 1).ravel().tolist() == np.argmax(PROBS, axis=1).tolist()


def test_hand_example_accuracies_and_map3():
    assert metrics.topk_accuracy(PROBS, Y, 1) == pytest.approx(1 / 5)
    assert metrics.topk_accuracy(PROBS, Y, 2) == pytest.approx(2 / 5)
    assert metrics.topk_accuracy(PROBS, Y, 3) == pytest.approx(4 / 5)
    assert metrics.topk_accuracy(PROBS, Y, 4) == pytest.approx(1.0)
    # Ranks 1, 2, 3, 3 (the tie loses to the lower index) and 4 (outside the top 3 -> 0).
    assert metrics.map_at_k(PROBS, Y) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 3 + 0) / 5)
    assert metrics.map_at_k(PROBS, Y, k=1) == pytest.approx(1 / 5)
    assert metrics.map_at_k(PROBS, Y, k=5) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 3 + 1 / 4) / 5)


def test_tied_true_class_wins_when_its_index_is_lower():
    probs = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
    assert metrics.true_class_rank(probs, [0, 1]).tolist() == [1, 2]
    assert metrics.map_at_k(probs, [0, 1]) == pytest.approx((1 + 1 / 2) / 2)
    assert metrics.topk_accuracy(probs, [0, 1], 1) == pytest.approx(0.5)


def test_topk_predictions_with_ties_at_the_cut():
    # Five values tied for places 2..3: the lowest indices win, best first, deterministic.
    probs = np.array([[0.1, 0.1, 0.5, 0.1, 0.1, 0.1]])
    assert metrics.topk_predictions(probs, 3).tolist() == [[2, 0, 1]]
    assert metrics.topk_predictions(probs, 10).tolist() == [[2, 0, 1, 3, 4, 5]]  # k capped at C


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_ranking_agrees_with_python_reference_on_ties(k):
    rng = np.random.default_rng(k)
    probs = rng.integers(0, 4, size=(300, 7)).astype(np.float32)  # coarse values: ties everywhere
    y = rng.integers(0, 7, size=300)
    rank = reference_rank(probs, y)
    assert metrics.true_class_rank(probs, y).tolist() == rank.tolist()
    top = metrics.topk_predictions(probs, k)
    expected_top = [sorted(range(7), key=lambda j: (-p[j], j))[:k] for p in probs]
    assert top.tolist() == expected_top
    assert metrics.topk_accuracy(probs, y, k) == pytest.approx(np.mean(rank <= k))
    assert metrics.map_at_k(probs, y, k) == pytest.approx(np.mean([1 / r if r <= k else 0 for r in rank]))


def test_rank_blocks_join_up():
    # More rows than one ranking block, so block edges are exercised.
    rng = np.random.default_rng(3)
    n = metrics._RANK_BLOCK * 2 + 17
    probs = rng.random((n, 4)).round(1)
    y = rng.integers(0, 4, size=n)
    ties = (probs == probs[np.arange(n), y][:, None]) & (np.arange(4) < y[:, None])
    expected = 1 + (probs > probs[np.arange(n), y][:, None]).sum(1) + ties.sum(1)
    assert np.array_equal(metrics.true_class_rank(probs, y), expected)


def test_confusion_orientation_rows_true_cols_predicted():
    cm = metrics.confusion_matrix([0, 0, 1, 2], [1, 1, 1, 0], 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[0, 2, 0], [0, 1, 0], [1, 0, 0]]
    assert metrics.confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]


def test_per_class_metrics_hand_example():
    cm = metrics.confusion_matrix(Y, PROBS.argmax(1), 5)
    assert cm.tolist() == [[0] * 5, [0, 1, 0, 0, 0], [2, 0, 0, 0, 0], [2, 0, 0, 0, 0], [0] * 5]
    per = metrics.per_class_metrics(cm, NAMES)
    assert list(per) == NAMES
    # cat: zero support but predicted 4 times -> precision 0/4, recall undefined -> 0.
    assert per["cat"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert per["dog"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    # fish, bird: never predicted -> precision undefined -> 0, recall 0/2.
    assert per["fish"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert per["tree"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # Macro F1 over the four classes present in truth or predictions; tree is left out (else 1/5).
    assert metrics.macro_f1(cm) == pytest.approx(1 / 4)


def test_per_class_metrics_partial_scores():
    # true:  0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    cm = metrics.confusion_matrix([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    per = metrics.per_class_metrics(cm, ["a", "b", "c"])
    assert per["a"]["precision"] == pytest.approx(1.0) and per["a"]["recall"] == pytest.approx(2 / 3)
    assert per["a"]["f1"] == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert per["b"]["precision"] == pytest.approx(1 / 2) and per["b"]["recall"] == pytest.approx(1 / 2)
    assert per["c"]["precision"] == pytest.approx(1 / 2) and per["c"]["recall"] == pytest.approx(1.0)
    assert per["c"]["f1"] == pytest.approx(2 / 3)
    assert metrics.macro_f1(cm) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_most_confused_order_and_limit():
    cm = np.array([[5, 3, 0], [1, 5, 3], [4, 0, 5]])
    top = metrics.most_confused(cm, ["a", "b", "c"], n=10)
    assert top == [
        {"true": "c", "predicted": "a", "count": 4},
        {"true": "a", "predicted": "b", "count": 3},  # ties: earlier row first
        {"true": "b", "predicted": "c", "count": 3},
        {"true": "b", "predicted": "a", "count": 1},
    ]
    assert metrics.most_confused(cm, ["a", "b", "c"], n=2) == top[:2]
    assert metrics.most_confused(np.eye(3, dtype=int) * 7, ["a", "b", "c"]) == []


def test_summarize_hand_example_and_json_round_trip():
    s = metrics.summarize(PROBS, Y, NAMES, top_n_confused=1)
    assert s["n"] == 5 and s["n_classes"] == 5
    assert s["accuracy"] == pytest.approx(0.2)
    assert s["top3_accuracy"] == pytest.approx(0.8)
    assert s["map3"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 5)
    assert s["macro_f1"] == pytest.approx(0.25)
    assert s["confusion"]["labels"] == NAMES
    assert s["confusion"]["matrix"][2] == [2, 0, 0, 0, 0]  # fish (true) predicted as cat twice
    assert s["most_confused"] == [{"true": "fish", "predicted": "cat", "count": 2}]
    assert list(s["per_class"]) == NAMES
    assert json.loads(json.dumps(s)) == s

    def plain(value):  # no numpy scalars anywhere: json.dumps would choke on them (or float32)
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return type(value) in (int, float, str)

    assert plain(s)


def test_summarize_accuracy_matches_confusion_trace_on_random_data():
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(12), size=500).astype(np.float32)
    y = rng.integers(0, 12, size=500)
    s = metrics.summarize(probs, y, [f"c{i}" for i in range(12)])
    matrix = np.array(s["confusion"]["matrix"])
    assert matrix.sum() == 500
    assert s["accuracy"] == pytest.approx(np.trace(matrix) / 500)
    assert s["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    assert matrix.sum(1).tolist() == [s["per_class"][f"c{i}"]["support"] for i in range(12)]
    assert s["top3_accuracy"] >= s["map3"] >= s["accuracy"]


def test_fewer_than_three_classes_uses_top_c():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    y = np.array([0, 0, 1])
    s = metrics.summarize(probs, y, ["yes", "no"])
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert s["top3_accuracy"] == pytest.approx(1.0)
    assert s["map3"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    one = metrics.summarize(np.ones((2, 1)), [0, 0], ["only"])
    assert one["accuracy"] == one["top3_accuracy"] == one["map3"] == 1.0


def test_empty_input_is_a_clear_error():
    with pytest.raises(DoodleError, match="N = 0"):
        metrics.summarize(np.zeros((0, 3), dtype=np.float32), np.zeros(0, dtype=np.int64), ["a", "b", "c"])
    with pytest.raises(DoodleError, match="N = 0"):
        metrics.topk_accuracy(np.zeros((0, 3)), [], 1)
    with pytest.raises(DoodleError, match="N = 0"):
        metrics.map_at_k(np.zeros((0, 3)), [])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.summarize(PROBS, Y, NAMES[:4]), "5 classes but 4 class names"),
        (lambda: metrics.summarize(PROBS, [0, 1, 2, 3, 5], NAMES), "class index 5"),
        (lambda: metrics.summarize(PROBS, Y[:4], NAMES), "5 class indices"),
        (lambda: metrics.summarize(PROBS, Y.astype(float), NAMES), "integer"),
        (lambda: metrics.summarize(np.full((1, 2), np.nan), [0], ["a", "b"]), "NaN"),
        (lambda: metrics.topk_predictions(PROBS[0], 3), r"\(N, C\)"),
        (lambda: metrics.topk_predictions(PROBS, 0), "k must be"),
        (lambda: metrics.confusion_matrix([0, -1], [0, 0], 2), "class index -1"),
        (lambda: metrics.per_class_metrics(np.zeros((2, 2)), ["a", "a"]), "appears twice"),
        (lambda: metrics.most_confused(np.zeros((2, 2)), ["a"]), "shape"),
    ],
)
def test_bad_input_raises_doodle_error(call, message):
    with pytest.raises(DoodleError, match=message):
        call()


# --- calibration -------------------------------------------------------------------------------


def test_nll_and_calibration_bins_by_hand():
    probs = np.array([[0.85, 0.15], [0.85, 0.15], [0.55, 0.45], [0.35, 0.65]])
    y = np.array([0, 1, 0, 1])
    assert metrics.negative_log_likelihood(probs, y) == pytest.approx(
        -np.mean(np.log([0.85, 0.15, 0.55, 0.65])))
    bins = metrics.calibration_bins(probs, y, bins=10)
    assert len(bins) == 10 and [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 1, 0, 2, 0]
    assert bins[8]["accuracy"] == 0.5 and bins[8]["confidence"] == pytest.approx(0.85)
    # ECE = (2 * |0.5 - 0.85| + 1 * |1 - 0.55| + 1 * |1 - 0.65|) / 4
    assert metrics.expected_calibration_error(probs, y, bins=10) == pytest.approx((0.7 + 0.45 + 0.35) / 4)


@pytest.mark.parametrize("n_bins", [4, 10, 15])
def test_calibration_bins_hold_a_confidence_on_an_edge_in_the_bin_it_closes(n_bins):
    # Bins are (lo, hi]: k/n belongs to bin k-1, the next float above it to bin k; the first bin also holds 0.
    # Off-by-one-edge binning survived mutation testing (no test put a confidence exactly on an edge).
    edges = [k / n_bins for k in range(1, n_bins + 1)]  # bin k's hi, as calibration_bins computes it
    above = [float(np.nextafter(e, 2.0)) for e in edges[:-1]]
    conf = np.array(edges + above + [0.0])
    n_classes = 2 * n_bins  # room for the rest of each row below its top probability, even for 1/n_bins
    probs = np.zeros((len(conf), n_classes))
    probs[:-1, 0] = conf[:-1]
    probs[:-1, 1:] = ((1 - conf[:-1]) / (n_classes - 1))[:, None]
    table = metrics.calibration_bins(probs, np.zeros(len(conf), dtype=int), bins=n_bins)
    for k, hi in enumerate(edges):
        members = [hi] + ([above[k - 1]] if k else [0.0])
        assert table[k]["hi"] == hi and table[k]["count"] == len(members), (k, table[k])
        assert table[k]["confidence"] == pytest.approx(np.mean(members), rel=1e-12)


def test_a_calibrated_model_has_small_ece_and_temperature_recovers_the_scale():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((20000, 6)) * 2.0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) < rng.random((len(p), 1))).sum(axis=1)  # labels drawn from p itself
    assert metrics.expected_calibration_error(p, y) < 0.015
    for t in (0.25, 1.0, 4.0):
        assert metrics.fit_temperature(logits / t, y) == pytest.approx(1 / t, rel=0.05)
    hot = logits * 3  # over-confident
    q = np.exp(hot - hot.max(1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    assert metrics.expected_calibration_error(q, y) > 0.1


def test_temperature_minimises_the_nll():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((500, 4)) * 3
    y = np.where(rng.random(500) < 0.6, logits.argmax(1), rng.integers(0, 4, 500))  # informative, not certain

    def nll(t):
        z = logits / t
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(500), y]))

    t = metrics.fit_temperature(logits, y)
    assert 0.05 < t < 20  # an interior optimum, not a clipped bound
    assert nll(t) <= min(nll(t * 0.98), nll(t * 1.02))
    with pytest.raises(DoodleError, match="finite"):
        metrics.fit_temperature(np.full((2, 3), np.nan), np.array([0, 1]))


def test_summary_carries_calibration():
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    s = metrics.summarize(probs, np.array([0, 1, 1]), ["a", "b"])
    assert s["nll"] == pytest.approx(metrics.negative_log_likelihood(probs, np.array([0, 1, 1])))
    assert len(s["calibration"]) == metrics.ECE_BINS and sum(b["count"] for b in s["calibration"]) == 3
    assert 0 <= s["ece"] <= 1


def _confident_rows(conf, n_classes=4) -> np.ndarray:
    """(N, C) probabilities whose top-1 is class 0 at confidence `conf`, the rest shared equally."""
    conf = np.asarray(conf, dtype=np.float64)[:, None]
    return np.hstack([conf, np.repeat((1 - conf) / (n_classes - 1), n_classes - 1, axis=1)])


def test_confidence_threshold_by_hand():
    # ascending confidence, right (1) or wrong (0): 0 0 1 0 1 1 1
    conf = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60]
    right = np.array([0, 0, 1, 0, 1, 1, 1])
    probs, y = _confident_rows(conf), np.where(right == 1, 0, 1)
    # the monotone fit: 0 (0.30-0.35), 0.5 (0.40-0.45 pooled: 1 then 0 violates), 1 (0.50-0.60)
    assert metrics.confidence_threshold(probs, y, precision=0.9) == pytest.approx(0.50)
    assert metrics.confidence_threshold(probs, y, precision=0.5) == pytest.approx(0.40)
    assert metrics.confidence_threshold(probs, y, precision=0.0) == pytest.approx(0.30)
    # cumulatively, the guesses from 0.40 up are right 4 times in 5 (80%), from 0.35 up 4 in 6: many sure
    # rights above must not carry a weak confidence past the bar
    sure = _confident_rows([0.99] * 30)
    both = np.vstack([probs, sure]), np.concatenate([y, np.zeros(30, dtype=np.int64)])
    assert metrics.confidence_threshold(*both, precision=0.9) == pytest.approx(0.50)


def test_confidence_threshold_pools_ties_and_says_never():
    tied = _confident_rows([0.7, 0.7, 0.8])  # at 0.7 one right, one wrong: 0.7 is 50% right, never 0.7 "half"
    assert metrics.confidence_threshold(tied, np.array([0, 1, 0]), precision=0.9) == pytest.approx(0.8)
    wrong = _confident_rows([0.5, 0.9])
    assert metrics.confidence_threshold(wrong, np.array([1, 1])) == 1.0  # never right: never sure
    with pytest.raises(DoodleError, match="N = 0"):
        metrics.confidence_threshold(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))


def test_confidence_threshold_of_a_calibrated_model_is_its_precision():
    """When confidence is the chance of being right, guesses at confidence p are right p of the time."""
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.3, 1.0, 20000)
    y = np.where(rng.random(len(conf)) < conf, 0, 1)
    for precision in (0.6, 0.8, 0.9):
        assert metrics.confidence_threshold(_confident_rows(conf), y, precision) == pytest.approx(precision, abs=0.02)
