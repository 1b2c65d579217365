"""The second stage's pieces against their references: the linear models' replay equals scikit-learn's own
predictions, each library's saved model predicts as the fitted one, the group-relative features equal a by-hand
computation, and fold k's nested predictions never depend on fold k's targets."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.svm import SVR

from kagglecv.core.errors import KagglecvError
from kagglecv.data.table import FeatureTable
from kagglecv.second.design import DesignSpec, design_matrix, group_relative
from kagglecv.second.models import (
    LinearBlock,
    LinearInputs,
    ModelSettings,
    fit_block,
    load_block,
)
from kagglecv.second.stacking import LevelOne, fit_stack

RNG = np.random.default_rng(7)
ROWS = 240


def table(rows: int = ROWS, groups: int = 40) -> FeatureTable:
    numeric = RNG.normal(size=(rows, 2))
    numeric[RNG.random(rows) < 0.1, 0] = np.nan
    categorical = RNG.choice(np.array(["head", "torso", "leg", None], dtype=object), size=(rows, 1))
    return FeatureTable(np.array([f"r{i}" for i in range(rows)], dtype=object), ["age", "size"], numeric, ["site"],
                        categorical, np.array([f"p{i % groups}" for i in range(rows)], dtype=object), None)


SPEC = DesignSpec(["run:1"], ["age", "size"], ["site"], True)


def design(features: FeatureTable) -> np.ndarray:
    return design_matrix(SPEC, RNG.random((len(features.ids), 1)), features, features.levels())


def test_group_relative_features_equal_a_computation_by_hand():
    values = RNG.normal(size=(30, 2))
    groups = np.array([f"g{i % 4}" for i in range(30)], dtype=object)
    centred, ranks, sizes = group_relative(values, groups)
    for row in range(30):
        members = groups == groups[row]
        for column in range(2):
            expected = values[row, column] - values[members, column].mean()
            assert centred[row, column] == pytest.approx(expected, abs=1e-12)
            below = (values[members, column] < values[row, column]).sum() + 1
            assert ranks[row, column] == pytest.approx(below / members.sum(), abs=1e-12)
        assert sizes[row, 0] == members.sum()


def test_categories_are_coded_by_the_levels_a_fold_fitted_and_unseen_ones_are_missing():
    features = table(8)
    matrix = design_matrix(SPEC, np.zeros((8, 1)), features, {"site": ["head", "leg"]})
    codes = matrix[:, SPEC.categorical_positions()[0]]
    for value, code in zip(features.categorical[:, 0], codes):
        assert code == {"head": 0, "leg": 1}[value] if value in ("head", "leg") else np.isnan(code)
    assert matrix.shape[1] == len(SPEC.names())


@pytest.mark.parametrize("objective,width", [("regression", 1), ("binary", 1), ("multiclass", 3)])
def test_a_linear_block_replays_scikit_learns_own_predictions(objective, width):
    features = table()
    matrix = design(features)
    target = {"regression": matrix[:, 0] * 3 + RNG.normal(size=ROWS), "binary": RNG.integers(0, 2, ROWS),
              "multiclass": RNG.integers(0, 3, ROWS)}[objective]
    block = fit_block(ModelSettings(kind="ridge"), objective, width, matrix, target, SPEC.categorical_positions())
    replayed = load_block("ridge", block.text(), objective, width, matrix.shape[1], "model.json")
    inputs = LinearInputs.fit(matrix, SPEC.categorical_positions()).transform(matrix)
    if objective == "regression":
        expected = Ridge(alpha=1.0).fit(inputs, target).predict(inputs)
    else:
        proba = LogisticRegression(C=1.0, max_iter=2000).fit(inputs, target).predict_proba(inputs)
        expected = proba[:, 1] if objective == "binary" else proba
    np.testing.assert_allclose(replayed.predict(matrix), expected, rtol=0, atol=1e-9)


def test_an_svr_block_replays_scikit_learns_svr():
    matrix = design(table())
    target = matrix[:, 0] * 10 + RNG.normal(size=ROWS)
    block = fit_block(ModelSettings(kind="svr"), "regression", 1, matrix, target, SPEC.categorical_positions())
    inputs = LinearInputs.fit(matrix, SPEC.categorical_positions()).transform(matrix)
    mean, scale = target.mean(), target.std()
    expected = SVR(C=1.0, epsilon=0.1).fit(inputs, (target - mean) / scale).predict(inputs) * scale + mean
    replayed = load_block("svr", block.text(), "regression", 1, matrix.shape[1], "model.json")
    np.testing.assert_allclose(replayed.predict(matrix), expected, rtol=0, atol=1e-9)
    with pytest.raises(KagglecvError, match="support vector"):
        fit_block(ModelSettings(kind="svr"), "binary", 1, matrix, (target > 0).astype(int), [])


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "catboost"])
@pytest.mark.parametrize("objective,width", [("binary", 1), ("multiclass", 3), ("regression", 1)])
def test_a_boosted_block_saved_as_text_predicts_as_the_fitted_one(kind, objective, width):
    matrix = design(table())
    target = RNG.integers(0, 3 if objective == "multiclass" else 2, ROWS).astype(float)
    block = fit_block(ModelSettings(kind=kind, rounds=20), objective, width, matrix, target,
                      SPEC.categorical_positions())
    replayed = load_block(kind, block.text(), objective, width, matrix.shape[1], "model")
    np.testing.assert_allclose(replayed.predict(matrix), block.predict(matrix), rtol=0, atol=1e-12)
    assert replayed.predict(matrix).shape == ((ROWS, width) if width > 1 else (ROWS,))


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "catboost", "ridge"])
def test_a_model_file_of_another_shape_or_no_model_is_refused(kind):
    matrix = design(table())
    block = fit_block(ModelSettings(kind=kind, rounds=5), "binary", 1, matrix, RNG.integers(0, 2, ROWS), [])
    with pytest.raises(KagglecvError, match="model.txt"):
        load_block(kind, block.text(), "binary", 1, matrix.shape[1] + 2, "model.txt")
    with pytest.raises(KagglecvError, match="model.txt"):
        load_block(kind, "tree\nversion=v4\nnot a model {", "binary", 1, matrix.shape[1], "model.txt")


def test_a_linear_state_of_strings_or_infinities_is_refused():
    matrix = design(table())
    block = fit_block(ModelSettings(kind="ridge"), "regression", 1, matrix, matrix[:, 0], [])
    for change in ({"coef": [["a"]]}, {"intercept": [float("inf")]}, {"objective": "binary"}):
        state = pd.io.json.ujson_loads(block.text()) | change
        with pytest.raises(KagglecvError):
            LinearBlock.from_state(state, "regression", 1)


@pytest.mark.parametrize("task", ["binary", "regression", "multilabel"])
def test_fold_ks_nested_predictions_never_depend_on_fold_ks_targets(task):
    """Permuting fold 0's targets changes the in-sample fit but leaves fold 0's nested predictions as they were:
    the fold-0 model saw none of them (nor their categories' levels nor their groups' statistics)."""
    features = table()
    folds = np.array([int(group[1:]) % 3 for group in features.groups])  # groups kept whole by the folds
    predictions = RNG.random((ROWS, 2))
    targets = {"binary": (predictions[:, 0] + RNG.normal(0, 0.3, ROWS) > 0.5).astype(int),
               "regression": predictions[:, :1] * 5 + RNG.normal(size=(ROWS, 1)),
               "multilabel": (predictions + RNG.normal(0, 0.3, (ROWS, 2)) > 0.5).astype(int)}[task]
    spec = DesignSpec(["run:a", "run:b"], ["age", "size"], ["site"], True)
    n_classes = 2 if task != "regression" else 1
    rows = LevelOne(predictions, features)
    settings = ModelSettings(rounds=30, min_rows=5, threads=1)
    before = fit_stack(spec, settings, task, n_classes, rows, targets, folds, None)
    shuffled = targets.copy()
    held = np.flatnonzero(folds == 0)
    shuffled[held] = targets[RNG.permutation(held)]
    after = fit_stack(spec, settings, task, n_classes, rows, shuffled, folds, None)
    np.testing.assert_array_equal(before.nested[folds == 0], after.nested[folds == 0])
    assert not np.array_equal(before.nested[folds != 0], after.nested[folds != 0])
    assert not np.array_equal(before.in_sample, after.in_sample)


@pytest.mark.parametrize("kind,extra", [("xgboost", "xgboost"), ("catboost", "catboost")])
def test_a_missing_optional_library_is_one_line_naming_the_extra(kind, extra, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, kind, None)  # as if it were not installed
    matrix = design(table())
    with pytest.raises(KagglecvError, match=rf"needs {kind}: pip install 'kagglecv\[{extra}\]'"):
        fit_block(ModelSettings(kind=kind, rounds=5), "binary", 1, matrix, RNG.integers(0, 2, ROWS), [])
