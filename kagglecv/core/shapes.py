"""The shapes of a submission: which values a sample submission asks for, and those values from probabilities.

The sample decides the shape (``detect_format``) unless the run's ``submit.format`` names it:

* ``label``: one column of class names or integer classes, the likeliest class (or the expected grade cut at
  tuned cut-offs, for ``qwk_thresholds``);
* ``labels``: one column of separated labels over per-class thresholds (multi-label);
* ``positive``: one numeric column, the positive class's probability (binary);
* ``probabilities``: one probability column per class, in the sample's column order;
* ``top_k``: one column of the k likeliest classes, most likely first (MAP@k competitions);
* ``values``: a regression target's values, one column per target (by name; any name for one target), clipped to
  the run's target range.

Pure functions of frames and arrays: the submit stage writes files with them, a metric file in Kaggle's signature
is handed frames made by them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.errors import DataError, summarize
from kagglecv.core.metrics import expected_grade, grades_from_cutoffs


@dataclass(frozen=True)
class SubmissionShape:
    """A run's ``submit.format`` and ``submit.top_k``: ``auto`` reads the shape from the sample."""

    format: str = "auto"
    top_k: int = 5

    @classmethod
    def of(cls, submit) -> "SubmissionShape":
        """The shape a config's ``submit`` section names."""
        return cls(submit.format, submit.top_k)

    def resolve(self, sample: pd.DataFrame, classes: list[str], task: str, sample_path: Path) -> tuple[str, int]:
        """The format and k the submission is written in: configured, or read from the sample; a configured format
        the sample cannot take is an error."""
        fmt = detect_format(sample, classes, task, sample_path) if self.format == "auto" else self.format
        check_shape_fits(fmt, sample, classes, task, sample_path)
        return fmt, self.top_k if self.format == "top_k" else sample_top_k(sample, classes)


def sample_top_k(sample: pd.DataFrame, classes: list[str] | None = None) -> int:
    """How many space-separated names the sample's value column holds per row (its most common count); 1 when
    every cell is one of ``classes`` (Plant Seedlings' ``Sugar beet`` is one name)."""
    cells = sample.iloc[:, 1].astype(str).str.strip()
    if classes is not None and cells.isin(classes).all():
        return 1
    counts = cells.str.split().str.len()
    return int(counts.mode().iloc[0]) if len(counts) else 1


def cells_are_tags(cells: pd.Series, sep: str = " ") -> bool:
    """Whether a column's cells are lists of tags (Planet's ``clear primary``) rather than class names holding a
    space (Plant Seedlings' ``Common Chickweed``), decided from every cell of the column: tags when a word of a
    several-word cell is a whole cell elsewhere, when the column has more distinct cells than distinct words, or
    when a word stands at different places in different cells."""
    distinct = set(cells.astype(str).str.strip())
    words_of = {cell: [word for word in cell.split(sep) if word] for cell in distinct}
    several = [words for words in words_of.values() if len(words) > 1]
    if not several:
        return False
    words = {word for split in words_of.values() for word in split}
    if len(distinct) > len(words) or any(word in distinct for split in several for word in split):
        return True
    places: dict[str, set[int]] = {}
    for split in several:
        for place, word in enumerate(split):
            places.setdefault(word, set()).add(place)
    return any(len(seen) > 1 for seen in places.values())


def check_shape_fits(fmt: str, sample: pd.DataFrame, classes: list[str], task: str, sample_path: Path) -> None:
    """A configured format the sample's header or the task cannot take is an error, never a malformed file."""
    one_column = sample.shape[1] == 2
    regression = task == "regression"
    if (fmt == "values") != regression:
        wanted = "values (or auto)" if regression else "a class format (values are a regression target's)"
        raise DataError(f"submit.format {fmt}: the run's task is {task}; expected {wanted}")
    wrong = {"values": not (one_column and len(classes) == 1) and set(sample.columns[1:]) != set(classes),
             "probabilities": set(sample.columns[1:]) != set(classes) or sample.shape[1] - 1 != len(classes),
             "positive": not (one_column and task == "binary"),
             "top_k": not (one_column and task == "multiclass"), "labels": not (one_column and task == "multilabel"),
             "label": not (one_column and task != "multilabel")}[fmt]
    if wrong:
        raise DataError(f"submit.format {fmt}: does not fit {sample_path} (columns {summarize(list(sample.columns))}) "
                        f"for a {task} task")


