"""The predict stage: each fold's best weights on its held-out rows and on the test set, with test-time
augmentation (TTA), folds averaged, written as the run's ``oof.csv`` and ``test.csv``.

Each image is decoded once; every TTA view is made from the batch tensor (flips, transposes, rotations, rescaling).
``tta: auto`` scores each candidate view on the OOF rows and keeps it only when it improves the score
(greedy forward selection), and records every candidate's score in ``predict.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kagglecv.core.config import Config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import map_k_of
from kagglecv.core.predictions import (
    combine_views,
    read_aligned,
    write_predictions,
)
from kagglecv.core.runs import RunDir
from kagglecv.core.topk import blend_top_k, concat_top_k, read_top_k, write_top_k
from kagglecv.data.inputs import StageInputs, load_stage_inputs
from kagglecv.nn.inference import tta_view
from kagglecv.nn.recipe import RunRecipe, fold_weights, held_out_view_logits
from kagglecv.second.identities import (
    fold_top_k,
    identity_labels,
    known_identity_rows,
    tuned_identities,
)

AUTO_CANDIDATES = ("hflip", "vflip", "transpose", "scale:0.875", "scale:1.15")


@dataclass
class PredictResult:
    tta: list[str]
    oof_score: float
    metric: str
    candidate_scores: dict[str, float]


def predict_run(run_path: Path, tta: list[str] | str | None = None, console: Console | None = None,
                inputs: StageInputs | None = None) -> PredictResult:
    """Predict every fold's held-out rows and the test set with TTA; rewrite the run's oof.csv and test.csv.

    Args:
        run_path: ``runs/<experiment>`` of a trained run (every fold done).
        tta: views to average, or ``"auto"``; the config's ``predict.tta`` when None.
        inputs: the tables and folds, when the caller has read them (``kagglecv run``).
    """
    console = console or Console()
    run = RunDir(run_path)
    config = run.read_config()
    run.for_writing("predict")
    tta = config.predict.tta if tta is None else tta
    views = ["none", *AUTO_CANDIDATES] if tta == "auto" else list(tta)
    for name in views:
        tta_view(name)
    inputs = inputs or load_stage_inputs(config)
    data, fold_of, test, n_folds = inputs.data, inputs.fold_of, inputs.test, inputs.n_folds
    missing = [fold for fold in range(n_folds) if not run.fold(fold).is_done()]
    if missing:
        raise KagglecvError(f"{run.path}: folds {missing} are not trained yet; run `kagglecv train` first")
    if config.model.identity is not None:
        if views != ["none"]:
            raise KagglecvError(f"--tta {tta}: a model.identity run predicts without TTA (none)")
        return predict_identities(run, config, inputs, console)
    recipe = RunRecipe(run, config, data.task, data.classes, views, config.predict.tta_space,
                       fold_weights(run, config, n_folds, predicted=True))
    oof_logits = held_out_view_logits(recipe, data.images, fold_of, views, console, data.features)
    metric = inputs.metric
    chosen, candidate_scores = _choose_views(views, oof_logits, data, metric, config.predict.tta_space, tta == "auto")
    oof = combine_views([oof_logits[name] for name in chosen], data.task, config.predict.tta_space)
    run.predict_path.unlink(missing_ok=True)  # written last: its presence says oof.csv and test.csv are whole
    write_predictions(run.oof_path, data.ids, oof, data.classes, folds=fold_of)
    if test is not None:
        recipe.views = chosen
        for fold in range(n_folds):  # each fold's own: what a student's fold k may learn from
            probabilities = recipe.predict_fold(fold, test.images, np.arange(len(test)), features=test.features)
            run.fold(fold).write_test_predictions(test.ids, probabilities, data.classes)
            console.line(f"fold {fold}: predicted {len(test)} test rows with TTA {chosen}")
        run.write_fold_mean_test(data.classes, n_folds)
    return _record(run, config, metric.name, data.score_of(metric, oof), chosen, candidate_scores,
                   tta == "auto", console)


def trained_predictions_suffice(config: Config) -> bool:
    """True when ``predict`` would only repeat the train stage: no TTA, and the weights each fold selected (never
    for identities, which the predict stage ranks by neighbours)."""
    return config.predict.tta == ["none"] and config.predict.weights == "auto" and config.model.identity is None


def predict_identities(run: RunDir, config: Config, inputs: StageInputs, console: Console) -> PredictResult:
    """A ``model.identity`` run's ``oof.csv`` and ``test.csv`` as top-k files (:mod:`kagglecv.second.identities`):
    each fold's gallery (its training rows' embeddings) written, its held-out rows and the test ranked by
    neighbours and head cosines; then ``identities.json``, the new label's threshold tuned on OOF."""
    data, fold_of, settings = inputs.data, inputs.fold_of, config.predict.identities
    metric_k = _metric_k(inputs.metric.name)
    labels, new_label = identity_labels(data, settings)
    recipe = RunRecipe(run, config, data.task, data.classes, ["none"], "prob",
                       fold_weights(run, config, inputs.n_folds, predicted=True))
    run.predict_path.unlink(missing_ok=True)  # written last: its presence says oof.csv and test.csv are whole
    held_out = []
    for fold in range(inputs.n_folds):
        own = known_identity_rows(labels, new_label, np.flatnonzero(fold_of != fold))
        gallery = recipe.record_gallery(fold, data, own, labels)
        rows = np.flatnonzero(fold_of == fold)
        top = fold_top_k(gallery, labels[own], recipe.identity_fold(fold, data.images, rows), data.ids[rows],
                         data.classes, settings)
        held_out.append(replace(top, folds=np.full(len(rows), fold)))
        console.line(f"fold {fold}: ranked {len(rows)} held-out rows among {len(own)} gallery rows")
    write_top_k(run.oof_path, concat_top_k(held_out, data.ids))
    oof = read_top_k(run.oof_path)  # tuned on the scores as written (7 digits), which score.json reads back
    record = tuned_identities(oof, labels, new_label, metric_k, settings)
    run.write_identity_record(record)
    if inputs.test is not None:
        tops = recipe.identity_folds(inputs.test)
        for fold, top in tops.items():
            write_top_k(run.fold(fold).test_path, top)
        write_top_k(run.test_path, blend_top_k(list(tops.values()), None, settings.top_k))
    score = record.oof_nested if record.oof_nested is not None else record.oof_never
    return _record(run, config, inputs.metric.name, score, ["none"], {"none": score}, False, console)


