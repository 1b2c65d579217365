"""The selection policies on their own: what a fold keeps, epoch by epoch, with no trainer, model or data."""

import math

import pytest

from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import LOSS, get_metric
from kagglecv.training.selection import (
    BestEpoch,
    BestTracker,
    LastEpoch,
    epoch_metric,
    score_predictions,
)

ACCURACY = get_metric("accuracy", "multiclass")


def test_each_source_keeps_its_own_best_and_the_overall_best_follows_the_highest():
    best, policy = BestTracker(), BestEpoch(ACCURACY)
    assert policy.keep(best, "raw", 0, 0.6)
    assert policy.keep(best, "ema", 0, 0.55)           # ema's first score: its best, not the overall
    assert best.is_overall_best("raw", 0) and not best.is_overall_best("ema", 0)
    assert not policy.keep(best, "raw", 1, 0.59)       # raw did worse: not kept
    assert policy.keep(best, "ema", 1, 0.7)            # ema's best and now the overall
    assert best.is_overall_best("ema", 1) and (best.score, best.epoch, best.source) == (0.7, 1, "ema")


def test_nan_is_never_kept_and_patience_counts_the_epochs_since_the_best():
    best, policy = BestTracker(), BestEpoch(get_metric("roc_auc", "binary"))
    assert not policy.keep(best, "raw", 0, math.nan)
    best.end_epoch()
    assert policy.keep(best, "raw", 1, 0.5)
    best.end_epoch()
    for epoch in (2, 3):
        assert not policy.keep(best, "raw", epoch, math.nan)
        best.end_epoch()
    assert best.epochs_since_best == 2 and best.epoch == 1


def test_the_tracker_resumes_exactly_from_its_state():
    best = BestTracker()
    BestEpoch(ACCURACY).keep(best, "raw", 2, 0.8)
    best.end_epoch()
    again = BestTracker()
    again.load_state_dict(best.state_dict())
    assert again.state_dict() == best.state_dict()
    assert not BestEpoch(ACCURACY).keep(again, "raw", 3, 0.79)


def test_no_computable_epoch_is_one_error_naming_the_fold():
    with pytest.raises(KagglecvError, match="fold 2: roc_auc could not be computed on any epoch"):
        BestEpoch(get_metric("roc_auc", "binary")).finish(BestTracker(), 2)


def test_a_lower_is_better_metric_is_selected_by_its_objective_and_reported_as_itself():
    assert score_predictions(LOSS, None, None, None, 0.3) == -0.3
    assert LOSS.objective(-0.3) == 0.3
    best, policy = BestTracker(), BestEpoch(get_metric("log_loss", "multiclass"))
    policy.keep(best, "raw", 0, -0.9)
    assert policy.keep(best, "raw", 1, -0.4)            # log loss 0.4 beats 0.9
    assert get_metric("log_loss", "multiclass").objective(best.score) == 0.4


def test_a_full_refit_keeps_nothing_on_the_way_and_falls_back_to_raw_weights():
    policy = LastEpoch("ema", ACCURACY)
    assert not policy.validates and not policy.keep(BestTracker(), "raw", 0, 0.9)
    assert policy.final_source(has_ema=True, has_average=False) == "ema"
    assert policy.final_source(has_ema=False, has_average=False) == "raw"
    assert LastEpoch("avg", ACCURACY).final_source(has_ema=True, has_average=False) == "raw"


def test_the_epoch_metric_is_the_competitions_unless_train_metric_names_another():
    competition = get_metric("f1_macro", "multiclass")
    assert epoch_metric("auto", competition, "multiclass") is competition
    assert epoch_metric("loss", competition, "multiclass") is LOSS
    assert epoch_metric("log_loss", competition, "multiclass").name == "log_loss"
    with pytest.raises(KagglecvError, match="train.metric: metric 'roc_auc' does not apply to a multiclass task"):
        epoch_metric("roc_auc", competition, "multiclass")
