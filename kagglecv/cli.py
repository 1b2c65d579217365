"""The ``kagglecv`` command line: one thin function per stage; the work happens in the stage modules."""

from __future__ import annotations

import atexit
import gc
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from kagglecv import __version__
from kagglecv.core.errors import KagglecvError

app = typer.Typer(
    name="kagglecv",
    help="Kaggle-style image classification from data to submission: folds, timm training, OOF scores, "
    "ensembles and submissions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect experiment configs.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare competition data.", no_args_is_help=True)
import_app = typer.Typer(help="Turn other dataset layouts into a train.csv.", no_args_is_help=True)
track_app = typer.Typer(help="Mirror finished runs in an experiment tracker (MLflow).", no_args_is_help=True)
app.add_typer(track_app, name="track")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
data_app.add_typer(import_app, name="import")

LOG_WIDTH = 1000  # not a terminal (a log file, CI): tables at their natural width, never cut to 80 columns
console = Console(width=None if sys.stdout.isatty() else LOG_WIDTH, emoji=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else LOG_WIDTH, emoji=False)

ConfigPath = Annotated[Path, typer.Argument(help="Experiment config (YAML).")]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable)."),
]


def _user_metric(value: Optional[str]) -> Optional[str]:
    """A metric file on the command line is one the user chose to run (a run folder's never runs on its own)."""
    from kagglecv.core.metric_file import name_metric_file
    from kagglecv.core.metrics import is_metric_file

    if is_metric_file(value):
        name_metric_file(value)
    return value


def _named_metric_file(value: Optional[str]) -> Optional[str]:
    """``--metric-file``: an existing ``.py`` file, named for this command (a typo is an error, never ignored)."""
    if value is not None and (not value.endswith(".py") or not Path(value).is_file()):
        raise KagglecvError(f"--metric-file {value}: expected an existing metric file ending in .py (Kaggle's score "
                            "signature)")
    return _user_metric(value)


MetricFile = Annotated[
    Optional[str],
    typer.Option(callback=_named_metric_file, help="The competition's metric file (Kaggle's score signature) to run for "
                 "runs whose config names one: kagglecv runs a metric file only when you name it, matched by content."),
]


@app.command()
def folds(
    config_path: ConfigPath,
    overrides: Overrides = None,
    force: Annotated[bool, typer.Option(help="Overwrite a folds file made with other settings.")] = False,
) -> None:
    """Split the training table into folds; write folds.file (id,fold) and a JSON report beside it."""
    from kagglecv.core.config import load_config
    from kagglecv.presentation.tables import folds_table
    from kagglecv.stages.folds import make_folds

    config = load_config(config_path, overrides)
    result = make_folds(config, force=force)
    console.print(folds_table(result.report))
    for note in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {escape(note)}", soft_wrap=True)
    near = result.report["duplicates"]["near_pairs_across_folds"]
    if near:
        pairs = escape(", ".join(f"{a}~{b} (distance {d})" for a, b, d in near[:5]))
        err_console.print(f"[yellow]warning:[/yellow] {len(near)} near-duplicate image pairs sit in different "
                          f"folds: {pairs}; set folds.near_duplicates=group to keep them together", soft_wrap=True)
    verb = "wrote" if result.written else "up to date:"
    console.print(f"{verb} {result.path} and {result.path.with_suffix('.json')}")


@app.command()
def train(
    config_path: ConfigPath,
    overrides: Overrides = None,
    fold: Annotated[Optional[list[int]], typer.Option("--fold", "-f", help="Train only this fold (repeatable).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue folds killed mid-training from their last.pt.")] = False,
    force: Annotated[bool, typer.Option(help="Accept a config that differs from the run folder's.")] = False,
    full: Annotated[bool, typer.Option(help="Refit on every training row for the epochs CV chose (median best "
                                             "epoch of runs/<experiment>); writes runs/<experiment>-full.")] = False,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Train with this many seeds (runs <experiment>-seed<i>) "
                                                  "and average them; train.seeds when omitted.")] = None,
) -> None:
    """Train one timm model per fold; write runs/<experiment>/fold<K>/ and, when all folds are done, oof.csv and test.csv."""
    from kagglecv.core.config import load_config
    from kagglecv.workflows.run import train_experiment

    train_experiment(load_config(config_path, overrides), fold, resume=resume, force=force, full=full, seeds=seeds)


RunPath = Annotated[Path, typer.Argument(help="A run folder, runs/<experiment>.")]