def detect_format(sample: pd.DataFrame, classes: list[str], task: str, sample_path: Path) -> str:
    """label, labels, positive, probabilities, top_k or values, from the sample's columns and values."""
    value_columns = list(sample.columns[1:])
    if task == "regression":
        return "values"
    if set(value_columns) <= set(classes) and len(value_columns) == len(classes):
        return "probabilities"
    if len(value_columns) == 1 and task == "multiclass" and len(sample) and sample_top_k(sample, classes) > 1:
        return "top_k"
    unknown = [column for column in value_columns if column not in classes]
    if len(value_columns) == 1:
        numeric = pd.to_numeric(sample[value_columns[0]], errors="coerce").notna().all()
        if task == "binary" and numeric:
            return "positive"
        if not numeric or task != "binary":
            return "labels" if task == "multilabel" else "label"
    if unknown and len(value_columns) > 1:
        index_like = [column for column in unknown if column.lower().startswith("unnamed") or column in ("", "index")]
        hint = " (an index column written by pandas?)" if index_like else ""
        raise DataError(f"{sample_path}: columns {summarize(unknown, quote=True)} are not classes of the run{hint}; "
                        f"expected {summarize(classes)}")
    missing = [name for name in classes if name not in value_columns]
    raise DataError(f"{sample_path}: the sample has {len(value_columns)} class columns, the run {len(classes)} classes; "
                    f"missing from the sample: {summarize(missing, quote=True)}")


def shaped_columns(aligned: np.ndarray, classes: list[str], fmt: str, value_columns: list[str], k: int,
                   thresholds: dict[str, float] | None, cutoffs, label_sep: str = " ",
                   value_range: dict[str, tuple[float, float]] | None = None,
                   other: tuple[str, float] | None = None) -> dict[str, object]:
    """The value columns of a submission of format ``fmt`` from rows x classes probabilities (or values);
    ``other``: (label, threshold) written instead of a label whose probability is under the threshold."""
    names = np.array(classes)
    if fmt == "values":
        low, high = (np.array([value_range[name][end] for name in classes]) if value_range else None for end in (0, 1))
        clipped = aligned if value_range is None else np.clip(aligned, low, high)
        if len(classes) == 1:
            return {value_columns[0]: clipped[:, 0]}
        return {column: clipped[:, classes.index(column)] for column in value_columns}
    if fmt == "top_k":
        order = np.argsort(-aligned, axis=1, kind="stable")[:, :k]
        return {value_columns[0]: [" ".join(names[row]) for row in order]}
    if fmt == "labels":
        return {value_columns[0]: _label_strings(aligned, classes, thresholds, label_sep)}
    if fmt == "label":
        chosen = aligned.argmax(axis=1) if cutoffs is None else grades_from_cutoffs(expected_grade(aligned), cutoffs)
        labels = names[chosen].astype(object)
        if other is not None:
            labels[aligned.max(axis=1) < other[1]] = other[0]
        return {value_columns[0]: labels}
    if fmt == "positive":
        return {value_columns[0]: aligned[:, 1]}
    column_of = {name: index for index, name in enumerate(classes)}
    return {column: aligned[:, column_of[column]] for column in value_columns}


def _label_strings(values: np.ndarray, classes: list[str], thresholds: dict[str, float], sep: str) -> list[str]:
    cut = np.array([thresholds[name] for name in classes])
    chosen = values >= cut
    names = np.array(classes)
    return [sep.join(names[row]) for row in chosen]


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def checked_thresholds(recorded, classes: list[str], path: Path) -> dict[str, float]:
    """A bundle's per-class thresholds (``thresholds.json``): one finite number in [0, 1] per class of the run."""
    if not isinstance(recorded, dict) or sorted(recorded) != sorted(classes):
        raise DataError(f"{path}: expected one threshold per class of the run")
    for name in classes:
        if not _real(recorded[name]) or not 0 <= recorded[name] <= 1:
            raise DataError(f"{path}: threshold of {name!r} is {recorded[name]!r}; expected a number in [0, 1]")
    return {name: float(recorded[name]) for name in classes}


def checked_other(recorded, classes: list[str], path: Path) -> tuple[str, float]:
    """A bundle's "other" answer (``other.json``): a label that is no class of the run, and a threshold in [0, 1]."""
    if not isinstance(recorded, dict) or sorted(recorded) != ["label", "threshold"] or \
            not isinstance(recorded["label"], str) or not recorded["label"] or recorded["label"] in classes or \
            not _real(recorded["threshold"]) or not 0 <= recorded["threshold"] <= 1:
        raise DataError(f"{path}: expected {{label, threshold}}: a label that is no class of the run and a number in "
                        "[0, 1]")
    return recorded["label"], float(recorded["threshold"])


def checked_cutoffs(recorded, classes: list[str], path: Path) -> list[float]:
    """A bundle's grade cut-offs (``cutoffs.json``): one finite number between each two grades, in ascending order,
    inside the grades' range."""
    if not isinstance(recorded, list) or len(recorded) != len(classes) - 1:
        raise DataError(f"{path}: expected {len(classes) - 1} numbers (grade cut-offs)")
    bad = next((value for value in recorded if not _real(value) or not 0 <= value <= len(classes) - 1), None)
    if bad is not None or any(later < earlier for earlier, later in zip(recorded, recorded[1:])):
        shown = repr(bad) if bad is not None else "a descending pair"
        raise DataError(f"{path}: cut-off {shown}; expected {len(classes) - 1} ascending numbers from 0 to "
                        f"{len(classes) - 1}")
    return [float(value) for value in recorded]
