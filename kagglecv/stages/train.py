"""Full-data refits and seed averaging: the last steps before a final submission.

* ``train_full``: one model on every training row, for the number of epochs cross-validation chose (the median of
  the folds' best epochs, plus one since epochs count from 0), with the weights (raw, EMA, averaged) most folds
  chose and the TTA the CV run's predict stage chose. It is its own run, ``runs/<experiment>-full``, marked
  ``kind: full`` in run.json: test predictions and no OOF. Ensembles weigh it by its CV run's OOF, ``submit`` tunes
  thresholds there, and the leaderboard shows it without a CV score of its own.
* ``seed_configs`` / ``average_seeds``: the same experiment with ``train.seed + 1000 x i`` as runs
  ``<experiment>-seed<i>`` (the first is the experiment itself), averaged as the ensemble ``ens-<experiment>-seeds<N>``
  whose ``blend_score.json`` records every seed's score.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from kagglecv.core.config import Config
from kagglecv.core.console import Console
from kagglecv.data.table import load_test, load_train
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import write_csv, write_json
from kagglecv.stages.infer import load_recipe, recorded_fold_count
from kagglecv.core.predictions import FLOAT_FORMAT, average_predictions, write_predictions
from kagglecv.core.runs import RunDir, prepare_run_dir, read_json

SEED_STRIDE = 1000  # fold k of seed i is seeded train.seed + 1000 i + k: no two (seed, fold) pairs share a seed


def seed_configs(config: Config, seeds: int) -> list[Config]:
    """The experiment once per seed: itself, then ``<experiment>-seed<i>`` with ``train.seed + 1000 i``."""
    configs = []
    for index in range(seeds):
        train = config.train.model_copy(update={"seed": config.train.seed + SEED_STRIDE * index, "seeds": 1})
        name = config.experiment if index == 0 else f"{config.experiment}-seed{index}"
        configs.append(config.model_copy(update={"experiment": name, "train": train}))
    return configs


def average_seeds(runs: list[Path], experiment: str, runs_dir: Path, console: Console) -> Path:
    """The mean of the seeds' runs, as an ensemble; each seed's score is in its ``blend_score.json``."""
    from kagglecv.stages.ensemble import make_ensemble

    result = make_ensemble(runs, method="mean", name=f"{experiment}-seeds{len(runs)}", runs_dir=runs_dir)
    singles = read_json(RunDir(result.path).blend_score_path, "the ensemble's scores")["single_scores"]
    listed = ", ".join(f"{name} {value:.4f}" for name, value in singles.items())
    console.line(f"{len(runs)} seeds: {listed}; averaged {result.metric} {result.in_sample:.4f} ({result.path})")
    return result.path


def full_fit_plan(cv_run: RunDir) -> dict:
    """What the CV run chose: epochs (median best epoch + 1), the folds' best epochs, the weights most folds kept."""
    info = cv_run.read_info()
    n_folds = recorded_fold_count(cv_run, info)
    missing = [index for index in range(n_folds) if not cv_run.fold(index).is_done()]
    if missing:
        raise KagglecvError(f"--full: {cv_run.path} has unfinished folds {missing}; the number of epochs comes from "
                            "every fold's best epoch: train them first")
    done = [cv_run.fold(index).read_done() for index in range(n_folds)]
    best_epochs = [int(record["best_epoch"]) for record in done]
    source = Counter(record.get("source", "raw") for record in done).most_common(1)[0][0]
    return {"epochs": int(math.ceil(float(np.median(best_epochs)))) + 1, "cv_best_epochs": best_epochs,
            "source": source, "cv_run": cv_run.name}


def full_config(config: Config, plan: dict) -> Config:
    train = config.train.model_copy(update={"epochs": plan["epochs"], "patience": None, "seeds": 1})
    return config.model_copy(update={"experiment": f"{config.experiment}-full", "train": train})


