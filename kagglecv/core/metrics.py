"""Metrics: numpy arrays in, a float out, ``y_true`` before ``y_score``; no I/O and no state.

scikit-learn computes what it has (F1, ROC AUC, kappa, balanced accuracy, top-k). Written here, each after its
reference:

* ``average_precision_per_class`` / ``map``: scikit-learn's ``average_precision_score`` (tied scores form one
  threshold), for all classes at once without a Python loop over rows or classes;
* ``map_voc07``: the 11-point interpolated AP of the PASCAL VOC 2007 devkit (``VOCevalcls.m``, ``VOCap``'s 2007
  branch); ``map_voc``: the VOC 2010+ devkit's area under the monotone precision envelope (``VOCap.m``);
* ``multilabel_prf``: CP/CR/CF1 and OP/OR/OF1 as in ML-GCN (Chen et al., CVPR 2019, ``util.py`` ``evaluation``).

Multi-label targets use kagglecv's encoding: 1 present, 0 absent, -1 difficult. Difficult entries are ranked but
count as neither hit nor miss (the VOC protocol). A class with no positive is left out of a mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from kagglecv.core.errors import ConfigError
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.core.predictions import head_blocks

skm = imported_on_first_use("sklearn.metrics")

DIFFICULT = -1


def _check_pair(y_true, y_score, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    if len(y_true) != len(y_score):
        raise ValueError(f"y_true and y_score must have the same number of rows, got {len(y_true)} and {len(y_score)}")
    if ndim is not None and y_score.ndim != ndim:
        raise ValueError(f"y_score must be {ndim}-D, got shape {y_score.shape}")
    if y_true.ndim == 2 and y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score must have the same shape, got {y_true.shape} and {y_score.shape}")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or inf")
    return y_true, y_score


# ----- multiclass (y_true: class indices, y_score: rows x classes probabilities) -------------------------------------
def accuracy(y_true, y_score) -> float:
    """Share of rows whose highest-scoring class is the true class."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    return float(np.mean(y_score.argmax(axis=1) == y_true))


def top_k_accuracy(y_true, y_score, k: int = 5) -> float:
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    return float(skm.top_k_accuracy_score(y_true, y_score, k=k, labels=np.arange(y_score.shape[1])))


def log_loss(y_true, y_prob, eps: float = 1e-15) -> float:
    """Multiclass log loss; probabilities clipped to [eps, 1 - eps] and rows renormalized, as Kaggle does."""
    y_true, y_prob = _check_pair(y_true, y_prob, ndim=2)
    clipped = np.clip(y_prob, eps, 1 - eps)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(clipped[np.arange(len(y_true)), y_true])))


def f1(y_true, y_score, average: str = "macro") -> float:
    """F1 of the argmax class, as scikit-learn's ``f1_score`` computes it by default (and Kaggle's graders call it):
    a macro average over the classes present in the truth or the predictions; a class in neither is no zero."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    return float(skm.f1_score(y_true, y_score.argmax(axis=1), average=average, zero_division=0))


def recall_macro(y_true, y_score) -> float:
    """Recall of the argmax class averaged over the classes (scikit-learn's ``recall_score(average="macro")``, as
    Bengali.AI scored each component)."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    return float(skm.recall_score(y_true, y_score.argmax(axis=1), average="macro", zero_division=0))


def balanced_accuracy(y_true, y_score) -> float:
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    return float(skm.balanced_accuracy_score(y_true, y_score.argmax(axis=1)))


