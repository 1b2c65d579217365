"""The score stage: the OOF score exactly as the competition computes it, overall, per fold and per class.

Works on any folder with an ``oof.csv`` and a ``config.yaml`` (a run or an ensemble), or on an OOF file made by
another tool together with the training table (``score_oof_file``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.config import DataConfig
from kagglecv.core.errors import DataError, KagglecvError, summarize
from kagglecv.core.files import write_json
from kagglecv.core.metric_file import call_score, load_score_function
from kagglecv.core.metrics import (
    ALIASES,
    LABEL_METRICS,
    fits_task,
    heads_parts,
    is_metric_file,
    map_at_k_lists,
    resolve_metric,
    score,
    score_labels,
    skm,
)
from kagglecv.core.predictions import (
    check_class_columns,
    compare_ids,
    not_probabilities,
    read_predictions,
    require_same_ids,
)
from kagglecv.core.runs import RunDir
from kagglecv.core.shapes import cells_are_tags
from kagglecv.data.load import load_train
from kagglecv.data.long import widen
from kagglecv.data.scoring import ScoreResult, run_score, score_predictions_frame
from kagglecv.data.table import CompetitionData, read_csv_strings


def score_run(run_path: Path, metric: str | None = None, write: bool = True,
              data: CompetitionData | None = None) -> ScoreResult:
    """Score ``run_path/oof.csv`` against the run's training table (``data``, when the caller has read it);
    write ``score.json`` beside it."""
    run = RunDir(run_path)
    result = run_score(run, metric, data)
    if write:
        write_json(run.for_writing("score").score_path, result.to_dict())
    return result


def score_oof_file(oof_path: Path, truth_path: Path, target: str | list[str] | None = None, id_col: str = "id",
                   task: str | None = None, metric: str | None = None) -> ScoreResult:
    """Score an OOF file from anywhere; its value columns give the class order.

    Without ``target``: the truth's ``label`` column when it has one, else its columns named like the OOF file's
    class columns (a wide 0/1 table, or -1/0/1 in the VOC convention).
    """
    oof = read_predictions(oof_path)
    classes = [column for column in oof.columns if column not in ("id", "fold")]
    if target is None:
        header = list(read_csv_strings(truth_path).columns)
        target = "label" if "label" in header or not set(classes) <= set(header) else classes
    config = DataConfig(train_csv=truth_path, target=target, id_col=id_col, task=task,
                        classes=None if isinstance(target, list) else classes)
    data = load_train(config)
    check_class_columns(oof, data.classes, oof_path)
    return score_predictions_frame(oof, data, resolve_metric(metric, data.task, "--metric"), source=oof_path)


def score_submission(submission_path: Path, solution_path: Path, metric: str, label_sep: str = " ", *,
                     long_id: str | None = None) -> float:
    """Score a submission against a solution file, as Kaggle would: rows matched by id, every id exactly once.

    The solution holds the truth as a class-name column, a separated-labels column, or 0/1 class columns (one-hot
    classes when every row holds exactly one 1 and the metric is a multiclass one). The submission holds class
    names / separated labels (scored with accuracy, f1_* or balanced_accuracy, qwk from the label indices; for
    multi-label: f1_micro, f1_macro, f1_samples) or probability columns named by class, each in [0, 1].
    """
    solution, submission = read_csv_strings(solution_path), read_csv_strings(submission_path)
    id_col = solution.columns[0]
    if is_metric_file(metric):
        return _score_with_metric_file(metric, solution_path, submission_path, solution, submission)
    doubled = compare_ids(solution[id_col], []).doubled
    if doubled:
        raise DataError(f"{solution_path}: {len(doubled)} ids appear more than once: {summarize(doubled, quote=True)}; "
                        "a solution has every id once")
    if submission.columns[0] != id_col:
        raise DataError(f"{submission_path}: first column {submission.columns[0]!r}, expected the id column {id_col!r}")
    require_same_ids(submission[id_col], solution[id_col], submission_path, solution_path, "extra")
    if long_id is not None and metric.startswith("heads:"):
        return _score_heads(submission, solution, metric, long_id, submission_path, solution_path)
    if long_id is not None:  # one row per (image, class): both files in the wide form the metric scores
        solution, _ = widen(solution, id_col, solution.columns[1], long_id, solution_path)
        submission, _ = widen(submission, id_col, submission.columns[1], long_id, submission_path,
                              list(solution.columns[1:]))
    submission = submission.set_index(id_col).loc[solution[id_col]]
    truth_columns = list(solution.columns[1:])
    if fits_task(metric, "regression"):
        return _score_values(submission, solution.set_index(id_col), metric, submission_path, solution_path)
    if len(truth_columns) == 1 and len(submission.columns) == 1 and _binary_truth(solution[truth_columns[0]]):
        return _score_positive_column(submission.iloc[:, 0], solution[truth_columns[0]], metric, submission_path)
    truth = _Truth.of(solution, truth_columns, submission, metric, label_sep, solution_path)
    if len(submission.columns) == 1 and not truth.multilabel and _is_top_k(submission.iloc[:, 0], metric, set(truth.cells)):
        return _score_label_lists(submission.iloc[:, 0], truth.cells, metric, submission_path)
    if len(submission.columns) > 1 or not truth.multilabel:
        resolve_metric(metric, truth.task, "--metric")
    if len(submission.columns) == 1:  # names, not probabilities
        return _score_names(submission.iloc[:, 0].astype(str).str.strip(), truth, metric, label_sep, submission_path)
    missing = [name for name in truth.classes if name not in submission.columns]
    if missing:
        raise DataError(f"{submission_path}: no column for classes {summarize(missing, quote=True)}")
    return score(metric, truth.task, truth.targets, _probability_columns(submission, truth.classes, submission_path))


@dataclass
class _Truth:
    """A solution's targets: class indices (multiclass) or a 0/1 matrix (multi-label), over ``classes``."""

    classes: list[str]
    multilabel: bool
    targets: np.ndarray
    cells: pd.Series | None = None  # one truth column: its stripped cells

    @property
    def task(self) -> str:
        return "multilabel" if self.multilabel else "multiclass"

    @classmethod
    def of(cls, solution: pd.DataFrame, columns: list[str], submission: pd.DataFrame, metric: str, label_sep: str,
           path: Path) -> "_Truth":
        named = set(submission.columns) if len(submission.columns) > 1 else set()
        if len(columns) > 1:
            indicator = _indicator_columns(solution, columns, path)
            if (indicator.sum(axis=1) == 1).all() and fits_task(metric, "multiclass"):  # one-hot classes (Dog Breed)
                return cls(columns, False, indicator.argmax(axis=1))
            return cls(columns, True, indicator)
        cells = solution[columns[0]].str.strip()
        if cells_are_tags(cells, label_sep) or metric in ("map", "map_voc07", "map_voc", "micro_map", "f1_samples"):
            classes = sorted({label for cell in cells for label in cell.split(label_sep) if label} | named)
            return cls(classes, True, _indicator(cells, classes, label_sep), cells)
        classes = sorted(set(cells) | (named or set(submission.iloc[:, 0].str.strip())))
        return cls(classes, False, cells.map({name: index for index, name in enumerate(classes)}).to_numpy(), cells)


