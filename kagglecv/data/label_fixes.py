"""``data.label_fixes``: drop or relabel training rows listed by id, e.g. reviewed rows of ``label_issues.csv``.

Applied to the validated training table, so every stage (folds, train, score, report) sees the same fixed table.
Classes stay those of the whole table, and the folds stay those of the whole table too: a dropped id is allowed to
remain in the folds file, so a cleaned experiment is validated on the same split as the one it is compared with.
Every load says what it changed (a :class:`~kagglecv.data.table.DataWarning`): a fix is never silent.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from kagglecv.core.config import LabelFixesConfig
from kagglecv.core.errors import DataError, summarize
from kagglecv.data.table import (
    ABSENT,
    PRESENT,
    CompetitionData,
    DataWarning,
    read_csv_strings,
)

SUGGESTED_COLUMN = "suggested_label"


def apply_label_fixes(data: CompetitionData, fixes: LabelFixesConfig, label_sep: str = " ") -> CompetitionData:
    """``data`` with the rows listed in ``fixes.file`` dropped or given their ``suggested_label``."""
    path = fixes.file
    if not path.is_file():
        raise DataError(f"data.label_fixes.file: file not found: {path}")
    listed = read_csv_strings(path)
    if "id" not in listed.columns:
        raise DataError(f"{path}: expected an id column, columns are: {', '.join(listed.columns)}")
    ids = listed["id"].str.strip()
    row_of = {image_id: row for row, image_id in enumerate(data.ids)}
    unknown = [f"line {line + 2} {image_id!r}" for line, image_id in enumerate(ids) if image_id not in row_of]
    if unknown:
        raise DataError(f"{path}: {len(unknown)} ids are not in {data.source}: {summarize(unknown)}")
    rows = np.array(sorted({row_of[image_id] for image_id in ids}), dtype=np.int64)
    fixed = replace(data, unfixed_hash=data.unfixed_hash or data.content_hash())
    if fixes.action == "drop":
        fixed = _drop(fixed, rows)
        verb = "dropped"
    else:
        if SUGGESTED_COLUMN not in listed.columns:
            raise DataError(f"{path}: data.label_fixes.action relabel needs a {SUGGESTED_COLUMN} column, columns are: "
                            f"{', '.join(listed.columns)}")
        fixed = _relabel(fixed, ids.tolist(), listed[SUGGESTED_COLUMN].tolist(), row_of, path, label_sep)
        verb = "relabelled"
    warnings.warn(f"data.label_fixes: {verb} {len(rows)} of {len(data)} training rows listed in {path}",
                  DataWarning, stacklevel=2)
    return fixed


def _drop(data: CompetitionData, rows: np.ndarray) -> CompetitionData:
    keep = np.ones(len(data), dtype=bool)
    keep[rows] = False
    return replace(data.subset(keep), dropped_ids=data.dropped_ids | frozenset(data.ids[rows]))


def _relabel(data: CompetitionData, ids: list[str], suggested: list[str], row_of: dict[str, int], path,
             label_sep: str) -> CompetitionData:
    targets = data.targets.copy()
    index = {name: column for column, name in enumerate(data.classes)}
    problems = []
    for line, (image_id, text) in enumerate(zip(ids, suggested)):
        labels = [label for label in text.strip().split(label_sep) if label] if data.task == "multilabel" else [text.strip()]
        unknown = [label for label in labels if label not in index]
        if unknown or (data.task != "multilabel" and not labels[0]):
            problems.append(f"line {line + 2} {text!r}")
            continue
        row = row_of[image_id]
        if data.task == "multilabel":
            targets[row] = ABSENT
            targets[row, [index[label] for label in labels]] = PRESENT
        else:
            targets[row] = index[labels[0]]
    if problems:
        raise DataError(f"{path}: {len(problems)} suggested labels are not classes of {data.source}: "
                        f"{summarize(problems)}")
    return replace(data, targets=targets)
