"""Every submission shape Kaggle uses, written from predictions and scored by ``score --submission`` exactly (against
scikit-learn or the formula), and for each shape a wrong one that is refused with one line, never given a number."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import MultiLabelBinarizer

from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.core.metrics import (
    _quadratic_kappa,
    expected_grade,
    grades_from_cutoffs,
    map_at_k,
    map_at_k_lists,
    quadratic_weighted_kappa,
    qwk_thresholds,
    tune_grade_cutoffs,
)
from kagglecv.core.predictions import prediction_frame
from kagglecv.data.submission import (
    SubmissionDecisions,
    SubmissionShape,
    build_submission,
)
from kagglecv.stages.score import score_submission

RNG = np.random.default_rng(7)
ROWS = 80


def softmax_rows(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path


def submit(tmp_path, ids, probabilities, classes, task, sample, shape=SubmissionShape(), cutoffs=None,
           thresholds=None):
    """The submission ``build_submission`` makes from these predictions in the sample's shape, as a file."""
    predictions = prediction_frame(ids, probabilities, classes)
    sample_path = write(sample, tmp_path / "sample.csv")
    decisions = SubmissionDecisions(shape, lambda: thresholds or dict.fromkeys(classes, 0.5), cutoffs)
    frame, fmt, _ = build_submission(predictions, tmp_path / "p.csv", sample_path, classes, task, decisions)
    return write(frame, tmp_path / f"sub-{fmt}.csv"), fmt, frame


IDS = [f"{index:05d}.jpg" for index in range(ROWS)]
CLASSES = ["0", "1", "2", "3", "4"]
TRUTH = RNG.integers(0, 5, ROWS)
PROBABILITIES = softmax_rows(np.eye(5)[TRUTH] * 1.5 + RNG.normal(0, 1, (ROWS, 5)))


def test_integer_class_labels_are_scored_by_accuracy_and_qwk(tmp_path):
    path, fmt, frame = submit(tmp_path, IDS, PROBABILITIES, CLASSES, "multiclass",
                              pd.DataFrame({"image_id": IDS[::-1], "label": 4}))
    assert fmt == "label" and frame["image_id"].tolist() == IDS[::-1]
    solution = write(pd.DataFrame({"image_id": IDS, "label": TRUTH}), tmp_path / "solution.csv")
    predicted = frame.set_index("image_id").loc[IDS, "label"].astype(int)
    assert score_submission(path, solution, "accuracy") == pytest.approx(skm.accuracy_score(TRUTH, predicted), abs=1e-12)
    assert score_submission(path, solution, "qwk") == pytest.approx(
        skm.cohen_kappa_score(TRUTH, predicted, weights="quadratic"), abs=1e-9)
    with pytest.raises(KagglecvError, match="does not apply to a multiclass task"):
        score_submission(path, solution, "roc_auc_macro_typo")


def test_one_probability_per_class_is_scored_by_log_loss_and_mean_column_auc(tmp_path):
    classes = ["healthy", "multiple_diseases", "rust", "scab"]
    probabilities = softmax_rows(np.eye(4)[TRUTH % 4] + RNG.normal(0, 1, (ROWS, 4)))
    path, fmt, _ = submit(tmp_path, IDS, probabilities, classes, "multiclass",
                          pd.DataFrame({"image_id": IDS} | dict.fromkeys(classes[::-1], 0.25)))
    assert fmt == "probabilities"
    one_hot = np.eye(4, dtype=int)[TRUTH % 4]
    solution = write(pd.DataFrame({"image_id": IDS} | dict(zip(classes, one_hot.T))), tmp_path / "solution.csv")
    column_auc = np.mean([skm.roc_auc_score(one_hot[:, c], probabilities[:, c]) for c in range(4)])
    assert score_submission(path, solution, "roc_auc_macro") == pytest.approx(column_auc, abs=1e-6)
    named = write(pd.DataFrame({"image_id": IDS, "label": np.array(classes)[TRUTH % 4]}), tmp_path / "named.csv")
    assert score_submission(path, named, "log_loss") == pytest.approx(
        skm.log_loss(TRUTH % 4, probabilities, labels=range(4)), abs=1e-6)
    wrong = write(pd.DataFrame({"image_id": IDS, "healthy": 0.5, "rust": 0.5}), tmp_path / "two.csv")
    with pytest.raises(DataError, match="no column for classes"):
        score_submission(wrong, named, "log_loss")


