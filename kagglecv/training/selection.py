"""Which weights a fold keeps: the best epoch on its validation rows (cross-validation), or the last epoch (a full
refit, which has no validation rows). The train stage decides which and hands the trainer one of the two.

``BestEpoch`` scores every weight source (raw, EMA, the average of kept epochs) each epoch, keeps each source's best
weights and, for the best overall, the fold's OOF predictions. ``LastEpoch`` keeps the last epoch's weights of the
source the CV folds chose. Both keep their state in the trainer's :class:`BestTracker` (saved in ``last.pt``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from kagglecv.core.config import Config
from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import DEFAULT_METRIC, LOSS, Metric, get_metric, score
from kagglecv.core.predictions import probabilities_from_logits, write_predictions
from kagglecv.nn.inference import run_inference
from kagglecv.nn.runtime import all_gather
from kagglecv.nn.weights import save_weights

if TYPE_CHECKING:  # the trainer hands itself in; this module never builds one
    from kagglecv.training.trainer import FoldTrainer


def main_metric(config: Config, task: str) -> str:
    """The metric that picks the best epoch: train.metric, else the competition metric, else the task's default."""
    name = config.train.metric if config.train.metric != "auto" else (config.metric or DEFAULT_METRIC[task])
    if name != "loss":
        try:
            get_metric(name, task)
        except ValueError as exc:
            raise KagglecvError(f"train.metric / metric: {exc}") from None
    return name


def selection_metric(metric: str, task: str) -> Metric:
    """The metric that picks the best epoch: a registered one, or the validation loss (``LOSS``)."""
    return LOSS if metric == "loss" else get_metric(metric, task)


def score_predictions(metric: str, task: str, targets: np.ndarray, probabilities: np.ndarray, loss: float) -> float:
    """The epoch-selection score, higher is better (the metric's objective; the loss negated)."""
    if metric == "loss":
        return LOSS.objective(loss)
    try:
        value = score(metric, task, targets, probabilities)
    except ValueError:  # e.g. ROC AUC of a fold holding one class: no score, never a best epoch
        return float("nan")
    return selection_metric(metric, task).objective(value)


def reported_score(metric: str, task: str, selection: float) -> float:
    """The metric's own value from the selection score (its objective)."""
    return selection_metric(metric, task).objective(selection)


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
    """Cross-validation: keep each source's best epoch on the fold's validation rows (``metric``), and the fold's
    OOF predictions of the best overall."""

    full_fit = False

    def __init__(self, metric: str):
        self.metric = metric

    def evaluate(self, trainer: FoldTrainer) -> dict:
        """This epoch's validation loss and metric of every source; each source's best weights kept."""
        row = {}
        for source in ("raw", "ema", "avg"):  # avg after raw: raw's score decides whether the epoch joins the average
            model = trainer.averaged_model() if source == "avg" else trainer.source_model(source)
            if model is None:
                continue
            rows, logits, loss = validation_logits(trainer, model)
            probabilities = probabilities_from_logits(logits, trainer.data.task)
            selection = score_predictions(self.metric, trainer.data.task, trainer.data.targets[rows], probabilities, loss)
            prefix = "val" if source == "raw" else f"{source}_val"
            row |= {f"{prefix}_loss": loss,
                    f"{prefix}_{self.metric}": reported_score(self.metric, trainer.data.task, selection)}
            self.keep_if_best(trainer, source, model, selection, rows, probabilities)
            if source == "raw":
                trainer.raw_score_of_epoch(selection)
        return row

    @staticmethod
    def keep_if_best(trainer: FoldTrainer, source: str, model: nn.Module, selection: float, rows: np.ndarray,
                     probabilities: np.ndarray) -> None:
        if not trainer.best.update(source, selection, trainer.epoch):
            return
        if trainer.runtime.is_main:
            save_weights(trainer.folder.weights(source), model.state_dict())
            if trainer.best.is_overall_best(source, trainer.epoch):
                write_predictions(trainer.folder.oof_path, trainer.data.ids[rows], probabilities, trainer.data.classes,
                                  folds=np.full(len(rows), trainer.folder.index))

    def finish(self, trainer: FoldTrainer) -> None:
        if trainer.best.epoch < 0:
            raise KagglecvError(f"fold {trainer.folder.index}: {self.metric} could not be computed on any epoch (NaN); "
                                "is every class present in this fold's validation rows?")


class LastEpoch:
    """A full refit: no validation rows; the last epoch's weights of ``source`` (the one most CV folds chose) are
    kept; for ``avg``, the average of the last ``avg_count`` epochs, since without validation there is no best."""

    full_fit = True

    def __init__(self, source: str, metric: str):
        self.source, self.metric = source, metric

    def evaluate(self, trainer: FoldTrainer) -> dict:
        if trainer.averager is not None:
            trainer.averager.add(trainer.epoch, math.nan, trainer.parts.model.state_dict())
        return {}

    def finish(self, trainer: FoldTrainer) -> None:
        source = self.source
        if (source == "ema" and trainer.parts.ema is None) or (source == "avg" and trainer.averager is None):
            source = "raw"
        state = trainer.averager.averaged_state() if source == "avg" else trainer.source_model(source).state_dict()
        if trainer.runtime.is_main:
            save_weights(trainer.folder.weights(source), state)
        trainer.best.score, trainer.best.epoch, trainer.best.source = math.nan, trainer.epoch - 1, source


def validation_logits(trainer: FoldTrainer, model: nn.Module) -> tuple[np.ndarray, np.ndarray, float]:
    """``(rows, logits, loss)`` of the fold's validation rows (gathered from every rank, in row order); the loss is
    CE per row, or BCE per label (whatever the training loss), so epochs and runs compare."""
    parts, task = trainer.parts, trainer.data.task
    rows, by_view = run_inference(model, parts.valid_loader, trainer.device, parts.amp_dtype,
                                  trainer.config.train.channels_last)
    logits = by_view["none"]
    targets = torch.as_tensor(parts.loss_targets[rows])
    multiclass = task == "multiclass"
    loss_fn = nn.CrossEntropyLoss(reduction="sum") if multiclass else nn.BCEWithLogitsLoss(reduction="sum")
    loss_sum = float(loss_fn(torch.as_tensor(logits), targets)) if len(rows) else 0.0
    gathered = all_gather((rows, logits, loss_sum), trainer.runtime)
    rows = np.concatenate([g[0] for g in gathered])
    logits = np.concatenate([g[1] for g in gathered])
    order = np.argsort(rows)
    per_row = 1 if multiclass else logits.shape[1]
    return rows[order], logits[order], sum(g[2] for g in gathered) / max(len(rows) * per_row, 1)