def quadratic_weighted_kappa(y_true, y_score) -> float:
    """Cohen's kappa with quadratic weights on the predicted class (classes taken as ordered)."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    labels = np.arange(y_score.shape[1])
    return float(skm.cohen_kappa_score(y_true, y_score.argmax(axis=1), labels=labels, weights="quadratic"))


def expected_grade(y_score) -> np.ndarray:
    """The expected class index under the predicted distribution: sum_k p_k * k (classes taken as ordered grades)."""
    y_score = np.asarray(y_score, dtype=np.float64)
    return y_score @ np.arange(y_score.shape[1])


def grades_from_cutoffs(grade: np.ndarray, cutoffs) -> np.ndarray:
    """Class indices of continuous grades: the number of cut-offs at or below each grade."""
    return np.searchsorted(np.sort(np.asarray(cutoffs, dtype=np.float64)), grade, side="right")


def tune_other_threshold(probabilities: np.ndarray, targets: np.ndarray, share: float) -> tuple[float, float, float]:
    """The confidence under which a single-label submission writes its "other" label (a class absent from training,
    UBC-OCEAN's ``Other``), tuned on OOF rows by leaving each row's own class out: a row stands for a seen image
    (its probabilities as they are: right when its argmax is its class and it is kept) and for an image of an unseen
    class (its probabilities without its own class, renormalised: right when routed to "other"). The threshold
    maximises ``(1 - share) x`` the seen rows' accuracy ``+ share x`` the unseen rows' routing rate (``share``: the
    test's expected fraction of unseen classes), exactly, over every distinct confidence. Returns (threshold,
    accuracy with it, accuracy never routing: threshold 0)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=int)
    rows = np.arange(len(targets))
    seen_confidence = probabilities.max(axis=1)
    seen_right = (probabilities.argmax(axis=1) == targets).astype(np.float64)
    left = probabilities.copy()
    left[rows, targets] = 0.0
    unseen_confidence = left.max(axis=1) / np.maximum(1.0 - probabilities[rows, targets], 1e-12)
    # at threshold t: the seen rows kept right (confidence >= t), the unseen rows routed (confidence < t)
    candidates = np.unique(np.r_[0.0, seen_confidence, unseen_confidence, np.nextafter(1.0, 2.0)])
    right = np.sort(seen_confidence[seen_right > 0])
    kept = len(right) - np.searchsorted(right, candidates, "left")
    routed = np.searchsorted(np.sort(unseen_confidence), candidates, "left")
    accuracy = ((1.0 - share) * kept + share * routed) / max(len(targets), 1)
    best = int(np.argmax(accuracy))
    return float(candidates[best]), float(accuracy[best]), float(accuracy[0])


def tune_grade_cutoffs(y_true, grade: np.ndarray, n_classes: int, candidates: int = 64, passes: int = 8) -> np.ndarray:
    """Cut-offs between consecutive grades that maximize QWK on (``y_true``, ``grade``): coordinate ascent from the
    midpoints 0.5, 1.5, ..., each cut-off tried at ``candidates`` quantiles of the grades between its neighbours,
    until a pass changes nothing (the search APTOS 2019 solutions ran with Nelder-Mead as "OptimizedRounder", made
    deterministic). Ties keep the earlier value, so the result depends only on the data."""
    y_true, grade = np.asarray(y_true), np.asarray(grade, dtype=np.float64)
    cutoffs = np.arange(n_classes - 1) + 0.5

    def kappa(cuts):
        return _quadratic_kappa(y_true, grades_from_cutoffs(grade, cuts), n_classes)

    best = kappa(cutoffs)
    for _ in range(passes):
        changed = False
        for index in range(len(cutoffs)):
            low = cutoffs[index - 1] if index else -np.inf
            high = cutoffs[index + 1] if index + 1 < len(cutoffs) else np.inf
            between = grade[(grade > low) & (grade < high)]
            if not len(between):
                continue
            for value in np.unique(np.quantile(between, np.linspace(0, 1, candidates))):
                trial = cutoffs.copy()
                trial[index] = value
                score_ = kappa(trial)
                if score_ > best + 1e-12:
                    best, cutoffs, changed = score_, trial, True
        if not changed:
            break
    return cutoffs


def _quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """scikit-learn's ``cohen_kappa_score(weights="quadratic")`` from one bincount (the tuning loop calls it often)."""
    observed = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = (np.arange(n_classes)[:, None] - np.arange(n_classes)[None, :]) ** 2
    denominator = (weights * expected).sum()
    return float(1 - (weights * observed).sum() / denominator) if denominator else 0.0


def qwk_thresholds(y_true, y_score) -> float:
    """QWK of the expected grade cut at the cut-offs tuned on these rows (``tune_grade_cutoffs``); on OOF rows that
    is the score the tuned cut-offs reach, as APTOS solutions reported it."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    grade = expected_grade(y_score)
    cutoffs = tune_grade_cutoffs(y_true, grade, y_score.shape[1])
    return float(skm.cohen_kappa_score(y_true, grades_from_cutoffs(grade, cutoffs),
                                       labels=np.arange(y_score.shape[1]), weights="quadratic"))


def roc_auc_ovr(y_true, y_score) -> float:
    """Macro one-vs-rest ROC AUC over the classes that have both positives and negatives."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    onehot = np.eye(y_score.shape[1], dtype=np.int8)[y_true]
    usable = (onehot.sum(axis=0) > 0) & (onehot.sum(axis=0) < len(onehot))
    return float(skm.roc_auc_score(onehot[:, usable], y_score[:, usable], average="macro"))


