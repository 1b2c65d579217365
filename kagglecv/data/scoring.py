"""The OOF score exactly as the competition computes it, overall, per fold and per class, in memory: the library
of the score stage (which writes ``score.json``), of ``ensemble``, ``report``, ``submit`` and ``track``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import (
    METRICS,
    Metric,
    average_precision_per_class,
    map_at_k_lists,
    recall_per_class,
)
from kagglecv.core.predictions import head_blocks, read_predictions, require_same_ids
from kagglecv.core.runs import RunDir
from kagglecv.core.topk import (
    nested_new_label_lists,
    new_identity_truth,
    read_top_k,
    with_new_label,
)
from kagglecv.data.inputs import competition_metric, load_run_table
from kagglecv.data.table import Coarse, CompetitionData


@dataclass
class ScoreResult:
    metric: str
    higher_is_better: bool
    overall: float
    per_fold: dict[int, float]
    fold_mean: float
    fold_std: float
    per_class_kind: str
    per_class: dict[str, float]
    classes_without_positives: list[str]
    other_metrics: dict[str, float] = field(default_factory=dict)
    rows: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def run_score(run: RunDir, metric: str | None = None, data: CompetitionData | None = None) -> ScoreResult:
    """The OOF score of ``run/oof.csv`` against the run's training table (``data``, when the caller has read it),
    in memory: the score stage writes it as ``score.json``; submit, track and report write nothing into a run."""
    if run.is_full_fit():
        raise KagglecvError(f"{run.path}: a full-data refit has no OOF predictions and no CV score of its own; "
                            f"score its CV run {run.read_info().cv_run}")
    config = run.read_config()
    data = data if data is not None else load_run_table(run, config)
    chosen = competition_metric(config, data, metric, "--metric")
    if config.model.identity is not None:
        return score_identities(run, data, chosen)
    return score_predictions_frame(read_predictions(run.oof_path, data.classes), data, chosen, source=run.oof_path)


def score_identities(run: RunDir, data: CompetitionData, metric: Metric) -> ScoreResult:
    """A ``model.identity`` run's OOF MAP@k against each row's identity or, where its fold's training part lacks it,
    the new label (as on the test): each fold's rows with the new label at the threshold tuned on the other folds'
    rows (nested, as an ensemble's weights are); in ``other_metrics`` the in-sample threshold's score (the recorded
    one, which submit applies) and MAP@k without the new label."""
    record = run.read_identity_record()
    if metric.name != f"map@{record.metric_k}":
        raise KagglecvError(f"--metric {metric.name}: {run.path} ranks identities for map@{record.metric_k}")
    top = read_top_k(run.oof_path)
    require_same_ids(top.ids, data.ids, run.oof_path, data.source, "unknown")
    top = top.ordered_as(data.ids)
    labels = data.class_names()
    truth = labels if record.new_label is None else new_identity_truth(labels, top.folds, record.new_label)
    k = record.metric_k
    tuned = record.new_label is not None and record.threshold is not None
    lists = nested_new_label_lists(top, truth, record.new_label, k) if tuned else top.lists()
    per_fold = {int(fold): map_at_k_lists(list(truth[top.folds == fold]),
                                          [lists[row] for row in np.flatnonzero(top.folds == fold)], k)
                for fold in np.unique(top.folds)}
    values = np.array(list(per_fold.values()))
    others = {"map_without_new_label": map_at_k_lists(list(truth), [row[:k] for row in top.lists()], k)}
    if tuned:
        others["map_in_sample_threshold"] = map_at_k_lists(
            list(truth), with_new_label(top, record.threshold, record.new_label, k), k)
    if record.new_label is not None:
        others["new_label_rows"] = float((truth == record.new_label).mean())
    return ScoreResult(metric=metric.name, higher_is_better=True, overall=map_at_k_lists(list(truth), lists, k),
                       per_fold=per_fold, fold_mean=float(values.mean()), fold_std=float(values.std()),
                       per_class_kind="", per_class={}, classes_without_positives=[], other_metrics=others,
                       rows=len(truth))


def finished_folds_oof(run: RunDir, data: CompetitionData, folds: list[int] | None = None
                       ) -> tuple[pd.DataFrame, CompetitionData]:
    """The OOF predictions of the finished ``folds`` of a run (all finished folds when None), from their
    ``fold<K>/oof.csv``, and the training table restricted to their rows: what a run whose other folds have not
    finished (a tune trial on fold 0, a run still training) is scored on."""
    chosen = [fold for fold in run.fold_dirs() if fold.is_done() and (folds is None or fold.index in folds)]
    if not chosen:
        raise KagglecvError(f"{run.path}: no finished fold{'' if folds is None else f' among {folds}'}")
    oof = pd.concat([read_predictions(fold.oof_path, data.classes) for fold in chosen], ignore_index=True)
    return oof, data.subset(np.isin(data.ids, oof["id"].to_numpy(dtype=object)))


def score_predictions_frame(oof: pd.DataFrame, data: CompetitionData, metric: Metric, source: Path) -> ScoreResult:
    """Align OOF rows to the table by id (every id exactly once), then score overall, per fold and per class (of the
    competition's target, when training on a finer label)."""
    if data.coarse is not None:
        oof = coarse_frame(oof, data.classes, data.coarse)
        data = data.scored()
    targets, scores, folds = _align(oof, data, source)
    overall = metric.score(targets, scores)
    per_fold = {}
    if folds is not None:
        for fold in np.unique(folds):
            mask = folds == fold
            per_fold[int(fold)] = metric.score_or_nan(targets[mask], scores[mask])
    fold_values = np.array(list(per_fold.values()), dtype=float)
    kind, per_class = _per_class(data, targets, scores, metric)
    others = {}  # top-5 accuracy is always 1 with five classes or fewer (and sklearn warns so): left out
    for name, other in METRICS.items():
        if data.task in other.tasks and name != metric.name and not (name == "top5_accuracy" and len(data.classes) <= 5):
            try:
                others[name] = other.score(targets, scores)
            except ValueError:
                continue
    return ScoreResult(
        metric=metric.name, higher_is_better=metric.higher_is_better, overall=overall, per_fold=per_fold,
        fold_mean=float(np.nanmean(fold_values)) if len(fold_values) else float("nan"),
        fold_std=float(np.nanstd(fold_values)) if len(fold_values) else float("nan"),
        per_class_kind=kind, per_class={name: value for name, value in zip(data.classes, per_class)},
        classes_without_positives=[name for name, value in zip(data.classes, per_class) if np.isnan(value)],
        other_metrics=others, rows=len(targets))


def coarse_frame(frame: pd.DataFrame, fine_classes: list[str], coarse: Coarse) -> pd.DataFrame:
    """A prediction frame of fine classes as one of the coarse target's classes (each the sum of its fine ones)."""
    kept = frame[[column for column in ("id", "fold") if column in frame.columns]].reset_index(drop=True)
    values = coarse.probabilities(frame[fine_classes].to_numpy(np.float64))
    return pd.concat([kept, pd.DataFrame(values, columns=coarse.classes)], axis=1)


def _align(oof: pd.DataFrame, data: CompetitionData, source: Path):
    """Targets, scores and folds of the OOF rows; of their answers, when several images make one answer."""
    require_same_ids(oof["id"], data.ids, source, data.source, "unknown")
    rows = pd.Series(np.arange(len(data)), index=data.ids).loc[oof["id"]].to_numpy()
    scores = oof[data.classes].to_numpy(np.float64)
    folds = oof["fold"].to_numpy() if "fold" in oof.columns else None
    targets, scores, first = data.as_answers(scores, rows)
    return targets, scores, folds if folds is None or first is None else folds[first]


def _per_class(data: CompetitionData, targets: np.ndarray, scores: np.ndarray, metric: Metric) -> tuple[str, np.ndarray]:
    if data.task == "regression":  # the metric of each target column
        return metric.name, np.array([metric.score_or_nan(targets[:, [column]], scores[:, [column]])
                                      for column in range(targets.shape[1])])
    if data.task == "multilabel":
        return "AP", average_precision_per_class(targets, scores)
    if data.task == "heads":  # each head's classes' recall, head by head
        return "recall", np.concatenate([recall_per_class(targets[:, index], scores[:, block])
                                         for index, (_, block) in enumerate(head_blocks(data.classes))])
    return "recall", recall_per_class(targets, scores)