def test_the_positive_classs_probability_is_scored_by_auc(tmp_path):
    truth = TRUTH % 2
    probabilities = np.column_stack([1 - PROBABILITIES[:, 1], PROBABILITIES[:, 1]])
    path, fmt, _ = submit(tmp_path, IDS, probabilities, ["0", "1"], "binary",
                          pd.DataFrame({"id": IDS, "has_cactus": 0.5}))
    assert fmt == "positive"
    solution = write(pd.DataFrame({"id": IDS, "has_cactus": truth}), tmp_path / "solution.csv")
    assert score_submission(path, solution, "roc_auc") == pytest.approx(
        skm.roc_auc_score(truth, probabilities[:, 1]), abs=1e-6)
    with pytest.raises(KagglecvError, match="cannot score probabilities"):
        score_submission(path, solution, "accuracy")


def test_tag_lists_are_scored_by_samples_f2(tmp_path):
    tags = ["clear", "cloudy", "primary", "road", "water"]
    truth = RNG.random((ROWS, 5)) < 0.4
    scores = np.clip(truth * 0.5 + RNG.random((ROWS, 5)) * 0.6, 0, 1)
    path, fmt, frame = submit(tmp_path, IDS, scores, tags, "multilabel",
                              pd.DataFrame({"image_name": IDS, "tags": "primary clear"}))
    assert fmt == "labels"
    solution_tags = [" ".join(np.array(tags)[row]) for row in truth]
    solution = write(pd.DataFrame({"image_name": IDS, "tags": solution_tags}), tmp_path / "solution.csv")
    binarizer = MultiLabelBinarizer(classes=tags)
    expected = skm.fbeta_score(binarizer.fit_transform([cell.split() for cell in solution_tags]),
                               binarizer.transform(frame["tags"].str.split()), beta=2, average="samples",
                               zero_division=0)
    for metric in ("f2_samples", "fbeta:2:samples"):
        assert score_submission(path, solution, metric) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(KagglecvError, match="a labels submission is scored with f1_micro"):
        score_submission(path, solution, "map")


def test_top_k_lists_follow_the_sample_and_are_scored_by_map_at_k(tmp_path):
    whales = ["new_whale", "w_1", "w_2", "w_3", "w_4", "w_5", "w_6"]
    probabilities = softmax_rows(RNG.normal(0, 1, (ROWS, 7)) + np.eye(7)[TRUTH] * 0.8)
    sample = pd.DataFrame({"Image": IDS, "Id": "new_whale w_1 w_2 w_3 w_4"})
    path, fmt, frame = submit(tmp_path, IDS, probabilities, whales, "multiclass", sample)
    assert fmt == "top_k" and all(len(cell.split()) == 5 for cell in frame["Id"])
    truth = np.array(whales)[TRUTH]
    solution = write(pd.DataFrame({"Image": IDS, "Id": truth}), tmp_path / "solution.csv")
    expected = map_at_k(TRUTH, probabilities, 5)  # the OOF path's MAP@5 on the same probabilities
    assert score_submission(path, solution, "map@5") == pytest.approx(expected, abs=1e-12)
    assert score_submission(path, solution, "map_at_5") == pytest.approx(expected, abs=1e-12)
    with pytest.raises(KagglecvError, match="a top-k list is scored with map@<k>"):
        score_submission(path, solution, "accuracy")
    with pytest.raises(DataError, match="rows list up to 5 labels; map@3 scores at most 3"):
        score_submission(path, solution, "map@3")
    three, _, _ = submit(tmp_path, IDS, probabilities, whales, "multiclass", sample, SubmissionShape("top_k", 3))
    assert pd.read_csv(three)["Id"].str.split().str.len().eq(3).all()


