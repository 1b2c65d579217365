"""The report stage: a leaderboard of every run and ensemble, the experiment journal, and pictures.

``build_report`` reads each run folder's files (config.yaml, run.json, score.json or oof.csv, fold histories) and
writes ``<runs>/report.md`` with a leaderboard, a journal (date, motivation, change against the best run before
it, result) and per-run pictures: learning curves, the score of each fold, the confusion matrix (multiclass) or
per-class AP (multi-label).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.core.files import write_text
from kagglecv.core.metrics import confusion_matrix, objective
from kagglecv.core.outputs import OutputRule
from kagglecv.core.predictions import (
    aligned,
    read_aligned,
    read_predictions,
    read_pseudo_labels,
)
from kagglecv.core.records import InspectRecord, read_record
from kagglecv.core.runs import (
    FoldDir,
    RunDir,
    config_differences,
    history_metric,
    read_json,
)
from kagglecv.data.inputs import competition_metric, load_run_table
from kagglecv.data.outcomes import Entry
from kagglecv.data.scoring import (
    finished_folds_oof,
    score_identities,
    score_predictions_frame,
)
from kagglecv.data.submission_log import (
    LeaderboardPoint,
    cv_vs_leaderboard,
    latest_public_by_run,
    log_path,
    read_log,
)
from kagglecv.data.table import as_outputs, output_columns
from kagglecv.nn.recipe import load_recipe
from kagglecv.presentation.html import render_html
from kagglecv.presentation.plots import (
    plot_confusion_matrix,
    plot_cv_vs_leaderboard,
    plot_fold_curves,
    plot_fold_scores,
    plot_per_class,
)
from kagglecv.presentation.tables import format_params

LB_PNG = "cv_vs_leaderboard.png"
PICTURES = "report.pictures"  # the report's own pictures, one folder per run: it writes nothing into a run


def collect_entries(runs_dir: Path) -> list[Entry]:
    """Every run or ensemble folder under ``runs_dir``, each read once and scored (score.json refreshed), and every
    run with only some folds finished (a tune trial on fold 0, a run still training), scored on those folds."""
    entries = []
    for path in sorted(Path(runs_dir).iterdir() if Path(runs_dir).is_dir() else []):
        run = RunDir(path)
        if path.name.startswith("."):  # dot-folders are outputs still being built
            continue
        if run.is_run():
            entries.append(_entry(run))
        elif run.config_path.is_file() and run.info_path.is_file() and not run.is_full_fit() \
                and any(f.is_done() for f in run.fold_dirs()):
            entries.append(_entry(run, partial=True))
    return [entry for entry in entries if entry is not None]


def _identity_entry(run: RunDir, config, info, data, metric, done_folds) -> Entry:
    """A ``model.identity`` run or ensemble: its MAP@k with the new label; no confusion matrix of 15,000 ids."""
    ensemble = info.kind == "ensemble"
    return Entry(
        name=run.name, path=run.path, kind=info.kind, created=info.created or "",
        backbone=info.backbone or config.model.name, img_size=None if ensemble else config.model.img_size,
        epochs=None if ensemble else config.train.epochs, params=(info.params or {}).get("total"),
        score=score_identities(run, data, metric), train_seconds=sum(f.read_done().seconds or 0.0 for f in done_folds),
        notes=config.notes, config=config.model_dump(mode="json"), classes=data.classes)


def _entry(run: RunDir, partial: bool = False) -> Entry | None:
    config, info = run.read_config(), run.read_info()
    data = load_run_table(run, config, info)
    metric = competition_metric(config, data)
    done_folds = [fold for fold in run.fold_dirs() if fold.is_done()]
    kind = info.kind
    if config.model.identity is not None:  # top-k files: scored once the predict stage has ranked every row
        return _identity_entry(run, config, info, data, metric, done_folds) if run.identities_path.is_file() \
            and not partial else None
    if partial:
        oof, data = finished_folds_oof(run, data)
        kind = f"partial: {len(done_folds)} of {info.n_folds or len(run.fold_dirs())} folds"
        result = score_predictions_frame(oof, data, metric, source=run.path)
    else:
        oof = read_predictions(run.oof_path, data.classes, oof=True)
        result = score_predictions_frame(oof, data, metric, source=run.oof_path)
    ensemble = info.kind == "ensemble"
    confusion = None
    if data.task in ("multiclass", "binary"):
        confusion = confusion_matrix(data.targets, aligned(oof, data.ids, data.classes, run.oof_path, data.source,
                                                           exact=not partial))
    seconds = sum(fold.read_done().seconds or 0.0 for fold in done_folds)
    return Entry(
        name=run.name, path=run.path, kind=kind, created=info.created or "",
        backbone=info.backbone or config.model.name, img_size=None if ensemble else config.model.img_size,
        epochs=None if ensemble else config.train.epochs, params=(info.params or {}).get("total"),
        score=result, train_seconds=seconds, notes=config.notes, config=config.model_dump(mode="json"),
        classes=data.classes, confusion=confusion, teaching=teaching_summary(run, data.classes, data.task))


def collect_full_fits(runs_dir: Path) -> list[dict]:
    """Full-data refits (``train --full``): test predictions without a CV score; their CV run's score beside them."""
    fits = []
    for path in sorted(Path(runs_dir).iterdir() if Path(runs_dir).is_dir() else []):
        run = RunDir(path)
        if path.name.startswith(".") or not run.test_path.is_file() or not run.info_path.is_file():
            continue
        info = run.read_info()
        if info.kind != "full":
            continue
        cv_score = run.cv_run().score_path
        score = read_json(cv_score, "a run's score") if cv_score.is_file() else None
        seconds = sum(fold.read_done().seconds or 0.0 for fold in run.fold_dirs() if fold.is_done())
        fits.append({"name": run.name, "cv_run": Path(info.cv_run or "").name, "epochs": info.epochs,
                     "source": info.source, "seconds": seconds, "public": "",
                     "cv": f"{score['metric']} {score['overall']:.4f}" if score else ""})
    return fits


