"""Metrics: numpy arrays in, a float out, ``y_true`` before ``y_score``; no I/O and no state.

Multi-label targets use kagglecv's encoding (1 present, 0 absent, -1 difficult: ranked but neither hit nor miss,
as the PASCAL VOC devkit does). Average precision here is computed for all classes at once, without a Python loop
over rows or classes.
"""

from __future__ import annotations

import numpy as np

DIFFICULT = -1


def _check_pair(y_true: np.ndarray, y_score: np.ndarray, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    if len(y_true) != len(y_score):
        raise ValueError(f"y_true and y_score must have the same number of rows, got {len(y_true)} and {len(y_score)}")
    if ndim is not None and y_score.ndim != ndim:
        raise ValueError(f"y_score must be {ndim}-D, got shape {y_score.shape}")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or inf")
    return y_true, y_score


def accuracy(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Share of rows whose highest-scoring class is the true class index."""
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    return float(np.mean(y_score.argmax(axis=1) == y_true))


def log_loss(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-15) -> float:
    """Multiclass log loss; probabilities are clipped to [eps, 1 - eps] and rows renormalized (as Kaggle does)."""
    y_true, y_prob = _check_pair(y_true, y_prob, ndim=2)
    clipped = np.clip(y_prob, eps, 1 - eps)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(clipped[np.arange(len(y_true)), y_true])))


def average_precision_per_class(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Non-interpolated AP of each class (scikit-learn's ``average_precision_score``), NaN for no positives.

    AP = sum over distinct score thresholds of (R_k - R_{k-1}) * P_k; tied scores form one threshold. Rows whose
    target is -1 (difficult) are ignored.
    """
    y_true, y_score = _check_pair(y_true, y_score, ndim=2)
    order = np.argsort(-y_score, axis=0, kind="stable")
    scores = np.take_along_axis(y_score, order, axis=0)
    labels = np.take_along_axis(y_true, order, axis=0)
    counted = labels != DIFFICULT
    hits = np.cumsum((labels == 1) & counted, axis=0)
    seen = np.cumsum(counted, axis=0)
    n_rows = len(scores)
    block_end = np.vstack([scores[1:] != scores[:-1], np.ones((1, scores.shape[1]), dtype=bool)])
    # The precision of a row is the precision at the end of its block of tied scores.
    end_index = np.where(block_end, np.arange(n_rows)[:, None], n_rows)
    end_index = np.minimum.accumulate(end_index[::-1], axis=0)[::-1]
    precision = np.take_along_axis(hits / np.maximum(seen, 1), end_index, axis=0)
    positives = hits[-1] if n_rows else np.zeros(scores.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = ((labels == 1) * precision).sum(axis=0) / positives
    return np.where(positives > 0, ap, np.nan)


def mean_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mean of per-class AP over the classes that have a positive row."""
    ap = average_precision_per_class(y_true, y_score)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
