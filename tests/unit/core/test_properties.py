"""Properties of the pure functions, checked by hypothesis on generated inputs: splitters, id comparison, ``--set``
overrides, hill climbing and threshold tuning."""

from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from kagglecv.core.blending import hill_climb
from kagglecv.core.config import apply_override
from kagglecv.core.metrics import accuracy
from kagglecv.core.predictions import compare_ids
from kagglecv.data.splitters import create_splitter
from kagglecv.data.submission import tune_thresholds

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def folds_of(method: str, n_splits: int, y, groups, seed: int) -> np.ndarray:
    folds = np.full(len(y), -1)
    for fold, (train, valid) in enumerate(create_splitter(method, n_splits, seed=seed).split(np.zeros(len(y)), y, groups)):
        assert not set(train) & set(valid)
        assert (folds[valid] == -1).all(), "a row in two validation folds"
        folds[valid] = fold
    return folds


@FAST
@given(st.data(), st.sampled_from(["kfold", "stratified", "group", "stratified_group", "multilabel", "multilabel_group"]),
       st.integers(2, 5), st.integers(0, 2**16))
def test_splitters_put_every_row_in_one_fold_and_keep_groups_whole(data, method, n_splits, seed):
    n_rows = data.draw(st.integers(n_splits * 4, 120))
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, max(n_splits * 2, n_rows // 3), n_rows).astype(str)
    if method.startswith("multilabel"):
        y = (rng.random((n_rows, 4)) < 0.4).astype(int)
    else:
        y = np.resize(np.arange(data.draw(st.integers(1, 3))), n_rows)[rng.permutation(n_rows)]
    uses_groups = "group" in method
    if uses_groups and len(np.unique(groups)) < n_splits:
        return
    folds = folds_of(method, n_splits, y, groups if uses_groups else None, seed)
    assert (folds >= 0).all() and set(folds) <= set(range(n_splits))
    if uses_groups:
        assert all(len(set(folds[groups == group])) == 1 for group in np.unique(groups))
    if method == "stratified":
        for label in np.unique(y):
            counts = np.bincount(folds[y == label], minlength=n_splits)
            assert counts.max() - counts.min() <= 1


@FAST
@given(st.lists(st.sampled_from("abcdefg"), max_size=30), st.lists(st.sampled_from("abcdefgh"), max_size=30, unique=True))
def test_compare_ids_finds_exactly_the_doubled_missing_and_extra_ids(ids, reference):
    differences = compare_ids(ids, reference)
    counts = Counter(ids)
    assert sorted(differences.doubled) == sorted(i for i, c in counts.items() for _ in range(c - 1))
    assert differences.missing == [i for i in reference if i not in counts]
    assert differences.extra == sorted(set(ids) - set(reference))
    assert bool(differences) == (sorted(ids) != sorted(reference))


KEYS = st.lists(st.text("abcxyz_", min_size=1, max_size=6), min_size=1, max_size=4)
VALUES = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.text("abcdefghij", min_size=1, max_size=8).filter(
    lambda text: text not in ("y", "n", "yes", "no", "on", "off", "true", "false", "null")))


@FAST
@given(KEYS, VALUES, st.dictionaries(st.text("pq", min_size=1, max_size=2), st.integers(), max_size=3))
def test_set_overrides_place_the_parsed_value_at_the_dotted_key_and_keep_the_rest(keys, value, other):
    raw = {"keep": dict(other)}
    text = str(value).lower() if isinstance(value, bool) else str(value)
    apply_override(raw, ".".join(keys) + "=" + text)
    node = raw
    for key in keys:
        node = node[key]
    assert node == value
    if keys[0] != "keep":
        assert raw["keep"] == other


@FAST
@given(st.integers(2, 5), st.integers(20, 60), st.integers(2, 4), st.integers(0, 2**16), st.integers(1, 3))
def test_hill_climbing_never_scores_below_the_best_single_run_and_weights_lie_on_the_simplex(n_runs, n_rows, n_classes,
                                                                                            seed, init_top):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, n_rows)
    predictions = rng.dirichlet(np.ones(n_classes), size=(n_runs, n_rows))
    weights = hill_climb(predictions, targets, lambda blend: accuracy(targets, blend), init_top=init_top, max_rounds=20)
    assert weights.shape == (n_runs,) and (weights >= 0).all() and abs(weights.sum() - 1) < 1e-12
    blend = np.tensordot(weights, predictions, axes=1)
    best_single = max(accuracy(targets, run) for run in predictions)
    assert accuracy(targets, blend) >= best_single - 1e-12


@FAST
@given(st.integers(5, 60), st.integers(1, 4), st.integers(0, 2**16))
def test_tuned_thresholds_reach_each_class_best_f1(n_rows, n_classes, seed):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n_rows, n_classes)) < 0.4).astype(int)
    scores = np.round(rng.random((n_rows, n_classes)), 2)  # ties included
    thresholds = tune_thresholds(targets, scores)
    for column in range(n_classes):
        truth = targets[:, column]
        if not truth.any():
            assert thresholds[column] == 0.5
            continue
        tuned = f1_score(truth, scores[:, column] >= thresholds[column])
        best = max(f1_score(truth, scores[:, column] >= cut) for cut in np.unique(scores[:, column]))
        assert tuned >= best - 1e-12
