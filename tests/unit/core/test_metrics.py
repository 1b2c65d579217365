"""Every metric against its reference: scikit-learn where it has the metric, the VOC devkit's published numbers."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from kagglecv.core import metrics as km
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def voc_test():
    frame = pd.read_csv(shared_dataset("voc2007-labels") / "test_labels.csv", dtype={"id": str})
    raw = frame.iloc[:, 1:].to_numpy()
    return raw, np.select([raw == 1, raw == 0], [1, km.DIFFICULT], 0)  # file -1/0/1 -> kagglecv 0/-1/1


@pytest.mark.parametrize(("scores", "expected"), [
    ("uniform", (0.0937652543, 0.0772156691, 0.0737979905)),
    ("informative", (0.3072750647, 0.2791846605, 0.2750071205)),
])
def test_voc2007_reference_values(voc_test, scores, expected):
    raw, targets = voc_test
    if scores == "uniform":
        score_matrix = np.random.default_rng(0).random((4952, 20))
    else:
        score_matrix = (raw == 1) + np.random.default_rng(1).normal(0, 0.8, (4952, 20))
    got = (km.mean_average_precision_voc07(targets, score_matrix), km.mean_average_precision_voc(targets, score_matrix),
           km.mean_average_precision(targets, score_matrix))
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_map_equals_sklearn_on_non_difficult_rows_with_ties(voc_test):
    _, targets = voc_test
    scores = np.round(np.random.default_rng(2).random(targets.shape), 1)  # heavy ties
    per_class = km.average_precision_per_class(targets, scores)
    for c in range(targets.shape[1]):
        keep = targets[:, c] != km.DIFFICULT
        reference = skm.average_precision_score(targets[keep, c], scores[keep, c])
        assert abs(per_class[c] - reference) < 1e-12


def test_voc_ap_matches_a_direct_devkit_transcription():
    rng = np.random.default_rng(3)
    y = rng.choice([1, 0, 0, 0, km.DIFFICULT], size=(300, 4))
    s = rng.random((300, 4))

    def devkit(gt, confidence, year07):  # VOCevalcls.m + VOCap.m, one class, literally
        order = np.argsort(-confidence, kind="stable")
        gt = gt[order]
        tp, fp = np.cumsum(gt > 0), np.cumsum(gt == 0)
        rec = tp / np.sum(gt > 0)
        with np.errstate(invalid="ignore"):
            prec = np.nan_to_num(tp / (fp + tp))
        if year07:
            return sum(max(prec[rec >= t], default=0) for t in np.linspace(0, 1, 11)) / 11
        mrec, mpre = np.r_[0, rec, 1], np.r_[0, prec, 0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
        return np.sum((mrec[i] - mrec[i - 1]) * mpre[i])

    for c in range(4):
        assert abs(km.average_precision_voc07_per_class(y, s)[c] - devkit(y[:, c], s[:, c], True)) < 1e-12
        assert abs(km.average_precision_voc_per_class(y, s)[c] - devkit(y[:, c], s[:, c], False)) < 1e-12


def test_a_class_without_positives_is_left_out():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    assert np.isnan(km.average_precision_per_class(y, s)[1])
    assert km.mean_average_precision(y, s) == 1.0


@pytest.fixture(scope="module")
def multiclass():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5)) + 1.5 * np.eye(5)[y]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probabilities


def test_multiclass_metrics_equal_sklearn(multiclass):
    y, p = multiclass
    predicted = p.argmax(axis=1)
    assert km.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
    assert km.top_k_accuracy(y, p, 2) == pytest.approx(skm.top_k_accuracy_score(y, p, k=2), abs=1e-12)
    for average in ["macro", "micro", "weighted"]:
        assert km.f1(y, p, average) == pytest.approx(skm.f1_score(y, predicted, average=average), abs=1e-12)
    assert km.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), abs=1e-9)
    assert km.roc_auc_ovr(y, p) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), abs=1e-12)
    assert km.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, predicted), abs=1e-12)
    assert km.quadratic_weighted_kappa(y, p) == pytest.approx(
        skm.cohen_kappa_score(y, predicted, weights="quadratic"), abs=1e-12)
    np.testing.assert_array_equal(km.confusion_matrix(y, p), skm.confusion_matrix(y, predicted))


def test_macro_f1_leaves_out_a_class_in_neither_the_truth_nor_the_predictions_as_kaggles_graders_do():
    """Herbarium 2021's grade.py calls f1_score(y_true, y_pred, average="macro"): a class no test row has and no
    row is predicted as is no zero in the mean. A small test set or a fold often lacks some of many classes."""
    y, predicted = np.array([0, 0, 1, 1, 3]), np.array([0, 1, 1, 1, 3])
    probabilities = np.eye(5)[predicted] * 0.9 + 0.02
    expected = skm.f1_score(y, predicted, average="macro")  # over classes 0, 1 and 3
    assert km.f1(y, probabilities, "macro") == pytest.approx(expected, abs=1e-12)
    assert km.score_labels("f1_macro", y, predicted, 5) == pytest.approx(expected, abs=1e-12)
    assert expected > skm.f1_score(y, predicted, labels=np.arange(5), average="macro", zero_division=0)


def test_binary_metrics_equal_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    assert km.binary_roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert km.binary_log_loss(y, p) == pytest.approx(skm.log_loss(y, p), abs=1e-9)
    assert km.binary_f1(y, p, 0.4) == pytest.approx(skm.f1_score(y, p >= 0.4), abs=1e-12)
    assert km.binary_accuracy(y, np.c_[1 - p, p]) == pytest.approx(skm.accuracy_score(y, p >= 0.5), abs=1e-12)


def test_micro_map_and_prf():
    rng = np.random.default_rng(6)
    y = (rng.random((200, 6)) < 0.3).astype(int)
    s = rng.random((200, 6)) + 0.3 * y
    assert km.micro_average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s, average="micro"), abs=1e-12)
    predicted = s >= 0.5
    prf = km.multilabel_prf(y, s, threshold=0.5)
    assert prf["OP"] == pytest.approx(skm.precision_score(y, predicted, average="micro"), abs=1e-12)
    assert prf["OR"] == pytest.approx(skm.recall_score(y, predicted, average="micro"), abs=1e-12)
    assert prf["CP"] == pytest.approx(skm.precision_score(y, predicted, average="macro", zero_division=0), abs=1e-12)
    assert prf["CR"] == pytest.approx(skm.recall_score(y, predicted, average="macro"), abs=1e-12)
    top1 = km.multilabel_prf(y, s, top_k=1)
    assert top1["OP"] == pytest.approx((y[np.arange(200), s.argmax(axis=1)] == 1).mean(), abs=1e-12)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="same number of rows, got 2 and 3"):
        km.accuracy([0, 1], np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        km.mean_average_precision(np.ones((2, 2)), np.array([[np.nan, 1], [0, 1]]))
    with pytest.raises(ValueError, match="does not apply to a multilabel task; expected one of map"):
        km.get_metric("accuracy", "multilabel")


def test_score_oof_against_a_wide_voc_truth_table_uses_the_class_columns(voc_test, tmp_path):
    from kagglecv.stages.score import score_oof_file

    raw, _ = voc_test
    truth = shared_dataset("voc2007-labels") / "test_labels.csv"
    frame = pd.read_csv(truth, dtype={"id": str})
    scores = (raw == 1) + np.random.default_rng(1).normal(0, 0.8, (4952, 20))
    oof = pd.concat([frame[["id"]], pd.DataFrame(scores, columns=frame.columns[1:])], axis=1)
    oof.to_csv(tmp_path / "oof.csv", index=False, float_format="%.17g")
    for metric, expected in (("map_voc07", 0.3072750647), ("map_voc", 0.2791846605), ("map", 0.2750071205)):
        assert abs(score_oof_file(tmp_path / "oof.csv", truth, metric=metric).overall - expected) < 1e-9


def apk(actual: list, predicted: list, k: int) -> float:
    """Kaggle's average precision at k (``ml_metrics.average_precision.apk``), transcribed."""
    predicted = predicted[:k]
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            hits += 1.0
            score += hits / (i + 1.0)
    return score / min(len(actual), k) if actual else 0.0


