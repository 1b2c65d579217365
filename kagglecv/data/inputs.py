"""The competition as the stages see it: the training table, its folds file and the test table; a run's table.

Read, validated and hashed once; ``kagglecv run`` hands one ``StageInputs`` to every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.config import Config
from kagglecv.core.errors import ConfigError, DataError, summarize
from kagglecv.core.metric_file import (
    FrameLayout,
    metric_file_metric,
    require_named,
    same_metric_file,
)
from kagglecv.core.metrics import Metric, heads_metric, is_metric_file, resolve_metric
from kagglecv.core.predictions import compare_ids
from kagglecv.core.records import RunInfo
from kagglecv.core.runs import RunDir
from kagglecv.core.shapes import SubmissionShape
from kagglecv.data.cache import CACHE_FOLDER, with_cached_images
from kagglecv.data.features import with_features
from kagglecv.data.load import load_test, load_train
from kagglecv.data.table import CompetitionData, read_csv_strings


@dataclass
class StageInputs:
    data: CompetitionData
    fold_of: np.ndarray
    test: CompetitionData | None
    metric: Metric  # the competition's (config.metric), resolved once

    @property
    def n_folds(self) -> int:
        return int(self.fold_of.max()) + 1


def read_folds(path: Path, data: CompetitionData) -> np.ndarray:
    """The fold of every row of ``data``, read from a folds CSV; every id must appear exactly once."""
    if not Path(path).is_file():
        raise DataError(f"folds file not found: {path}; make it with `kagglecv folds CONFIG`")
    try:
        frame = pd.read_csv(path, dtype={"id": str, "fold": int}, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a folds file (id,fold with integer folds): {' '.join(str(exc).split())[:160]}; "
                        "re-run `kagglecv folds`") from None
    if list(frame.columns[:2]) != ["id", "fold"] or (frame["fold"] < 0).any():
        raise DataError(f"{path}: expected columns id,fold with folds >= 0; re-run `kagglecv folds`")
    differences = compare_ids(frame["id"], data.ids)
    if differences.doubled:
        raise DataError(f"{path}: duplicate ids: {summarize(differences.doubled)}")
    differences = replace(differences, extra=[image_id for image_id in differences.extra
                                              if image_id not in data.dropped_ids])
    if differences:
        raise DataError(f"{path}: does not match {data.source}: {len(differences.missing)} ids missing "
                        f"({summarize(differences.missing, quote=True)}), {len(differences.extra)} ids extra "
                        f"({summarize(differences.extra, quote=True)}); re-run `kagglecv folds`")
    fold_of = dict(zip(frame["id"], frame["fold"]))
    return np.array([fold_of[image_id] for image_id in data.ids], dtype=np.int64)


def load_stage_inputs(config: Config, data: CompetitionData | None = None) -> StageInputs:
    """The config's tables and folds file, each checked; ``data`` when the caller has read the training table."""
    data = data if data is not None else load_train(config.data)
    metric = competition_metric(config, data)
    fold_of = read_folds(Path(config.folds.file), data)
    test = load_test(config.data, data.classes, data.task) if config.data.has_test() else None
    if config.model.features_head is not None:  # a fusion model reads each row's features beside its image
        data = with_features(data, config.data)
        test = None if test is None else with_features(test, config.data)
    cache = Path(config.runs_dir) / CACHE_FOLDER
    data = with_cached_images(data, config.data.cache, cache)
    test = None if test is None else with_cached_images(test, config.data.cache, cache)
    return StageInputs(data, fold_of, test, metric)


def load_run_table(run: RunDir, config: Config | None = None, info: RunInfo | None = None, *,
                   with_images: bool = False) -> CompetitionData:
    """The run's training table (ids, targets, classes; images when asked), checked against the recorded classes.

    ``config`` and ``info`` are ``run``'s, when the caller has read them already.
    """
    config = config or run.read_config()
    try:
        data = load_train(config.data, with_images=with_images)
        if config.model.features_head is not None and with_images:
            data = with_features(data, config.data)
    except DataError as exc:
        raise DataError(f"{run.path}: cannot read the training table it was made from: {exc}") from None
    info = info or run.read_info()
    if info.classes != data.classes or info.task != data.task:
        raise DataError(f"{run.path}: {config.data.train_csv} changed since the run: now {data.task} with classes "
                        f"{summarize(data.classes, quote=True)}, the run has {info.task} with "
                        f"{summarize(info.classes, quote=True)}")
    return data


def competition_metric(config: Config, data: CompetitionData, name: str | None = None, key: str = "metric") -> Metric:
    """The metric called ``name`` (the config's ``metric`` when None; the task's default when neither) for ``data``.

    A metric file scores through frames shaped like the training table's targets and the sample submission, so
    it is made here, with the run's table, and only for the config that names it (its direction is the config's).
    """
    name = name or config.metric
    if not is_metric_file(name):
        metric = resolve_metric(name, data.scored_task, key)
        return heads_metric(metric.name, data.classes) if data.scored_task == "heads" else metric
    if is_metric_file(config.metric):
        require_named(Path(config.metric))
    if not (is_metric_file(config.metric) and same_metric_file(name, config.metric)):
        raise ConfigError(f"{key} {name}: a metric file scores the runs whose config names it (this run's metric is "
                          f"{config.metric or 'the task default'}); pass --metric {config.metric or 'NAME'}")
    submit = config.submit
    sample = read_csv_strings(submit.sample)
    data = data.scored()
    fmt, top_k = SubmissionShape.of(submit).resolve(sample, data.classes, data.task, submit.sample)
    layout = FrameLayout(data.task, data.classes, sample.columns[0], config.data.target, config.data.label_sep,
                         list(sample.columns[1:]), fmt, top_k,
                         submit.threshold if isinstance(submit.threshold, float) else 0.5)
    return metric_file_metric(config.metric, config.metric_direction, layout)