@app.command()
def predict(
    run: RunPath,
    tta: Annotated[Optional[str], typer.Option(help="Comma-separated views (none,hflip,vflip,transpose,rot90,scale:1.15,rotate:5,shift:1:0) or auto.")] = None,
    metric_file: MetricFile = None,
) -> None:
    """Predict held-out rows and the test set with each fold's best weights and TTA; rewrite the run's oof.csv and test.csv."""
    from kagglecv.stages.predict import predict_run

    views = None if tta is None else ("auto" if tta == "auto" else [view.strip() for view in tta.split(",") if view.strip()])
    if views == []:
        raise KagglecvError(f"--tta {tta!r}: expected comma-separated views (none,hflip,...) or auto")
    predict_run(run, views)


@app.command()
def score(
    run: Annotated[Optional[Path], typer.Argument(help="A run or ensemble folder with oof.csv.")] = None,
    metric: Annotated[Optional[str], typer.Option(callback=_user_metric, help="Metric name or metric file; the config's metric or the task's default when omitted.")] = None,
    oof: Annotated[Optional[Path], typer.Option(help="Score this OOF file instead of a run's.")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="With --oof: the training table holding the targets.")] = None,
    target: Annotated[Optional[str], typer.Option(help="With --oof: the target column; 'label', or the OOF file's class columns, when omitted.")] = None,
    submission: Annotated[Optional[Path], typer.Option(help="Score this submission file against --solution.")] = None,
    solution: Annotated[Optional[Path], typer.Option(help="With --submission: the solution file (id + truth).")] = None,
    long_id: Annotated[Optional[str], typer.Option(
        help="With --submission: long files (one row per image and class), ids as data.long_id says: '{id}_{class}'.",
    )] = None,
) -> None:
    """Score out-of-fold predictions: overall, per fold (mean ± std), per class; write score.json for a run.

    With --submission FILE --solution FILE --metric M: score a submission as Kaggle would.
    """
    from kagglecv.presentation.tables import score_table
    from kagglecv.stages.score import score_oof_file, score_run, score_submission

    if submission is not None:
        if solution is None or metric is None:
            raise KagglecvError("--submission needs --solution FILE and --metric NAME")
        console.print(f"{metric} {score_submission(submission, solution, metric, long_id=long_id):.6f}")
        return
    if oof is not None:
        if truth is None:
            raise KagglecvError("--oof needs --truth (the train.csv with the targets)")
        result, title = score_oof_file(oof, truth, target=target, metric=metric), str(oof)
    elif run is not None:
        result, title = score_run(run, metric), str(run)
    else:
        raise KagglecvError("give a run folder, or --oof FILE --truth train.csv")
    console.print(score_table(result, title))


@app.command()
def report(
    runs_dir: Annotated[Path, typer.Argument(help="The folder holding the runs.")] = Path("runs"),
    pictures: Annotated[bool, typer.Option(help="Draw the PNGs (curves, fold scores, confusion / per-class AP).")] = True,
    inspect: Annotated[bool, typer.Option(help="First run kagglecv inspect on each run whose error analysis is "
                                          "missing or older than its OOF predictions (it writes into those runs).")] = False,
    submissions: Annotated[Path, typer.Option(help="Folder of the submissions and their log.csv (CV vs leaderboard).")] = Path("submissions"),
    metric_file: MetricFile = None,
) -> None:
    """Leaderboard of every run and ensemble, the experiment journal, pictures and error analysis, in
    RUNS_DIR/report.md, the self-contained RUNS_DIR/report.html and RUNS_DIR/report.pictures/; it reads the runs and
    writes nothing else."""
    from kagglecv.presentation.tables import leaderboard_table
    from kagglecv.stages.report import build_report

    if inspect:
        from kagglecv.stages.inspect import inspect_stale_runs

        for run_path in inspect_stale_runs(runs_dir):
            console.print(f"inspected {run_path}")
    result = build_report(runs_dir, pictures=pictures, submissions_dir=submissions)
    console.print(leaderboard_table(result.leaderboard))
    console.print(f"wrote {result.markdown} and {result.html}")


@app.command()
def embed(
    run: RunPath,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Images per forward pass; the run's predict.batch_size when omitted.")] = None,
) -> None:
    """Write each fold model's pre-logit features of its held-out rows and of the test set (RUN/embeddings/)."""
    from kagglecv.stages.embed import embed_run

    result = embed_run(run, batch_size=batch_size)
    console.print(f"wrote {result.path}: {result.oof_rows} OOF and {result.test_rows} test rows of width {result.width}")


