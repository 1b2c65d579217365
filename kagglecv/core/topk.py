"""Prediction files for many identities: the top k labels of each row with their scores, not a column per class.

At 15,587 Happywhale individuals x 51,033 rows a probability column per identity is 795 million values; the top k
(k at least the metric's) are what MAP@k and a submission read. A top-k file is ``id[,fold],label_1..label_k,
score_1..score_k``: labels distinct within a row, scores finite and not increasing.

Blending two top-k files sums each label's weighted scores over the files that list it (a label outside a file's
top k counts 0 there) and keeps the k highest: exactly the top k of the dense weighted sum when each file's k covers
every label, and an approximation (a label ranked just below k in one file loses its score there) otherwise.

The unseen label (``new_whale``): ``with_new_label`` puts it before the first score under a threshold, and
``tune_new_threshold`` picks the threshold that maximises MAP@k on OOF rows, where an identity the fold's training
part lacks counts as new, as it will be on the test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.errors import DataError, KagglecvError, summarize
from kagglecv.core.files import write_text
from kagglecv.core.metrics import map_at_k_lists

RESERVED_IDENTITY_NAMES = ("new_whale", "new_individual")  # the whale playground's and Happywhale's unseen label
CHUNK_ROWS = 2048  # rows of a dense score matrix turned into top k at once: 2048 x 15,000 float32 is 120 MB


@dataclass
class TopK:
    """Each row's k labels, best first, and their scores."""

    ids: np.ndarray      # rows, str
    labels: np.ndarray   # rows x k, object (str)
    scores: np.ndarray   # rows x k, float64, not increasing along a row
    folds: np.ndarray | None = None

    @property
    def k(self) -> int:
        return self.labels.shape[1]

    def lists(self) -> list[list[str]]:
        return self.labels.tolist()

    def take(self, positions: np.ndarray) -> "TopK":
        """The rows at ``positions``, in that order."""
        return TopK(self.ids[positions], self.labels[positions], self.scores[positions],
                    None if self.folds is None else self.folds[positions])

    def ordered_as(self, ids) -> "TopK":
        """The rows of ``ids``, in that order (each must be held once: the caller has compared the ids)."""
        return self.take(pd.Series(np.arange(len(self.ids)), index=self.ids).loc[list(ids)].to_numpy())


def concat_top_k(parts: list[TopK], ids) -> TopK:
    """Top-k files of disjoint rows (a run's folds) joined in the order of ``ids``; every id exactly once, or an
    error naming the ids that are missing, doubled or unknown."""
    joined = TopK(np.concatenate([part.ids for part in parts]), np.concatenate([part.labels for part in parts]),
                  np.concatenate([part.scores for part in parts]),
                  None if any(part.folds is None for part in parts) else np.concatenate([part.folds for part in parts]))
    held, wanted = pd.Index(joined.ids), pd.Index(np.asarray(ids, dtype=object))
    doubled = held[held.duplicated()].unique().tolist()
    missing, extra = wanted.difference(held).tolist(), held.difference(wanted).tolist()
    if doubled or missing or extra:
        raise DataError(f"top-k predictions that do not hold each expected id once: {len(doubled)} doubled "
                        f"({summarize(doubled, quote=True)}), {len(missing)} missing "
                        f"({summarize(missing, quote=True)}), {len(extra)} unknown ({summarize(extra, quote=True)})")
    return joined.ordered_as(wanted)


def top_k_of_scores(ids, scores: np.ndarray, classes: list[str], k: int, folds=None) -> TopK:
    """The top k of a dense rows x classes score matrix, a chunk of rows at a time: the k largest found by
    ``argpartition`` (no full sort of 15,000 columns), then ordered by score, ties by class order (a tie at the k-th
    place keeps whichever ``argpartition`` found)."""
    k = min(k, len(classes))
    names = np.asarray(classes, dtype=object)
    labels = np.empty((len(scores), k), dtype=object)
    values = np.empty((len(scores), k))
    for start in range(0, len(scores), CHUNK_ROWS):
        chunk = np.asarray(scores[start:start + CHUNK_ROWS])
        candidates = np.sort(np.argpartition(-chunk, k - 1, axis=1)[:, :k], axis=1) if k < chunk.shape[1] else \
            np.broadcast_to(np.arange(chunk.shape[1]), chunk.shape)
        found = np.take_along_axis(chunk, candidates, axis=1).astype(np.float64)
        order = np.argsort(-found, axis=1, kind="stable")
        labels[start:start + len(chunk)] = names[np.take_along_axis(candidates, order, axis=1)]
        values[start:start + len(chunk)] = np.take_along_axis(found, order, axis=1)
    return TopK(np.asarray(ids, dtype=object), labels, values, None if folds is None else np.asarray(folds))


