"""The stack stage: a second-stage model (LightGBM by default) on the image runs' OOF predictions, the table beside
the images (``data.features``) and group-relative features, fitted on the runs' own folds.

It writes a run folder like any other (``oof.csv``: the nested predictions, ``test.csv``, ``score.json``,
``config.yaml``, ``run.json`` of kind ``stack``), so ``ensemble``, ``submit``, ``report``, ``pack`` and ``infer`` take
it as they take a run; ``stack.json`` and ``fold<K>/stack-<block>.<txt|json>`` are the model ``infer`` replays, and
``stack_score.json`` holds the best single run's, the in-sample and the nested scores. The fitting and its honesty
are :mod:`kagglecv.second.stacking`'s.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from kagglecv.core.blending import as_predictions
from kagglecv.core.config import Config, FeaturesConfig, dump_config, validate_config
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import atomic_folder, output_lock, write_json, write_text
from kagglecv.core.metrics import Metric
from kagglecv.core.outputs import OutputRule
from kagglecv.core.predictions import prediction_frame, write_predictions
from kagglecv.core.records import StackSettings
from kagglecv.core.runs import STACK_PREFIX, RunDir, member_reference
from kagglecv.data.features import check_test_categories, features_of, read_features
from kagglecv.data.inputs import competition_metric
from kagglecv.data.members import Members, load_members, read_embeddings, widest_range
from kagglecv.data.outcomes import StackResult
from kagglecv.data.scoring import score_predictions_frame
from kagglecv.second.design import DesignSpec, level_one_columns, level_one_names
from kagglecv.second.models import MODEL_SUFFIX, SECOND_MODELS, ModelSettings
from kagglecv.second.stacking import LevelOne, StackFit, fit_stack


def make_stack(paths: list[Path], model: str = "lightgbm", name: str | None = None, runs_dir: Path | None = None,
               metric: str | None = None, group: str | None = None, settings: dict | None = None,
               embeddings: bool = False) -> StackResult:
    """Fit ``model`` on the runs at ``paths`` and the features; write ``<runs_dir>/stack-<name>/`` whole or not at all.

    ``group``: the column whose groups give the group-relative features (``data.group_col`` when None; ``""`` for
    none). ``settings``: rounds, learning_rate, leaves, min_rows, alpha, seed (``StackSettings``' defaults).
    ``embeddings``: also each member's pre-logit features (``kagglecv embed``); fold k's model predicts the test rows
    with fold k's embeddings of them.
    """
    if model not in SECOND_MODELS:
        raise KagglecvError(f"--model {model!r}: expected one of {', '.join(SECOND_MODELS)}")
    try:
        chosen_settings = StackSettings(**(settings or {}))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise KagglecvError(f"--{str(error['loc'][0]).replace('_', '-')} {error.get('input')!r}: "
                            f"{error['msg'].lower()}") from None
    name = name or f"{model}-{len(paths)}"
    runs_dir = Path(runs_dir or Path(paths[0]).parent)
    out = OutputRule.of(paths).named(runs_dir, name, "--name", prefix=STACK_PREFIX)
    if RunDir(out).info_path.is_file() and RunDir(out).read_info().kind != "stack":
        raise KagglecvError(f"--name {name!r}: {out} is not a stack; refused to replace it")
    members = load_members(paths, minimum=1, what="a stack")
    config = validate_config(members.config)
    chosen = competition_metric(RunDir(paths[0]).read_config(), members.data, metric, "--metric")
    group = config.data.group_col if group is None else (group or None)
    spec, train, test = _level_one(members, config, group)
    if embeddings:
        spec, train, test = _with_embeddings(members, spec, train, test)
    fitted = fit_stack(spec, ModelSettings(kind=model, **chosen_settings.model_dump()), members.task,
                       len(members.classes), train, members.data.targets, members.folds, test)
    with output_lock(runs_dir / f".{out.name}.lock", str(out)):
        return _score_and_write(members, spec, fitted, chosen, out, model, chosen_settings,
                                {"group": group, "levels": train.features.levels()})


def _level_one(members: Members, config: Config, group: str | None) -> tuple[DesignSpec, LevelOne, LevelOne | None]:
    """The design's columns and the training and test rows' level-one inputs, every file checked first."""
    data = config.data
    if data.long_id is not None:
        raise KagglecvError("a stack of a long table: its rows are (image, class) pairs, not images; stack the "
                            "wide runs with features given one row per image")
    features = data.features or FeaturesConfig()
    names = level_one_names(members.paths, members.classes, members.task)
    spec = DesignSpec(names, list(features.numeric), list(features.categorical), group is not None)
    train = LevelOne(level_one_columns(members.oof, members.classes, members.task),
                     read_features(data.train_csv, data, members.data.ids, features, group))
    if members.test is None:
        return spec, train, None
    test_features = features_of(data.test_csv, data, members.test_ids, features, group)
    check_test_categories(test_features, train.features.levels())
    return spec, train, LevelOne(level_one_columns(members.test, members.classes, members.task), test_features)


def _with_embeddings(members: Members, spec: DesignSpec, train: LevelOne, test: LevelOne | None
                     ) -> tuple[DesignSpec, LevelOne, list[LevelOne] | None]:
    """The members' embeddings as the design's last columns: OOF rows for training, each fold's for the test."""
    read = [read_embeddings(path, members.data.ids, members.test_ids) for path in members.paths]
    names = tuple(f"{path.name}:e{index}" for path, found in zip(members.paths, read)
                  for index in range(found.oof.shape[1]))
    folds = sorted(int(fold) for fold in np.unique(members.folds))
    if test is not None:
        lacking = [path.name for path, found in zip(members.paths, read) if sorted(found.test) != folds]
        if lacking:
            raise KagglecvError(f"{', '.join(lacking)}: embeddings/ lacks a test_fold<K>.npy for folds {folds}; "
                                "run `kagglecv embed` on it again")
    train = replace(train, embeddings=np.concatenate([found.oof for found in read], axis=1))
    tests = None if test is None else [replace(test, embeddings=np.concatenate([found.test[fold] for found in read],
                                                                              axis=1)) for fold in folds]
    return replace(spec, embeddings=names), train, tests


def _score_and_write(members: Members, spec: DesignSpec, fitted: StackFit, metric: Metric, out: Path, model: str,
                     settings: StackSettings, table: dict) -> StackResult:
    """``table``: the group column used and every training row's category levels, as ``stack.json`` records them."""
    nested = as_predictions(fitted.nested, members.task)
    frame = prediction_frame(members.data.ids, nested, members.classes, folds=members.folds)
    scored = score_predictions_frame(frame, members.data, metric, source=out)
    singles = {path.name: members.data.score_of(metric, run) for path, run in zip(members.paths, members.oof)}
    best = max(singles.items(), key=lambda item: metric.objective(item[1]))
    in_sample = members.data.score_of(metric, as_predictions(fitted.in_sample, members.task))
    result = StackResult(out.name, model, metric.name, best, in_sample, scored.overall, scored.per_fold,
                         _importance(fitted, spec), 0 if fitted.test is None else len(fitted.test), out)
    with atomic_folder(out, replace=True) as building:
        run = RunDir(building)
        write_predictions(run.oof_path, members.data.ids, nested, members.classes, folds=members.folds)
        if fitted.test is not None:
            run.write_test_predictions(members.test_ids, as_predictions(fitted.test, members.task), members.classes)
        write_json(run.score_path, scored.to_dict())
        write_json(run.stack_score_path, {"metric": metric.name, "model": model, "single_scores": singles,
                                          "best_single": {"run": best[0], "score": best[1]},
                                          "in_sample": in_sample, "nested": scored.overall,
                                          "nested_per_fold": scored.per_fold, "importance": result.importance})
        for index, fold_model in enumerate(fitted.folds):
            for block, fitted_block in enumerate(fold_model.blocks):
                write_text(run.fold(index).stack_model(block, MODEL_SUFFIX[model]), fitted_block.text())
        run.write_stack_recipe({
            "model": model, "settings": settings.model_dump(), "metric": metric.name,
            "members": [path.name for path in members.paths], "predictions": spec.predictions,
            "numeric": spec.numeric, "categorical": spec.categorical,
            **table,
            "fold_levels": [fold_model.levels for fold_model in fitted.folds], "embeddings": list(spec.embeddings),
            "blocks": len(fitted.folds[0].blocks)})
        _write_run_files(run, members, out, model)
    return result


def _importance(fitted: StackFit, spec: DesignSpec) -> dict[str, float]:
    """LightGBM's total gain per design column (mean over the fold models and blocks), largest first."""
    gains = [block.booster.feature_importance("gain") for fold in fitted.folds for block in fold.blocks
             if hasattr(getattr(block, "booster", None), "feature_importance")]
    if not gains:
        return {}
    mean = np.mean(gains, axis=0)
    order = np.argsort(-mean)
    return {spec.names()[index]: float(mean[index]) for index in order}


def _write_run_files(run: RunDir, members: Members, out: Path, model: str) -> None:
    """config.yaml and run.json, so score, report, submit, pack and ensembles treat the folder as a run."""
    config = dict(members.config, experiment=out.name,
                  notes=f"{model} stack of " + ", ".join(path.name for path in members.paths))
    write_text(run.config_path, dump_config(validate_config(config)))
    run.write_info({
        "experiment": out.name, "kind": "stack",
        "members": [member_reference(path, out) for path in members.paths],
        "task": members.task, "classes": members.classes, "folds_sha256": members.folds_sha256,
        "folds_file": config.get("folds", {}).get("file"), "backbone": f"{model} stack of {len(members.paths)}",
        "n_folds": int(len(np.unique(members.folds))), "target_range": widest_range(members.paths),
        "created": pd.Timestamp.now().isoformat(timespec="microseconds"),
    })