@app.command()
def inspect(
    run: Annotated[Path, typer.Argument(help="A run or ensemble folder with oof.csv.")],
    top: Annotated[int, typer.Option(min=1, help="Images in the error gallery.")] = 24,
    pairs: Annotated[int, typer.Option(min=0, help="Confused class pairs to show.")] = 6,
    pictures: Annotated[bool, typer.Option(help="Draw the gallery PNGs.")] = True,
    metric_file: MetricFile = None,
) -> None:
    """What the OOF predictions get wrong: error gallery, confused pairs, likely label errors (cleanlab), duplicates
    with different labels; writes label_issues.csv and inspect.json in the run folder."""
    from kagglecv.presentation.tables import inspect_tables
    from kagglecv.stages.inspect import inspect_run

    analysis = inspect_run(run, top=top, pairs=pairs, pictures=pictures)
    for table in inspect_tables(analysis):
        console.print(table)
    console.print(f"wrote {analysis.label_issues_path} ({analysis.label_issues} likely label errors to review)"
                  + "".join(f", {path}" for path in analysis.pictures))


@app.command()
def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="Run or ensemble folders sharing one folds file.")],
    method: Annotated[str, typer.Option(help="mean, weighted, rank, geometric, power, logit, hill, optimize or stack.")] = "hill",
    name: Annotated[Optional[str], typer.Option(help="Writes runs/ens-<name>/; <method>-<n> when omitted.")] = None,
    metric: Annotated[Optional[str], typer.Option(callback=_user_metric, help="Metric name or metric file to fit and score; the config's when omitted.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="With --method weighted: comma-separated weights, one per run.")] = None,
    power: Annotated[float, typer.Option(help="With --method power: the exponent k of mean(p^k).")] = 2.0,
    init_top: Annotated[int, typer.Option(min=1, help="With --method hill: start from the best N runs.")] = 1,
    rounds: Annotated[int, typer.Option(min=0, help="With --method hill: selection rounds.")] = 100,
    per_class: Annotated[bool, typer.Option(help="Multi-label hill/optimize: separate weights per class.")] = False,
) -> None:
    """Blend runs on their OOF predictions; report best single, in-sample and nested (honest) scores."""
    from kagglecv.presentation.tables import correlation_table, ensemble_table
    from kagglecv.stages.ensemble import make_ensemble, parse_weights

    result = make_ensemble(runs, method, name, metric=metric, user_weights=parse_weights(weights), power=power,
                           init_top=init_top, max_rounds=rounds, per_class=per_class)
    console.print(correlation_table(result.correlation))
    console.print(ensemble_table(result))
    console.print(f"wrote {result.path}")


@app.command()
def stack(
    runs: Annotated[list[Path], typer.Argument(help="Run, ensemble or stack folders sharing one folds file.")],
    model: Annotated[str, typer.Option(help="lightgbm; xgboost or catboost (their kagglecv extras); ridge (logistic for classes); svr (numeric targets).")] = "lightgbm",
    name: Annotated[Optional[str], typer.Option(help="Writes runs/stack-<name>/; <model>-<n> when omitted.")] = None,
    metric: Annotated[Optional[str], typer.Option(callback=_user_metric, help="Metric name or metric file to score; the config's when omitted.")] = None,
    group: Annotated[Optional[str], typer.Option(help="Column of the groups for the group-relative features; data.group_col when omitted, '' for none.")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="lightgbm, xgboost, catboost: boosting rounds.")] = 300,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="lightgbm, xgboost, catboost: the learning rate.")] = 0.05,
    leaves: Annotated[int, typer.Option(min=2, help="lightgbm, xgboost: leaves per tree.")] = 15,
    min_rows: Annotated[int, typer.Option(min=1, help="lightgbm: rows a leaf holds at least.")] = 20,
    alpha: Annotated[float, typer.Option(min=0.0, help="ridge: L2 penalty (logistic: 1/C); svr: 1/C.")] = 1.0,
    seed: Annotated[int, typer.Option(help="The model's random seed.")] = 42,
    embeddings: Annotated[bool, typer.Option(help="Also the runs' pre-logit features (run `kagglecv embed RUN` first).")] = False,
) -> None:
    """Fit a second-stage model per fold on the runs' OOF predictions and data.features; nested (honest) score."""
    from kagglecv.presentation.tables import stack_table
    from kagglecv.stages.stack import make_stack

    settings = {"rounds": rounds, "learning_rate": learning_rate, "leaves": leaves, "min_rows": min_rows,
                "alpha": alpha, "seed": seed}
    result = make_stack(runs, model, name, metric=metric, group=group, settings=settings, embeddings=embeddings)
    console.print(stack_table(result))
    console.print(f"wrote {result.path}")


