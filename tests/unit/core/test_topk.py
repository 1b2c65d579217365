"""Top-k prediction files (many identities): the top k of dense scores, the blend against the dense blend, MAP@5
against a by-hand reference, the unseen label's threshold tuned exactly on OOF, the file round trip and its
refusals."""

import numpy as np
import pytest

from kagglecv.core import topk
from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.core.topk import (
    TopK,
    blend_top_k,
    new_identity_truth,
    read_top_k,
    top_k_of_scores,
    tune_new_threshold,
    with_new_label,
    write_top_k,
)

RNG = np.random.default_rng(3)
CLASSES = [f"w_{i:03d}" for i in range(40)]


def reference_map5(truth: list[str], lists: list[list[str]]) -> float:
    """MAP@5 with one true label a row, as Kaggle's whale playground scores it: 1/rank within the first five."""
    return float(np.mean([1.0 / (row[:5].index(label) + 1) if label in row[:5] else 0.0
                          for label, row in zip(truth, lists)]))


def test_the_top_k_of_dense_scores_is_argsorts_in_chunks(monkeypatch):
    monkeypatch.setattr(topk, "CHUNK_ROWS", 7)
    scores = RNG.random((30, len(CLASSES)))
    top = top_k_of_scores([f"r{i}" for i in range(30)], scores, CLASSES, 5)
    order = np.argsort(-scores, axis=1)[:, :5]
    assert top.labels.tolist() == np.array(CLASSES, dtype=object)[order].tolist()
    np.testing.assert_array_equal(top.scores, np.take_along_axis(scores, order, axis=1))


def test_a_blend_of_complete_top_k_lists_is_the_top_k_of_the_dense_weighted_blend():
    ids = [f"r{i}" for i in range(25)]
    first, second = RNG.random((25, len(CLASSES))), RNG.random((25, len(CLASSES)))
    runs = [top_k_of_scores(ids, scores, CLASSES, len(CLASSES)) for scores in (first, second)]
    blended = blend_top_k(runs, np.array([0.3, 0.7]), k=5)
    dense = top_k_of_scores(ids, 0.3 * first + 0.7 * second, CLASSES, 5)
    assert blended.labels.tolist() == dense.labels.tolist()
    np.testing.assert_allclose(blended.scores, dense.scores, rtol=0, atol=1e-12)


def test_map_at_5_of_top_k_lists_equals_the_reference():
    scores = RNG.random((60, len(CLASSES)))
    truth = list(np.array(CLASSES)[RNG.integers(0, len(CLASSES), 60)])
    top = top_k_of_scores(range(60), scores, CLASSES, 5)
    from kagglecv.core.metrics import map_at_k_lists

    assert map_at_k_lists(truth, top.lists(), 5) == pytest.approx(reference_map5(truth, top.lists()), abs=1e-12)


def test_the_new_label_goes_before_the_first_score_under_the_threshold():
    top = TopK(np.array(["a"], dtype=object), np.array([["x", "y", "z"]], dtype=object), np.array([[0.9, 0.5, 0.1]]))
    assert with_new_label(top, 0.6, "new_whale", 3) == [["x", "new_whale", "y"]]
    assert with_new_label(top, 0.95, "new_whale", 3) == [["new_whale", "x", "y"]]
    assert with_new_label(top, 0.05, "new_whale", 3) == [["x", "y", "z"]]


def test_an_identity_no_other_fold_holds_is_new_on_oof():
    labels = np.array(["a", "a", "b", "c", "c", "d"], dtype=object)
    folds = np.array([0, 1, 0, 0, 0, 1])
    assert new_identity_truth(labels, folds, "new").tolist() == ["a", "a", "new", "new", "new", "new"]


def test_the_tuned_threshold_is_the_best_on_a_fine_grid_and_beats_never_predicting_new():
    rows, known = 200, CLASSES[:30]
    truth, lists, scores = [], [], []
    for row in range(rows):
        is_new = row % 4 == 0
        order = list(RNG.permutation(known)[:5])
        truth.append("new_whale" if is_new else order[RNG.integers(0, 3)])
        lists.append(order)
        best = RNG.uniform(0.1, 0.5) if is_new else RNG.uniform(0.4, 0.9)
        scores.append(np.sort(RNG.uniform(0, best, 5))[::-1])
    top = TopK(np.arange(rows).astype(str).astype(object), np.array(lists, dtype=object), np.array(scores))
    threshold, tuned, never = tune_new_threshold(top, truth, 5, "new_whale")
    grid = max(reference_map5(truth, with_new_label(top, t, "new_whale", 5)) for t in np.linspace(0, 1, 2001))
    assert tuned == pytest.approx(reference_map5(truth, with_new_label(top, threshold, "new_whale", 5)), abs=1e-12)
    assert tuned >= grid - 1e-12 and tuned > never + 0.1


def test_a_top_k_file_round_trips_and_a_damaged_one_is_refused(tmp_path):
    top = top_k_of_scores([f"r{i}" for i in range(12)], RNG.random((12, len(CLASSES))), CLASSES, 5,
                          folds=np.arange(12) % 3)
    write_top_k(tmp_path / "oof.csv", top)
    back = read_top_k(tmp_path / "oof.csv")
    assert back.labels.tolist() == top.labels.tolist() and back.folds.tolist() == top.folds.tolist()
    np.testing.assert_allclose(back.scores, top.scores, rtol=1e-6)
    text = (tmp_path / "oof.csv").read_text().splitlines()
    for damage, message in (("increase", "scores that increase"), ("twice", "a label twice"), ("nan", "finite")):
        cells = text[3].split(",")
        if damage == "increase":
            cells[-1] = "5"
        elif damage == "twice":
            cells[3] = cells[2]
        else:
            cells[-2] = "nan"
        (tmp_path / "bad.csv").write_text("\n".join([*text[:3], ",".join(cells), *text[4:]]) + "\n")
        with pytest.raises(DataError, match=f"line 4 has {message}" if damage != "nan" else "line 4 has a score"):
            read_top_k(tmp_path / "bad.csv")


def test_a_reserved_label_that_is_also_a_predicted_identity_is_refused():
    top = TopK(np.array(["a"], dtype=object), np.array([["new_whale", "y"]], dtype=object), np.array([[0.9, 0.5]]))
    with pytest.raises(KagglecvError, match="'new_whale' is among the predicted identities"):
        tune_new_threshold(top, ["y"], 5, "new_whale")