def render_full_fits(fits: list[dict]) -> str:
    lines = ["## Full-data refits (test predictions only, no CV score)", "",
             "| refit | CV run | CV run's score | epochs | weights | train time | public LB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {fit['name']} | {fit['cv_run']} | {fit['cv']} | {fit['epochs']} | {fit['source']} | "
              f"{_duration(fit['seconds'])} | {fit['public']} |" for fit in fits]
    return "\n".join(lines) + "\n"


@dataclass
class Report:
    """What ``build_report`` wrote: the leaderboard (best first, by competition) and the files."""

    leaderboard: list[Entry]
    markdown: Path
    html: Path
    submissions: list[LeaderboardPoint]
    correlation: float | None


def build_report(runs_dir: Path, pictures: bool = True, *, submissions_dir: Path = Path("submissions")) -> Report:
    """Score every run, draw its pictures, read each run's error analysis and the submissions log, and write
    ``runs_dir/report.md``, the self-contained ``runs_dir/report.html`` and ``runs_dir/report.pictures/``: the report
    only reads the run folders (``report --inspect`` runs ``inspect`` on stale runs first, as its own stage)."""
    runs_dir = Path(runs_dir)
    entries = collect_entries(runs_dir)
    if not entries:
        raise KagglecvError(f"{runs_dir}: no runs with an oof.csv; train (and predict) something first")
    competitions = group_by_competition(entries)
    for group in competitions.values():
        _fill_changes(group)
    log = read_log(log_path(submissions_dir))
    public = latest_public_by_run(log)
    points, correlation = cv_vs_leaderboard(log)
    rule = OutputRule.of()
    picture_dir = runs_dir / PICTURES
    rule.own(picture_dir)
    lb_picture = picture_dir / LB_PNG if pictures and points else None
    if lb_picture is not None:
        plot_cv_vs_leaderboard(points, correlation, lb_picture)
    for entry in entries:
        entry.public = public.get(entry.name, "")
        if pictures:
            entry.pictures = draw_run_pictures(entry, picture_dir / entry.name)
        if not entry.kind.startswith("partial"):  # inspect needs every row's OOF prediction
            _attach_analysis(entry)
    ranked = {name: sorted(group, key=_rank_key) for name, group in competitions.items()}
    full_fits = collect_full_fits(runs_dir)
    for fit in full_fits:
        fit["public"] = public.get(fit["name"], "")
    path = rule.file(runs_dir / "report.md", "the report")
    sections = [render_competition(name, ranked[name], group, runs_dir) for name, group in competitions.items()]
    if full_fits:
        sections.append(render_full_fits(full_fits))
    if lb_picture is not None:
        sections.append(f"## CV against the leaderboard\n\n![cv vs leaderboard]({PICTURES}/{LB_PNG})\n")
    write_text(path, "# kagglecv report\n\n" + "\n".join(sections))
    html_path = rule.file(runs_dir / "report.html", "the report")
    write_text(html_path, render_html(ranked, competitions, points, correlation, lb_picture, full_fits))
    leaderboard = [entry for group in ranked.values() for entry in group]
    return Report(leaderboard, path, html_path, points, correlation)


