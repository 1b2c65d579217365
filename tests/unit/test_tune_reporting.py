"""What a tune trial reports to Optuna's pruner each epoch: the best weight source's value, in the study's direction,
so trials are ranked as the study ranks them, whatever metric the epochs were selected by."""

import pandas as pd
import pytest

from kagglecv.core.metrics import LOSS, get_metric
from kagglecv.core.runs import RunDir
from kagglecv.workflows.tune import epoch_values

ACCURACY = get_metric("accuracy", "multiclass")
LOG_LOSS = get_metric("log_loss", "multiclass")


def fold_with_history(tmp_path, **columns):
    fold = RunDir(tmp_path / "run").fold(0)
    fold.path.mkdir(parents=True)
    epochs = len(next(iter(columns.values())))
    pd.DataFrame({"epoch": list(range(epochs)), **columns}).to_csv(fold.history_path, index=False)
    return fold


def test_the_study_metric_is_reported_as_itself_from_the_best_source(tmp_path):
    fold = fold_with_history(tmp_path, val_accuracy=[0.5, 0.7, 0.6], ema_val_accuracy=[0.55, 0.65, 0.8])
    assert epoch_values(fold, ACCURACY, ACCURACY) == [(0, 0.55), (1, 0.7), (2, 0.8)]
    fold = fold_with_history(tmp_path / "l", val_log_loss=[0.9, 0.4], ema_val_log_loss=[0.8, 0.5])
    assert epoch_values(fold, LOG_LOSS, LOG_LOSS) == [(0, 0.8), (1, 0.4)]  # the lower loss of the two sources


@pytest.mark.parametrize("study", [ACCURACY, LOG_LOSS])
def test_a_better_epoch_of_another_metric_ranks_better_in_the_studys_direction(tmp_path, study):
    """train.metric: loss under a study of accuracy (or of log loss): a falling loss must read as improving."""
    fold = fold_with_history(tmp_path, val_loss=[0.9, 0.5, 0.7])
    values = [value for _, value in epoch_values(fold, LOSS, study)]
    ranked = sorted(range(3), key=lambda epoch: study.objective(values[epoch]), reverse=True)
    assert ranked == [1, 2, 0]


def test_a_history_without_the_metric_reports_nothing(tmp_path):
    fold = fold_with_history(tmp_path, val_f1_macro=[0.5, 0.6, 0.7])
    assert epoch_values(fold, ACCURACY, ACCURACY) == []