@app.command()
def submit(
    run: RunPath,
    sample: Annotated[Path, typer.Option(help="The competition's sample_submission.csv.")],
    name: Annotated[Optional[str], typer.Option(help="Writes submissions/<name>.csv; the run's name when omitted.")] = None,
    threshold: Annotated[Optional[str], typer.Option(help="Multi-label labels format: a number, or 'oof' for per-class thresholds tuned for F1 (F-beta when the metric is fbeta); the run's submit.threshold when omitted.")] = None,
    gz: Annotated[bool, typer.Option(help="Write .csv.gz.")] = False,
    out_dir: Annotated[Path, typer.Option(help="Folder of the submissions.")] = Path("submissions"),
    metric_file: MetricFile = None,
) -> None:
    """Write a submission in the sample's exact shape from a run's or ensemble's test.csv, checked before writing."""
    from kagglecv.stages.submit import write_submission

    result = write_submission(run, sample, name, threshold=threshold, out_dir=out_dir, compress=gz)
    console.print(f"wrote {result.path}: {result.rows} rows, {result.format} format")


@app.command()
def lb(
    name: Annotated[str, typer.Argument(help="The submission file's name, as in submissions/log.csv (with or without .csv).")],
    public: Annotated[Optional[float], typer.Option(help="The public leaderboard score Kaggle showed.")] = None,
    private: Annotated[Optional[float], typer.Option(help="The private leaderboard score, once the competition ends.")] = None,
    out_dir: Annotated[Path, typer.Option(help="Folder of the submissions and their log.csv.")] = Path("submissions"),
) -> None:
    """Record the leaderboard score of a submission (read on Kaggle; nothing goes online) beside its CV."""
    from kagglecv.data.submission_log import log_path
    from kagglecv.stages.lb import record_leaderboard

    row = record_leaderboard(out_dir, name, public, private)
    gap = f", public - CV {float(row['public']) - float(row['cv']):+.4f}" if row["public"] and row["cv"] else ""
    console.print(f"{log_path(out_dir)}: {row['file']} (run {row['run']}) CV {row['cv'] or '?'} public "
                  f"{row['public'] or '?'} private {row['private'] or '?'}{gap}")