def blend_top_k(runs: list[TopK], weights: np.ndarray | None = None, k: int | None = None) -> TopK:
    """Each row's labels scored by the weighted sum of the runs' scores (0 where a run does not list the label),
    the k highest kept (ties by label name); the runs must hold the same ids in the same order."""
    first = runs[0]
    for run in runs[1:]:
        if not np.array_equal(run.ids, first.ids):
            raise KagglecvError("top-k files to blend hold other ids or another order; align them first")
    weights = np.full(len(runs), 1 / len(runs)) if weights is None else np.asarray(weights, dtype=np.float64)
    k = k or max(run.k for run in runs)
    rows = np.concatenate([np.repeat(np.arange(len(first.ids)), run.k) for run in runs])
    labels = np.concatenate([run.labels.ravel() for run in runs])
    scores = np.concatenate([run.scores.ravel() * weight for run, weight in zip(runs, weights)])
    listed = labels != ""  # a place a run left empty (fewer identities than k) adds nothing
    labels, scores = ranked_top_k(rows[listed], labels[listed], scores[listed], len(first.ids), k, "sum")
    return TopK(first.ids, labels, scores, first.folds)


def ranked_top_k(rows: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_rows: int, k: int,
                 combine: str) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``n_rows`` rows' k best labels from (row, label, score) entries, a label's entries in a row joined by
    ``combine`` (``sum``, ``max``), ties by label name; places left over are empty labels scored -inf."""
    long = pd.DataFrame({"row": rows, "label": labels, "score": scores})
    joined = long.groupby(["row", "label"], sort=False, as_index=False)["score"].agg(combine)
    joined = joined.sort_values(["row", "score", "label"], ascending=[True, False, True], kind="stable")
    kept = joined.groupby("row", sort=False).head(k)
    place = kept.groupby("row", sort=False).cumcount().to_numpy()
    best_labels = np.full((n_rows, k), "", dtype=object)
    best_scores = np.full((n_rows, k), -np.inf)
    best_labels[kept["row"].to_numpy(), place] = kept["label"].to_numpy()
    best_scores[kept["row"].to_numpy(), place] = kept["score"].to_numpy()
    return best_labels, best_scores


def with_new_label(top: TopK, threshold: float, new_label: str, k: int) -> list[list[str]]:
    """Each row's first k labels with ``new_label`` placed before the first score under ``threshold`` (first when
    the best score is under it; not placed when every one of the first k is at or above it)."""
    lists = []
    for labels, scores in zip(top.labels, top.scores):
        known = [label for label in labels if label and label != new_label]
        place = int(np.sum(scores[:len(known)] >= threshold))
        lists.append((known[:place] + [new_label] + known[place:])[:k])
    return lists


def tune_new_threshold(top: TopK, truth: list[str], k: int, new_label: str) -> tuple[float, float, float]:
    """(threshold, MAP@k with it, MAP@k without the new label) on OOF rows; ``truth`` holds ``new_label`` for a row
    whose identity its fold's training part lacks. Exact over every threshold: a row's average precision changes
    only at its own scores, so each score's change is summed once, in score order (O(rows x k log))."""
    if (top.labels == new_label).any():
        raise KagglecvError(f"{new_label!r} is among the predicted identities; the reserved label cannot also be "
                            "a training identity")
    truth = np.asarray(truth, dtype=object)
    rows, width = top.labels.shape
    found = top.labels == truth[:, None]
    truth_at = np.where(found.any(axis=1), found.argmax(axis=1), -1)
    is_new = truth == new_label
    precision = np.zeros((rows, width + 1))  # a row's average precision with the new label at place p
    for place in range(width + 1):
        rank_known = np.where(truth_at < place, truth_at + 1, truth_at + 2)
        rank = np.where(is_new, place + 1, np.where(truth_at >= 0, rank_known, 0))
        precision[:, place] = np.where((rank >= 1) & (rank <= k), 1.0 / np.maximum(rank, 1), 0.0)
    gains = np.diff(precision, axis=1).ravel()   # place p -> p + 1 once the threshold reaches score p
    scores = top.scores.ravel()
    order = np.argsort(-scores, kind="stable")
    totals = precision[:, 0].sum() + np.cumsum(gains[order])
    ordered = scores[order]
    last_of_value = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True] & np.isfinite(ordered))
    candidates = np.r_[np.inf, ordered[last_of_value]]
    results = np.r_[precision[:, 0].sum(), totals[last_of_value]] / max(rows, 1)
    best = int(np.argmax(results))
    never = map_at_k_lists(list(truth), [list(labels[:k]) for labels in top.labels], k)
    return float(candidates[best]), float(results[best]), never