def _metric_k(metric: str) -> int:
    k = map_k_of(metric)
    if k is None:
        raise KagglecvError(f"metric: {metric}; a model.identity run ranks identities and is scored by MAP@k "
                            "(metric: map@5)")
    return k


def record_trained_predictions(run_path: Path, inputs: StageInputs, console: Console | None = None) -> PredictResult:
    """``predict.json`` for a run whose train stage already wrote what ``predict`` would (see
    :func:`trained_predictions_suffice`): its oof.csv and test.csv are scored and kept, not recomputed."""
    run = RunDir(run_path)
    config, data = run.read_config(), inputs.data
    oof = read_aligned(run.oof_path, data.ids, data.classes, data.source)  # a missing id is an error, never NaN
    oof_score = data.score_of(inputs.metric, oof)
    return _record(run, config, inputs.metric.name, oof_score, ["none"], {"none": oof_score}, False,
                   console or Console())


def _record(run: RunDir, config: Config, metric: str, oof_score: float, chosen: list[str],
            candidate_scores: dict[str, float], auto: bool, console: Console) -> PredictResult:
    run.write_predict_record({"tta": chosen, "tta_space": config.predict.tta_space, "metric": metric,
                                  "oof_score": oof_score, "candidate_scores": candidate_scores, "auto": auto})
    console.line(f"{run.name}: OOF {metric} {oof_score:.4f} with TTA {chosen}")
    return PredictResult(chosen, oof_score, metric, candidate_scores)


def _choose_views(views, oof_logits, data, metric, space, auto) -> tuple[list[str], dict[str, float]]:
    """All views when not auto; otherwise greedy: start from ``none``, keep each candidate that raises the score."""
    def oof_score(names):
        return data.score_of(metric, combine_views([oof_logits[n] for n in names], data.task, space))

    candidate_scores = {name: oof_score([name]) for name in views}
    if not auto:
        return views, candidate_scores
    chosen, best = ["none"], candidate_scores["none"]
    for name in views[1:]:
        trial = oof_score([*chosen, name])
        if metric.objective(trial) > metric.objective(best):
            chosen, best = [*chosen, name], trial
    return chosen, candidate_scores