def confusion_matrix(y_true, y_score) -> np.ndarray:
    """Rows: true class, columns: predicted class (argmax)."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    return skm.confusion_matrix(y_true, y_score.argmax(axis=1), labels=np.arange(y_score.shape[1]))


def recall_per_class(y_true, y_score) -> np.ndarray:
    matrix = confusion_matrix(y_true, y_score)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(matrix) / matrix.sum(axis=1)


def map_at_k(y_true, y_score, k: int) -> float:
    """MAP@k with one true class per row (Kaggle's ``mapk`` of ``ml_metrics``): 1 / rank of the true class among
    the k highest scores (ties in class order), 0 when it is not among them."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    top = np.argsort(-y_score, axis=1, kind="stable")[:, :k]
    hits = top == np.asarray(y_true)[:, None]
    return float(np.mean(np.where(hits.any(axis=1), 1.0 / (hits.argmax(axis=1) + 1), 0.0)))


def map_at_k_lists(actual: list[str], predicted: list[list[str]], k: int) -> float:
    """MAP@k of label lists, one true label per row: Kaggle's ``ml_metrics.average_precision.mapk`` with ``apk``
    transcribed (a label repeated in a list counts once, at its first place; lists cut at k)."""
    if len(actual) != len(predicted):
        raise ValueError(f"{len(actual)} true labels and {len(predicted)} predicted lists")
    total = 0.0
    for truth, labels in zip(actual, predicted):
        hits, precision_sum = 0, 0.0
        for place, label in enumerate(labels[:k]):
            if label == truth and label not in labels[:place]:
                hits += 1
                precision_sum += hits / (place + 1.0)
        total += precision_sum  # min(len(actual), k) is 1: one true label per row
    return total / len(actual) if len(actual) else 0.0


# ----- binary (y_true: 0/1, y_score: probability of the positive class, or rows x [neg, pos]) -----------------------
def _positive_score(y_score) -> np.ndarray:
    y_score = np.asarray(y_score, dtype=np.float64)
    return y_score[:, -1] if y_score.ndim == 2 else y_score


def binary_roc_auc(y_true, y_score) -> float:
    y_true, score = _check_pair(y_true, _positive_score(y_score), ndim=1)
    return float(skm.roc_auc_score(y_true, score))


def binary_log_loss(y_true, y_score, eps: float = 1e-15) -> float:
    y_true, score = _check_pair(y_true, _positive_score(y_score), ndim=1)
    score = np.clip(score, eps, 1 - eps)
    return float(-np.mean(y_true * np.log(score) + (1 - y_true) * np.log(1 - score)))


def binary_f1(y_true, y_score, threshold: float = 0.5) -> float:
    y_true, score = _check_pair(y_true, _positive_score(y_score), ndim=1)
    return float(skm.f1_score(y_true, (score >= threshold).astype(int), zero_division=0))


def probabilistic_f1(y_true, y_score, beta: float = 1.0) -> float:
    """The probabilistic F-beta of RSNA Breast Cancer Detection (Kaggle's ``pfbeta``): precision and recall with each
    row counted by its probability (clipped to [0, 1]) rather than by a cut; 0 when either is 0."""
    y_true, score = _check_pair(y_true, _positive_score(y_score), ndim=1)
    score = np.clip(score, 0, 1)
    truth = y_true == 1
    true_positive, false_positive = score[truth].sum(), score[~truth].sum()
    if not truth.any() or true_positive + false_positive == 0:
        return 0.0
    precision, recall = true_positive / (true_positive + false_positive), true_positive / truth.sum()
    if precision <= 0 or recall <= 0:
        return 0.0
    return float((1 + beta**2) * precision * recall / (beta**2 * precision + recall))


def binary_accuracy(y_true, y_score, threshold: float = 0.5) -> float:
    y_true, score = _check_pair(y_true, _positive_score(y_score), ndim=1)
    return float(np.mean((score >= threshold).astype(int) == y_true))


# ----- multi-label (y_true: rows x classes in {1, 0, -1}, y_score: rows x classes) -----------------------------------
def _ranked(y_true, y_score):
    """Per class, rows sorted by descending score (stable): scores, hits, counted (not difficult), positives."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    order = np.argsort(-y_score, axis=0, kind="stable")
    scores = np.take_along_axis(y_score, order, axis=0)
    labels = np.take_along_axis(y_true, order, axis=0)
    hits = labels == 1
    counted = labels != DIFFICULT
    return scores, hits, counted, hits.sum(axis=0)


AP_CHUNK_ELEMENTS = 1 << 21  # classes are scored in chunks of about this many cells, which stay in cache


def average_precision_per_class(y_true, y_score) -> np.ndarray:
    """Non-interpolated AP of each class (scikit-learn's definition, ties as one threshold); NaN without positives.

    AP = sum over distinct thresholds of (TP_k - TP_{k-1}) / P * precision_k: only the ends of blocks of tied
    scores matter, so after one sort per class the sum runs over those ends, a chunk of classes at a time in one
    flat array.
    """
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    n_rows, n_classes = y_score.shape
    step = max(1, AP_CHUNK_ELEMENTS // max(n_rows, 1))
    if n_classes > step:
        return np.concatenate([_average_precision_chunk(y_true[:, start : start + step], y_score[:, start : start + step])
                               for start in range(0, n_classes, step)])
    return _average_precision_chunk(y_true, y_score)


def _average_precision_chunk(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    n_rows, n_classes = y_score.shape
    scores = np.ascontiguousarray(y_score.T)  # classes x rows: each class sorts a contiguous row
    order = np.argsort(-scores, axis=1)      # order inside a block of ties does not matter here
    flat = (order + (np.arange(n_classes) * n_rows)[:, None]).ravel()
    scores = scores.ravel()[flat].reshape(n_classes, n_rows)
    labels = np.ascontiguousarray(y_true.T).ravel()[flat]
    hits = _cumsum_per_class(labels == 1, n_classes, n_rows)
    seen = _cumsum_per_class(labels != DIFFICULT, n_classes, n_rows)
    block_end = np.ones(scores.shape, dtype=bool)
    block_end[:, :-1] = scores[:, 1:] != scores[:, :-1]
    class_of, _ = np.nonzero(block_end)
    hits_at_end, seen_at_end = hits[block_end], seen[block_end]
    new_hits = np.diff(hits_at_end, prepend=0)
    first_of_class = np.r_[True, class_of[1:] != class_of[:-1]]
    new_hits[first_of_class] = hits_at_end[first_of_class]
    with np.errstate(invalid="ignore", divide="ignore"):
        contribution = new_hits * (hits_at_end / np.maximum(seen_at_end, 1))
        positives = hits[:, -1] if n_rows else np.zeros(n_classes)
        summed = np.bincount(class_of, weights=contribution, minlength=n_classes)
        return np.where(positives > 0, summed / positives, np.nan)


def _cumsum_per_class(flags: np.ndarray, n_classes: int, n_rows: int) -> np.ndarray:
    """Running counts within each class of a flat classes-major 0/1 array (one 1-D cumsum, which is fast)."""
    running = np.cumsum(flags, dtype=np.int64).reshape(n_classes, n_rows)
    before = np.zeros(n_classes, dtype=np.int64)
    if n_rows:
        before[1:] = running[:-1, -1]
    return running - before[:, None]


def _devkit_curves(y_true, y_score):
    """VOC devkit precision and recall at every rank (no tie grouping), and the precision envelope."""
    _, hits, counted, positives = _ranked(y_true, y_score)
    true_positives = np.cumsum(hits, axis=0)
    false_positives = np.cumsum(counted & ~hits, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(true_positives / (true_positives + false_positives))  # 0/0 before any hit
        recall = true_positives / positives
    envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    return hits, recall, envelope, positives


def average_precision_voc07_per_class(y_true, y_score) -> np.ndarray:
    """11-point interpolated AP (VOC 2007): mean over t in {0, 0.1, ..., 1} of max precision at recall >= t."""
    hits, recall, envelope, positives = _devkit_curves(y_true, y_score)
    total = np.zeros(recall.shape[1])
    padded = np.vstack([envelope, np.zeros((1, envelope.shape[1]))])
    for threshold in np.linspace(0, 1, 11):
        first = (recall < threshold - 1e-12).sum(axis=0)  # first rank whose recall reaches the threshold
        total += np.take_along_axis(padded, first[None, :], axis=0)[0]
    return np.where(positives > 0, total / 11, np.nan)


def average_precision_voc_per_class(y_true, y_score) -> np.ndarray:
    """VOC 2010+ AP: area under the monotone precision envelope, summed where recall changes (at each hit)."""
    hits, _, envelope, positives = _devkit_curves(y_true, y_score)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, (hits * envelope).sum(axis=0) / positives, np.nan)


def _mean_over_present(per_class: np.ndarray) -> float:
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def mean_average_precision(y_true, y_score) -> float:
    """``map``: mean of non-interpolated per-class AP over classes with a positive."""
    return _mean_over_present(average_precision_per_class(y_true, y_score))


def mean_average_precision_voc07(y_true, y_score) -> float:
    return _mean_over_present(average_precision_voc07_per_class(y_true, y_score))


def mean_average_precision_voc(y_true, y_score) -> float:
    return _mean_over_present(average_precision_voc_per_class(y_true, y_score))


def micro_average_precision(y_true, y_score) -> float:
    """AP of all (row, class) pairs ranked together."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    return float(average_precision_per_class(y_true.reshape(-1, 1), y_score.reshape(-1, 1))[0])


def multilabel_prf(y_true, y_score, threshold: float = 0.5, top_k: int | None = None) -> dict[str, float]:
    """CP, CR, CF1 (per-class averaged) and OP, OR, OF1 (overall) of thresholded or top-k predictions.

    A class never predicted counts as precision 0 for CP (ML-GCN sets its prediction count to 1).
    """
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    if top_k is not None:
        kth = -np.sort(-y_score, axis=1)[:, top_k - 1 : top_k]
        predicted = y_score >= kth
    else:
        predicted = y_score >= threshold
    counted = y_true != DIFFICULT
    truth = y_true == 1
    correct = (predicted & truth).sum(axis=0)
    n_predicted = (predicted & counted).sum(axis=0)
    n_truth = truth.sum(axis=0)
    overall_p = correct.sum() / max(n_predicted.sum(), 1)
    overall_r = correct.sum() / max(n_truth.sum(), 1)
    class_p = np.mean(correct / np.maximum(n_predicted, 1))
    class_r = np.mean(correct[n_truth > 0] / n_truth[n_truth > 0]) if (n_truth > 0).any() else 0.0
    return {"CP": float(class_p), "CR": float(class_r), "CF1": _harmonic(class_p, class_r),
            "OP": float(overall_p), "OR": float(overall_r), "OF1": _harmonic(overall_p, overall_r)}


def fbeta(y_true, y_score, beta: float, average: str, threshold: float = 0.5) -> float:
    """F-beta of the labels scored at or above ``threshold`` (scikit-learn's ``fbeta_score``; ``samples``: per row,
    then the mean, as Planet's F2). Difficult entries count as absent; a row with no label and none predicted
    scores 1."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    truth, predicted = (y_true == 1).astype(np.int8), (y_score >= threshold).astype(np.int8)
    return float(skm.fbeta_score(truth, predicted, beta=beta, average=average, zero_division=1.0))


def weighted_log_loss(y_true, y_score, weights: np.ndarray, eps: float = 1e-15) -> float:
    """RSNA Intracranial Hemorrhage's weighted multi-label log loss: each row's binary log losses averaged over the
    classes with ``weights`` (``any`` weighs 2 there), then the mean over rows; probabilities clipped at ``eps``."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    clipped = np.clip(y_score, eps, 1 - eps)
    truth = (y_true == 1).astype(np.float64)
    losses = -(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped))
    return float(np.mean(losses @ weights / weights.sum()))


def roc_auc_macro(y_true, y_score) -> float:
    """The mean of the per-column ROC AUCs, over the columns with both a positive and a negative (difficult rows
    left out of their column); the others are skipped (the score table lists classes without positives)."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    values = []
    for column in range(y_score.shape[1]):
        known = y_true[:, column] != DIFFICULT
        truth = y_true[known, column] == 1
        if truth.any() and not truth.all():
            values.append(skm.roc_auc_score(truth, y_score[known, column]))
    if not values:
        raise ValueError("roc_auc_macro: no column has both a positive and a negative")
    return float(np.mean(values))


# ----- regression (y_true, y_score: rows x targets values) -----------------------------------------------------------
def _regression_pair(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true, dtype=np.float64), np.asarray(y_score, dtype=np.float64)
    y_true, y_score = (values.reshape(len(values), -1) for values in (y_true, y_score))
    _check_pair(y_true, y_score)
    if not np.isfinite(y_true).all():
        raise ValueError("y_true contains NaN or inf")
    return y_true, y_score


def rmse(y_true, y_score) -> float:
    """Root mean squared error (scikit-learn's ``root_mean_squared_error``: several targets, the mean of their
    RMSEs)."""
    return float(skm.root_mean_squared_error(*_regression_pair(y_true, y_score)))


def mae(y_true, y_score) -> float:
    return float(skm.mean_absolute_error(*_regression_pair(y_true, y_score)))


def r2(y_true, y_score) -> float:
    return float(skm.r2_score(*_regression_pair(y_true, y_score)))


def rmsle(y_true, y_score) -> float:
    """Root mean squared logarithmic error; values at or below -1 have no logarithm (ValueError)."""
    return float(skm.root_mean_squared_log_error(*_regression_pair(y_true, y_score)))


def _harmonic(a: float, b: float) -> float:
    return float(2 * a * b / (a + b)) if a + b > 0 else 0.0


# ----- the registry the stages use -----------------------------------------------------------------------------------
def objective(value: float, higher_is_better: bool) -> float:
    """``value`` made higher-is-better: itself, or its negative where lower is better (log loss, RMSE). The one
    place a metric's direction is applied; its own inverse. NaN (a score that could not be computed) stays NaN and
    is never better than anything: every comparison with it is False."""
    return value if higher_is_better else -value


@dataclass(frozen=True)
class Metric:
    """A named metric: the function, its direction, and the tasks it applies to."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool
    tasks: tuple[str, ...]

    def objective(self, value: float) -> float:
        """``value`` made higher-is-better (:func:`objective`); applied twice, the value again."""
        return objective(value, self.higher_is_better)

    def score(self, y_true, y_score) -> float:
        """The metric of predictions (one probability column per class); a binary metric takes the positive
        class's column."""
        if self.tasks == ("binary",):
            y_score = _positive_score(y_score)
        return self.fn(y_true, y_score)

    def score_or_nan(self, y_true, y_score) -> float:
        """:meth:`score`, or NaN where the metric cannot be computed on these rows (ROC AUC of rows holding one
        class, ...): the one NaN policy. NaN is never better than anything, never kept, and shown as NaN."""
        try:
            return self.score(y_true, y_score)
        except ValueError:
            return math.nan

    def objective_of(self, y_true, y_score) -> float:
        """The objective of :meth:`score_or_nan` (NaN stays NaN)."""
        return self.objective(self.score_or_nan(y_true, y_score))


METRICS = {m.name: m for m in [
    Metric("accuracy", accuracy, True, ("multiclass",)),
    Metric("top5_accuracy", lambda y, s: top_k_accuracy(y, s, 5), True, ("multiclass",)),
    Metric("f1_macro", lambda y, s: f1(y, s, "macro"), True, ("multiclass",)),
    Metric("f1_micro", lambda y, s: f1(y, s, "micro"), True, ("multiclass",)),
    Metric("f1_weighted", lambda y, s: f1(y, s, "weighted"), True, ("multiclass",)),
    Metric("log_loss", log_loss, False, ("multiclass",)),
    Metric("roc_auc_ovr", roc_auc_ovr, True, ("multiclass",)),
    Metric("balanced_accuracy", balanced_accuracy, True, ("multiclass",)),
    Metric("recall_macro", recall_macro, True, ("multiclass",)),
    Metric("qwk", quadratic_weighted_kappa, True, ("multiclass",)),
    Metric("qwk_thresholds", qwk_thresholds, True, ("multiclass",)),
    Metric("roc_auc", binary_roc_auc, True, ("binary",)),
    Metric("binary_log_loss", binary_log_loss, False, ("binary",)),
    Metric("binary_f1", binary_f1, True, ("binary",)),
    Metric("binary_accuracy", binary_accuracy, True, ("binary",)),
    Metric("pf1", probabilistic_f1, True, ("binary",)),
    Metric("map", mean_average_precision, True, ("multilabel",)),
    Metric("map_voc07", mean_average_precision_voc07, True, ("multilabel",)),
    Metric("map_voc", mean_average_precision_voc, True, ("multilabel",)),
    Metric("micro_map", micro_average_precision, True, ("multilabel",)),
    Metric("of1", lambda y, s: multilabel_prf(y, s)["OF1"], True, ("multilabel",)),
    Metric("cf1", lambda y, s: multilabel_prf(y, s)["CF1"], True, ("multilabel",)),
    Metric("roc_auc_macro", roc_auc_macro, True, ("multilabel",)),
    Metric("rmse", rmse, False, ("regression",)),
    Metric("mae", mae, False, ("regression",)),
    Metric("r2", r2, True, ("regression",)),
    Metric("rmsle", rmsle, False, ("regression",)),
]}
# Names competitions use for a metric of the registry or a parametrized one, per task.
ALIASES = {("f2_samples", "multilabel"): "fbeta:2:samples", ("f1_samples", "multilabel"): "fbeta:1:samples",
           ("map_at_5", "multiclass"): "map@5",
           ("roc_auc_macro", "multiclass"): "roc_auc_ovr", ("root_mean_squared_error", "regression"): "rmse",
           ("mean_absolute_error", "regression"): "mae", ("pfbeta", "binary"): "pf1"}
FBETA_AVERAGES = ("samples", "micro", "macro")
DEFAULT_METRIC = {"multiclass": "accuracy", "binary": "roc_auc", "multilabel": "map", "regression": "rmse",
                  "heads": "heads:accuracy"}
# The validation loss as the epoch-selection metric (``train.metric: loss``): lower is better; scored by the trainer.
LOSS = Metric("loss", lambda y, s: math.nan, False, ("multiclass", "binary", "multilabel", "regression", "heads"))


def is_metric_file(name: str | None) -> bool:
    """A metric named by a Python file in Kaggle's signature (``metric: path/to/metric.py``)."""
    return bool(name) and name.endswith(".py")


def parametrized_metric(name: str) -> Metric | None:
    """``fbeta:<beta>:<average>`` (multi-label; ``samples``, ``micro`` or ``macro``) or ``map@<k>`` (multiclass),
    parameters in the name as TTA views have them; None for another name, ValueError for bad parameters."""
    if name.startswith("fbeta:"):
        parts = name.split(":")
        try:
            beta = float(parts[1]) if len(parts) == 3 else math.nan
        except ValueError:
            beta = math.nan
        if not (0 < beta <= 100) or parts[2] not in FBETA_AVERAGES:
            raise ValueError(f"metric {name!r}: expected fbeta:<beta>:<average> with 0 < beta <= 100 and average one "
                             f"of {', '.join(FBETA_AVERAGES)}, e.g. fbeta:2:samples")
        return Metric(name, lambda y, s: fbeta(y, s, beta, parts[2]), True, ("multilabel",))
    if name.startswith("heads:"):
        return heads_metric(name)
    if name.startswith("weighted_log_loss:"):
        return Metric(name, _weighted_log_loss_of(name), False, ("multilabel",))
    if name.startswith("map@"):
        k = map_k_of(name)
        if k is None or not 1 <= k <= 100:
            raise ValueError(f"metric {name!r}: expected map@<k> with k a whole number from 1 to 100, e.g. map@5")
        return Metric(name, lambda y, s: map_at_k(y, s, k), True, ("multiclass",))
    return None


def map_k_of(name: str) -> int | None:
    """``k`` of a metric named ``map@<k>`` (k digits), None for any other name."""
    return int(name[4:]) if name.startswith("map@") and name[4:].isdigit() else None


def heads_parts(name: str) -> tuple[Metric, dict[str, float]]:
    """``heads:<metric>[:<head>=<weight>,...]``'s multiclass metric and the heads' weights."""
    parts = name.split(":")
    inner = METRICS.get(parts[1]) if len(parts) in (2, 3) else None
    if inner is None or inner.tasks != ("multiclass",):
        raise ValueError(f"metric {name!r}: expected heads:<multiclass metric>[:<head>=<weight>,...], e.g. "
                         "heads:recall_macro:grapheme_root=2")
    weights = {}
    for item in (parts[2].split(",") if len(parts) == 3 else []):
        head, _, weight = item.partition("=")
        try:
            weights[head] = float(weight)
        except ValueError:
            raise ValueError(f"metric {name!r}: {item!r} is not <head>=<weight>") from None
        if not (math.isfinite(weights[head]) and weights[head] > 0):
            raise ValueError(f"metric {name!r}: weights are positive numbers")
    return inner, weights


def heads_metric(name: str, classes: list[str] | None = None) -> Metric:
    """``heads:<metric>[:<head>=<weight>,...]``: a multiclass metric of each head, averaged with the weights (the
    unnamed heads weigh 1), as Bengali.AI's ``heads:recall_macro:grapheme_root=2``. It scores once bound to the
    run's classes (``<head>=<class>``), which say the heads."""
    inner, weights = heads_parts(name)

    def score(y_true, y_score) -> float:
        if classes is None:
            raise ValueError(f"metric {name!r} scores the heads of a run's classes")
        blocks = head_blocks(classes)
        unknown = sorted(set(weights) - {head for head, _ in blocks})
        if unknown:
            raise ValueError(f"metric {name!r}: no head {unknown[0]!r}")
        y_true = np.asarray(y_true).reshape(len(y_true), -1)
        values = [inner.fn(y_true[:, index], np.asarray(y_score)[:, block]) for index, (_, block) in enumerate(blocks)]
        return float(np.average(values, weights=[weights.get(head, 1.0) for head, _ in blocks]))
    return Metric(name, score, inner.higher_is_better, ("heads",))


def _weighted_log_loss_of(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``weighted_log_loss:<position>=<weight>,...``: class positions (in the run's class order) and their weights,
    the others 1; e.g. ``weighted_log_loss:0=2`` for a first class ``any`` of weight 2."""
    chosen: dict[int, float] = {}
    for item in name.split(":", 1)[1].split(","):
        position, _, weight = item.partition("=")
        try:
            chosen[int(position)] = float(weight)
        except ValueError:
            raise ValueError(f"metric {name!r}: expected weighted_log_loss:<class position>=<weight>,... e.g. "
                             "weighted_log_loss:0=2") from None
        if not (chosen[int(position)] > 0 and math.isfinite(chosen[int(position)])) or int(position) < 0:
            raise ValueError(f"metric {name!r}: weights are positive numbers, positions from 0")

    def score(y_true, y_score) -> float:
        weights = np.ones(np.shape(y_score)[1])
        if max(chosen) >= len(weights):
            raise ValueError(f"metric {name!r}: class position {max(chosen)} of {len(weights)} classes")
        weights[list(chosen)] = list(chosen.values())
        return weighted_log_loss(y_true, y_score, weights)
    return score


def uses_grade_cutoffs(name: str | None, task: str) -> bool:
    """Whether labels are the expected grade cut at tuned cut-offs (``qwk_thresholds``) rather than the argmax."""
    return task == "multiclass" and name == "qwk_thresholds"


def threshold_beta(name: str | None, task: str) -> float:
    """The beta of the F-score per-class thresholds are tuned for: the metric's own for ``fbeta:<beta>:<average>``
    (and its aliases), else 1 (F1)."""
    canonical = ALIASES.get((name, task), name) if name else ""
    return float(canonical.split(":")[1]) if canonical.startswith("fbeta:") else 1.0


def known_metric(name: str) -> bool:
    """Whether ``name`` is a metric of some task (registered, an alias, or well-formed parameters)."""
    if is_metric_file(name):  # checked when it is bound to the data
        return True
    try:
        return name in METRICS or any(alias == name for alias, _ in ALIASES) or parametrized_metric(name) is not None
    except ValueError:
        return False


def get_metric(name: str, task: str) -> Metric:
    """The metric called ``name`` for ``task`` (an alias keeps its name), or a clear error listing the ones that fit."""
    if is_metric_file(name):
        raise ValueError(f"metric file {name!r} scores through the table and sample submission of the runs whose "
                         "config names it (metric: in the config); it is not a metric of its own here")
    if (name, task) in ALIASES:
        return replace(get_metric(ALIASES[name, task], task), name=name)
    metric = METRICS.get(name) or parametrized_metric(name)
    if metric is None or task not in metric.tasks:
        fitting = [m.name for m in METRICS.values() if task in m.tasks] + [alias for alias, on in ALIASES if on == task]
        fitting += {"multilabel": ["fbeta:<beta>:<average>", "weighted_log_loss:<position>=<weight>"],
                    "multiclass": ["map@<k>"], "heads": ["heads:<metric>[:<head>=<weight>]"]}.get(task, [])
        raise ValueError(f"metric {name!r} does not apply to a {task} task; expected one of {', '.join(fitting)}")
    return metric


def fits_task(name: str, task: str) -> bool:
    """Whether ``name`` is a metric of ``task`` (:func:`get_metric` would return one)."""
    try:
        get_metric(name, task)
    except ValueError:
        return False
    return True


def resolve_metric(name: str | None, task: str, key: str = "metric") -> Metric:
    """The metric named by a config key or option (the task's default when None), or a user error naming ``key``."""

    try:
        return get_metric(name or DEFAULT_METRIC[task], task)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


# Metrics of class labels, each computed from label indices as its probability form computes it from the argmax.
LABEL_METRICS = {
    "accuracy": lambda y, p, n: float(np.mean(y == p)),
    "f1_macro": lambda y, p, n: float(skm.f1_score(y, p, average="macro", zero_division=0)),
    "f1_micro": lambda y, p, n: float(skm.f1_score(y, p, average="micro", zero_division=0)),
    "f1_weighted": lambda y, p, n: float(skm.f1_score(y, p, average="weighted", zero_division=0)),
    "balanced_accuracy": lambda y, p, n: float(skm.balanced_accuracy_score(y, p)),
    "recall_macro": lambda y, p, n: float(skm.recall_score(y, p, average="macro", zero_division=0)),
    "qwk": lambda y, p, n: float(skm.cohen_kappa_score(y, p, labels=np.arange(n), weights="quadratic")),
}


def score_labels(name: str, y_true, y_pred, n_classes: int) -> float:
    """A label metric (``LABEL_METRICS``) of predicted class indices: memory of the rows, whatever the classes."""
    return LABEL_METRICS[name](np.asarray(y_true), np.asarray(y_pred), n_classes)


def score(name: str, task: str, y_true, y_score) -> float:
    """Score predictions with a named metric of the registry (:meth:`Metric.score`)."""
    return get_metric(name, task).score(y_true, y_score)
