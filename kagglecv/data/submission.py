"""The decisions a submission makes, one owner for ``submit``, ``pack``, ``infer`` and the notebook: the multi-label
thresholds (a number, or tuned on the run's OOF for its metric's F-beta), the grade cut-offs of ``qwk_thresholds``,
the shape (the run's ``submit.format``, else the sample's), and the checks every submission passes before it is
written (the sample's header, every id once in its order, values in range, only known labels).
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from kagglecv.core.config import DataConfig
from kagglecv.core.errors import DataError, KagglecvError, summarize
from kagglecv.core.files import write_bytes
from kagglecv.core.metrics import (
    expected_grade,
    threshold_beta,
    tune_grade_cutoffs,
    tune_other_threshold,
    uses_grade_cutoffs,
)
from kagglecv.core.predictions import (
    FLOAT_FORMAT,
    HEAD_SEPARATOR,
    aligned,
    compare_ids,
    head_blocks,
    not_probabilities,
    prediction_frame,
    read_aligned,
    require_same_ids,
)
from kagglecv.core.records import IdentityRecord
from kagglecv.core.runs import RunDir, read_json
from kagglecv.core.shapes import (
    SubmissionShape,
    checked_cutoffs,
    checked_other,
    checked_thresholds,
    shaped_columns,
)
from kagglecv.core.topk import TopK, with_new_label
from kagglecv.data.inputs import load_run_table
from kagglecv.data.load import coarse_of
from kagglecv.data.long import long_values
from kagglecv.data.scoring import coarse_frame
from kagglecv.data.table import Answers, CompetitionData, read_csv_strings


@dataclass(frozen=True)
class SubmissionDecisions:
    """Every choice that turns probabilities into a submission, resolved once by :func:`decide_submission` for a run,
    an ensemble or a bundle with the user's overrides: ``submit``, ``infer`` (so the offline notebook) and ``pack``
    (which records a bundle's) read these and decide nothing themselves."""

    shape: SubmissionShape                            # submit.format and top_k (auto: the sample's shape)
    thresholds_for: Callable[[], dict[str, float]]   # per-class multi-label cuts; asked only for label lists
    cutoffs: list[float] | None = None                # qwk_thresholds grade cut-offs; None: labels are the argmax
    label_sep: str = " "
    value_range: dict[str, tuple[float, float]] | None = None  # regression: each target's values clipped to it
    long_id: str | None = None                        # data.long_id: one sample row per (image, class)
    other: tuple[str, float] | None = None           # submit.other_label and its threshold tuned on OOF


def decide_submission(run: RunDir, classes: list[str], task: str, *, threshold: str | float | None = None,
                      label_sep: str = " ") -> SubmissionDecisions:
    """The submission decisions of ``run``: ``threshold`` (a number, or ``oof``) overrides; else a bundle's packed
    thresholds (0.5 without them); else the run's ``submit.threshold`` (``oof``: tuned on its OOF predictions, for
    the F-beta of its metric). Tuning reads the training table, so it happens only when label lists ask for it."""
    chosen = None if threshold is None else parse_threshold(threshold)

    @functools.cache
    def thresholds_for() -> dict[str, float]:
        if chosen is not None:
            return _resolve_thresholds(chosen, run, classes)
        if run.thresholds_path.is_file():
            recorded = read_json(run.thresholds_path, "the bundle's per-class thresholds")
            return checked_thresholds(recorded, classes, run.thresholds_path)
        if run.info_path.is_file() and run.read_info().bundle is not None:  # a bundle: packed thresholds only
            return dict.fromkeys(classes, 0.5)
        return _resolve_thresholds(parse_threshold(_configured_threshold(run)), run, classes)

    return SubmissionDecisions(_configured_shape(run), thresholds_for, _run_cutoffs(run, classes, task), label_sep,
                               _run_range(run, task), _configured_long_id(run), _run_other(run, classes, task))


def _run_other(run: RunDir, classes: list[str], task: str) -> tuple[str, float] | None:
    """``submit.other_label`` and its threshold: a bundle's recorded one, else tuned on the run's OOF predictions
    (:func:`~kagglecv.core.metrics.tune_other_threshold`); None without the key."""
    if run.other_path.is_file():
        return checked_other(read_json(run.other_path, "the bundle's other label"), classes, run.other_path)
    try:
        submit = run.read_config().submit
    except KagglecvError:
        return None
    if submit.other_label is None:
        return None
    if submit.other_label in classes:
        raise KagglecvError(f"submit.other_label: {submit.other_label!r} is a class of the run; the other answer "
                            "names a class absent from training")
    if task != "multiclass":
        raise KagglecvError(f"submit.other_label: {submit.other_label!r} answers a single-label (multiclass) image of "
                            f"a class absent from training; this run is {task} with classes {summarize(classes, 4)}")
    if run.read_info().bundle is not None:
        raise KagglecvError(f"{run.path}: a bundle without {run.other_path.name} for submit.other_label; pack it again")
    _, data, oof = _oof_of_run(run, classes)
    threshold, _, _ = tune_other_threshold(oof, data.targets, submit.other_share)
    return submit.other_label, min(threshold, 1.0)


def _configured_long_id(run: RunDir) -> str | None:
    """The run's ``data.long_id`` (None for a run folder whose config cannot be read here)."""
    try:
        return run.read_config().data.long_id
    except KagglecvError:
        return None


def _run_range(run: RunDir, task: str) -> dict[str, tuple[float, float]] | None:
    """A regression run's recorded target range (``run.json``), what its submissions are clipped to; a regression
    run without one (made elsewhere) is refused rather than submitted unclipped."""
    if task != "regression":
        return None
    recorded = run.read_info().target_range
    if recorded is None:
        raise KagglecvError(f"{run.info_path}: a regression run without target_range; train or pack it again")
    return recorded


def _run_cutoffs(run: RunDir, classes: list[str], task: str) -> list[float] | None:
    """For a run scored by ``qwk_thresholds``: the grade cut-offs tuned on its OOF predictions (a bundle's recorded
    ones); None for any other metric (labels are the argmax)."""
    try:
        metric = run.read_config().metric
    except KagglecvError:
        return None
    if not uses_grade_cutoffs(metric, task):
        return None
    if run.cutoffs_path.is_file():
        return checked_cutoffs(read_json(run.cutoffs_path, "the bundle's grade cut-offs"), classes, run.cutoffs_path)
    if run.read_info().bundle is not None:
        raise KagglecvError(f"{run.path}: a qwk_thresholds bundle without {run.cutoffs_path.name}; pack the run again")
    _, data, oof = _oof_of_run(run, classes)
    return cutoffs_from_oof(data.targets, oof, classes)


def _configured_threshold(run: RunDir) -> float | str:
    """The run's ``submit.threshold`` (0.5 for a run folder whose config cannot be read here)."""
    try:
        return run.read_config().submit.threshold
    except KagglecvError:
        return 0.5


def _configured_shape(run: RunDir) -> "SubmissionShape":
    """The run's ``submit.format`` and ``top_k`` (auto for a run folder whose config cannot be read here)."""
    try:
        submit = run.read_config().submit
    except KagglecvError:
        return SubmissionShape()
    return SubmissionShape.of(submit)


def submission_from_predictions(ids, probabilities: np.ndarray, classes: list[str], task: str, source: Path,
                                sample_path: Path, out: Path, decisions: SubmissionDecisions,
                                answers: Answers | None = None) -> str:
    """Write ``out`` (gzip when it ends in ``.gz``) from predictions of the rows of ``source`` held in memory (of
    their ``answers`` when several images make one), checked as ``submit`` checks; returns the format."""
    predictions = prediction_frame(ids, probabilities, classes)
    if answers is not None:
        predictions = answer_predictions(predictions, np.asarray(ids, dtype=object), answers, Path(source))
    frame, fmt, _ = build_submission(predictions, Path(source), Path(sample_path), classes, task, decisions)
    write_bytes(out, encode_submission(frame, str(out).endswith(".gz")))
    return fmt


def identity_submission(top: TopK, record: IdentityRecord, classes: list[str], sample_path: Path,
                        predictions_path: Path, label_sep: str = " ") -> pd.DataFrame:
    """An identity run's submission: each of the sample's rows the first k identities of its top-k row (k the
    metric's), the new label placed at the threshold tuned on OOF; checked as every submission is."""
    sample = read_csv_strings(sample_path)
    if sample.shape[1] != 2:
        raise DataError(f"{sample_path}: expected an id column and one column of identities, got "
                        f"{summarize(list(sample.columns), quote=True)}")
    id_col = sample.columns[0]
    require_same_ids(top.ids, sample[id_col], predictions_path, sample_path, "extra")
    ordered = top.ordered_as(sample[id_col])
    k = record.metric_k
    if record.new_label is None:
        lists = [row[:k] for row in ordered.lists()]
    else:
        threshold = -np.inf if record.threshold is None else record.threshold
        lists = with_new_label(ordered, threshold, record.new_label, k)
    out = pd.DataFrame({id_col: sample[id_col], sample.columns[1]: [label_sep.join(row) for row in lists]})
    known = [*classes, *([record.new_label] if record.new_label else [])]
    validate_submission(out, sample, sample_path, "labels", known, label_sep)
    return out


def build_submission(predictions: pd.DataFrame, predictions_path: Path, sample_path: Path, classes: list[str],
                     task: str, decisions: SubmissionDecisions) -> tuple[pd.DataFrame, str, dict | None]:
    """The submission frame in the sample's shape (or the decided shape), validated; thresholds are asked for only
    for label lists."""
    sample = read_csv_strings(sample_path)
    if sample.shape[1] < 2:
        raise DataError(f"{sample_path}: expected an id column and at least one value column, got {list(sample.columns)}")
    id_col = sample.columns[0]
    if decisions.long_id is not None:
        return _long_submission(predictions, sample, sample_path, classes, task, decisions), "long", None
    values = _align_to_sample(predictions, sample[id_col], predictions_path, sample_path)
    fmt, k = decisions.shape.resolve(sample, classes, task, sample_path)
    thresholds = decisions.thresholds_for() if fmt == "labels" else None
    other = decisions.other if fmt == "label" else None
    columns = shaped_columns(values, classes, fmt, list(sample.columns[1:]), k, thresholds, decisions.cutoffs,
                             decisions.label_sep, decisions.value_range, other)
    out = pd.DataFrame({id_col: sample[id_col]} | columns)
    validate_submission(out, sample, sample_path, fmt, [*classes, *([other[0]] if other else [])],
                        decisions.label_sep)
    return out, fmt, thresholds


def scored_predictions(predictions: pd.DataFrame, classes: list[str], task: str,
                       data: DataConfig) -> tuple[pd.DataFrame, list[str], str]:
    """Predictions of a run as the competition scores them: of ``data.target``'s classes when the run learned a
    finer label (``data.finer``), else as they are; with their classes and task."""
    if data.finer is None:
        return predictions, classes, task
    coarse = coarse_of(data, classes)
    return coarse_frame(predictions, classes, coarse), coarse.classes, coarse.task


def scored_classes(classes: list[str], task: str, data: DataConfig) -> tuple[list[str], str]:
    """The classes and task the competition scores a run's predictions in (see :func:`scored_predictions`)."""
    if data.finer is None:
        return classes, task
    coarse = coarse_of(data, classes)
    return coarse.classes, coarse.task


def answer_predictions(predictions: pd.DataFrame, ids: np.ndarray, answers: Answers, table: Path) -> pd.DataFrame:
    """Image predictions as their answers' (``data.answer_id``): each answer's rows gathered by ``answers.how``, the
    answer keys as ids. ``ids``/``answers`` are the test table's rows; a predicted id it lacks is an error."""
    key_of = pd.Series(answers.keys, index=ids)
    unknown = [image_id for image_id in predictions["id"] if image_id not in key_of.index]
    if unknown:
        raise DataError(f"{table}: no answer for {len(unknown)} predicted ids: {summarize(unknown, quote=True)}")
    values = predictions.drop(columns=["id", "fold"], errors="ignore")
    keys, gathered, _ = Answers(key_of.loc[predictions["id"]].to_numpy(), answers.how).gather(values.to_numpy())
    return prediction_frame(keys, gathered, list(values.columns))


def _long_submission(predictions: pd.DataFrame, sample: pd.DataFrame, sample_path: Path, classes: list[str],
                     task: str, decisions: SubmissionDecisions) -> pd.DataFrame:
    """One value per sample row (``data.long_id``: an image and a class), in the sample's order; a probability in
    [0, 1], or a regression's value clipped to its range."""
    if sample.shape[1] != 2:
        raise DataError(f"{sample_path}: a long submission has an id column and one value column, got "
                        f"{summarize(list(sample.columns), quote=True)}")
    ids = sample.iloc[:, 0]
    doubled = compare_ids(ids, []).doubled
    if doubled:
        raise DataError(f"{sample_path}: {len(doubled)} ids appear more than once: {summarize(doubled, quote=True)}")
    if task == "heads":  # a row per (image, head): the head's likeliest class
        labels = _head_labels(predictions, classes)
        heads = list(labels.columns[1:])
        return pd.DataFrame({sample.columns[0]: ids,
                             sample.columns[1]: long_values(labels, ids, decisions.long_id, heads, sample_path)})
    values = long_values(predictions, ids, decisions.long_id, classes, sample_path).astype(np.float64)
    if decisions.value_range is not None:  # the widest of the targets' ranges
        ranges = list(decisions.value_range.values())
        values = np.clip(values, min(low for low, _ in ranges), max(high for _, high in ranges))
    out = pd.DataFrame({sample.columns[0]: ids, sample.columns[1]: values})
    validate_submission(out, sample, sample_path, "values" if task == "regression" else "positive", classes)
    return out


def _head_labels(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Each image's likeliest class of each head (``<head>=<class>`` columns), one column per head."""
    values = predictions[classes].to_numpy(np.float64)
    labels = {head: np.array([name.split(HEAD_SEPARATOR, 1)[1] for name in classes[block]], dtype=object)[
        values[:, block].argmax(axis=1)] for head, block in head_blocks(classes)}
    return pd.DataFrame({"id": predictions["id"].to_numpy()} | labels)


def encode_submission(out: pd.DataFrame, compress: bool) -> bytes:
    text = out.to_csv(index=False, lineterminator="\n", float_format=FLOAT_FORMAT).encode()
    return gzip.compress(text, mtime=0) if compress else text


def validate_submission(out: pd.DataFrame, sample: pd.DataFrame, sample_path: Path, fmt: str, classes: list[str],
                        label_sep: str = " ") -> None:
    """Kaggle's contract: the sample's header, every id once in the sample's order, finite values in range."""
    if list(out.columns) != list(sample.columns):
        raise DataError(f"submission columns {list(out.columns)} differ from {sample_path}'s {list(sample.columns)}")
    if len(out) != len(sample) or not (out.iloc[:, 0].to_numpy() == sample.iloc[:, 0].to_numpy()).all():
        raise DataError(f"submission ids differ from {sample_path} (count or order)")
    if fmt in ("probabilities", "positive", "values"):
        values = out.iloc[:, 1:].to_numpy(np.float64)
        bad = ~np.isfinite(values) if fmt == "values" else not_probabilities(values)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            wrong = "NaN or inf values" if fmt == "values" else "values outside [0, 1], NaN or inf"
            raise DataError(f"submission has {len(rows)} rows with {wrong}: "
                            f"{summarize([str(out.iat[r, 0]) for r in rows])}")
    else:
        known = set(classes)
        cells = out.iloc[:, 1].astype(str)
        labels_of = (lambda cell: [cell]) if fmt == "label" else (lambda cell: cell.split(label_sep))
        unknown = sorted({label for cell in cells for label in labels_of(cell) if label and label not in known})
        if unknown:
            raise DataError(f"submission has labels that are not classes: {summarize(unknown, quote=True)}")


def _align_to_sample(predictions: pd.DataFrame, sample_ids: pd.Series, predictions_path: Path, sample_path: Path) -> np.ndarray:
    duplicated = compare_ids(sample_ids, []).doubled
    if duplicated:
        raise DataError(f"{sample_path}: {len(duplicated)} ids appear more than once: {summarize(duplicated, quote=True)}")
    differences = compare_ids(predictions["id"], list(sample_ids))
    if differences.missing:
        raise DataError(f"{predictions_path}: no prediction for {len(differences.missing)} ids of {sample_path}: "
                        f"{summarize(differences.missing, quote=True)}")
    if differences.extra:
        raise DataError(f"{predictions_path}: {len(differences.extra)} ids are not in {sample_path}: "
                        f"{summarize(differences.extra, quote=True)}")
    return aligned(predictions, sample_ids, [column for column in predictions.columns if column != "id"],
                   predictions_path, sample_path)


def parse_threshold(threshold: str | float) -> float | str:
    """``oof``, or a number strictly between 0 and 1."""
    if threshold == "oof":
        return "oof"
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise KagglecvError(f"--threshold: expected a number in (0, 1) or 'oof', got {threshold!r}") from None
    if not 0 < value < 1:
        raise KagglecvError(f"--threshold: expected a number in (0, 1), got {value}")
    return value


def _resolve_thresholds(threshold: float | str, run: RunDir, classes: list[str]) -> dict[str, float]:
    """One threshold for every class (a number), or per class tuned on the run's OOF (``oof``) for F1, or for the
    F-beta of the run's metric when it is one (``fbeta:<beta>:<average>``, ``f2_samples``)."""
    if threshold == "oof":
        source, data, oof = _oof_of_run(run, classes)
        return thresholds_from_oof(data.targets, oof, classes, source.read_config().metric, data.task)
    return dict.fromkeys(classes, parse_threshold(threshold))


def _oof_of_run(run: RunDir, classes: list[str]) -> tuple[RunDir, CompetitionData, np.ndarray]:
    """The run whose OOF predictions stand for ``run`` (a full refit's CV run), its training table, and those
    predictions in the table's row order."""
    source = run.oof_source()
    data = load_run_table(source)
    return source, data, read_aligned(source.oof_path, data.ids, classes, data.source)


def thresholds_from_oof(targets: np.ndarray, oof: np.ndarray, classes: list[str], metric: str | None,
                        task: str) -> dict[str, float]:
    """Per-class thresholds tuned on OOF predictions for the F-beta of ``metric`` (F1 for any other metric)."""
    return dict(zip(classes, map(float, tune_thresholds(targets, oof, threshold_beta(metric, task)))))


def cutoffs_from_oof(targets: np.ndarray, oof: np.ndarray, classes: list[str]) -> list[float]:
    """The grade cut-offs ``qwk_thresholds`` labels are cut at, tuned on OOF predictions."""
    return [float(value) for value in tune_grade_cutoffs(targets, expected_grade(oof), len(classes))]


def tune_thresholds(targets: np.ndarray, scores: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """Per class, the threshold that maximizes that class's F-beta (F1 by default) on OOF (difficult rows ignored);
    0.5 without positives.

    Candidates are the midpoints between consecutive distinct scores, so the chosen threshold separates the same
    OOF rows whatever the spacing of the scores.
    """
    thresholds = np.full(scores.shape[1], 0.5)
    for column in range(scores.shape[1]):
        known = targets[:, column] != -1
        truth, score = targets[known, column] == 1, scores[known, column]
        if not truth.any():
            continue
        order = np.argsort(-score, kind="stable")
        sorted_scores, sorted_truth = score[order], truth[order]
        true_positives = np.cumsum(sorted_truth)
        # F-beta with the top k rows predicted positive: (1 + b^2) tp / (b^2 positives + k)
        fscore = (1 + beta**2) * true_positives / (beta**2 * truth.sum() + np.arange(1, len(order) + 1))
        last_of_block = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
        fscore = np.where(last_of_block, fscore, -1)
        best = int(np.argmax(fscore))
        below = sorted_scores[best + 1] if best + 1 < len(sorted_scores) else 0.0
        thresholds[column] = (sorted_scores[best] + below) / 2
    return thresholds
