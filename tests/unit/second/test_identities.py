"""Identity predictions from embeddings and head cosines: neighbours searched in the fold's gallery only, the head's
cosines masked to the gallery's identities, the new label's threshold recorded as it scores, the reserved label's
rules, the gallery file read without unpickling, the submission's lists."""

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kagglecv.core.config import IdentitiesConfig
from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.core.metrics import map_at_k_lists
from kagglecv.core.predictions import read_predictions
from kagglecv.core.records import IdentityRecord
from kagglecv.core.runs import RunDir
from kagglecv.core.topk import (
    TopK,
    concat_top_k,
    nested_new_label_lists,
    new_identity_truth,
    tune_new_threshold,
    with_new_label,
    write_top_k,
)
from kagglecv.data.members import read_gallery, write_gallery
from kagglecv.data.submission import identity_submission
from kagglecv.data.table import CompetitionData
from kagglecv.second.identities import (
    FoldOutputs,
    check_identities,
    fold_top_k,
    identity_labels,
    known_identity_rows,
    reserved_label,
    tuned_identities,
)

RNG = np.random.default_rng(5)
CLASSES = [f"w_{i:02d}" for i in range(12)]


def _unit(values: np.ndarray) -> np.ndarray:
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def _gallery(rows_per_identity: int = 2, identities: int = 8):
    centers = _unit(RNG.normal(size=(len(CLASSES), 16)))
    labels = np.repeat(CLASSES[:identities], rows_per_identity)
    positions = np.repeat(np.arange(identities), rows_per_identity)
    embeddings = centers[positions] + 0.05 * RNG.normal(size=(len(labels), 16))
    return centers, embeddings.astype(np.float32), labels.astype(object)


def test_a_query_equal_to_a_gallery_row_ranks_its_identity_first_with_score_one():
    centers, gallery, labels = _gallery()
    queries = FoldOutputs(gallery[[0, 5, 9]], np.zeros((3, len(CLASSES))))
    top = fold_top_k(gallery, labels, queries, ["a", "b", "c"], CLASSES,
                     IdentitiesConfig(top_k=5, logit_weight=0.0))
    assert list(top.labels[:, 0]) == list(labels[[0, 5, 9]])
    np.testing.assert_allclose(top.scores[:, 0], 1.0, atol=1e-6)  # cosine 1 mapped to [0, 1]
    assert (np.diff(top.scores, axis=1) <= 0).all() and all(len(set(row)) == 5 for row in top.lists())


def test_the_head_never_ranks_an_identity_outside_the_gallery():
    """Identities w_08..w_11 are not in this fold's training part: however high the head's cosine to their
    centers, they are not predicted (a held-out identity is new, as on the test)."""
    _, gallery, labels = _gallery()
    cosines = np.full((4, len(CLASSES)), -0.5)
    cosines[:, 8:] = 1.0
    top = fold_top_k(gallery, labels, FoldOutputs(gallery[:4], cosines), list("abcd"), CLASSES,
                     IdentitiesConfig(top_k=8, logit_weight=0.9))
    assert set(top.labels.ravel()) <= set(labels) and len(set(top.labels.ravel())) == 8


def test_the_blend_weighs_neighbours_against_centers():
    centers, gallery, labels = _gallery()
    query = _unit(centers[[3]] + centers[[6]] * 0.2).astype(np.float32)  # nearest w_03's rows
    cosines = np.full((1, len(CLASSES)), -1.0)
    cosines[0, 6] = 1.0  # the head says w_06
    near = fold_top_k(gallery, labels, FoldOutputs(query, cosines), ["q"], CLASSES,
                      IdentitiesConfig(top_k=3, logit_weight=0.1))
    head = fold_top_k(gallery, labels, FoldOutputs(query, cosines), ["q"], CLASSES,
                      IdentitiesConfig(top_k=3, logit_weight=0.9))
    assert near.labels[0, 0] == "w_03" and head.labels[0, 0] == "w_06"


def test_k_larger_than_the_gallery_and_nan_embeddings_are_one_line_each():
    _, gallery, labels = _gallery()
    queries = FoldOutputs(gallery[:2], np.zeros((2, len(CLASSES))))
    with pytest.raises(KagglecvError, match="top_k: 9 identities asked of a gallery of 8"):
        fold_top_k(gallery, labels, queries, ["a", "b"], CLASSES, IdentitiesConfig(top_k=9))
    broken = gallery.copy()
    broken[3, 2] = np.nan
    with pytest.raises(KagglecvError, match="gallery: 1 rows hold NaN"):
        fold_top_k(broken, labels, queries, ["a", "b"], CLASSES, IdentitiesConfig(top_k=5))


