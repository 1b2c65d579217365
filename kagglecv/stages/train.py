"""The train stage: one model per fold, then the fold's test predictions; or one full-data refit.

Reads the config, the training and test tables and the folds file. Writes ``runs/<experiment>/``: ``config.yaml``,
``run.json``, and per fold ``fold<K>/`` (weights, ``last.pt``, ``history.csv``, curves, ``oof.csv`` from the
trainer; ``test.csv`` and ``done.json`` from this stage); once every fold is done, the run's ``oof.csv`` (every id
once) and ``test.csv`` (the folds' mean).

* ``train_run``: the requested folds of a cross-validated run (those done are skipped). Each fold's test predictions
  are made after ``fit()`` through the run's recipe (:mod:`kagglecv.nn.recipe`) with its selected weights.
* ``train_full``: one model on every training row (``runs/<experiment>-full``, ``kind: full`` in run.json) for the
  number of epochs cross-validation chose (the median of the folds' best epochs, plus one since epochs count from
  0), with the weights (raw, EMA, averaged) most folds chose; its test predictions use the TTA the CV run's
  predict stage chose. Test predictions and no OOF: ensembles weigh it by its CV run's OOF, ``submit`` tunes
  thresholds there, and the leaderboard shows it without a CV score of its own.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kagglecv.core.config import Config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import write_csv, write_json
from kagglecv.core.predictions import merge_oof
from kagglecv.core.records import PredictRecord
from kagglecv.core.runs import RunDir, prepare_run_dir
from kagglecv.core.topk import concat_top_k, read_top_k, write_top_k
from kagglecv.data.cache import CACHE_FOLDER, check_images_once, remember_checked
from kagglecv.data.inputs import StageInputs, competition_metric, load_stage_inputs
from kagglecv.data.load import load_test, load_train
from kagglecv.data.table import CompetitionData
from kagglecv.nn.models import parameter_counts
from kagglecv.nn.recipe import RunRecipe, recorded_fold_count
from kagglecv.nn.runtime import (
    Runtime,
    amp_name,
    autocast_dtype,
    barrier,
    setup_runtime,
)
from kagglecv.second.identities import identity_labels, known_identity_rows
from kagglecv.training.components import (
    FoldComponents,
    build_fold_components,
    check_fold_settings,
    loop_settings,
)
from kagglecv.training.selection import BestEpoch, LastEpoch, epoch_metric
from kagglecv.training.teaching import FoldTeaching, fold_teaching, uses_teacher
from kagglecv.training.trainer import FoldOutcome, FoldTrainer


@dataclass
class FoldJob:
    """One fold to train and what its outputs need: the test table to predict (None: none, or a TTA predict
    stage follows), the one its teacher pseudo-labels (``unlabeled``), and the views its test pass uses."""

    config: Config
    data: CompetitionData
    fold_of: np.ndarray
    fold: int
    test: CompetitionData | None
    unlabeled: CompetitionData | None
    views: list[str]
    space: str


def train_run(config: Config, folds: list[int] | None = None, *, resume: bool = False, force: bool = False,
              console: Console | None = None, inputs: StageInputs | None = None,
              predict_test: bool = True) -> list[FoldOutcome]:
    """Train the given folds (all when None) of ``config``'s experiment; merge predictions when all are done.

    Args:
        folds: fold numbers to train; the others are left alone (run them elsewhere, in parallel).
        resume: continue a fold killed mid-training from its ``last.pt``.
        force: accept a config that differs from the one the run folder was started with.
        inputs: the tables and folds, when the caller has read them (``kagglecv run``).
        predict_test: predict the test set with each fold's selected weights; off when a TTA predict stage follows.
    """
    console = console or Console()
    runtime = setup_runtime(config.train.device)
    inputs = inputs or load_stage_inputs(config)
    checked = [check_images_once(table, Path(config.runs_dir) / CACHE_FOLDER) for table in (inputs.data, inputs.test)]
    check_fold_settings(config, inputs.data)  # what the table refutes, before the run folder is made
    run = prepare_run_dir(config, force=force)
    remember_checked(checked)
    chosen = list(folds) if folds is not None else list(range(inputs.n_folds))
    bad = [fold for fold in chosen if not 0 <= fold < inputs.n_folds]
    if bad:
        raise KagglecvError(f"--fold {bad[0]}: expected 0..{inputs.n_folds - 1} (the folds file has {inputs.n_folds} folds)")
    # The run's identity is written once a fold can start (so a failed start leaves none), and once per command.
    amp = amp_name(autocast_dtype(config.train.amp, runtime.device))
    console.line(f"{config.experiment}: training on {runtime.device}, autocast {amp} (train.amp: {config.train.amp})")
    write_identity = functools.cache(
        lambda params: run.write_identity(config, inputs.data, dict(params), inputs.n_folds, extra={"amp": amp})
        if runtime.is_main else None)
    selection = BestEpoch(epoch_metric(config.train.metric, inputs.metric, inputs.data.scored_task))
    outcomes = []
    for fold in chosen:
        predicts = predict_test and config.model.identity is None  # identities: the predict stage's neighbours
        job = FoldJob(config, inputs.data, inputs.fold_of, fold, inputs.test if predicts else None, inputs.test,
                      ["none"], config.predict.tta_space)
        outcomes.append(_train_fold(job, run, runtime, console, selection, resume, write_identity))
    if runtime.is_main:
        finish_run(run, inputs.data, inputs.n_folds, console)
    return outcomes


def _train_fold(job: FoldJob, run: RunDir, runtime: Runtime, console: Console, selection: BestEpoch | LastEpoch,
                resume: bool, write_identity: Callable[[tuple], None]) -> FoldOutcome:
    """Train one fold under its lock, unless it is done; ``write_identity`` is called once its components are
    built, with the model's parameter counts. Then its test predictions and ``done.json``."""
    folder = run.fold(job.fold)
    with folder.lock() if runtime.is_main else contextlib.nullcontext():
        if folder.is_done():
            done = folder.read_done()
            best = "" if done.best_score is None else f" (best {done.metric} {done.best_score:.4f})"
            console.line(f"fold {job.fold}: done already{best}, skipped")
            return FoldOutcome(job.fold, done.best_epoch, done.best_score, done.source, 0.0, True)
        teaching = None
        if uses_teacher(job.config):
            teaching = fold_teaching(job.config, job.data, job.unlabeled, np.flatnonzero(job.fold_of != job.fold),
                                     folder, console, full_fit=selection.full_fit)
        parts = build_fold_components(job.config, job.data, job.fold_of, job.fold, runtime, teaching)
        if runtime.is_main:
            folder.path.mkdir(parents=True, exist_ok=True)
            folder.write_normalization(parts.normalization)
            if parts.feature_scaling is not None:
                write_json(folder.features_path, parts.feature_scaling.record())
        write_identity(tuple(parameter_counts(parts.model, job.config.model).items()))
        outcome = FoldTrainer(loop_settings(job.config), job.data, parts, folder, runtime, console, selection).fit(resume=resume)
        if runtime.is_main:
            if job.test is not None:
                predict_fold_test(run, job, outcome.source)
            _write_done(run, job, outcome, parts, teaching, selection, console)
        barrier(runtime)
        return outcome