def test_a_configured_shape_that_does_not_fit_the_sample_is_refused(tmp_path):
    sample = pd.DataFrame({"id": IDS, "label": 0})
    with pytest.raises(DataError, match="submit.format top_k: does not fit"):
        submit(tmp_path, IDS, PROBABILITIES[:, :2] / PROBABILITIES[:, :2].sum(1, keepdims=True), ["0", "1"],
               "binary", sample, SubmissionShape("top_k"))
    with pytest.raises(DataError, match="submit.format probabilities: does not fit"):
        submit(tmp_path, IDS, PROBABILITIES, CLASSES, "multiclass", sample, SubmissionShape("probabilities"))
    labels, fmt, frame = submit(tmp_path, IDS, np.column_stack([1 - PROBABILITIES[:, 1], PROBABILITIES[:, 1]]),
                                ["0", "1"], "binary", sample, SubmissionShape("label"))
    assert fmt == "label" and set(frame["label"]) <= {"0", "1"}, "a 0/1 label where the sample cannot tell"


def test_map_at_k_lists_is_ml_metrics_mapk():
    # ml_metrics.average_precision.apk: repeated predictions count once, lists cut at k
    assert map_at_k_lists(["a", "b", "c"], [["a", "x"], ["x", "b"], ["x", "x", "y"]], 5) == pytest.approx((1 + 0.5) / 3)
    assert map_at_k_lists(["a"], [["b", "b", "a"]], 5) == pytest.approx(1 / 3)
    assert map_at_k_lists(["a"], [["b", "c", "a"]], 2) == 0.0


def test_qwk_thresholds_cuts_the_expected_grade_where_oof_qwk_is_best(tmp_path):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 5, 200)
        predicted = rng.integers(0, 5, 200)
        assert _quadratic_kappa(labels, predicted, 5) == pytest.approx(
            skm.cohen_kappa_score(labels, predicted, weights="quadratic", labels=range(5)), abs=1e-12)
    grade = expected_grade(PROBABILITIES)
    np.testing.assert_allclose(grade, PROBABILITIES @ np.arange(5))
    cutoffs = tune_grade_cutoffs(TRUTH, grade, 5)
    assert np.all(np.diff(cutoffs) > 0)
    tuned = skm.cohen_kappa_score(TRUTH, grades_from_cutoffs(grade, cutoffs), weights="quadratic")
    assert qwk_thresholds(TRUTH, PROBABILITIES) == pytest.approx(tuned, abs=1e-9)
    midpoints = skm.cohen_kappa_score(TRUTH, grades_from_cutoffs(grade, [0.5, 1.5, 2.5, 3.5]), weights="quadratic")
    assert tuned >= midpoints and tuned >= quadratic_weighted_kappa(TRUTH, PROBABILITIES) - 1e-12
    path, _, frame = submit(tmp_path, IDS, PROBABILITIES, CLASSES, "multiclass",
                            pd.DataFrame({"id_code": IDS, "diagnosis": 0}), cutoffs=list(cutoffs))
    assert frame["diagnosis"].astype(int).tolist() == grades_from_cutoffs(grade, cutoffs).tolist()
    assert frame["diagnosis"].astype(int).tolist() != PROBABILITIES.argmax(axis=1).tolist(), "not the argmax"
    solution = write(pd.DataFrame({"id_code": IDS, "diagnosis": TRUTH}), tmp_path / "solution.csv")
    assert score_submission(path, solution, "qwk_thresholds") == pytest.approx(tuned, abs=1e-9), \
        "labels already cut: scored by the leaderboard's QWK, not tuned again"


