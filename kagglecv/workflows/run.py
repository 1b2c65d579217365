"""``kagglecv run``: folds (when missing), every fold trained (resuming killed ones), prediction with the configured
TTA, the score, and the submission when a sample is configured. Each step is its stage's own function; re-running
skips what is done. The tables are read once and handed to every stage; without TTA the train stage's predictions
are the final ones (nothing is predicted twice), and with TTA the train stage skips the test pass predict redoes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kagglecv.core.config import Config, apply_override, validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.runs import RunDir, read_json
from kagglecv.data.inputs import load_stage_inputs
from kagglecv.data.load import load_train
from kagglecv.stages.ensemble import make_ensemble
from kagglecv.stages.folds import make_folds
from kagglecv.stages.predict import (
    predict_run,
    record_trained_predictions,
    trained_predictions_suffice,
)
from kagglecv.stages.score import ScoreResult, score_run
from kagglecv.stages.submit import write_submission
from kagglecv.stages.track import require_mlflow, sync_runs
from kagglecv.stages.train import train_full, train_run


@dataclass
class RunSummary:
    experiment: str
    score: ScoreResult
    seconds: float
    oof: Path
    test: Path | None
    submission: Path | None


def run_pipeline(config: Config, console: Console | None = None, force: bool = False) -> RunSummary:
    """The whole pipeline for one experiment (once per seed, then their average, with ``train.seeds``); returns
    what the closing summary prints."""
    console = console or Console()
    if config.train.seeds == 1:
        return _run_one(config, console, force)
    started = time.time()
    runs = [_run_one(seeded, console, force, submit=False).experiment
            for seeded in seed_configs(config, config.train.seeds)]  # one submission: the average's
    average = RunDir(average_seeds([Path(config.runs_dir) / name for name in runs], config.experiment,
                                   config.runs_dir, console))
    return RunSummary(average.name, score_run(average.path), time.time() - started, average.oof_path,
                      average.test_path if average.test_path.is_file() else None, _submit(config, average))


def _submit(config: Config, run: RunDir) -> Path | None:
    if config.submit.sample is None or not run.test_path.is_file():
        return None
    return write_submission(run.path, config.submit.sample, run.name, threshold=config.submit.threshold,
                            out_dir=config.submit.dir, compress=config.submit.gz).path


def _run_one(config: Config, console: Console, force: bool, submit: bool = True) -> RunSummary:
    started = time.time()
    if config.tracking.backend == "mlflow":
        require_mlflow()  # before hours of training, not after
    data = load_train(config.data)  # read, checked and hashed once, for every stage
    if not Path(config.folds.file).is_file():
        result = make_folds(config, data=data)
        console.line(f"folds: wrote {result.path}")
    inputs = load_stage_inputs(config, data)
    plain = trained_predictions_suffice(config)
    train_run(config, resume=True, force=force, console=console, inputs=inputs, predict_test=plain)
    run = RunDir(config.run_dir)
    if plain and (inputs.test is None or run.test_path.is_file()):
        record_trained_predictions(run.path, inputs, console=console)
    else:  # TTA (or other weights): the predict stage makes oof.csv and test.csv; train skipped its test pass
        predict_run(run.path, console=console, inputs=inputs)
    result = score_run(run.path, data=data)
    submission = _submit(config, run) if submit else None
    if config.tracking.backend == "mlflow":
        synced = sync_runs(config.runs_dir, config.tracking.uri, only=[config.experiment])
        console.line(f"tracking: {config.experiment} in {synced.uri}")
    return RunSummary(config.experiment, result, time.time() - started, run.oof_path,
                      run.test_path if run.test_path.is_file() else None, submission)


def pseudo_config(teacher: Path, name: str, threshold: float | None, top_frac: float | None, soft: bool,
                  overrides: list[str] | None = None) -> Config:
    """``kagglecv pseudo``: the teacher's recorded config as experiment ``name`` with a ``pseudo:`` section naming
    the teacher, then ``--set`` overrides."""
    raw = RunDir(teacher).read_config().model_dump(mode="json", exclude={"pseudo"})
    raw["experiment"], raw["notes"] = name, f"pseudo-labels from {Path(teacher).name}"
    raw["pseudo"] = {"teacher": str(teacher), "threshold": threshold, "top_frac": top_frac, "soft": soft}
    for override in overrides or []:
        apply_override(raw, override)
    return validate_config(raw, source=f"kagglecv pseudo {teacher}")


# ----- seeds: the same experiment several times, averaged ------------------------------------------------------
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
    result = make_ensemble(runs, method="mean", name=f"{experiment}-seeds{len(runs)}", runs_dir=runs_dir)
    singles = read_json(RunDir(result.path).blend_score_path, "the ensemble's scores")["single_scores"]
    listed = ", ".join(f"{name} {value:.4f}" for name, value in singles.items())
    console.line(f"{len(runs)} seeds: {listed}; averaged {result.metric} {result.in_sample:.4f} ({result.path})")
    return result.path


def train_experiment(config: Config, folds: list[int] | None = None, *, resume: bool = False, force: bool = False,
                     full: bool = False, seeds: int | None = None, console: Console | None = None) -> list[Path]:
    """``kagglecv train``: the folds of every seed's run (or, with ``full``, every seed's refit on all rows), and
    with several seeds their average once all are finished. Returns the runs (and the average) written."""
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
