"""``kagglecv launch``: many (experiment, fold) jobs on a local process pool or a Ray cluster, then each finished
experiment merged, predicted and scored as ``kagglecv run`` does.

Re-running the same launch resumes: finished folds are skipped by ``train`` itself and stopped ones continue from
their saved state. Ctrl-C stops every job cleanly (each saves its state, as ``train`` does on SIGTERM).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.live import Live
from rich.table import Table

from kagglecv.core.config import Config, load_config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.runs import RunDir, history_metric
from kagglecv.nn.runtime import available_cores
from kagglecv.stages.folds import make_folds
from kagglecv.workflows.jobs import Job, LocalPool, RayPool, require_ray, write_marker
from kagglecv.workflows.run import run_pipeline


@dataclass
class Experiment:
    config_path: Path
    config: Config
    folds: list[int]
    n_folds: int
    jobs: list[Job] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.folds) == self.n_folds and all(job.state == "done" for job in self.jobs)


@dataclass
class LaunchResult:
    experiments: list[Experiment]
    finished: dict[str, float]          # experiment -> its OOF score, for the experiments completed and scored

    @property
    def jobs(self) -> list[Job]:
        return [job for experiment in self.experiments for job in experiment.jobs]


def plan(config_paths: list[Path], overrides: list[str] | None, folds: str = "all") -> list[Experiment]:
    """Every config's folds file made (or checked) and one job per chosen fold; experiment names must differ."""
    experiments, seen = [], {}
    for path in config_paths:
        config = load_config(path, overrides)
        if config.experiment in seen:
            raise KagglecvError(f"{path}: experiment {config.experiment!r} is also the experiment of {seen[config.experiment]}; "
                                "every launched config needs its own experiment name")
        seen[config.experiment] = path
        n_folds = config.folds.n_splits
        make_folds(config)
        chosen = parse_folds(folds, n_folds)
        run = RunDir(config.run_dir)
        experiment = Experiment(Path(path), config, chosen, n_folds)
        experiment.jobs = [Job(config.experiment, Path(path), list(overrides or []), run.fold(fold),
                               "done" if run.fold(fold).is_done() else "queued") for fold in chosen]
        experiments.append(experiment)
    return experiments


def parse_folds(text: str, n_folds: int) -> list[int]:
    if text.strip() == "all":
        return list(range(n_folds))
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise KagglecvError(f"--folds {text!r}: expected 'all' or fold numbers like 0,1") from None
    bad = [fold for fold in chosen if not 0 <= fold < n_folds]
    if bad or not chosen:
        raise KagglecvError(f"--folds {text!r}: expected folds in 0..{n_folds - 1}")
    return chosen


def launch(config_paths: list[Path], overrides: list[str] | None = None, *, folds: str = "all",
           backend: str = "local", jobs: int | None = None, cpus_per_job: int | None = None,
           gpus_per_job: float = 1.0, address: str | None = None, max_retries: int = 2,
           console=None, finish: bool = True) -> LaunchResult:
    """Plan the jobs, run them on ``backend``, then finish each complete experiment (merge, predict, score, submit)."""
    experiments = plan(config_paths, overrides, folds)
    all_jobs = [job for experiment in experiments for job in experiment.jobs]
    pool = make_pool(backend, experiments, jobs, cpus_per_job, gpus_per_job, address, max_retries)
    with JobBoard(all_jobs, console) as board:
        pool.run(all_jobs, Path.cwd(), board.refresh)
    finished = {}
    if finish:
        for experiment in experiments:
            if experiment.complete:
                summary = run_pipeline(experiment.config, console)
                finished[experiment.config.experiment] = summary.score.overall
    return LaunchResult(experiments, finished)


def make_pool(backend: str, experiments: list[Experiment], jobs: int | None, cpus_per_job: int | None,
              gpus_per_job: float, address: str | None, max_retries: int):
    cores = available_cores()
    if backend == "ray":
        require_ray()
        marker = write_marker(experiments[0].config.runs_dir)
        return RayPool(cpus_per_job or 1, gpus_per_job if _gpu_count() else 0.0, address,
                       local_cpus=None if address else (jobs * (cpus_per_job or 1) if jobs else cores),
                       max_retries=max_retries, marker=marker)
    if backend != "local":
        raise KagglecvError(f"--backend {backend!r}: expected local or ray")
    gpus = list(range(_gpu_count()))
    if gpus:
        slots = min(jobs or len(gpus), len(gpus))
        return LocalPool(slots, cpus_per_job or max(1, cores // slots), gpus[:slots])
    slots = jobs or max(1, cores // (cpus_per_job or cores))
    return LocalPool(slots, cpus_per_job or max(1, cores // slots))


def _gpu_count() -> int:

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class JobBoard:
    """The live table of jobs on a terminal; one line per state change otherwise (logs, CI)."""

    def __init__(self, jobs: list[Job], console=None):
        self.jobs, self.console = jobs, console or Console()
        self.live = Live(self.table(), console=self.console.rich, refresh_per_second=2, transient=False) \
            if self.console.interactive else None
        self.seen = {job.name: job.state for job in jobs}

    def __enter__(self) -> "JobBoard":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.refresh()
        if self.live is not None:
            self.live.__exit__(*exc)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.table())
            return
        for job in self.jobs:
            if self.seen[job.name] != job.state:
                self.seen[job.name] = job.state
                self.console.line(f"{job.name}: {job.state}" + (f": {job.error}" if job.error else ""))

    def table(self) -> Table:
        table = Table(title="kagglecv launch")
        for column in ("job", "state", "epoch", "metric", "minutes", "note"):
            table.add_column(column, justify="right" if column in ("epoch", "minutes") else "left")
        for job in self.jobs:
            epoch, metric = progress(job)
            minutes = "" if job.started is None else f"{((job.finished or time.time()) - job.started) / 60:.1f}"
            table.add_row(job.name, job.state, epoch, metric, minutes, job.error[-80:])
        return table


def progress(job: Job) -> tuple[str, str]:
    """The last epoch and validation metric in a job's ``history.csv`` (on shared storage for Ray)."""
    history = job.folder.read_history()
    if history is None or history.empty:
        return "", ""
    row, metric = history.iloc[-1], history_metric(history.columns)
    return str(int(row["epoch"]) + 1), f"{metric} {row[f'val_{metric}']:.4f}"
