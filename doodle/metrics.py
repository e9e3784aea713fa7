"""Evaluation metrics for class-probability predictions, vectorised over samples (numpy only).

`summarize(probs, y, class_names)` returns the document `doodle evaluate --json` prints. Its schema
is stable; every value is a plain python int, float, str, list or dict, so `json.dumps` works:

    {
      "n": int,                  # drawings evaluated (> 0)
      "n_classes": int,          # C, the length of `labels` below
      "accuracy": float,         # top-1 accuracy in [0, 1]
      "top3_accuracy": float,    # true class among the 3 most probable (among all C when C < 3)
      "map3": float,             # Kaggle Quick, Draw! MAP@3: mean of 1/rank of the true class if rank <= 3, else 0
      "macro_f1": float,         # mean F1 over the classes that occur in the truth or the predictions
      "per_class": {name: {"precision": float, "recall": float, "f1": float, "support": int}},
      "confusion": {"labels": [name, ...], "matrix": [[int, ...], ...]},  # rows = true, cols = predicted
      "most_confused": [{"true": name, "predicted": name, "count": int}, ...],  # largest count first
      "nll": float,              # mean negative log-likelihood of the true class (natural log)
      "ece": float,              # expected calibration error over 15 equal-width confidence bins, in [0, 1]
      "calibration": [{"lo", "hi", "count", "confidence", "accuracy"}, ...]  # the 15 bins (reliability diagram)
    }

`per_class` and `confusion` follow class order (the order of `class_names`, i.e. the model's outputs).
A precision, recall or F1 whose denominator is zero (a class never predicted, a class with no
drawings) is reported as 0.0, as scikit-learn does with `zero_division=0`.

Ties in probability are broken towards the lower class index everywhere (ranks, top-k lists and the
top-1 prediction, which is `argmax`), so accuracy, top-k accuracy, MAP@k and `topk_predictions`
always agree with one another.
"""

from __future__ import annotations

import numpy as np

from doodle.errors import DoodleError

# Rows per block when ranking: a (block, C) boolean scratch array stays cache-sized even for C = 345.
_RANK_BLOCK = 4096