def _score_heads(submission: pd.DataFrame, solution: pd.DataFrame, metric: str, long_id: str, submission_path: Path,
                 solution_path: Path) -> float:
    """Several heads' labels in long files (Bengali: ``row_id,target``): each head's label metric, averaged with the
    metric's weights."""
    try:
        inner, weights = heads_parts(metric)
    except ValueError as exc:
        raise KagglecvError(f"--metric: {exc}") from None
    if inner.name not in LABEL_METRICS:
        raise KagglecvError(f"--metric {metric!r}: a head's labels are scored with {', '.join(LABEL_METRICS)}")
    id_col = solution.columns[0]
    truth, heads = widen(solution, id_col, solution.columns[1], long_id, solution_path)
    predicted, _ = widen(submission, id_col, submission.columns[1], long_id, submission_path, heads)
    predicted = predicted.set_index(id_col).loc[truth[id_col]]
    values = []
    for head in heads:
        names = sorted(set(truth[head].str.strip()) | set(predicted[head].str.strip()))
        index = {name: position for position, name in enumerate(names)}
        values.append(score_labels(inner.name, truth[head].str.strip().map(index).to_numpy(),
                                   predicted[head].str.strip().map(index).to_numpy(), len(names)))
    return float(np.average(values, weights=[weights.get(head, 1.0) for head in heads]))