def nested_new_label_lists(top: TopK, truth: np.ndarray, new_label: str, k: int) -> list[list[str]]:
    """Each OOF row's first k labels with the new label placed at the threshold tuned on the other folds' rows:
    the threshold's honest lists (a threshold tuned on the rows it places scores them optimistically)."""
    lists: list[list[str]] = [[] for _ in range(len(truth))]
    for fold in np.unique(top.folds):
        held, rest = np.flatnonzero(top.folds == fold), np.flatnonzero(top.folds != fold)
        threshold, _, _ = tune_new_threshold(top.take(rest), list(truth[rest]), k, new_label)
        for row, placed in zip(held, with_new_label(top.take(held), finite_threshold(threshold, top.scores),
                                                    new_label, k)):
            lists[row] = placed
    return lists


def finite_threshold(threshold: float, scores: np.ndarray) -> float:
    """A threshold JSON can hold: +inf (the new label first on every row) as a number above every score."""
    return threshold if np.isfinite(threshold) else float(np.max(scores, initial=0.0)) + 1.0


def new_identity_truth(labels: np.ndarray, folds: np.ndarray, new_label: str) -> np.ndarray:
    """Each OOF row's identity, or ``new_label`` where no training row of another fold holds it."""
    labels = np.asarray(labels, dtype=object)
    truth = labels.copy()
    for fold in np.unique(folds):
        held = folds == fold
        seen = set(labels[~held])
        truth[held] = [label if label in seen else new_label for label in labels[held]]
    return truth


def write_top_k(path: Path, top: TopK) -> None:
    """``id[,fold],label_1..label_k,score_1..score_k``, scores at 7 significant digits, atomically."""
    columns = {"id": top.ids}
    if top.folds is not None:
        columns["fold"] = top.folds
    columns |= {f"label_{i + 1}": top.labels[:, i] for i in range(top.k)}
    columns |= {f"score_{i + 1}": top.scores[:, i] for i in range(top.k)}
    write_text(path, pd.DataFrame(columns).to_csv(index=False, lineterminator="\n", float_format="%.7g"))


def read_top_k(path: Path, max_k: int = 1000) -> TopK:
    """A top-k file, every row checked: k labels and k scores, distinct labels, finite scores not increasing; a
    file that breaks this is one error naming it, the line and the value."""
    if not Path(path).is_file():
        raise DataError(f"top-k prediction file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable top-k file: {' '.join(str(exc).split())[:200]}") from None
    k = sum(1 for column in frame.columns if column.startswith("label_"))
    expected = ["id", *(["fold"] if "fold" in frame.columns else []), *[f"label_{i + 1}" for i in range(k)],
                *[f"score_{i + 1}" for i in range(k)]]
    if not 0 < k <= max_k or list(frame.columns) != expected:
        raise DataError(f"{path}: expected columns id[,fold],label_1..label_k,score_1..score_k (k up to {max_k}), "
                        f"got {summarize(list(frame.columns), quote=True)}")
    labels = frame[expected[-2 * k:-k]].to_numpy(dtype=object)
    scores = frame[expected[-k:]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    _check_rows(path, labels, scores)
    folds = pd.to_numeric(frame["fold"], errors="coerce").to_numpy() if "fold" in frame.columns else None
    if folds is not None and (np.isnan(folds).any() or (folds < 0).any() or (folds % 1).any()):
        raise DataError(f"{path}: column 'fold' holds values that are not folds (whole numbers from 0)")
    return TopK(frame["id"].to_numpy(dtype=object), labels, scores, None if folds is None else folds.astype(int))


def _check_rows(path: Path, labels: np.ndarray, scores: np.ndarray) -> None:
    problems = {
        "a score that is not a finite number": ~np.isfinite(scores).all(axis=1),
        "an empty label": (labels == "").any(axis=1),
        "scores that increase along the row": (np.diff(scores, axis=1) > 0).any(axis=1),
        "a label twice": np.array([len(set(row)) < len(row) for row in labels], dtype=bool),
    }
    for what, bad in problems.items():
        rows = np.flatnonzero(bad)
        if len(rows):
            raise DataError(f"{path}: line {rows[0] + 2} has {what} ({len(rows)} such rows); each row holds k "
                            "distinct labels, best first, with finite scores")