def test_map_at_k_equals_kaggles_mapk_and_its_alias():
    rng = np.random.default_rng(3)
    truth, scores = rng.integers(0, 12, 500), rng.random((500, 12))
    scores[:20] = np.round(scores[:20], 1)  # ties, broken in class order as a stable sort does
    for k in (1, 3, 5, 12):
        ranked = [list(np.argsort(-row, kind="stable")) for row in scores]
        expected = float(np.mean([apk([t], r, k) for t, r in zip(truth, ranked)]))
        assert km.score(f"map@{k}", "multiclass", truth, scores) == pytest.approx(expected, abs=1e-12)
    assert km.score("map_at_5", "multiclass", truth, scores) == km.score("map@5", "multiclass", truth, scores)
    assert km.get_metric("map_at_5", "multiclass").name == "map_at_5"


def test_fbeta_samples_equals_the_per_row_formula_and_sklearn():
    rng = np.random.default_rng(4)
    truth = (rng.random((300, 17)) < 0.2).astype(np.int8)
    truth[0] = 0  # a row with no label: with no label predicted either, it scores 1
    scores = np.clip(truth * 0.4 + rng.random((300, 17)) * 0.7, 0, 1)
    scores[0] = 0.1
    predicted = scores >= 0.5
    per_row = []
    for t, p in zip(truth.astype(bool), predicted):
        tp, fp, fn = np.sum(t & p), np.sum(~t & p), np.sum(t & ~p)
        per_row.append(1.0 if tp + fp + fn == 0 else 5 * tp / (5 * tp + 4 * fn + fp))
    assert km.score("fbeta:2:samples", "multilabel", truth, scores) == pytest.approx(np.mean(per_row), abs=1e-12)
    assert km.score("f2_samples", "multilabel", truth, scores) == km.score("fbeta:2:samples", "multilabel", truth, scores)
    for average in ("micro", "macro"):
        expected = skm.fbeta_score(truth, predicted.astype(int), beta=0.5, average=average, zero_division=1.0)
        assert km.score(f"fbeta:0.5:{average}", "multilabel", truth, scores) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_macro_skips_columns_without_both_classes_and_equals_ovr_for_one_column_per_class():
    rng = np.random.default_rng(5)
    truth = (rng.random((200, 6)) < 0.3).astype(np.int8)
    truth[:, 5] = 0  # no positive: skipped
    truth[:10, 2] = km.DIFFICULT  # left out of column 2 only
    scores = rng.random((200, 6)) + truth * 0.3
    expected = np.mean([skm.roc_auc_score(truth[truth[:, c] != -1, c] == 1, scores[truth[:, c] != -1, c])
                        for c in range(5)])
    assert km.score("roc_auc_macro", "multilabel", truth, scores) == pytest.approx(expected, abs=1e-12)
    labels, probabilities = rng.integers(0, 4, 300), rng.dirichlet(np.ones(4), 300)
    onehot_auc = np.mean([skm.roc_auc_score(labels == c, probabilities[:, c]) for c in range(4)])
    assert km.score("roc_auc_macro", "multiclass", labels, probabilities) == pytest.approx(onehot_auc, abs=1e-12)
    with pytest.raises(ValueError, match="no column has both"):
        km.score("roc_auc_macro", "multilabel", np.zeros((5, 2), np.int8), rng.random((5, 2)))


