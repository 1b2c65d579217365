"""The score stage: the OOF score exactly as the competition computes it, overall, per fold and per class.

Works on any folder with an ``oof.csv`` and a ``config.yaml`` (a run or an ensemble), or on an OOF file made by
another tool together with the training table (``score_oof_file``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import DataConfig
from .data import CompetitionData, load_train
from .errors import DataError, KagglecvError, summarize
from .files import write_json
from .metrics import (DEFAULT_METRIC, METRICS, average_precision_per_class, get_metric, recall_per_class, score)
from .predict import load_run_config
from .predictions import read_predictions


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


def score_run(run_path: Path, metric: str | None = None, write: bool = True) -> ScoreResult:
    """Score ``run_path/oof.csv`` against the run's training table; write ``score.json`` beside it."""
    run_path = Path(run_path)
    config = load_run_config(run_path)
    data = load_train(config.data.model_copy(update={"image_dir": None}))
    result = score_predictions_frame(read_predictions(run_path / "oof.csv", data.classes), data,
                                     metric or config.metric, source=run_path / "oof.csv")
    if write:
        write_json(run_path / "score.json", result.to_dict())
    return result


def score_oof_file(oof_path: Path, truth_path: Path, target: str | list[str] = "label", id_col: str = "id",
                   task: str | None = None, metric: str | None = None) -> ScoreResult:
    """Score an OOF file from anywhere; its value columns give the class order."""
    frame = pd.read_csv(oof_path, nrows=0)
    classes = [column for column in frame.columns if column not in ("id", "fold")]
    config = DataConfig(train_csv=truth_path, target=target, id_col=id_col, task=task,
                        classes=None if isinstance(target, list) else classes)
    data = load_train(config)
    return score_predictions_frame(read_predictions(oof_path, data.classes), data, metric, source=oof_path)


def score_predictions_frame(oof: pd.DataFrame, data: CompetitionData, metric: str | None, source: Path) -> ScoreResult:
    """Align OOF rows to the table by id (every id exactly once), then score overall, per fold and per class."""
    metric = metric or DEFAULT_METRIC[data.task]
    try:
        definition = get_metric(metric, data.task)
    except ValueError as exc:
        raise KagglecvError(f"--metric: {exc}") from None
    targets, scores, folds = _align(oof, data, source)
    overall = score(metric, data.task, targets, scores)
    per_fold = {}
    if folds is not None:
        for fold in np.unique(folds):
            mask = folds == fold
            try:
                per_fold[int(fold)] = score(metric, data.task, targets[mask], scores[mask])
            except ValueError:
                per_fold[int(fold)] = float("nan")
    fold_values = np.array(list(per_fold.values()), dtype=float)
    kind, per_class = _per_class(data, targets, scores)
    others = {}
    for name, other in METRICS.items():
        if data.task in other.tasks and name != metric:
            try:
                others[name] = score(name, data.task, targets, scores)
            except ValueError:
                continue
    return ScoreResult(
        metric=metric, higher_is_better=definition.higher_is_better, overall=overall, per_fold=per_fold,
        fold_mean=float(np.nanmean(fold_values)) if len(fold_values) else float("nan"),
        fold_std=float(np.nanstd(fold_values)) if len(fold_values) else float("nan"),
        per_class_kind=kind, per_class={name: value for name, value in zip(data.classes, per_class)},
        classes_without_positives=[name for name, value in zip(data.classes, per_class) if np.isnan(value)],
        other_metrics=others, rows=len(targets))


def _align(oof: pd.DataFrame, data: CompetitionData, source: Path):
    doubled = oof.loc[oof["id"].duplicated(), "id"].tolist()
    if doubled:
        raise DataError(f"{source}: {len(doubled)} ids appear more than once: {summarize(doubled)}")
    position = pd.Series(np.arange(len(data)), index=data.ids)
    unknown = [image_id for image_id in oof["id"] if image_id not in position.index]
    missing = sorted(set(data.ids) - set(oof["id"]))
    if unknown or missing:
        raise DataError(f"{source}: ids differ from {data.source}: {len(missing)} missing ({summarize(missing)}), "
                        f"{len(unknown)} unknown ({summarize(unknown)})")
    rows = position.loc[oof["id"]].to_numpy()
    scores = oof[data.classes].to_numpy(np.float64)
    folds = oof["fold"].to_numpy() if "fold" in oof.columns else None
    return data.targets[rows], scores, folds


def _per_class(data: CompetitionData, targets: np.ndarray, scores: np.ndarray) -> tuple[str, np.ndarray]:
    if data.task == "multilabel":
        return "AP", average_precision_per_class(targets, scores)
    return "recall", recall_per_class(targets, scores)