def test_a_one_hot_wide_solution_is_multiclass_for_a_multiclass_metric(tmp_path):
    """Dog Breed's solution as Kaggle keeps it: one 0/1 column per breed, one 1 a row; log loss as sklearn's."""
    breeds = ["beagle", "boxer", "pug", "whippet"]
    ids = [f"d{i}" for i in range(ROWS)]
    truth = RNG.integers(0, len(breeds), ROWS)
    probabilities = softmax_rows(RNG.normal(size=(ROWS, len(breeds))))
    wide = pd.DataFrame({"id": ids} | {b: (truth == k).astype(int) for k, b in enumerate(breeds)})
    narrow = pd.DataFrame({"id": ids, "breed": np.array(breeds)[truth]})
    submission = write(pd.DataFrame({"id": ids} | {b: probabilities[:, k] for k, b in enumerate(breeds)}),
                       tmp_path / "sub.csv")
    expected = skm.log_loss(truth, probabilities, labels=range(len(breeds)))
    assert score_submission(submission, write(wide, tmp_path / "wide.csv"), "log_loss") == pytest.approx(expected, abs=1e-9)
    assert score_submission(submission, write(narrow, tmp_path / "narrow.csv"), "log_loss") == pytest.approx(expected, abs=1e-9)
    several = wide.assign(pug=1)  # rows with two 1s: multi-label, and log_loss is no metric of that
    with pytest.raises(KagglecvError, match="log_loss"):
        score_submission(submission, write(several, tmp_path / "several.csv"), "log_loss")


@pytest.mark.parametrize("cell", ["5", "-3", "1.0000001", "nan"])
def test_probabilities_outside_zero_one_are_refused_never_scored(tmp_path, cell):
    ids = [f"r{i}" for i in range(4)]
    solution = write(pd.DataFrame({"id": ids, "label": ["a", "b", "a", "b"]}), tmp_path / "solution.csv")
    frame = pd.DataFrame({"id": ids, "a": ["0.2", cell, "0.5", "0.9"], "b": ["0.8", "0.1", "0.5", "0.1"]})
    with pytest.raises(DataError, match=f"id 'r1' column 'a' = '{cell}'; expected a probability in"):
        score_submission(write(frame, tmp_path / "sub.csv"), solution, "log_loss")


def test_class_names_with_spaces_are_names_and_tags_are_decided_from_the_whole_column(tmp_path):
    species = np.array(["Common Chickweed", "Common wheat", "Sugar beet", "Maize"])
    ids = [f"p{i}.png" for i in range(ROWS)]
    truth, predicted = RNG.integers(0, 4, ROWS), RNG.integers(0, 4, ROWS)
    solution = write(pd.DataFrame({"file": ids, "species": species[truth]}), tmp_path / "solution.csv")
    submission = write(pd.DataFrame({"file": ids, "species": species[predicted]}), tmp_path / "sub.csv")
    for metric in ("accuracy", "f1_micro", "f1_macro"):
        expected = skm.f1_score(truth, predicted, average=metric[3:]) if metric != "accuracy" else np.mean(truth == predicted)
        assert score_submission(submission, solution, metric) == pytest.approx(expected, abs=1e-9)
    from kagglecv.core.shapes import cells_are_tags

    assert not cells_are_tags(pd.Series(species[truth]))
    assert cells_are_tags(pd.Series(["clear primary", "primary", "haze primary water"]))  # a tag stands alone
    assert cells_are_tags(pd.Series(["a b", "c d", "b c"]))                               # a word moves place


def test_f1_samples_is_the_samples_f1_of_label_lists(tmp_path):
    tags = ["clear", "road", "water"]
    ids = [f"t{i}" for i in range(ROWS)]
    truth, predicted = (RNG.random((ROWS, 3)) < 0.5), (RNG.random((ROWS, 3)) < 0.5)
    cells = lambda matrix: [" ".join(np.array(tags)[row]) for row in matrix]  # noqa: E731
    solution = write(pd.DataFrame({"id": ids, "tags": cells(truth)}), tmp_path / "solution.csv")
    submission = write(pd.DataFrame({"id": ids, "tags": cells(predicted)}), tmp_path / "sub.csv")
    expected = skm.f1_score(truth, predicted, average="samples", zero_division=0)
    assert score_submission(submission, solution, "f1_samples") == pytest.approx(expected, abs=1e-9)
