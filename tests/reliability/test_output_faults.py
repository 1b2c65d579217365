"""Scores, ensembles and submissions refuse broken predictions instead of writing something wrong."""

import shutil

import numpy as np
import pandas as pd
import pytest

from kagglecv.core.errors import DataError
from kagglecv.stages.score import score_run


@pytest.mark.parametrize("bad", [np.nan, np.inf, "abc"])
def test_nan_inf_or_text_in_predictions_is_refused_naming_the_line(trained_runs, tmp_path, bad):
    run = tmp_path / "run"
    shutil.copytree(trained_runs[("multiclass", 1)].run_dir, run)
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    oof[oof.columns[2]] = oof[oof.columns[2]].astype(object)
    oof.iat[4, 2] = bad
    oof.to_csv(run / "oof.csv", index=False)
    with pytest.raises(DataError, match=r"oof\.csv: 1 rows with NaN, inf or non-numbers: line 6"):
        score_run(run)


def test_a_class_without_positives_in_a_fold_is_left_out_and_named(trained_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_runs[("multilabel", 1)].run_dir, run)
    result = score_run(run)
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert all(np.isfinite(value) for value in result.per_fold.values())
    assert np.isfinite(result.overall)
    train = pd.read_csv(trained_runs[("multilabel", 1)].data.train_csv, dtype=str, keep_default_na=False)
    present = {label for cell in train["labels"] for label in cell.split()}
    assert set(result.classes_without_positives) == set(oof.columns[2:]) - present
