"""Properties every splitter must have, checked through one parametrized test (as scikit-learn's test_split.py)."""

import numpy as np
import pytest

from kagglecv.data.splitters import SPLITTERS, create_splitter

N_SPLITS = 5


def synthetic(method: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 400
    groups = rng.integers(0, 80, n).astype(str)
    if method.startswith("multilabel"):
        y = (rng.random((n, 12)) < np.linspace(0.03, 0.5, 12)).astype(int)
    else:
        y = rng.integers(0, 6, n)
    return y, groups


def fold_of(method, y, groups, seed=42):
    folds = np.full(len(y), -1)
    splitter = create_splitter(method, N_SPLITS, seed=seed)
    assert splitter.get_n_splits() == N_SPLITS
    groups = groups if "group" in method else None
    for fold, (train, valid) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        assert len(np.intersect1d(train, valid)) == 0
        assert len(train) + len(valid) == len(y)
        folds[valid] = fold
    return folds


@pytest.mark.parametrize("method", sorted(SPLITTERS))
def test_every_row_in_exactly_one_fold_and_deterministic(method):
    y, groups = synthetic(method)
    folds = fold_of(method, y, groups)
    assert (folds >= 0).all()
    assert set(np.unique(folds)) == set(range(N_SPLITS))
    np.testing.assert_array_equal(folds, fold_of(method, y, groups))
    assert not np.array_equal(folds, fold_of(method, y, groups, seed=7)), "the seed must matter"


@pytest.mark.parametrize("method", ["group", "stratified_group", "multilabel_group"])
def test_groups_never_straddle_folds(method):
    y, groups = synthetic(method)
    folds = fold_of(method, y, groups)
    for group in np.unique(groups):
        assert len(np.unique(folds[groups == group])) == 1, f"group {group} split across folds"


def test_stratified_counts_within_one_of_even():
    y, groups = synthetic("stratified")
    folds = fold_of("stratified", y, groups)
    for label in np.unique(y):
        per_fold = np.bincount(folds[y == label], minlength=N_SPLITS)
        assert per_fold.max() - per_fold.min() <= 1


def test_multilabel_counts_within_one_of_even():
    y, groups = synthetic("multilabel")
    folds = fold_of("multilabel", y, groups)
    for label in range(y.shape[1]):
        per_fold = np.bincount(folds[y[:, label] == 1], minlength=N_SPLITS)
        assert per_fold.max() - per_fold.min() <= 1, f"label {label}: {per_fold}"
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
