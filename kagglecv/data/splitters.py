"""Cross-validation splitters scikit-learn lacks, following its protocol (``split(X, y, groups)``).

``MultilabelStratifiedKFold`` and ``MultilabelStratifiedGroupKFold`` implement iterative stratification
(Sechidis, Tsoumakas & Vlahavas, "On the Stratification of Multi-Label Data", ECML PKDD 2011, Algorithm 1),
the algorithm of the iterative-stratification package, generalised from rows to groups: a group is one unit
carrying the label counts of all its rows, so a group never straddles folds.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from kagglecv.core.errors import KagglecvError
from kagglecv.core.lazy import imported_on_first_use

model_selection = imported_on_first_use("sklearn.model_selection")


def iterative_stratification(
    unit_counts: np.ndarray, unit_sizes: np.ndarray, n_splits: int, rng: np.random.RandomState, shuffle: bool = True
) -> np.ndarray:
    """Assign each unit (a row or a group) to a fold so every label's positives spread evenly.

    Sechidis et al. send a unit to the fold that most wants the label being processed. Here a unit goes to the
    fold that most wants *all* its labels, each weighted by 1 / its total count (so rare labels dominate): on
    VOC 2007 trainval this cuts the largest per-fold label-rate deviation about ninefold against the
    iterative-stratification package (see tests/stages/test_folds.py and bench/folds.py).

    Args:
        unit_counts: units x labels, number of positive rows of each label in each unit.
        unit_sizes: number of rows in each unit.
        n_splits: number of folds.
        rng: random state for ties, and for the order of units when ``shuffle``.
        shuffle: visit each label's units in a random order rather than in row order.

    Returns:
        The fold of each unit.
    """
    n_units, n_labels = unit_counts.shape
    label_totals = unit_counts.sum(axis=0, dtype=float)
    desired_rows = np.full(n_splits, unit_sizes.sum() / n_splits)
    desired_labels = np.tile(label_totals[:, None] / n_splits, (1, n_splits))
    label_weight = 1.0 / np.maximum(label_totals, 1.0)
    fold_of = np.full(n_units, -1, dtype=np.int64)
    remaining_counts = unit_counts.sum(axis=0).astype(float)
    labelled = unit_counts.any(axis=1)
    unassigned = np.ones(n_units, dtype=bool)
    while True:
        open_labels = np.flatnonzero(remaining_counts > 0)
        if len(open_labels) == 0:
            break
        label = open_labels[np.argmin(remaining_counts[open_labels])]
        units = np.flatnonzero(unassigned & (unit_counts[:, label] > 0))
        for unit in rng.permutation(units) if shuffle else units:
            need = (unit_counts[unit] * label_weight) @ desired_labels
            fold = _pick_fold(need, desired_rows, rng)
            fold_of[unit] = fold
            desired_labels[:, fold] -= unit_counts[unit]
            desired_rows[fold] -= unit_sizes[unit]
        unassigned[units] = False
        remaining_counts -= unit_counts[units].sum(axis=0)
    unlabelled = np.flatnonzero(unassigned & ~labelled)
    for unit in rng.permutation(unlabelled) if shuffle else unlabelled:
        fold = _pick_fold(desired_rows, desired_rows, rng)
        fold_of[unit] = fold
        desired_rows[fold] -= unit_sizes[unit]
    return rebalance_by_swaps(fold_of, unit_counts, unit_sizes, n_splits)


def rebalance_by_swaps(fold_of: np.ndarray, unit_counts: np.ndarray, unit_sizes: np.ndarray, n_splits: int,
                       max_swaps: int = 1000, candidates: int = 64) -> np.ndarray:
    """Repair the greedy assignment: while some label's positives differ by more than one between its fullest and
    emptiest fold, swap a unit carrying it out of the fullest fold with a unit of the same size lacking it in the
    emptiest, choosing the swap that most lowers the squared deviation of all labels' per-fold counts (a local
    search; fold sizes never change). Deterministic: candidates are the first ones in unit order."""
    fold_of = fold_of.copy()
    counts = np.zeros((n_splits, unit_counts.shape[1]), dtype=np.int64)
    np.add.at(counts, fold_of, unit_counts)
    target = counts.mean(axis=0)
    for _ in range(max_swaps):
        spread = counts.max(axis=0) - counts.min(axis=0)
        worst = int(np.argmax(spread))
        if spread[worst] <= 1:
            break
        high, low = int(np.argmax(counts[:, worst])), int(np.argmin(counts[:, worst]))
        outgoing = np.flatnonzero((fold_of == high) & (unit_counts[:, worst] > 0))[:candidates]
        incoming = np.flatnonzero((fold_of == low) & (unit_counts[:, worst] == 0))[:candidates]
        same_size = unit_sizes[outgoing][:, None] == unit_sizes[incoming][None, :]
        if not same_size.any():
            break
        delta = unit_counts[outgoing][:, None, :] - unit_counts[incoming][None, :, :]  # moves high -> low
        before = ((counts[high] - target) ** 2 + (counts[low] - target) ** 2).sum()
        after = (((counts[high] - delta - target) ** 2) + ((counts[low] + delta - target) ** 2)).sum(axis=-1)
        after = np.where(same_size, after, np.inf)
        pick = np.unravel_index(int(np.argmin(after)), after.shape)
        if not after[pick] < before:
            break
        unit_out, unit_in = outgoing[pick[0]], incoming[pick[1]]
        fold_of[unit_out], fold_of[unit_in] = low, high
        counts[high] -= delta[pick]
        counts[low] += delta[pick]
    return fold_of


def _pick_fold(primary: np.ndarray, secondary: np.ndarray, rng: np.random.RandomState) -> int:
    """The fold that most wants the unit: largest ``primary``, then largest ``secondary``, then at random."""
    best = np.flatnonzero(primary == primary.max())
    if len(best) > 1:
        best = best[secondary[best] == secondary[best].max()]
    return int(best[0] if len(best) == 1 else rng.choice(best))


class MultilabelStratifiedGroupKFold:
    """K folds that keep groups whole and each label's positives balanced (iterative stratification of groups).

    Args:
        n_splits: number of folds (>= 2).
        shuffle: visit units in a random order (ties are always broken at random).
        random_state: seed; the same seed and data give the same folds on any machine.
    """

    def __init__(self, n_splits: int = 5, *, shuffle: bool = True, random_state: int | None = None):
        if n_splits < 2:
            raise ValueError(f"n_splits must be at least 2, got {n_splits}")
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    def split(self, X, y, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        fold_of = self.assign(np.asarray(y), groups)
        for fold in range(self.n_splits):
            yield np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)

    def assign(self, y: np.ndarray, groups=None) -> np.ndarray:
        """The fold of every row."""
        y = (np.asarray(y) != 0).astype(np.int64)
        if groups is None:
            unit_of_row = np.arange(len(y))
        else:
            _, unit_of_row = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        n_units = unit_of_row.max() + 1
        if n_units < self.n_splits:
            raise KagglecvError(f"expected at least n_splits={self.n_splits} groups, got {n_units}")
        unit_counts = np.zeros((n_units, y.shape[1]), dtype=np.int64)
        np.add.at(unit_counts, unit_of_row, y)
        unit_sizes = np.bincount(unit_of_row, minlength=n_units)
        rng = np.random.RandomState(self.random_state)
        return iterative_stratification(unit_counts, unit_sizes, self.n_splits, rng, self.shuffle)[unit_of_row]


class MultilabelStratifiedKFold(MultilabelStratifiedGroupKFold):
    """Iterative stratification of rows (each row its own unit); ``groups`` is ignored."""

    def split(self, X, y, groups=None):
        return super().split(X, y, None)


SPLITTERS = {
    "kfold": lambda: model_selection.KFold,
    "stratified": lambda: model_selection.StratifiedKFold,
    "group": lambda: model_selection.GroupKFold,
    "stratified_group": lambda: model_selection.StratifiedGroupKFold,
    "multilabel": lambda: MultilabelStratifiedKFold,
    "multilabel_group": lambda: MultilabelStratifiedGroupKFold,
}  # each class looked up when a splitter is made: scikit-learn is imported by the folds stage only
GROUPED = {"kfold": "group", "stratified": "stratified_group", "multilabel": "multilabel_group"}


def create_splitter(method: str, n_splits: int = 5, *, seed: int = 42):
    """A scikit-learn-style splitter by name: kfold, stratified, group, stratified_group, multilabel, multilabel_group.

    Every splitter shuffles with ``seed``, so the same data and seed give the same folds.
    """
    if method not in SPLITTERS:
        raise KagglecvError(f"unknown folds method {method!r}; expected one of {', '.join(SPLITTERS)}")
    return SPLITTERS[method]()(n_splits=n_splits, shuffle=True, random_state=seed)


def grouped_method(method: str) -> str:
    """The variant of ``method`` that keeps groups whole (itself when it already does)."""
    return GROUPED.get(method, method)
