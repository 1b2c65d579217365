"""``kagglecv tune``: an Optuna study whose trials are ordinary kagglecv runs (``pip install kagglecv[tune]``).

Each trial is the base config with ``--set`` overrides drawn from a search space file, trained as its own experiment
``<base>-<hash of the overrides>`` in the same runs folder, so every trial is in the report and the journal and a
trial stopped half-way resumes from its run folder. The objective is the OOF metric of the chosen folds (its
direction from the metric). While the first chosen fold trains, each epoch's validation metric (the better of raw
and EMA weights, as the fold picks its best epoch) goes to Optuna's pruner, which stops trials that fall behind.

The study lives in ``runs/tune-<name>/``: ``study.db`` (SQLite, one machine; a lock keeps one tune process per
study, so a trial left running by a killed process is known to be dead, failed, and its parameters queued again) or
``study.journal`` (Optuna's journal file, for trials on several machines over shared storage). Re-running the same
command resumes the study until it has ``--trials`` finished trials. The best parameters are printed as ``--set``
lines and written as a ready config, ``best.yaml``.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from kagglecv.core.config import Config, dump_config, load_config, parse_yaml
from kagglecv.core.errors import ConfigError, KagglecvError, require_extra
from kagglecv.core.files import output_lock, write_csv, write_text
from kagglecv.core.metrics import Metric
from kagglecv.core.outputs import plain_name
from kagglecv.core.runs import FoldDir, RunDir
from kagglecv.data.inputs import competition_metric, load_run_table
from kagglecv.data.load import load_train
from kagglecv.data.scoring import finished_folds_oof, score_predictions_frame
from kagglecv.stages.folds import make_folds
from kagglecv.training.selection import epoch_metric
from kagglecv.workflows.jobs import (
    Job,
    init_ray,
    last_line,
    require_ray,
    run_job_process,
    run_on_ray,
)
from kagglecv.workflows.launch import parse_folds

POLL_SECONDS = 0.5


class ParamSpace(BaseModel):
    """One searched key: ``{type: float, low: 1e-4, high: 1e-2, log: true}``, ``{type: int, low: 2, high: 8}`` or
    ``{type: categorical, choices: [light, medium]}``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["float", "int", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[list[Union[str, int, float, bool, None]]] = None

    @model_validator(mode="after")
    def _bounds_or_choices(self) -> "ParamSpace":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty choices list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high, got low={self.low} high={self.high}")
        elif self.log and self.low <= 0:
            raise ValueError(f"log needs low > 0, got {self.low}")
        return self

    def suggest(self, trial, key: str) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(key, self.choices)
        if self.type == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(key, self.low, self.high, step=self.step, log=self.log)


def read_space(path: Path, config_path: Path, overrides: list[str]) -> dict[str, ParamSpace]:
    """The search space file: config keys (``section.key``) to their ranges. Every key, with its lowest value or
    every choice, is checked against the config before any trial runs."""
    if not Path(path).is_file():
        raise ConfigError(f"--space: file not found: {path}")
    raw = parse_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of config keys to ranges, e.g. train.lr: {{type: float, ...}}")
    space = {}
    for key, spec in raw.items():
        try:
            space[str(key)] = ParamSpace.model_validate(spec)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            hint = " (one of float, int, categorical)" if field == "type" else ""
            raise ConfigError(f"{path}: {key}: {field + ': ' if field else ''}{error['msg']}{hint}") from None
        found = space[str(key)]
        for value in found.choices if found.type == "categorical" else [found.low, found.high]:
            try:
                load_config(config_path, [*overrides, override(str(key), value)])
            except ConfigError as exc:
                raise ConfigError(f"{path}: {key}={value!r} does not make a valid config: {exc}") from None
    return space


def override(key: str, value: Any) -> str:
    """``--set`` text of one value, YAML so that a list or a string like ``1e-3`` keeps its type."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


@dataclass
class TuneSettings:
    config_path: Path
    overrides: list[str]
    space: dict[str, ParamSpace]
    folds: list[int]
    base: Config
    study_dir: Path
    metric: Metric        # the study's objective: the competition metric of the OOF rows
    epoch_metric: Metric  # what each epoch's history records (train.metric), reported to the pruner
    backend: str = "local"


def trial_experiment(base: Config, params: dict[str, Any]) -> str:
    digest = hashlib.sha256(yaml.safe_dump(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{base.experiment}-{digest}"


def tune(config_path: Path, space_path: Path, trials: int, *, overrides: list[str] | None = None, folds: str = "0",
         name: str | None = None, storage: str = "sqlite", backend: str = "local", address: str | None = None,
         seed: int | None = None, pruner: str = "median", console=None) -> "TuneResult":
    """Run (or resume) the study until it has ``trials`` finished trials; write trials.csv and best.yaml."""
    require_extra("optuna", "tune", "kagglecv tune")
    import optuna


    base = load_config(config_path, overrides)
    data = load_train(base.data, with_images=False)
    metric = competition_metric(base, data)
    settings = TuneSettings(Path(config_path), list(overrides or []),
                            read_space(space_path, config_path, list(overrides or [])),
                            parse_folds(folds, base.folds.n_splits), base,
                            Path(base.runs_dir) / f"tune-{plain_name(name or base.experiment, '--name')}",
                            metric, epoch_metric(base.train.metric, metric, data.task), backend)
    settings.study_dir.mkdir(parents=True, exist_ok=True)
    make_folds(base, data=data)
    direction = "maximize" if metric.higher_is_better else "minimize"
    if backend == "ray":
        require_ray()
        init_ray(address)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _study_lock(settings.study_dir, storage):
        backend_storage = _storage(settings.study_dir, storage)
        study = optuna.create_study(
            storage=backend_storage, study_name=settings.study_dir.name, direction=direction,
            load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2) if pruner == "median" else optuna.pruners.NopPruner())
        # A resumed study must not draw the first process's samples again: the seed moves on with the trials made.
        study.sampler = optuna.samplers.TPESampler(seed=(base.train.seed if seed is None else seed) + len(study.trials))
        if storage == "sqlite":
            requeue_dead_trials(study, backend_storage)
        while (done := _finished(study)) < trials:
            study.optimize(lambda trial: run_trial(trial, settings, console), n_trials=trials - done,
                           catch=(KagglecvError,))
    return write_results(study, settings)


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def requeue_dead_trials(study, storage) -> None:
    """Trials still RUNNING when this (sole, locked) process starts died with an earlier process: fail them and
    queue their parameters again, so the next trial resumes the same run folder."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                       TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)


def _storage(folder: Path, kind: str):
    import optuna

    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{folder.resolve() / 'study.db'}")
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(folder.resolve() / "study.journal")))
    raise KagglecvError(f"--storage {kind!r}: expected sqlite or journal")