def _score_values(submission: pd.DataFrame, solution: pd.DataFrame, metric: str, submission_path: Path,
                  solution_path: Path) -> float:
    """Numeric targets scored by a regression metric: the solution's value columns, each matched by name in the
    submission, every cell a finite number (the first that is not is named)."""
    columns = list(solution.columns)
    missing = [column for column in columns if column not in submission.columns]
    if missing:
        raise DataError(f"{submission_path}: no column {summarize(missing, quote=True)} of {solution_path}; columns "
                        f"are {summarize(list(submission.columns), quote=True)}")
    frames = {submission_path: submission[columns], solution_path: solution[columns]}
    values = {}
    for path, frame in frames.items():
        numbers = frame.apply(lambda column: pd.to_numeric(column.str.strip(), errors="coerce")).to_numpy(np.float64)
        bad = ~np.isfinite(numbers)
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise DataError(f"{path}: id {frame.index[row]!r} column {columns[column]!r} = {frame.iat[row, column]!r}; "
                            f"expected a finite number ({int(bad.sum())} such cells)")
        values[path] = numbers
    return score(metric, "regression", values[solution_path], values[submission_path])


def _probability_columns(submission: pd.DataFrame, classes: list[str], path: Path) -> np.ndarray:
    """The class columns as numbers, each a probability in [0, 1]; the first cell that is not is named."""
    scores = submission[classes].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = not_probabilities(scores)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(f"{path}: id {submission.index[row]!r} column {classes[column]!r} = "
                        f"{submission[classes[column]].iloc[row]!r}; expected a probability in [0, 1] "
                        f"({int(bad.sum())} such cells)")
    return scores


def _score_names(predicted: pd.Series, truth: _Truth, metric: str, label_sep: str, path: Path) -> float:
    """Class names (or label lists) against the truth, scored from label indices: no rows x classes matrix."""
    if truth.multilabel:
        beta, average = _label_f_score(metric)
        # A label the solution never uses is a false positive, not an error: score over the union.
        extra = sorted({label for cell in predicted for label in cell.split(label_sep)
                        if label and label not in truth.classes})
        classes = list(truth.classes) + extra
        targets = np.hstack([truth.targets, np.zeros((len(truth.targets), len(extra)), dtype=truth.targets.dtype)])
        return float(skm.fbeta_score(targets, _indicator(predicted, classes, label_sep), beta=beta, average=average,
                                     zero_division=0))
    index = {name: position for position, name in enumerate(truth.classes)}
    # Labels already cut at the tuned cut-offs: the leaderboard's QWK (tuning again on the truth would cheat).
    name = "qwk" if metric == "qwk_thresholds" else metric
    if name not in LABEL_METRICS:
        raise KagglecvError(f"--metric {metric!r}: {path} holds class names, not probabilities; names are scored with "
                            f"{', '.join(LABEL_METRICS)}")
    return score_labels(name, truth.targets, predicted.map(index).to_numpy(), len(truth.classes))


def _score_with_metric_file(metric: str, solution_path: Path, submission_path: Path, solution: pd.DataFrame,
                            submission: pd.DataFrame) -> float:
    """The competition's own metric on the two files as Kaggle's scorer reads them (pandas' defaults), after the
    id check every submission gets."""
    id_col = solution.columns[0]
    if submission.columns[0] != id_col:
        raise DataError(f"{submission_path}: first column {submission.columns[0]!r}, expected the id column {id_col!r}")
    require_same_ids(submission[id_col], solution[id_col], submission_path, solution_path, "extra")
    return call_score(load_score_function(Path(metric)), metric, pd.read_csv(solution_path),
                      pd.read_csv(submission_path), id_col)


def _label_f_score(metric: str) -> tuple[float, str]:
    """The beta and average of an F-score of label lists: f1_micro/macro/samples, fbeta:<beta>:<average>, f2_samples."""
    canonical = ALIASES.get((metric, "multilabel"), metric)
    if canonical in ("f1_micro", "f1_macro", "f1_samples"):
        return 1.0, canonical.split("_")[1]
    if canonical.startswith("fbeta:"):
        resolve_metric(canonical, "multilabel", "--metric")
        return float(canonical.split(":")[1]), canonical.split(":")[2]
    raise KagglecvError(f"--metric {metric!r}: a labels submission is scored with f1_micro, f1_macro, f1_samples or "
                        "fbeta:<beta>:<average> (f2_samples)")