def predict_fold_test(run: RunDir, job: FoldJob, source: str) -> None:
    """``fold<K>/test.csv``: the fold's ``source`` weights on the test table, through the run's recipe."""
    recipe = RunRecipe(run, job.config, job.data.task, job.data.classes, job.views, job.space, {job.fold: source})
    probabilities = recipe.predict_fold(job.fold, job.test.images, np.arange(len(job.test)),
                                        features=job.test.features)
    run.fold(job.fold).write_test_predictions(job.test.ids, probabilities, job.data.classes)


def _write_done(run: RunDir, job: FoldJob, outcome: FoldOutcome, parts: FoldComponents,
                teaching: FoldTeaching | None, selection: BestEpoch | LastEpoch, console: Console) -> None:
    full = selection.full_fit
    run.fold(job.fold).write_done({
        "fold": job.fold, "best_epoch": outcome.best_epoch, "best_score": None if full else outcome.best_score,
        "full_fit": full, "metric": selection.metric.name, "source": outcome.source, "epochs_run": outcome.epochs_run,
        "train_rows": int(np.sum(parts.train_rows < len(job.data))), "valid_rows": len(parts.valid_rows),
        "seconds": outcome.seconds, **(teaching.stats if teaching else {}),
    })
    console.line(f"full refit: {outcome.epochs_run} epochs on {len(parts.train_rows)} rows ({outcome.source} "
                 f"weights), {outcome.seconds:.0f} s" if full else
                 f"fold {job.fold}: best {selection.metric.name} {outcome.best_score:.4f} at epoch "
                 f"{outcome.best_epoch + 1} ({outcome.source} weights), {outcome.seconds:.0f} s")


def finish_run(run: RunDir, data: CompetitionData, n_folds: int, console: Console) -> bool:
    """When every fold is done: write the run's ``oof.csv`` (every id once), and the fold-averaged ``test.csv``
    when every fold predicted the test set."""
    folds = [run.fold(index) for index in range(n_folds)]
    if not all(fold.is_done() for fold in folds):
        return False
    if run.read_config().model.identity is not None:  # the folds' top k; the predict stage ranks by neighbours
        write_top_k(run.oof_path, concat_top_k([read_top_k(fold.oof_path) for fold in folds], data.ids))
        console.line(f"all {n_folds} folds done: wrote {run.oof_path} (the heads' top k)")
        return True
    oof = merge_oof([fold.oof_path for fold in folds], data.ids, data.classes)
    write_csv(run.oof_path, oof, float_format="%.7g")
    has_test = all(fold.test_path.is_file() for fold in folds)
    if has_test:
        run.write_fold_mean_test(data.classes, n_folds)
    console.line(f"all {n_folds} folds done: wrote {run.oof_path}" + (" and test.csv" if has_test else ""))
    return True