def _study_lock(folder: Path, storage: str):
    """One tune process per SQLite study (so a RUNNING trial at start is a dead one); none for a journal study,
    whose trials run on several machines."""
    return output_lock(folder / ".tune.lock", f"the study {folder}") if storage == "sqlite" else contextlib.nullcontext()


def run_trial(trial, settings: TuneSettings, console) -> float:
    """Train the chosen folds of one trial (reporting the first fold's epochs to the pruner); its OOF score."""
    import optuna

    params = {key: spec.suggest(trial, key) for key, spec in settings.space.items()}
    experiment = trial_experiment(settings.base, params)
    trial.set_user_attr("experiment", experiment)
    sets = [*settings.overrides, *(override(key, value) for key, value in params.items()),
            f"experiment={experiment}", override("notes", f"{settings.study_dir.name}: "  # no trial number: a retry
                                                  + ", ".join(f"{k}={v}" for k, v in params.items()))]  # resumes
    config = load_config(settings.config_path, sets)
    run = RunDir(config.run_dir)
    for position, fold in enumerate(settings.folds):
        job = Job(experiment, settings.config_path, sets, run.fold(fold))
        pruned = _train_job(job, trial if position == 0 else None, config, settings)
        if pruned:
            raise optuna.TrialPruned(f"pruned at epoch {pruned}")
    value = oof_score(config, settings.folds)
    if console is not None:
        console.line(f"trial {trial.number}: {experiment} {config.metric or ''} {value:.4f} "
                     + " ".join(f"--set {override(key, v)}" for key, v in params.items()))
    return value


