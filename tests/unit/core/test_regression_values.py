"""A regression target's numbers: the metrics against scikit-learn, the values a model's outputs become, the
submission's clipping, and the blends that keep values."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from kagglecv.core.blending import Blender, as_predictions, optimize_weights
from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.core.metrics import get_metric, resolve_metric
from kagglecv.core.shapes import check_shape_fits, detect_format, shaped_columns
from tests.conftest import kaggle_pfbeta

RNG = np.random.default_rng(0)
TRUTH = RNG.uniform(1, 60, (200, 2))
GUESS = np.clip(TRUTH + RNG.normal(0, 5, (200, 2)), 0, None)


@pytest.mark.parametrize("name, reference", [
    ("rmse", skm.root_mean_squared_error), ("mae", skm.mean_absolute_error), ("r2", skm.r2_score),
    ("rmsle", skm.root_mean_squared_log_error), ("root_mean_squared_error", skm.root_mean_squared_error)])
def test_regression_metrics_equal_scikit_learns_on_one_and_two_targets(name, reference):
    metric = get_metric(name, "regression")
    assert metric.score(TRUTH, GUESS) == pytest.approx(reference(TRUTH, GUESS), abs=1e-9)
    assert metric.score(TRUTH[:, :1], GUESS[:, :1]) == pytest.approx(reference(TRUTH[:, 0], GUESS[:, 0]), abs=1e-9)
    assert metric.higher_is_better == (name == "r2")


def test_a_regression_metric_is_no_class_metric_and_rmsle_of_negatives_is_nan():
    assert resolve_metric(None, "regression").name == "rmse"
    with pytest.raises(ValueError, match="does not apply to a multiclass task"):
        get_metric("rmse", "multiclass")
    assert math.isnan(get_metric("rmsle", "regression").score_or_nan(TRUTH - 100, GUESS))


def test_a_value_submission_is_clipped_to_the_range_and_refuses_a_class_format(tmp_path):
    import pandas as pd

    sample = pd.DataFrame({"Id": ["a", "b", "c"], "Pawpularity": ["50", "50", "50"]})
    assert detect_format(sample, ["score"], "regression", tmp_path / "s.csv") == "values"
    values = np.array([[-5.0], [40.0], [120.0]])
    columns = shaped_columns(values, ["score"], "values", ["Pawpularity"], 1, None, None,
                             value_range={"score": (1.0, 100.0)})
    assert columns["Pawpularity"].tolist() == [1.0, 40.0, 100.0]
    with pytest.raises(DataError, match="expected values"):
        check_shape_fits("label", sample, ["score"], "regression", tmp_path / "s.csv")
    with pytest.raises(DataError, match="a class format"):
        check_shape_fits("values", sample, ["a", "b"], "multiclass", tmp_path / "s.csv")


def test_blends_of_values_are_weighted_means_and_stay_unclipped():
    runs = np.stack([GUESS, GUESS + 10, GUESS - 10])
    with pytest.raises(KagglecvError, match="blend by mean, weighted, hill, optimize"):
        Blender("rank", "regression", get_metric("rmse", "regression"))
    weights = optimize_weights(runs, TRUTH, "regression", lambda blend: -skm.root_mean_squared_error(TRUTH, blend))
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    assert as_predictions(runs[1], "regression").max() > 1 and as_predictions(runs[1] / 100, "binary").max() <= 1


def test_probabilistic_f1_equals_kaggles_pfbeta():
    labels = (RNG.uniform(size=300) < 0.1).astype(int)
    scores = np.clip(labels * 0.4 + RNG.uniform(0, 0.6, 300), 0, 1)
    metric = get_metric("pfbeta", "binary")
    assert metric.name == "pfbeta" and metric.higher_is_better
    assert metric.score(labels, np.column_stack([1 - scores, scores])) == pytest.approx(
        kaggle_pfbeta(labels.tolist(), scores.tolist()), abs=1e-12)
    assert metric.score(labels, np.column_stack([scores, 0 * scores])) == 0.0


def test_a_heads_metric_is_each_heads_metric_averaged_with_the_weights():
    from kagglecv.core.metrics import heads_metric
    from kagglecv.core.predictions import head_probabilities

    classes = [f"root={k}" for k in range(5)] + [f"vowel={k}" for k in range(3)]
    truth = np.column_stack([RNG.integers(0, 5, 120), RNG.integers(0, 3, 120)])
    probabilities = head_probabilities(RNG.normal(0, 1, (120, 8)), classes)
    np.testing.assert_allclose(probabilities[:, :5].sum(axis=1), 1) and np.testing.assert_allclose(
        probabilities[:, 5:].sum(axis=1), 1)
    recalls = [skm.recall_score(truth[:, 0], probabilities[:, :5].argmax(axis=1), average="macro"),
               skm.recall_score(truth[:, 1], probabilities[:, 5:].argmax(axis=1), average="macro")]
    metric = heads_metric("heads:recall_macro:root=2", classes)
    assert metric.score(truth, probabilities) == pytest.approx(np.average(recalls, weights=[2, 1]), abs=1e-12)
    with pytest.raises(ValueError, match="scores the heads"):
        get_metric("heads:recall_macro", "heads").score(truth, probabilities)
    with pytest.raises(ValueError, match="no head 'consonant'"):
        heads_metric("heads:accuracy:consonant=2", classes).score(truth, probabilities)
