"""The selection policies on their own: what a fold keeps, epoch by epoch, with no trainer, model or data."""

import math

import pytest

from kagglecv.core.errors import KagglecvError
from kagglecv.training.selection import (
    BestEpoch,
    BestTracker,
    LastEpoch,
    reported_score,
    score_predictions,
)


def test_each_source_keeps_its_own_best_and_the_overall_best_follows_the_highest():
    best, policy = BestTracker(), BestEpoch("accuracy")
    assert policy.keep(best, "raw", 0, 0.6)
    assert policy.keep(best, "ema", 0, 0.55)           # ema's first score: its best, not the overall
    assert best.is_overall_best("raw", 0) and not best.is_overall_best("ema", 0)
    assert not policy.keep(best, "raw", 1, 0.59)       # raw did worse: not kept
    assert policy.keep(best, "ema", 1, 0.7)            # ema's best and now the overall
    assert best.is_overall_best("ema", 1) and (best.score, best.epoch, best.source) == (0.7, 1, "ema")


def test_nan_is_never_kept_and_patience_counts_the_epochs_since_the_best():
    best, policy = BestTracker(), BestEpoch("roc_auc")
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
    BestEpoch("accuracy").keep(best, "raw", 2, 0.8)
    best.end_epoch()
    again = BestTracker()
    again.load_state_dict(best.state_dict())
    assert again.state_dict() == best.state_dict()
    assert not BestEpoch("accuracy").keep(again, "raw", 3, 0.79)


def test_no_computable_epoch_is_one_error_naming_the_fold():
    with pytest.raises(KagglecvError, match="fold 2: roc_auc could not be computed on any epoch"):
        BestEpoch("roc_auc").finish(BestTracker(), 2)


def test_a_lower_is_better_metric_is_selected_by_its_objective_and_reported_as_itself():
    assert score_predictions("loss", "multiclass", None, None, 0.3) == -0.3
    assert reported_score("loss", "multiclass", -0.3) == 0.3
    best, policy = BestTracker(), BestEpoch("log_loss")
    policy.keep(best, "raw", 0, -0.9)
    assert policy.keep(best, "raw", 1, -0.4)            # log loss 0.4 beats 0.9
    assert reported_score("log_loss", "multiclass", best.score) == 0.4


def test_a_full_refit_keeps_nothing_on_the_way_and_falls_back_to_raw_weights():
    policy = LastEpoch("ema", "accuracy")
    assert not policy.validates and not policy.keep(BestTracker(), "raw", 0, 0.9)
    assert policy.final_source(has_ema=True, has_average=False) == "ema"
    assert policy.final_source(has_ema=False, has_average=False) == "raw"
    assert LastEpoch("avg", "accuracy").final_source(has_ema=True, has_average=False) == "raw"