def test_the_recorded_threshold_scores_what_the_record_says():
    """The OOF MAP@5 with the new label placed at the recorded threshold equals ``oof_tuned``, beats never placing
    it, and a threshold a little off scores no better."""
    labels = np.array(RNG.choice(CLASSES[:8], 60), dtype=object)
    folds = np.arange(60) % 3
    labels[:6] = [f"single_{i}" for i in range(6)]  # one image each: new in OOF
    scores = np.sort(RNG.uniform(0.2, 0.9, (60, 6)), axis=1)[:, ::-1]
    scores[:6] *= 0.5  # an unseen identity's nearest rows are far
    ranked = np.array([RNG.permutation(CLASSES[:8])[:6] for _ in range(60)], dtype=object)
    top = TopK(np.array([f"r{i}" for i in range(60)], dtype=object), ranked, scores, folds)
    record = tuned_identities(top, labels, "new_whale", 5, IdentitiesConfig(top_k=6))
    truth = new_identity_truth(labels, folds, "new_whale")
    assert record.new_rows == int((truth == "new_whale").sum()) >= 6
    placed = map_at_k_lists(list(truth), with_new_label(top, record.threshold, "new_whale", 5), 5)
    assert placed == pytest.approx(record.oof_tuned, abs=1e-12) and record.oof_tuned > record.oof_never
    for shift in (-0.05, 0.05):
        assert map_at_k_lists(list(truth), with_new_label(top, record.threshold + shift, "new_whale", 5), 5) \
            <= record.oof_tuned + 1e-12
    never = tuned_identities(top, labels, "new_whale", 5, IdentitiesConfig(top_k=6, tune_new=False))
    assert never.threshold is None and never.oof_tuned == never.oof_never
    with pytest.raises(KagglecvError, match="fewer than the metric's 5"):
        tuned_identities(top, labels, "new_whale", 5, IdentitiesConfig(top_k=4))


def test_the_reserved_label_comes_from_the_table_or_the_config_never_from_an_identity():
    assert reserved_label(IdentitiesConfig(), ["new_whale", "w_1"], {"new_whale": 4, "w_1": 2}) == "new_whale"
    assert reserved_label(IdentitiesConfig(), ["w_1"], {"w_1": 2}) is None
    assert reserved_label(IdentitiesConfig(new_label="new_individual"), ["w_1"], {"w_1": 2}) == "new_individual"
    with pytest.raises(KagglecvError, match="'w_1' is a training identity \\(2 rows\\)"):
        reserved_label(IdentitiesConfig(new_label="w_1"), ["w_1"], {"w_1": 2})
    table = CompetitionData(np.array(list("abcd"), dtype=object), None, "multiclass", ["new_whale", "w_1"],
                            np.array([0, 1, 1, 0]), None, Path("train.csv"))
    labels, new_label = identity_labels(table, IdentitiesConfig())
    assert new_label == "new_whale" and list(known_identity_rows(labels, new_label, np.arange(4))) == [1, 2]


def test_an_identity_column_of_one_row_each_is_refused():
    with pytest.raises(KagglecvError, match="each of the 3 identities has one row"):
        check_identities(np.array(["a", "b", "c", "new_whale", "new_whale"], dtype=object), "new_whale")
    check_identities(np.array(["a", "a", "b"], dtype=object), None)


def test_folds_join_in_table_order_and_a_doubled_id_is_refused():
    parts = [TopK(np.array(["c", "a"], dtype=object), np.array([["x"], ["y"]], dtype=object), np.ones((2, 1)),
                  np.array([0, 0])),
             TopK(np.array(["b"], dtype=object), np.array([["z"]], dtype=object), np.ones((1, 1)), np.array([1]))]
    joined = concat_top_k(parts, ["a", "b", "c"])
    assert list(joined.ids) == ["a", "b", "c"] and list(joined.labels[:, 0]) == ["y", "z", "x"]
    assert list(joined.folds) == [0, 1, 0]
    with pytest.raises(DataError, match="1 doubled \\('a'\\)"):
        concat_top_k([*parts, parts[0].take(np.array([1]))], ["a", "b", "c"])


