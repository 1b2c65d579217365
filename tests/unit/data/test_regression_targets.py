"""A numeric target read from coco128's real per-image tables (``objects.csv``: object counts and box cover): the
values as written, the task inferred from fractions, missing cells refused or dropped, and folds' bins."""

import numpy as np
import pandas as pd
import pytest

from kagglecv.core.config import DataConfig
from kagglecv.core.errors import DataError
from kagglecv.data.load import load_train
from kagglecv.data.table import DataWarning, target_bins
from tests.conftest import shared_dataset


@pytest.fixture
def objects(tmp_path) -> tuple[pd.DataFrame, object]:
    frame = pd.read_csv(shared_dataset("coco128-multilabel") / "objects.csv", dtype=str)
    table = frame[frame["split"] == "train"][["id", "n_objects", "box_cover"]]

    def written(rows: pd.DataFrame = table):
        path = tmp_path / "train.csv"
        rows.to_csv(path, index=False)
        return path
    return table, written


def test_fractions_are_a_regression_target_read_as_written(objects):
    table, written = objects
    data = load_train(DataConfig(train_csv=written(), target="box_cover"))
    assert data.task == "regression" and data.classes == ["box_cover"] and data.targets.dtype == np.float64
    np.testing.assert_array_equal(data.targets[:, 0], table["box_cover"].astype(float).to_numpy())
    both = load_train(DataConfig(train_csv=written(), target=["n_objects", "box_cover"], task="regression"))
    assert both.targets.shape == (len(table), 2) and both.positives().sum() == len(table)
    counts = load_train(DataConfig(train_csv=written(), target="n_objects"))
    assert counts.task == "multiclass", "whole numbers stay classes unless the task says regression"


def test_empty_targets_are_refused_by_line_or_dropped_with_a_warning(objects):
    table, written = objects
    holed = table.assign(box_cover=table["box_cover"].where(np.arange(len(table)) % 10 != 3, ""))
    path = written(holed)
    with pytest.raises(DataError, match=r"13 rows with an empty or NaN target: line 5, line 15"):
        load_train(DataConfig(train_csv=path, target="box_cover", task="regression"))
    with pytest.warns(DataWarning, match="left out 13 rows"):
        data = load_train(DataConfig(train_csv=path, target="box_cover", task="regression", missing_targets="drop"))
    assert len(data) == len(table) - 13 and np.isfinite(data.targets).all()
    assert not set(data.ids) & set(table["id"].to_numpy()[np.arange(len(table)) % 10 == 3])


def test_target_bins_cover_every_row_once_in_quantiles_of_sturges_count(objects):
    table, _ = objects
    values = table["n_objects"].astype(float).to_numpy()
    names, labels = target_bins(values)
    assert len(names) <= 1 + int(np.log2(len(values))) and labels.min() == 0 and labels.max() == len(names) - 1
    for label, name in enumerate(names):
        low, high = map(float, name.strip("[]()").split(", "))
        inside = values[labels == label]
        assert inside.min() >= low and (inside.max() <= high if name.endswith("]") else inside.max() < high)
    assert np.bincount(labels).min() >= len(values) // (2 * len(names))  # quantiles: no bin of a few rows


def test_answers_gather_each_answers_rows_by_mean_or_max_in_order_of_first_appearance():
    from kagglecv.data.table import Answers

    keys = np.array(["7_L", "7_R", "7_L", "9_L", "7_R", "7_L"], dtype=object)
    values = np.array([[0.1], [0.8], [0.4], [0.3], [0.2], [0.7]])
    for how, expected in (("mean", [0.4, 0.5, 0.3]), ("max", [0.7, 0.8, 0.3])):
        ids, gathered, first = Answers(keys, how).gather(values)
        assert ids.tolist() == ["7_L", "7_R", "9_L"] and first.tolist() == [0, 1, 3]
        np.testing.assert_allclose(gathered[:, 0], expected)
    rows = np.array([4, 3, 1])  # a fold's rows, in its order: positions of first rows are in that order
    ids, gathered, first = Answers(keys, "mean").gather(values[rows], rows)
    assert ids.tolist() == ["7_R", "9_L"] and first.tolist() == [0, 1]
    np.testing.assert_allclose(gathered[:, 0], [0.5, 0.3])