def _is_top_k(cells: pd.Series, metric: str, true_names: set[str]) -> bool:
    """A column of label lists (a cell of several names that is no true class name: Plant Seedlings' ``Sugar
    beet`` is one name), or a metric of ranked lists (``map@k``)."""
    canonical = ALIASES.get((metric, "multiclass"), metric)
    if canonical.startswith("map@"):
        return True
    cells = cells.astype(str).str.strip()
    return bool((~cells.isin(true_names) & cells.str.split().str.len().gt(1)).any())


def _score_label_lists(cells: pd.Series, truth: pd.Series, metric: str, submission_path: Path) -> float:
    """Top-k label lists (``Image,Id`` with ``w_1 w_2 ...``) against one true label per row, by MAP@k; any other
    metric of such lists is refused (which of the names would accuracy take?)."""
    canonical = ALIASES.get((metric, "multiclass"), metric)
    if not canonical.startswith("map@"):
        raise KagglecvError(f"--metric {metric!r}: {submission_path} holds lists of several labels per row; a top-k "
                            "list is scored with map@<k> (e.g. map@5, map_at_5)")
    resolve_metric(metric, "multiclass", "--metric")
    k = int(canonical[4:])
    lists = [cell.split() for cell in cells.astype(str)]
    longest = max((len(labels) for labels in lists), default=0)
    if longest > k:
        raise DataError(f"{submission_path}: rows list up to {longest} labels; {metric} scores at most {k}")
    return map_at_k_lists(truth.tolist(), lists, k)


BINARY_ALIASES = {"roc_auc_ovr": "roc_auc", "auc": "roc_auc"}  # on a 0/1 target these are the binary ROC AUC


def _binary_truth(column: pd.Series) -> bool:
    return set(column.str.strip()) <= {"0", "1"}


def _score_positive_column(values: pd.Series, truth: pd.Series, metric: str, submission_path: Path) -> float:
    """A 0/1 solution and one submission column: the positive class's probability (or a 0/1 label). Scored by a
    binary metric, exactly as sklearn does; a metric of class labels on probabilities (whose cut-off the
    competition would choose) is refused rather than given a number."""
    numbers = pd.to_numeric(values.str.strip(), errors="coerce").to_numpy(np.float64)
    bad = not_probabilities(numbers)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{submission_path}: {values.index[row]!r} = {values.iloc[row]!r}; a 0/1 solution is scored "
                        "against a probability (or 0/1 label) of the positive class in [0, 1]")
    targets = truth.str.strip().astype(int).to_numpy()
    name = BINARY_ALIASES.get(metric, metric)
    hard = set(np.unique(numbers)) <= {0.0, 1.0}
    if name in ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "balanced_accuracy", "qwk") and hard:
        return score(name, "multiclass", targets, np.eye(2)[numbers.astype(int)])
    name = ALIASES.get((name, "binary"), name)
    if name not in ("roc_auc", "binary_log_loss", "binary_f1", "binary_accuracy", "pf1"):
        kind = "0/1 labels" if hard else "probabilities"
        raise KagglecvError(f"--metric {metric!r}: cannot score {kind} of the positive class with it exactly; expected "
                            "roc_auc (also roc_auc_ovr), binary_log_loss, binary_f1, binary_accuracy (cut at 0.5) or pf1"
                            + (", or accuracy and the other label metrics for 0/1 labels" if not hard else ""))
    return score(name, "binary", targets, numbers)


def _indicator_columns(solution: pd.DataFrame, columns: list[str], path: Path) -> np.ndarray:
    values = solution[columns].apply(lambda column: pd.to_numeric(column, errors="coerce"))
    bad = ~values.isin([0, 1]).to_numpy()
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(f"{path}: line {row + 2} column {columns[column]!r} = {solution.iat[row, column + 1]!r}; "
                        f"expected 0 or 1 ({int(bad.sum())} such cells)")
    return values.to_numpy(np.int64)


def _indicator(cells: pd.Series, classes: list[str], sep: str) -> np.ndarray:
    index = {name: position for position, name in enumerate(classes)}
    matrix = np.zeros((len(cells), len(classes)), dtype=np.int64)
    for row, cell in enumerate(cells):
        for label in cell.split(sep):
            if label in index:
                matrix[row, index[label]] = 1
    return matrix