@app.command()
def infer(
    source: Annotated[Path, typer.Argument(help="A run or ensemble folder, or a bundle made by `kagglecv pack`.")],
    out: Annotated[Path, typer.Option(help="The file to write: a submission with --sample, else predictions.")],
    test: Annotated[Optional[Path], typer.Option(help="The (hidden) test table: ids, or image names, or pixel columns; without it, the sample's rows, else the image files of --images.")] = None,
    images: Annotated[Optional[Path], typer.Option(help="The folder of the test images (not for pixel tables).")] = None,
    sample: Annotated[Optional[Path], typer.Option(help="The sample submission whose exact shape to write.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Multi-label labels format: one threshold for every class; the bundle's packed thresholds, else 0.5, when omitted.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Images per batch; the run's predict batch size when omitted.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=0, help="Image-loading workers; the run's when omitted.")] = None,
    metric_file: MetricFile = None,
) -> None:
    """Replay a run's or ensemble's test predictions (folds, weights, TTA, blend) on a new test set, offline."""
    from kagglecv.core.console import Console as StageConsole
    from kagglecv.stages.infer import infer_test

    infer_test(source, test, images, out, sample, threshold=threshold, batch_size=batch_size, workers=workers,
                console=StageConsole())


@app.command()
def pack(
    source: Annotated[Path, typer.Argument(help="A run or ensemble folder.")],
    out: Annotated[Path, typer.Option(help="The bundle folder to write (replaces an earlier bundle there).")],
    wheels: Annotated[bool, typer.Option(help="Add a wheelhouse: kagglecv and what the Kaggle image lacks.")] = False,
    provided: Annotated[Optional[str], typer.Option(help="Comma-separated packages the Kaggle image has (default: torch, torchvision, timm, numpy, pandas, scikit-learn, albumentations).")] = None,
    timing_images: Annotated[int, typer.Option(min=0, help="Synthetic images to time inference on; 0 skips the timing.")] = 64,
    images: Annotated[Optional[int], typer.Option(min=1, help="With --max-minutes: the hidden test's number of images.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(min=0, help="Warn when --images images would take longer here (with --fit: on the target device).")] = None,
    fit: Annotated[bool, typer.Option(help="Pack only the runs and TTA views that score best on OOF within --max-minutes for --images images on the target device (needs --device-speed and the training images).")] = False,
    device_speed: Annotated[Optional[float], typer.Option(min=0, help="With --fit: how many times as fast as this machine the target device runs these models (0.5: half as fast); measure it, kagglecv does not guess it.")] = None,
    threshold: Annotated[Optional[str], typer.Option(help="Multi-label labels format: 'oof' (per-class, tuned on the OOF predictions for F1, or F-beta when the metric is fbeta) or a number, stored for infer.")] = None,
    wheel_platform: Annotated[Optional[str], typer.Option(help="With --wheels: the notebook's pip platform tag (Kaggle's, manylinux_2_35_x86_64, when omitted).")] = None,
    wheel_python: Annotated[Optional[str], typer.Option(help="With --wheels: the notebook's Python version (Kaggle's, 3.11, when omitted).")] = None,
    notebook: Annotated[bool, typer.Option(help="Also write OUT-notebook/: submission.ipynb and kernel-metadata.json for `kaggle kernels push`.")] = False,
    competition: Annotated[Optional[str], typer.Option(help="With --notebook: the competition's slug (its data folder under /kaggle/input).")] = None,
    format: Annotated[str, typer.Option(help="torch (safetensors) or onnx (one graph per fold, run by ONNX Runtime without torch; needs kagglecv[onnx]).")] = "torch",
    metric_file: MetricFile = None,
) -> None:
    """A self-contained folder to upload as a Kaggle dataset: chosen weights, configs, recipe, manifest, README."""
    from kagglecv.core.console import Console as StageConsole
    from kagglecv.stages.pack import fit_budget, fit_summary, pack_run, timing_warning

    names = None if provided is None else tuple(name.strip() for name in provided.split(",") if name.strip())
    budget = fit_budget(images, max_minutes, device_speed) if fit else None
    result = pack_run(source, out, wheels=wheels, provided=names, timing_images=timing_images, threshold=threshold,
                      wheel_platform=wheel_platform, wheel_python=wheel_python, notebook=notebook,
                      competition=competition, format=format, fit=budget, console=StageConsole())
    console.print(f"wrote {result.path}: {result.files} files, {result.size_bytes / 1e6:.1f} MB"
                  + (f", {len(result.wheels)} wheels" if wheels else ""))
    if result.timing is not None:
        console.print(f"inference here: {result.timing.per_image * 1000:.1f} s per 1,000 images plus "
                      f"{result.timing.fixed:.1f} s to load the models")
    if result.fit is not None:
        console.print(escape(fit_summary(result.fit)))
    if result.notebook is not None:
        console.print(f"wrote {result.notebook}: the submission notebook and its kernel metadata (put your Kaggle user "
                      "name in both metadata files)")
    warning = None if fit else timing_warning(result.timing, images, max_minutes)
    if warning:
        console.print(escape(warning))


@app.command()
def run(
    config_path: Annotated[Path, typer.Argument(help="Experiment config (YAML), or a competition folder as Kaggle ships it (then `init` writes ./<folder>.yaml first).")],
    overrides: Overrides = None,
    force: Annotated[bool, typer.Option(help="Accept a config that differs from the run folder's.")] = False,
    metric: Annotated[Optional[str], typer.Option(callback=_user_metric, help="With a competition folder: the competition's metric, for init.")] = None,
) -> None:
    """The whole pipeline: folds (if missing), train every fold (resuming), predict with TTA, score, submit."""
    from kagglecv.core.config import load_config
    from kagglecv.stages.init import check_outputs_outside, config_for_folder
    from kagglecv.workflows.run import run_pipeline

    folder = config_path if config_path.is_dir() else None
    if folder is not None:
        config_path, written = config_for_folder(folder, metric)
        if written is not None:
            _print_findings(written, then=False)
        else:
            console.print(f"using {config_path} (init wrote it earlier; delete it to start over)")
    elif metric is not None:
        raise KagglecvError("--metric: only with a competition folder; a config names its metric (metric: ...)")
    config = load_config(config_path, overrides)
    if folder is not None:
        check_outputs_outside(folder, config)
    _print_summary(run_pipeline(config, force=force))


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="The competition folder as Kaggle ships it (tables, image folders).")],
    metric: Annotated[Optional[str], typer.Option(callback=_user_metric, help="The competition's metric; needed when the sample's values fit several.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="The config to write; ./<folder name>.yaml when omitted.")] = None,
    train: Annotated[Optional[Path], typer.Option(help="The training table, when the folder holds several.")] = None,
    sample: Annotated[Optional[Path], typer.Option(help="The sample submission, when the folder holds several.")] = None,
    overrides: Overrides = None,
) -> None:
    """Write a commented config from a competition folder: tables, ids, targets, task, images, test ids, the
    submission's shape, and defaults that fit the data, each with its reason."""
    from kagglecv.stages.init import init_config

    _print_findings(init_config(folder, out, metric, overrides, train, sample))


def _print_findings(result, then: bool = True) -> None:
    from rich.table import Table

    table = Table("key", "value", "why", title=f"kagglecv init: {result.path}", title_justify="left")
    for finding in result.findings:
        value = finding.value if not isinstance(finding.value, list) or len(finding.value) <= 4 else \
            f"{len(finding.value)} columns: {', '.join(map(str, finding.value[:3]))}, ..."
        table.add_row(finding.key, escape(str(value)), escape(finding.why))
    console.print(table)
    console.print(f"wrote {result.path}" + (f": review it, then `kagglecv run {result.path}`" if then else ""))


@app.command()
def pseudo(
    run: RunPath,
    name: Annotated[str, typer.Option("--name", help="The new experiment's name.")],
    threshold: Annotated[Optional[float], typer.Option(help="Keep test images whose top probability (multi-label: "
                                                        "each label's confidence) reaches this.")] = None,
    top_frac: Annotated[Optional[float], typer.Option(help="Instead: the most confident fraction of test images.")] = None,
    soft: Annotated[bool, typer.Option(help="Train on the teacher's probabilities, not hard labels.")] = False,
    overrides: Overrides = None,
    force: Annotated[bool, typer.Option(help="Accept a config that differs from the run folder's.")] = False,
) -> None:
    """A new experiment from RUN's config whose fold k also trains on test images labelled by RUN's fold-k model
    only (leak-free); the whole pipeline, as `kagglecv run`."""
    from kagglecv.workflows.run import pseudo_config, run_pipeline

    _print_summary(run_pipeline(pseudo_config(run, name, threshold, top_frac, soft, overrides), force=force))


def _print_summary(summary) -> None:
    result = summary.score
    folds = ", ".join(f"{value:.4f}" for value in result.per_fold.values())
    console.print(f"[bold]{summary.experiment}[/bold]: CV {result.metric} {result.overall:.4f} "
                  f"(folds {result.fold_mean:.4f} ± {result.fold_std:.4f}: {folds}) in {summary.seconds:.0f} s")
    console.print(f"  OOF: {summary.oof}" + (f"\n  test: {summary.test}" if summary.test else "")
                  + (f"\n  submission: {summary.submission}" if summary.submission else ""))


@config_app.command("show")
def config_show(config_path: ConfigPath, overrides: Overrides = None) -> None:
    """Print the fully resolved config, defaults filled in."""
    from kagglecv.core.config import dump_config, load_config

    console.print(dump_config(load_config(config_path, overrides)), markup=False, highlight=False, end="")


@import_app.command("folder")
def import_folder(
    root: Annotated[Path, typer.Argument(help="A folder with one sub-folder of images per class.", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option(help="The train.csv to write.")] = Path("train.csv"),
) -> None:
    """Write a train.csv (id, image, label) from an image-folder layout: ROOT/<class>/<image>."""
    from kagglecv.data.importers import import_image_folder

    frame = import_image_folder(root, out)
    console.print(f"wrote {out}: {len(frame)} images, {frame['label'].nunique()} classes; "
                  f"config: data.image_dir={root}, data.image_col=image")


@import_app.command("voc")
def import_voc(
    root: Annotated[Path, typer.Argument(help="A VOC folder with Annotations/*.xml and JPEGImages/.", exists=True, file_okay=False)],
    out: Annotated[Path, typer.Option(help="The train.csv to write.")] = Path("train.csv"),
    image_set: Annotated[Optional[str], typer.Option(help="Only ids listed in ImageSets/Main/<NAME>.txt, e.g. trainval.")] = None,
) -> None:
    """Write a train.csv of image-level labels (-1 absent, 0 difficult, 1 present) from PASCAL VOC XML."""
    from kagglecv.data.importers import import_voc as run_import

    frame = run_import(root, out, image_set)
    console.print(f"wrote {out}: {len(frame)} images, {len(frame.columns) - 1} classes; "
                  f"config: data.image_dir={root / 'JPEGImages'}, data.target=[class columns]")


@import_app.command("coco")
def import_coco(
    label_file: Annotated[Path, typer.Argument(help="A COCO label file: images, annotations, categories (metadata.json).", exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="The train.csv to write.")] = Path("train.csv"),
    label: Annotated[str, typer.Option(help="category_id (what Herbarium, iNaturalist and iWildCam submit) or name.")] = "category_id",
) -> None:
    """Write a train.csv (id, image, label) from a COCO label file; run and init also read the file as it is."""
    from kagglecv.data.importers import import_coco as run_import

    frame = run_import(label_file, out, label)
    labels = frame["label"].nunique() if "label" in frame.columns else 0
    console.print(f"wrote {out}: {len(frame)} images, {labels} labels; config: data.image_dir={label_file.parent}, "
                  "data.image_col=image")


@app.command()
def launch(
    configs: Annotated[list[Path], typer.Argument(help="Experiment configs (YAML); each needs its own experiment name.")],
    overrides: Overrides = None,
    folds: Annotated[str, typer.Option(help="Folds to train: all, or numbers like 0,1.")] = "all",
    backend: Annotated[str, typer.Option(help="local (a process pool on this machine) or ray (a Ray cluster).")] = "local",
    jobs: Annotated[Optional[int], typer.Option(min=1, help="Jobs at once on this machine; one per GPU, or cores / --cpus-per-job, when omitted.")] = None,
    cpus_per_job: Annotated[Optional[int], typer.Option(min=1, help="CPU cores (threads) per job.")] = None,
    gpus_per_job: Annotated[float, typer.Option(min=0, help="GPUs per job (Ray); local jobs get one GPU each.")] = 1.0,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (auto, or host:port); a local cluster when omitted.")] = None,
    retries: Annotated[int, typer.Option(min=0, help="Ray: retries of a job whose process or node died (it resumes).")] = 2,
) -> None:
    """Train every (experiment, fold) as its own job on a local pool or a Ray cluster; finished experiments are then
    merged, predicted, scored and submitted as `kagglecv run` does. Re-running resumes."""
    from kagglecv.core.console import Console as StageConsole
    from kagglecv.workflows.launch import launch as launch_jobs

    result = launch_jobs(configs, overrides, folds=folds, backend=backend, jobs=jobs, cpus_per_job=cpus_per_job,
                         gpus_per_job=gpus_per_job, address=address, max_retries=retries, console=StageConsole())
    failed = [job for job in result.jobs if job.state != "done"]
    for name, value in result.finished.items():
        console.print(f"{name}: CV {value:.4f}")
    if failed:
        raise KagglecvError(f"{len(failed)} of {len(result.jobs)} jobs did not finish: "
                            + "; ".join(f"{job.name} {job.state}{': ' + job.error if job.error else ''}" for job in failed[:3]))


@app.command()
def tune(
    config_path: ConfigPath,
    space: Annotated[Path, typer.Option(help="Search space YAML: config keys to {type: float|int|categorical, low, high, log, choices}.")],
    trials: Annotated[int, typer.Option(min=1, help="Finished (complete or pruned) trials the study should have.")] = 20,
    overrides: Overrides = None,
    folds: Annotated[str, typer.Option(help="Folds each trial trains and is scored on: 0, 0,1 or all.")] = "0",
    name: Annotated[Optional[str], typer.Option(help="The study: runs/tune-<name>/; the experiment's name when omitted.")] = None,
    storage: Annotated[str, typer.Option(help="sqlite (one machine) or journal (trials on several machines, shared storage).")] = "sqlite",
    backend: Annotated[str, typer.Option(help="local, or ray: each trial's fold jobs as Ray tasks.")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address; a local cluster when omitted.")] = None,
    pruner: Annotated[str, typer.Option(help="median (Optuna's MedianPruner on the first fold's epochs) or none.")] = "median",
) -> None:
    """Search hyper-parameters with Optuna (TPE); every trial is an ordinary run. Resumes when re-run; writes the
    best parameters as --set lines and runs/tune-<name>/best.yaml."""
    from kagglecv.core.console import Console as StageConsole
    from kagglecv.workflows.tune import override
    from kagglecv.workflows.tune import tune as tune_study

    if pruner not in ("median", "none"):
        raise KagglecvError(f"--pruner {pruner!r}: expected median or none")
    if backend not in ("local", "ray"):
        raise KagglecvError(f"--backend {backend!r}: expected local or ray")
    result = tune_study(config_path, space, trials, overrides=overrides, folds=folds, name=name, storage=storage,
                        backend=backend, address=address, pruner=pruner, console=StageConsole())
    console.print(f"best {result.best_value:.4f} ({result.best_experiment}):")
    for key, value in result.best_params.items():
        console.print(f"  --set {override(key, value)}")
    console.print(f"wrote {result.best_config} and {result.trials}")


@track_app.command("sync")
def track_sync(
    runs_dir: Annotated[Path, typer.Argument(help="The folder holding the runs.")] = Path("runs"),
    uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI; sqlite:///RUNS_DIR/mlflow.db when omitted.")] = None,
    run: Annotated[Optional[list[str]], typer.Option("--run", help="Only this run (repeatable).")] = None,
) -> None:
    """Import finished runs into MLflow (idempotent: unchanged runs are skipped, changed ones replaced)."""
    from kagglecv.stages.track import sync_runs

    result = sync_runs(runs_dir, uri, only=run)
    console.print(f"{result.uri}: logged {len(result.logged)} run(s)"
                  + (f" ({', '.join(result.logged)})" if result.logged else "")
                  + f", {len(result.unchanged)} unchanged")
    console.print(f"mlflow ui --backend-store-uri {result.uri}")


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Where to build the demo competitions and their runs.")] = Path("demo"),
    epochs: Annotated[int, typer.Option(help="Epochs per fold.")] = 6,
) -> None:
    """Build two real competitions from scikit-learn's digits (multiclass, multi-label) and run the pipeline on them."""
    from kagglecv.presentation.tables import leaderboard_table
    from kagglecv.workflows.demo import run_demo

    console.print(leaderboard_table(run_demo(root, epochs)))


@app.command()
def version() -> None:
    """Print the kagglecv version."""
    console.print(__version__)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one yellow line each, without the source location people do not need."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)


CPU_RUNTIME_ENVIRONMENT = {
    # OpenMP threads that run out of work sleep instead of spinning, so two kagglecv processes on one machine, or a
    # process and its data-loader workers, take turns on the cores instead of thrashing.
    "OMP_WAIT_POLICY": "PASSIVE",
    # 2 MB pages for PyTorch's large CPU tensors: freed activations come back without a page fault per 4 KB.
    "THP_MEM_ALLOC_ENABLE": "1",
}


def share_cores() -> None:
    """Set before torch loads (the commands import it lazily; OpenMP and PyTorch's allocator read these once): the
    thread and memory settings of :data:`CPU_RUNTIME_ENVIRONMENT` (BENCHMARKS.md, "Two trainings" and "CPU
    memory pages"). A value set in the environment is kept."""
    for name, value in CPU_RUNTIME_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def skip_collection_at_exit() -> None:
    """At the interpreter's exit, move every object to the collector's permanent generation, so the shutdown skips
    sweeping torch's and timm's hundreds of thousands of objects: about 1 s of every command on 2 cores. Outputs
    are written and closed by then (atomic writes), so no finalizer has work left. Registered once however often
    ``main`` runs in one process (the tests call it in-process)."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def main() -> None:
    """Entry point: run the app, turning kagglecv errors into one red line and exit code 2.

    An operating-system error that escaped the stages' own checks (a permission, a vanished file) is still one
    line naming the file, never a traceback.
    """
    from kagglecv.core.metric_file import forget_named_metric_files

    share_cores()
    skip_collection_at_exit()
    warnings.showwarning = _show_warning
    forget_named_metric_files()  # what the user names counts for this command only
    try:
        app()
    except KagglecvError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]stopped[/yellow] (Ctrl-C); what was running saved its state: run the same command "
                          "again to resume", highlight=False, soft_wrap=True)
        raise SystemExit(130) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        err_console.print(f"[red]error:[/red] {escape(where + str(exc.strerror or exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