def _train_job(job: Job, trial, config: Config, settings: TuneSettings) -> int:
    """Run a fold job to its end, or until the pruner stops it; returns the epoch it was pruned at (0: not)."""
    stop = threading.Event()
    outcome: dict[str, int] = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("code", _run(job, settings, stop)), daemon=True)
    worker.start()
    reported = 0
    while worker.is_alive():
        worker.join(POLL_SECONDS)
        if trial is not None:
            for epoch, value in epoch_values(job.folder, settings.epoch_metric, settings.metric)[reported:]:
                trial.report(value, epoch)
                reported += 1
                if trial.should_prune():
                    stop.set()
                    worker.join()
                    return epoch + 1
    if outcome.get("code") != 0:
        raise KagglecvError(f"{job.name}: {last_line(job.log_path) or 'failed'}")
    return 0


def _run(job: Job, settings: TuneSettings, stop: threading.Event) -> int:
    if settings.backend == "ray":
        return run_on_ray(job, stop)
    return run_job_process(job.command(), str(Path.cwd()), str(job.log_path), None, stop)


def epoch_values(folder: FoldDir, epoch_metric: Metric, study: Metric) -> list[tuple[int, float]]:
    """Each finished epoch's validation metric of a fold (the best of its weight sources) in the study's direction, so
    the pruner ranks trials as the study does: the metric itself when it is the study's; a validation loss reported
    to a maximizing study is negated."""
    history = folder.read_history()
    if history is None:
        return []
    name = epoch_metric.name
    values = history[[column for column in (f"val_{name}", f"ema_val_{name}", f"avg_val_{name}") if column in history.columns]]
    if values.columns.empty:  # a history of another metric (a trial's own train.metric): nothing to compare
        return []
    best = epoch_metric.objective(values).max(axis=1)  # the best source, higher is better
    return [(int(epoch), float(value)) for epoch, value in zip(history["epoch"], study.objective(best))]


def oof_score(config: Config, folds: list[int]) -> float:
    """The metric over the OOF rows of ``folds``, scored against the training table as the report scores them."""

    run = RunDir(config.run_dir)
    data = load_run_table(run, config)
    oof, rows = finished_folds_oof(run, data, folds)
    return score_predictions_frame(oof, rows, competition_metric(config, data), source=run.path).overall


@dataclass
class TuneResult:
    best_value: float
    best_params: dict[str, Any]
    best_experiment: str
    best_config: Path
    trials: Path


def write_results(study, settings: TuneSettings) -> TuneResult:
    """``trials.csv`` (one row per trial) and ``best.yaml`` (the base config with the best parameters)."""
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "experiment": t.user_attrs.get("experiment", ""),
             **{f"param {key}": value for key, value in t.params.items()}} for t in study.get_trials(deepcopy=False)]
    trials_path = settings.study_dir / "trials.csv"
    write_csv(trials_path, pd.DataFrame(rows))
    best = study.best_trial
    sets = [*settings.overrides, *(override(key, value) for key, value in best.params.items()),
            f"experiment={settings.base.experiment}-best"]
    best_config = settings.study_dir / "best.yaml"
    write_text(best_config, dump_config(load_config(settings.config_path, sets)))
    return TuneResult(best.value, best.params, best.user_attrs.get("experiment", ""), best_config, trials_path)