def _check_probs(probs) -> np.ndarray:
    """Return `probs` as a finite (N, C) float array, or raise DoodleError."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise DoodleError(f"probabilities must be an (N, C) array with C >= 1, got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        probs = probs.astype(np.float64)
    if not np.isfinite(probs).all():
        raise DoodleError(
            "probabilities contain NaN or infinity: the model diverged; retrain with a lower learning rate"
        )
    return probs


def _check_labels(y, n: int, n_classes: int, what: str = "labels") -> np.ndarray:
    """Return `y` as an (n,) int64 array of class indices in [0, n_classes), or raise DoodleError."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DoodleError(f"{what} must be a 1-D array of {n} class indices, got shape {y.shape}")
    if n and not np.issubdtype(y.dtype, np.integer):
        raise DoodleError(f"{what} must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if n and (y.min() < 0 or y.max() >= n_classes):
        bad = int(y[(y < 0) | (y >= n_classes)][0])
        raise DoodleError(
            f"{what} contain class index {bad}, outside 0..{n_classes - 1}: "
            f"the data and the model disagree on the class list"
        )
    return y


def _check_nonempty(n: int) -> None:
    if n == 0:
        raise DoodleError("no drawings to evaluate (N = 0): check that the evaluation split holds drawings")


def _check_k(k, n_classes: int) -> int:
    """A k of at least 1; asking for more than C classes means all C."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DoodleError(f"k must be a whole number >= 1, got {k!r}")
    return min(int(k), n_classes)


def true_class_rank(probs, y) -> np.ndarray:
    """(N,) int64 1-based rank of the true class in each row (1 = most probable; ties: lower index first)."""
    probs = _check_probs(probs)
    n, c = probs.shape
    y = _check_labels(y, n, c)
    rank = np.empty(n, dtype=np.int64)
    cols = np.arange(c)
    for start in range(0, n, _RANK_BLOCK):  # blocks of rows, not samples: keeps the scratch small
        p = probs[start : start + _RANK_BLOCK]  # (B, C)
        yb = y[start : start + _RANK_BLOCK]  # (B,)
        pt = p[np.arange(len(yb)), yb][:, None]  # (B, 1) probability of the true class
        r = 1 + np.count_nonzero(p > pt, axis=1)
        # Exact ties are rare with float probabilities, so only rows that have one pay for the index test.
        tied = np.flatnonzero(np.count_nonzero(p == pt, axis=1) > 1)
        if tied.size:
            before = (p[tied] == pt[tied]) & (cols < yb[tied, None])  # (T, C)
            r[tied] += np.count_nonzero(before, axis=1)
        rank[start : start + len(yb)] = r
    return rank


def topk_predictions(probs: np.ndarray, k: int) -> np.ndarray:
    """(N, k) int64 class indices, most probable first (ties: lower index first); k is capped at C."""
    probs = _check_probs(probs)
    n, c = probs.shape
    k = _check_k(k, c)
    if k == c:
        return np.argsort(-probs, axis=1, kind="stable").astype(np.int64, copy=False)
    # argpartition alone picks arbitrarily among values tied at the k-th place; choosing those by
    # index keeps the result deterministic and consistent with true_class_rank.
    kth = -np.partition(-probs, k - 1, axis=1)[:, k - 1 : k]  # (N, 1) k-th largest value
    above = probs > kth  # (N, C) certainly in the top k
    tied = probs == kth  # (N, C) candidates for the remaining places
    room = k - np.count_nonzero(above, axis=1)  # (N,) places left for tied values, >= 1
    take = above | tied
    # Usually the k-th value is unique and `take` already has k per row; only rows with more ties
    # than places pay for the cumulative count that keeps the lowest indices.
    crowded = np.flatnonzero(np.count_nonzero(tied, axis=1) > room)
    if crowded.size:
        first = np.cumsum(tied[crowded], axis=1) <= room[crowded, None]  # (R, C)
        take[crowded] = above[crowded] | (tied[crowded] & first)
    idx = np.nonzero(take)[1].reshape(n, k)  # (N, k) ascending class index
    order = np.argsort(-np.take_along_axis(probs, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1).astype(np.int64, copy=False)


def _topk_from_rank(rank: np.ndarray, k: int) -> float:
    return float(np.count_nonzero(rank <= k) / rank.size)


def _map_from_rank(rank: np.ndarray, k: int) -> float:
    # 1/rank where the true class made the top k, else 0; float64 so the mean does not drift for large N.
    return float(np.where(rank <= k, 1.0 / rank, 0.0).mean())


def topk_accuracy(probs, y, k) -> float:
    """Fraction of rows whose true class is among the k most probable (k capped at C)."""
    probs = _check_probs(probs)
    _check_nonempty(probs.shape[0])
    k = _check_k(k, probs.shape[1])
    return _topk_from_rank(true_class_rank(probs, y), k)


def map_at_k(probs, y, k=3) -> float:
    """Mean average precision at k with one true class: mean of 1/rank if rank <= k, else 0 (Kaggle's MAP@3)."""
    probs = _check_probs(probs)
    _check_nonempty(probs.shape[0])
    k = _check_k(k, probs.shape[1])
    return _map_from_rank(true_class_rank(probs, y), k)


def confusion_matrix(y_true, y_pred, n_classes) -> np.ndarray:
    """(C, C) int64 counts; rows = true class, columns = predicted class."""
    n_classes = int(n_classes)
    if n_classes < 1:
        raise DoodleError(f"n_classes must be >= 1, got {n_classes}")
    y_true = np.asarray(y_true)
    if y_true.ndim != 1:
        raise DoodleError(f"true labels must be a 1-D array of class indices, got shape {y_true.shape}")
    y_true = _check_labels(y_true, y_true.shape[0], n_classes, "true labels")
    y_pred = _check_labels(y_pred, y_true.shape[0], n_classes, "predicted labels")
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64, copy=False)


def _check_confusion(confusion, class_names) -> tuple[np.ndarray, list[str]]:
    confusion = np.asarray(confusion)
    names = [str(name) for name in class_names]
    c = len(names)
    if confusion.shape != (c, c):
        raise DoodleError(f"confusion matrix has shape {confusion.shape} but there are {c} class names")
    if len(set(names)) != c:
        dup = next(name for name in names if names.count(name) > 1)
        raise DoodleError(f"class name {dup!r} appears twice in the class list; class names must be unique")
    return confusion.astype(np.int64, copy=False), names


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 0.0 where den == 0 (an undefined precision, recall or F1 counts as 0)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _class_scores(confusion: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class (precision, recall, f1, support, predicted) arrays from a (C, C) confusion matrix."""
    tp = np.diagonal(confusion).astype(np.float64)
    support = confusion.sum(axis=1)  # (C,) drawings truly of the class
    predicted = confusion.sum(axis=0)  # (C,) drawings predicted as the class
    precision = _safe_ratio(tp, predicted)
    recall = _safe_ratio(tp, support)
    # 2TP / (2TP + FP + FN) equals 2PR / (P + R) where both are defined and needs no special cases.
    f1 = _safe_ratio(2 * tp, (support + predicted).astype(np.float64))
    return precision, recall, f1, support, predicted


def per_class_metrics(confusion, class_names) -> dict[str, dict]:
    """{name: {"precision", "recall", "f1", "support"}} in class order; 0.0 where a ratio is undefined."""
    confusion, names = _check_confusion(confusion, class_names)
    precision, recall, f1, support, _ = _class_scores(confusion)
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def macro_f1(confusion) -> float:
    """Mean F1 over classes present in the truth or the predictions (as scikit-learn without `labels`)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    _, _, f1, support, predicted = _class_scores(confusion)
    present = (support + predicted) > 0
    return float(f1[present].mean()) if present.any() else 0.0


def most_confused(confusion, class_names, n=10) -> list[dict]:
    """Up to n off-diagonal cells with a nonzero count, largest first (ties: row, then column order)."""
    confusion, names = _check_confusion(confusion, class_names)
    c = len(names)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    order = np.argsort(-flat, kind="stable")[: max(int(n), 0)]
    order = order[flat[order] > 0]
    return [{"true": names[i // c], "predicted": names[i % c], "count": int(flat[i])} for i in order]


# --- calibration: does a probability of 0.8 mean right 80% of the time? ---------------------------

ECE_BINS = 15  # the usual choice (Guo et al. 2017, "On Calibration of Modern Neural Networks")


def negative_log_likelihood(probs, y) -> float:
    """Mean -log p(true class); probabilities are floored at 1e-12 so one certain miss stays finite."""
    probs = _check_probs(probs)
    y = _check_labels(y, len(probs), probs.shape[1])
    _check_nonempty(len(y))
    picked = probs[np.arange(len(y)), y].astype(np.float64)
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


def calibration_bins(probs, y, bins: int = ECE_BINS) -> list[dict]:
    """Top-1 confidence vs accuracy in `bins` equal-width bins of confidence (empty bins included, count 0)."""
    probs = _check_probs(probs)
    y = _check_labels(y, len(probs), probs.shape[1])
    conf = probs.max(axis=1).astype(np.float64)  # (N,)
    right = (np.argmax(probs, axis=1) == y).astype(np.float64)
    # Bin k holds (k/bins, (k+1)/bins], the first also 0: found against the edges themselves, as ceil(conf * bins)
    # rounds some values just above an edge (11/15 + 1 ulp, times 15, is 11.0) into the bin below it.
    which = np.minimum(np.searchsorted(np.arange(1, bins + 1) / bins, conf, side="left"), bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    right_sum = np.bincount(which, weights=right, minlength=bins)
    safe = np.maximum(count, 1)
    return [{"lo": k / bins, "hi": (k + 1) / bins, "count": int(count[k]),
             "confidence": float(conf_sum[k] / safe[k]), "accuracy": float(right_sum[k] / safe[k])}
            for k in range(bins)]


def expected_calibration_error(probs, y, bins: int = ECE_BINS) -> float:
    """sum over bins of (bin share) * |accuracy - confidence|, from calibration_bins."""
    table = calibration_bins(probs, y, bins)
    n = sum(b["count"] for b in table)
    _check_nonempty(n)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table) / n)


def fit_temperature(logits, y, lo: float = 0.05, hi: float = 20.0) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) (temperature scaling, Guo et al. 2017).

    The NLL is convex in b = 1/T (log-sum-exp of b*z is convex, b*z_y is linear), so Newton's method on b
    converges in a few steps: NLL'(b) = mean(E_p[z] - z_y), NLL''(b) = mean(Var_p[z]) >= 0. Computed in
    float64; the result is clipped to [lo, hi] (a model can be arbitrarily over- or under-confident).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or not np.isfinite(z).all():
        raise DoodleError(f"temperature fitting needs finite (N, C) logits, got shape {z.shape}")
    y = _check_labels(y, len(z), z.shape[1])
    _check_nonempty(len(y))
    z = z - z.max(axis=1, keepdims=True)
    z_y = z[np.arange(len(y)), y]
    b = 1.0
    for _ in range(50):
        e = np.exp(b * z)
        p = e / e.sum(axis=1, keepdims=True)
        mean_z = (p * z).sum(axis=1)
        grad = float(np.mean(mean_z - z_y))
        curv = float(np.mean((p * z * z).sum(axis=1) - mean_z ** 2))
        if curv <= 1e-12:
            break
        step = grad / curv
        b_new = min(max(b - step, 1.0 / hi), 1.0 / lo)  # stay inside the bracket
        if abs(b_new - b) <= 1e-10 * b:
            b = b_new
            break
        b = b_new
    return float(min(max(1.0 / b, lo), hi))


CONFIDENT_PRECISION = 0.9  # "I see X" must be right at least this often (doodle play's announcements)


def confidence_threshold(probs, y, precision: float = CONFIDENT_PRECISION) -> float:
    """The lowest top-1 confidence at which top guesses are right at least `precision` of the time (1.0: never).

    "At which" is local, not cumulative: the rate of being right is read off the isotonic (monotone
    non-decreasing) fit of correctness against confidence, by pool-adjacent-violators, so a threshold is
    not carried by the surer guesses above it and needs no bin width. Equal confidences pool first, so the
    answer never splits a tie. The result is the confidence of the least confident drawing in the first
    pooled block whose rate reaches `precision`.
    """
    probs = _check_probs(probs)
    y = _check_labels(y, len(probs), probs.shape[1])
    _check_nonempty(len(y))
    conf = probs.max(axis=1).astype(np.float64)  # (N,)
    right = (np.argmax(probs, axis=1) == y).astype(np.float64)
    levels, which = np.unique(conf, return_inverse=True)  # (L,) ascending
    # blocks of the fit, as (sum of right, count, lowest confidence); a new block merges back while it
    # is below the one before it (a violator of monotonicity)
    sums: list[float] = []
    counts: list[int] = []
    lows: list[float] = []
    for lo, s, c in zip(levels, np.bincount(which, weights=right), np.bincount(which)):
        s, c = float(s), int(c)
        while sums and sums[-1] * c >= s * counts[-1]:  # the block before is at least as right: pool
            s, c, lo = s + sums.pop(), c + counts.pop(), lows.pop()
        sums.append(s)
        counts.append(c)
        lows.append(float(lo))
    return next((lo for s, c, lo in zip(sums, counts, lows) if s >= precision * c), 1.0)


# "I see X" for a model trained before confident_at was stored: its calibrated confidence is its chance of
# being right, so the precision aimed at is itself the threshold
DEFAULT_CONFIDENT_AT = CONFIDENT_PRECISION


def confidence_rule(metrics: dict) -> dict:
    """From how sure a guess is announced ("I see X"), for `doodle play` and an exported page: the threshold the
    run chose on its validation split (train.py stores it), or the default for a run without one."""
    return {"threshold": metrics.get("confident_at", DEFAULT_CONFIDENT_AT),
            "precision": metrics.get("confident_precision", CONFIDENT_PRECISION),
            "source": "validation" if "confident_at" in metrics else "default"}


def summarize(probs, y, class_names, top_n_confused=10) -> dict:
    """The `doodle evaluate --json` document for (N, C) probabilities and (N,) true labels (schema above)."""
    probs = _check_probs(probs)
    n, c = probs.shape
    _check_nonempty(n)
    names = [str(name) for name in class_names]
    if len(names) != c:
        raise DoodleError(f"the model outputs {c} classes but {len(names)} class names were given")
    y = _check_labels(y, n, c)

    rank = true_class_rank(probs, y)  # (N,) shared by every ranking metric
    y_pred = np.argmax(probs, axis=1)  # (N,) first maximum = lowest index, same tie rule as rank
    confusion = confusion_matrix(y, y_pred, c)
    k3 = min(3, c)
    return {
        "n": int(n),
        "n_classes": int(c),
        "accuracy": _topk_from_rank(rank, 1),
        "top3_accuracy": _topk_from_rank(rank, k3),
        "map3": _map_from_rank(rank, k3),
        "macro_f1": macro_f1(confusion),
        "per_class": per_class_metrics(confusion, names),
        "confusion": {"labels": names, "matrix": confusion.tolist()},
        "most_confused": most_confused(confusion, names, top_n_confused),
        "nll": negative_log_likelihood(probs, y),
        "ece": expected_calibration_error(probs, y),
        "calibration": calibration_bins(probs, y),
    }
