"""Which weights a fold keeps: a policy the train stage hands the trainer, knowing nothing of the trainer.

``BestEpoch`` keeps each weight source's (raw, EMA, the average of kept epochs) best epoch on the fold's validation
rows: ``keep(best, source, epoch, value)`` answers for each score the trainer measured. ``LastEpoch`` is a full refit's:
nothing is validated, and the last epoch's weights of the source the CV folds chose are kept. The state is a
:class:`BestTracker` the trainer holds (saved in ``last.pt``). The validation pass itself is
:mod:`kagglecv.training.validation`.
"""

from __future__ import annotations

import math

import numpy as np

from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import LOSS, Metric, get_metric


def epoch_metric(train_metric: str, competition: Metric, task: str) -> Metric:
    """The metric that picks the best epoch: ``train.metric`` (``auto``: the competition's; ``loss``: the validation
    loss, :data:`~kagglecv.core.metrics.LOSS`)."""
    if train_metric == "auto":
        return competition
    if train_metric == "loss":
        return LOSS
    try:
        return get_metric(train_metric, task)
    except ValueError as exc:
        raise KagglecvError(f"train.metric: {exc}") from None


def score_predictions(metric: Metric, data, rows: np.ndarray, probabilities: np.ndarray, loss: float) -> float:
    """The epoch-selection score of the table's ``rows`` (``data.score_of``: of their answers, when several images
    make one), higher is better: the metric's objective, or the loss negated."""
    return LOSS.objective(loss) if metric is LOSS else metric.objective(data.score_of(metric, probabilities, rows))


class BestTracker:
    """The best selection score of each weight source (raw, EMA), the best overall, and epochs since it improved.

    Scores are higher-is-better selection scores; NaN never counts as an improvement.
    """

    def __init__(self) -> None:
        self.by_source = {"raw": -math.inf, "ema": -math.inf, "avg": -math.inf}
        self.score, self.epoch, self.source = -math.inf, -1, "raw"
        self.epochs_since_best = 0

    def update(self, source: str, value: float, epoch: int) -> bool:
        """Record ``source``'s score of ``epoch``; True when it beats that source's best (its weights are kept)."""
        if not value > self.by_source[source]:
            return False
        self.by_source[source] = value
        if value > self.score:
            self.score, self.epoch, self.source = value, epoch, source
            self.epochs_since_best = -1  # end_epoch makes it 0
        return True

    def is_overall_best(self, source: str, epoch: int) -> bool:
        return self.epoch == epoch and self.source == source

    def end_epoch(self) -> None:
        self.epochs_since_best += 1

    def state_dict(self) -> dict:
        return {**self.by_source, "overall": self.score, "epoch": self.epoch, "source": self.source,
                "stale": self.epochs_since_best}

    def load_state_dict(self, state: dict) -> None:
        self.by_source = {"raw": state["raw"], "ema": state["ema"], "avg": state.get("avg", -math.inf)}
        self.score, self.epoch, self.source = state["overall"], state["epoch"], state["source"]
        self.epochs_since_best = state["stale"]


class BestEpoch:
    """Cross-validation: keep each source's best epoch on the fold's validation rows (``metric``); the trainer writes
    the fold's OOF predictions of the best overall."""

    full_fit = False
    validates = True

    def __init__(self, metric: Metric):
        self.metric = metric

    @staticmethod
    def keep(best: BestTracker, source: str, epoch: int, value: float) -> bool:
        """Whether ``source``'s weights of ``epoch`` (selection score ``value``) are kept: the best of that source so
        far; NaN never is."""
        return best.update(source, value, epoch)

    def finish(self, best: BestTracker, fold: int) -> None:
        if best.epoch < 0:
            raise KagglecvError(f"fold {fold}: {self.metric.name} could not be computed on any epoch (NaN); is every class "
                                "present in this fold's validation rows?")


class LastEpoch:
    """A full refit: no validation rows; the last epoch's weights of ``source`` (the one most CV folds chose) are
    kept; for ``avg``, the average of the last ``avg_count`` epochs, since without validation there is no best."""

    full_fit = True
    validates = False

    def __init__(self, source: str, metric: Metric):
        self.source, self.metric = source, metric

    @staticmethod
    def keep(best: BestTracker, source: str, epoch: int, value: float) -> bool:
        return False

    def final_source(self, has_ema: bool, has_average: bool) -> str:
        """The source whose last weights are kept: the chosen one, or raw when this run has no such weights."""
        if (self.source == "ema" and not has_ema) or (self.source == "avg" and not has_average):
            return "raw"
        return self.source

    def finish(self, best: BestTracker, fold: int) -> None:
        """No best epoch: the record says the last one."""