def _attach_analysis(entry: Entry) -> None:
    """The run's ``inspect.json`` (read through its schema) when it is newer than its OOF predictions; a stale or
    missing one is left out with the reason (``kagglecv inspect RUN``, or ``report --inspect``, refreshes it)."""
    run = RunDir(entry.path)
    if not run.inspect_path.is_file():
        return
    try:
        if not run.analysis_is_current():
            entry.analysis_error = f"{run.inspect_path} is older than the OOF predictions: run kagglecv inspect {run.path}"
            return
        entry.analysis = read_record(InspectRecord, read_json(run.inspect_path, "a run's error analysis"),
                                     run.inspect_path).model_dump()
    except KagglecvError as exc:  # a corrupt record: the rest of the report stands
        entry.analysis_error = str(exc).splitlines()[0]


def group_by_competition(entries: list[Entry]) -> dict[str, list[Entry]]:
    """Runs are only comparable on the same training table and metric: group them by both."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        key = f"{entry.config['data']['train_csv']} ({entry.score.metric})"
        groups.setdefault(key, []).append(entry)
    return groups


def _rank_key(entry: Entry) -> float:
    """Best first: the score's objective, descending."""
    return -objective(entry.score.overall, entry.score.higher_is_better)


def _fill_changes(entries: list[Entry]) -> None:
    """For each entry in the order they were made: what differs from the best entry made before it."""
    ordered = sorted(entries, key=lambda entry: entry.created)
    best: Entry | None = None
    for entry in ordered:
        if entry.kind == "ensemble":
            entry.change = [entry.notes or "ensemble"]
            continue
        if best is None:
            entry.change = ["first experiment"]
        else:
            changes = config_differences(_comparable(best.config), _comparable(entry.config))
            entry.change = [f"vs {best.name}: {change}" for change in changes] or [f"same config as {best.name}"]
        if best is None or _rank_key(entry) < _rank_key(best):
            best = entry


def _comparable(config: dict) -> dict:
    """A config without the keys that differ between any two experiments by construction."""
    return {key: value for key, value in config.items() if key not in ("experiment", "notes")}


def draw_run_pictures(entry: Entry, folder: Path) -> list[Path]:
    """Learning curves, fold scores, and the confusion matrix or per-class AP of one run, drawn into the report's
    own ``folder`` (never into the run); returns the PNGs."""
    run, drawn = RunDir(entry.path), RunDir(folder)
    pictures = []
    histories = {fold.index: history.to_dict("records") for fold in run.fold_dirs()
                 if (history := fold.read_history()) is not None}
    metric_key = history_metric(histories[min(histories)][0] if histories else [])
    if histories:
        pictures.append(drawn.curves_png)
        plot_fold_curves(histories, metric_key, pictures[-1], f"{entry.name}: learning curves")
    if entry.score.per_fold:
        pictures.append(drawn.fold_scores_png)
        plot_fold_scores(entry.score.per_fold, entry.score.metric, entry.score.overall, pictures[-1],
                         f"{entry.name}: OOF {entry.score.metric} per fold")
    if entry.score.per_class_kind != "AP" and entry.confusion is None:  # a regression: no class to draw
        return pictures
    if entry.confusion is None:
        pictures.append(drawn.per_class_ap_png)
        plot_per_class(entry.score.per_class, "average precision", pictures[-1], f"{entry.name}: OOF AP per class")
    else:
        pictures.append(drawn.confusion_png)
        plot_confusion_matrix(entry.confusion, entry.classes, pictures[-1], f"{entry.name}: OOF confusion matrix")
    return pictures