def train_full(config: Config, console: Console | None = None, *, resume: bool = False, force: bool = False) -> Path:
    """Refit ``config``'s experiment on every training row; returns ``runs/<experiment>-full``."""
    from kagglecv.nn.runtime import amp_name, autocast_dtype, setup_runtime
    from kagglecv.nn.models import parameter_counts
    from kagglecv.training.trainer import FoldTrainer

    console = console or Console()
    cv_run = RunDir(config.run_dir)
    plan = full_fit_plan(cv_run)
    refit = full_config(config, plan)
    data = load_train(config.data)
    test = load_test(config.data, data.classes, data.task) if config.data.test_csv else None
    run = prepare_run_dir(refit, force=force, kind="full")
    folder = run.fold(0)
    predicted = _cv_predict_record(cv_run)  # the CV run's TTA, which the refit's test predictions repeat
    tta = predicted.get("tta", ["none"])
    console.line(f"{refit.experiment}: {plan['epochs']} epochs on all {len(data)} rows (the folds' best epochs "
                 f"{plan['cv_best_epochs']}), {plan['source']} weights")
    with folder.lock():
        if not folder.is_done():
            # The trainer's own test pass has no TTA: with TTA the test set is predicted once, afterwards.
            trainer = FoldTrainer(refit, data, np.full(len(data), -1), test if tta == ["none"] else None, 0, run,
                                  setup_runtime(refit.train.device), console, unlabeled=test,
                                  full_source=plan["source"])
            run.write_identity(refit, data, parameter_counts(trainer.parts.model, refit.model), 1,
                               extra={"kind": "full", **plan,
                                      "amp": amp_name(autocast_dtype(refit.train.amp, trainer.runtime.device))})
            trainer.fit(resume=resume)
    if test is not None:
        _predict_like_cv_run(run, cv_run, predicted, refit, test, console)
    return run.path


def _cv_predict_record(cv_run: RunDir) -> dict:
    """The CV run's ``predict.json`` (its TTA views and space), empty when its predict stage never ran."""
    return cv_run.read_predict_record() or {}


def _predict_like_cv_run(run: RunDir, cv_run: RunDir, recorded: dict, config: Config, test, console: Console) -> None:
    """The refit's test predictions with the TTA the CV run's predict stage chose (``recorded``, its predict.json);
    without TTA the trainer's own test pass already wrote them."""
    views, space = recorded.get("tta", ["none"]), recorded.get("tta_space", config.predict.tta_space)
    write_json(run.predict_path, {"tta": views, "tta_space": space, "metric": recorded.get("metric"),
                                  "oof_score": None, "full_fit": True, "cv_run": cv_run.name})
    fold, classes = run.fold(0), run.read_info()["classes"]
    if not fold.test_path.is_file():
        write_predictions(fold.test_path, test.ids, load_recipe(run.path).predict(test, console), classes)
    write_csv(run.test_path, average_predictions([fold.test_path], classes), float_format=FLOAT_FORMAT)
    console.line(f"{run.name}: wrote {run.test_path} (TTA {views}); no OOF: its CV score is {cv_run.name}'s")



def train_experiment(config: Config, folds: list[int] | None = None, *, resume: bool = False, force: bool = False,
                     full: bool = False, seeds: int | None = None, console: Console | None = None) -> list[Path]:
    """``kagglecv train``: the folds of every seed's run (or, with ``full``, every seed's refit on all rows), and
    with several seeds their average once all are finished. Returns the runs (and the average) written."""
    from kagglecv.training.trainer import train_run

    console = console or Console()
    configs = seed_configs(config, seeds or config.train.seeds)
    if full:
        if folds is not None:
            raise KagglecvError("--full trains on every row; it takes no --fold")
        paths = [train_full(seeded, console, resume=resume, force=force) for seeded in configs]
    else:
        for seeded in configs:
            train_run(seeded, folds, resume=resume, force=force, console=console)
        paths = [Path(seeded.run_dir) for seeded in configs]
    if len(paths) > 1 and all(RunDir(path).test_path.is_file() or RunDir(path).is_run() for path in paths):
        name = f"{config.experiment}-full" if full else config.experiment
        paths.append(average_seeds(paths, name, config.runs_dir, console))
    return paths