# ----- full-data refits -----------------------------------------------------------------------------------------
def full_fit_plan(cv_run: RunDir) -> dict:
    """What the CV run chose: epochs (median best epoch + 1), the folds' best epochs, the weights most folds kept."""
    info = cv_run.read_info()
    n_folds = recorded_fold_count(cv_run, info)
    missing = [index for index in range(n_folds) if not cv_run.fold(index).is_done()]
    if missing:
        raise KagglecvError(f"--full: {cv_run.path} has unfinished folds {missing}; the number of epochs comes from "
                            "every fold's best epoch: train them first")
    done = [cv_run.fold(index).read_done() for index in range(n_folds)]
    best_epochs = [record.best_epoch for record in done]
    source = Counter(record.source for record in done).most_common(1)[0][0]
    return {"epochs": int(math.ceil(float(np.median(best_epochs)))) + 1, "cv_best_epochs": best_epochs,
            "source": source, "cv_run": cv_run.name}


def full_config(config: Config, plan: dict) -> Config:
    train = config.train.model_copy(update={"epochs": plan["epochs"], "patience": None, "seeds": 1})
    return config.model_copy(update={"experiment": f"{config.experiment}-full", "train": train})


def train_full(config: Config, console: Console | None = None, *, resume: bool = False, force: bool = False) -> Path:
    """Refit ``config``'s experiment on every training row; returns ``runs/<experiment>-full``."""
    console = console or Console()
    cv_run = RunDir(config.run_dir)
    plan = full_fit_plan(cv_run)
    refit = full_config(config, plan)
    data = load_train(config.data)
    test = load_test(config.data, data.classes, data.task) if config.data.has_test() else None
    run = prepare_run_dir(refit, force=force, kind="full")
    runtime = setup_runtime(refit.train.device)
    predicted = cv_run.read_predict_record()  # the CV run's TTA, which the refit's test predictions repeat
    views = predicted.tta if predicted else ["none"]
    space = (predicted.tta_space if predicted else None) or refit.predict.tta_space
    console.line(f"{refit.experiment}: {plan['epochs']} epochs on all {len(data)} rows (the folds' best epochs "
                 f"{plan['cv_best_epochs']}), {plan['source']} weights")
    extra = {"kind": "full", **plan, "amp": amp_name(autocast_dtype(refit.train.amp, runtime.device))}
    identity = refit.model.identity is not None  # its test is ranked among every training row, after training
    job = FoldJob(refit, data, np.full(len(data), -1), 0, None if identity else test, test, list(views), space)
    selection = LastEpoch(plan["source"], epoch_metric(refit.train.metric, competition_metric(refit, data),
                                                       data.scored_task))
    _train_fold(job, run, runtime, console, selection, resume,
                lambda params: run.write_identity(refit, data, dict(params), 1, extra=extra))
    if test is not None and identity:
        _rank_full_fit_identities(run, cv_run, refit, data, test, console)
    elif test is not None:
        _finish_full_fit(run, cv_run, predicted, job, console)
    return run.path


def _rank_full_fit_identities(run: RunDir, cv_run: RunDir, config: Config, data: CompetitionData,
                              test: CompetitionData, console: Console) -> None:
    """A ``model.identity`` refit: its gallery is every training row (less an unseen identity's), its test ranked
    there, and the new label placed at the threshold the CV run tuned on its OOF rows."""
    labels, new_label = identity_labels(data, config.predict.identities)
    recipe = RunRecipe(run, config, data.task, data.classes, ["none"], "prob", {0: run.fold(0).read_done().source})
    recipe.record_gallery(0, data, known_identity_rows(labels, new_label, np.arange(len(data))), labels)
    run.write_identity_record(cv_run.read_identity_record())
    run.write_predict_record({"tta": ["none"], "tta_space": "prob", "metric": config.metric, "oof_score": None,
                              "full_fit": True, "cv_run": cv_run.name})
    write_top_k(run.test_path, recipe.predict_identities(test))
    console.line(f"{run.name}: wrote {run.test_path}, ranked among all {len(data)} training rows; the new label at "
                 f"{cv_run.name}'s threshold")


def _finish_full_fit(run: RunDir, cv_run: RunDir, recorded: PredictRecord | None, job: FoldJob,
                     console: Console) -> None:
    """The refit's ``predict.json`` (the CV run's TTA) and ``test.csv``; a fold finished before its test pass
    (killed in between) is predicted now."""
    run.write_predict_record({"tta": job.views, "tta_space": job.space, "metric": recorded.metric if recorded else None,
                                  "oof_score": None, "full_fit": True, "cv_run": cv_run.name})
    if not run.fold(0).test_path.is_file():
        predict_fold_test(run, job, run.fold(0).read_done().source)
    run.write_fold_mean_test(job.data.classes, 1)
    console.line(f"{run.name}: wrote {run.test_path} (TTA {job.views}); no OOF: its CV score is {cv_run.name}'s")