def render_competition(name: str, leaderboard: list[Entry], entries: list[Entry], runs_dir: Path) -> str:
    """The markdown section of one competition: leaderboard, journal, then each run's pictures."""
    lines = [f"## {name}", "", "### Leaderboard", "",
             "| # | experiment | kind | backbone | parameters | size | epochs | CV (all OOF rows) | folds mean ± std | "
             "per fold | train time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rank, entry in enumerate(leaderboard, start=1):
        folds = " / ".join(f"{value:.4f}" for value in entry.score.per_fold.values())
        lines.append(f"| {rank} | {entry.name} | {entry.kind} | {entry.backbone} | {format_params(entry.params)} | "
                     f"{entry.img_size or ''} | "
                     f"{entry.epochs or ''} | {entry.score.metric} {entry.score.overall:.4f} | "
                     f"{entry.score.fold_mean:.4f} ± {entry.score.fold_std:.4f} | {folds} | "
                     f"{_duration(entry.train_seconds)} |")
    lines += ["", "### Journal", "", "| date | experiment | motivation | change | result | public LB |",
              "| --- | --- | --- | --- | --- | --- |"]
    for entry in sorted(entries, key=lambda entry: entry.created):
        change = "<br>".join(entry.change[:6]) + (f"<br>and {len(entry.change) - 6} more" if len(entry.change) > 6 else "")
        lines.append(f"| {entry.created[:16].replace('T', ' ')} | {entry.name} | {entry.notes or ''} | {change} | "
                     f"{entry.score.metric} {entry.score.overall:.4f} | {entry.public} |")
    for entry in leaderboard:
        lines += ["", f"### {entry.name}", ""]
        others = ", ".join(f"{name} {value:.4f}" for name, value in list(entry.score.other_metrics.items())[:8])
        lines += [f"{entry.score.metric} {entry.score.overall:.4f} on {entry.score.rows} OOF rows; also: {others}", ""]
        if entry.teaching:
            lines += ["Pseudo-labels: " + "; ".join(entry.teaching), ""]
        lines += [f"![{picture.stem}]({picture.relative_to(runs_dir).as_posix()})" for picture in entry.pictures]
        if entry.analysis:
            found = entry.analysis
            lines += ["", f"Error analysis: {found['label_issues']} likely label errors in "
                      f"[{found['label_issues_file']}]({entry.name}/{found['label_issues_file']}), "
                      f"{len(found['duplicate_conflicts'])} near-duplicate pairs with different labels", ""]
            lines += [f"![{name}]({entry.name}/{name})" for name in found["pictures"]]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    if not seconds:
        return ""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def teaching_summary(run: RunDir, classes: list[str], task: str) -> list[str]:
    """One line per fold that trained on pseudo-labels: how many, how often the student's own fold-k test
    predictions agree with them (it trained on them), and with its teacher's fold-k model on the test images it was
    not given (the share of labels, where multi-label; unsure labels left out)."""
    lines = []
    for folder in run.fold_dirs():
        stats = folder.read_done().pseudo if folder.is_done() else None
        if stats is None:
            continue
        line = f"fold {folder.index}: {stats.labels} of {stats.test_rows} test images pseudo-labelled"
        if folder.pseudo_path.is_file() and folder.test_path.is_file():
            line += f"; the student agrees with {pseudo_agreement(folder, classes, task):.1%} of them"
            elsewhere = _agreement_elsewhere(folder, run.path.parent / stats.teacher, classes, task)
            if elsewhere is not None:
                line += f" and with its teacher on {elsewhere[0]:.1%} of the {elsewhere[1]} others"
        lines.append(line)
    return lines


def _agreement_elsewhere(folder: FoldDir, teacher: Path, classes: list[str], task: str) -> tuple[float, int] | None:
    """Student and teacher fold-k models on the test images that were not pseudo-labelled (None when there are
    none, or the teacher's files are gone)."""
    student = read_predictions(folder.test_path, classes)
    labelled = set(read_pseudo_labels(folder.pseudo_path, output_columns(classes, task))["id"])
    rest = [image_id for image_id in student["id"] if image_id not in labelled]
    if not rest:
        return None
    try:
        theirs = load_recipe(teacher).fold_test_predictions(folder.index, np.array(rest, dtype=object))
    except (KagglecvError, DataError):
        return None
    mine = aligned(student, rest, classes, folder.test_path, folder.pseudo_path, exact=False)
    return _share_agreeing(as_outputs(mine, task), as_outputs(theirs, task), task), len(rest)


def pseudo_agreement(folder: FoldDir, classes: list[str], task: str) -> float:
    """Share of a fold's pseudo-labels its own test predictions repeat (top class; per label for multi-label)."""
    labels = read_pseudo_labels(folder.pseudo_path, output_columns(classes, task))
    student = read_aligned(folder.test_path, labels["id"], classes, folder.pseudo_path, exact=False)
    return _share_agreeing(as_outputs(student, task), labels.set_index("id").to_numpy(np.float32), task)


def _share_agreeing(mine: np.ndarray, theirs: np.ndarray, task: str) -> float:
    """Share of rows (multiclass: the top class) or of labels (0.5 threshold per output) on which two sets of
    outputs agree; NaN labels of ``theirs`` (unsure pseudo-labels) are left out."""
    if task == "multiclass":
        return float(np.mean(mine.argmax(axis=1) == theirs.argmax(axis=1)))
    known = ~np.isnan(theirs)
    return float(np.mean((mine[known] >= 0.5) == (theirs[known] >= 0.5)))