@pytest.mark.parametrize("name, task, message", [
    ("fbeta:0:samples", "multilabel", "0 < beta"), ("fbeta:2:weighted", "multilabel", "samples, micro, macro"),
    ("fbeta:two:samples", "multilabel", "fbeta:<beta>"), ("map@0", "multiclass", "from 1 to 100"),
    ("map@x", "multiclass", "map@<k>"), ("map@5", "multilabel", "does not apply to a multilabel task"),
    ("f2_samples", "multiclass", "does not apply to a multiclass task"),
])
def test_bad_metric_parameters_are_refused_naming_the_form(name, task, message):
    with pytest.raises(ValueError, match=message):
        km.get_metric(name, task)


def test_a_config_takes_parametrized_metrics_and_refuses_unknown_ones(tmp_path):
    from kagglecv.core.config import validate_config
    from kagglecv.core.errors import ConfigError

    base = {"experiment": "x", "data": {"train_csv": str(tmp_path / "t.csv")}}
    assert validate_config(base | {"metric": "fbeta:2:samples"}).metric == "fbeta:2:samples"
    assert validate_config(base | {"metric": "map_at_5"}).metric == "map_at_5"
    with pytest.raises((ConfigError, ValueError), match="unknown metric 'f3_samples'"):
        validate_config(base | {"metric": "f3_samples"})