def test_the_gallery_round_trips_and_a_pickled_one_is_refused_unread(tmp_path):
    fold = RunDir(tmp_path / "run").fold(0)
    fold.path.mkdir(parents=True)
    _, gallery, labels = _gallery()
    write_gallery(fold, gallery, np.array([f"i{n}" for n in range(len(labels))]), labels)
    embeddings, read_labels = read_gallery(fold)
    np.testing.assert_array_equal(embeddings, gallery)
    assert list(read_labels) == list(labels)
    np.save(fold.gallery_path, np.array([{"payload": 1}] * len(labels), dtype=object), allow_pickle=True)
    loads = pickle.loads
    pickle.loads = lambda *args, **kwargs: pytest.fail("a gallery was unpickled")
    try:
        with pytest.raises(KagglecvError, match="gallery.npy"):
            read_gallery(fold)
    finally:
        pickle.loads = loads
    np.save(fold.gallery_path, gallery[:-1])
    with pytest.raises(KagglecvError, match=f"expected {len(labels)} rows"):
        read_gallery(fold)


def test_a_top_k_file_is_refused_where_class_columns_are_read(tmp_path):
    path = tmp_path / "oof.csv"
    write_top_k(path, TopK(np.array(["a"], dtype=object), np.array([["w_1", "w_2"]], dtype=object),
                           np.array([[0.9, 0.1]]), np.array([0])))
    with pytest.raises(DataError, match="a top-k prediction file"):
        read_predictions(path, ["w_1", "w_2"])


def test_the_submission_lists_follow_the_sample_with_the_new_label_at_the_threshold(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"Image": ["b.jpg", "a.jpg"], "Id": "new_whale w_1 w_2 w_3 w_4"}).to_csv(sample, index=False)
    top = TopK(np.array(["a.jpg", "b.jpg"], dtype=object),
               np.array([[f"w_{i}" for i in range(1, 7)]] * 2, dtype=object),
               np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0.3, 0.2, 0.1, 0.05, 0.04, 0.03]]))
    record = IdentityRecord(top_k=6, metric_k=5, new_label="new_whale", threshold=0.55)
    out = identity_submission(top, record, [f"w_{i}" for i in range(1, 7)], sample, tmp_path / "test.csv")
    assert list(out["Image"]) == ["b.jpg", "a.jpg"]
    assert list(out["Id"]) == ["new_whale w_1 w_2 w_3 w_4", "w_1 w_2 w_3 w_4 new_whale"]
    never = identity_submission(top, record.model_copy(update={"threshold": None}), [f"w_{i}" for i in range(1, 7)],
                                sample, tmp_path / "test.csv")
    assert list(never["Id"]) == ["w_1 w_2 w_3 w_4 w_5"] * 2
    with pytest.raises(DataError, match="1 missing \\('b.jpg'\\)"):
        identity_submission(top.take(np.array([0])), record, ["w_1"], sample, tmp_path / "test.csv")


def test_a_folds_new_label_placement_never_reads_its_own_truth():
    """The nested score's lists: fold 0's rows are placed at the threshold tuned on folds 1 and 2, so making every
    fold-0 row new moves the in-sample threshold and leaves fold 0's lists as they were."""
    scores = np.sort(RNG.uniform(0.1, 0.9, (90, 6)), axis=1)[:, ::-1]
    ranked = np.array([RNG.permutation(CLASSES[:8])[:6] for _ in range(90)], dtype=object)
    folds = np.arange(90) % 3
    top = TopK(np.array([f"r{i}" for i in range(90)], dtype=object), ranked, scores, folds)
    new = RNG.random(90) < 0.3
    scores[new] *= 0.5  # an unseen individual's nearest rows are farther
    truth = np.where(new, "new_whale", ranked[:, 0]).astype(object)
    planted = truth.copy()
    planted[folds == 0] = "new_whale"
    before = nested_new_label_lists(top, truth, "new_whale", 5)
    after = nested_new_label_lists(top, planted, "new_whale", 5)
    held = np.flatnonzero(folds == 0)
    assert [before[i] for i in held] == [after[i] for i in held]
    assert tune_new_threshold(top, list(truth), 5, "new_whale")[0] != tune_new_threshold(top, list(planted), 5,
                                                                                         "new_whale")[0]
