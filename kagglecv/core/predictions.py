"""Prediction files: ``id``, (``fold`` in OOF files), then one probability column per class in the run's order (one
value column per target for a regression task).

Every run and ensemble writes this one shape, so scoring, ensembling and submission work on any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from kagglecv.core.errors import DataError, summarize
from kagglecv.core.files import write_csv
from kagglecv.core.records import OutputScale

FLOAT_FORMAT = "%.7g"


def probabilities_from_logits(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax (multiclass), sigmoid (multilabel), or ``[1 - p, p]`` from one sigmoid logit (binary); a regression
    model's outputs are values already (:func:`values_from_outputs`), kept as they are."""
    logits = np.asarray(logits, dtype=np.float64)
    if task in ("regression", "heads"):  # values, or each head's probabilities: made where the model runs
        return logits
    if task == "multiclass":
        return softmax(logits, axis=1)
    positive = expit(logits)
    if task == "binary":
        return np.hstack([1.0 - positive[:, :1], positive[:, :1]])
    return positive


HEAD_SEPARATOR = "="  # several heads: the run's classes are <head>=<class>, one block of columns per head


def head_blocks(classes: list[str]) -> list[tuple[str, slice]]:
    """Each head's name and its block of columns, in order, from classes written ``<head>=<class>``."""
    heads = [name.split(HEAD_SEPARATOR, 1)[0] for name in classes]
    blocks, start = [], 0
    for position in range(1, len(heads) + 1):
        if position == len(heads) or heads[position] != heads[start]:
            blocks.append((heads[start], slice(start, position)))
            start = position
    return blocks


def head_probabilities(logits: np.ndarray, classes: list[str]) -> np.ndarray:
    """Several heads' logits as probabilities: a softmax over each head's block."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.hstack([softmax(logits[:, block], axis=1) for _, block in head_blocks(classes)])


def values_from_outputs(outputs: np.ndarray, scale: OutputScale) -> np.ndarray:
    """A regression model's raw outputs in the target's units, as the fold's recorded :class:`OutputScale` says."""
    outputs = np.asarray(outputs, dtype=np.float64)
    unit = expit(outputs) if scale.kind == "range" else outputs
    return np.asarray(scale.center) + np.asarray(scale.scale) * unit


def combine_views(logit_list: list[np.ndarray], task: str, space: str) -> np.ndarray:
    """Probabilities of several TTA views: the mean of their probabilities (``prob``) or of their logits (``logit``)."""
    if space == "logit":
        return probabilities_from_logits(np.mean(logit_list, axis=0), task)
    return np.mean([probabilities_from_logits(logits, task) for logits in logit_list], axis=0)


def prediction_frame(ids, probabilities: np.ndarray, classes: list[str], folds=None) -> pd.DataFrame:
    columns = {"id": np.asarray(ids, dtype=object)}
    if folds is not None:
        columns["fold"] = np.asarray(folds, dtype=np.int64)
    frame = pd.DataFrame(columns)
    return pd.concat([frame, pd.DataFrame(probabilities, columns=classes)], axis=1)


def write_predictions(path: Path, ids, probabilities: np.ndarray, classes: list[str], folds=None) -> None:
    write_csv(path, prediction_frame(ids, probabilities, classes, folds), float_format=FLOAT_FORMAT)


def is_top_k_header(columns) -> bool:
    """A prediction file's columns are a top-k file's (``id[,fold],label_1,...``), not one column per class."""
    columns = list(columns)
    return len(columns) >= 3 and columns[0] == "id" and columns[1 + (columns[1] == "fold")] == "label_1"


def read_predictions(path: Path, classes: list[str] | None = None, *, oof: bool = False) -> pd.DataFrame:
    """Read a prediction file with string ids; check the columns (``id``, ``fold`` when ``oof``, the classes) and
    that values are finite."""
    if not Path(path).is_file():
        raise DataError(f"prediction file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable prediction file: {' '.join(str(exc).split())[:200]}") from None
    if is_top_k_header(frame.columns):
        raise DataError(f"{path}: a top-k prediction file (label_1..label_k and their scores, a model.identity run's); "
                        "this step reads one probability column per class")
    required = ["id", "fold"] if oof else ["id"]
    if [column for column in required if column not in frame.columns]:
        raise DataError(f"{path}: expected columns {', '.join(required)} then one per class, got "
                        f"{summarize(list(frame.columns), quote=True)}")
    if oof and not pd.api.types.is_integer_dtype(frame["fold"]):
        raise DataError(f"{path}: column 'fold' holds non-integers, e.g. {frame['fold'].iloc[0]!r}")
    value_columns = [column for column in frame.columns if column not in ("id", "fold")]
    if classes is not None:
        check_class_columns(frame, classes, path)
    values = frame[value_columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        raise DataError(f"{path}: {len(rows)} rows with NaN, inf or non-numbers: {summarize([f'line {r + 2}' for r in rows])}")
    return frame


def check_class_columns(frame: pd.DataFrame, classes: list[str], path: Path) -> None:
    """The prediction frame's value columns are ``classes``, in that order."""
    value_columns = [column for column in frame.columns if column not in ("id", "fold")]
    if value_columns != list(classes):
        raise DataError(f"{path}: class columns {summarize(value_columns)} differ from the run's classes {summarize(classes)}")


@dataclass(frozen=True)
class IdDifferences:
    """How a list of ids differs from the ids it should hold exactly once each."""

    doubled: list
    missing: list
    extra: list

    def __bool__(self) -> bool:
        return bool(self.doubled or self.missing or self.extra)


def compare_ids(ids, reference) -> IdDifferences:
    """Ids seen more than once in ``ids``, ``reference`` ids absent from ``ids`` (in reference order), and ids
    absent from ``reference`` (sorted)."""
    ids = pd.Series(list(ids), dtype=object)
    present, expected = set(ids), set(reference)
    return IdDifferences(doubled=ids[ids.duplicated()].tolist(),
                         missing=[image_id for image_id in reference if image_id not in present],
                         extra=sorted(present - expected))


def require_same_ids(ids, expected, path: Path, expected_path: Path, extra_word: str = "extra") -> None:
    """Every expected id exactly once in ``ids`` and nothing else, or an error naming the ids."""
    differences = compare_ids(ids, expected)
    if differences.doubled:
        raise DataError(f"{path}: {len(differences.doubled)} ids appear more than once: "
                        f"{summarize(differences.doubled, quote=True)}")
    if differences:
        raise DataError(f"{path}: ids differ from {expected_path}: {len(differences.missing)} missing "
                        f"({summarize(differences.missing, quote=True)}), {len(differences.extra)} {extra_word} "
                        f"({summarize(differences.extra, quote=True)})")


def not_probabilities(values: np.ndarray) -> np.ndarray:
    """Where ``values`` hold no probability: NaN, infinite, below 0 or above 1."""
    return ~np.isfinite(values) | (values < 0) | (values > 1)


def aligned(frame: pd.DataFrame, ids, classes: list[str], path: Path, expected_path: Path, *, exact: bool = True,
            extra_word: str = "extra", dtype=np.float64) -> np.ndarray:
    """The ``classes`` columns of a prediction frame in the order of ``ids``: the one way kagglecv aligns predictions
    to ids. Every id of ``ids`` must be in the frame exactly once; with ``exact``, the frame holds nothing else.

    Raises:
        DataError: naming ``path`` and the doubled, missing (and, with ``exact``, extra) ids.
    """
    ids = list(ids)
    if exact:
        require_same_ids(frame["id"], ids, path, expected_path, extra_word)
    else:
        differences = compare_ids(frame["id"], ids)
        doubled = set(differences.doubled) & set(ids)
        if doubled or differences.missing:
            raise DataError(f"{path}: {len(differences.missing)} ids of {expected_path} missing "
                            f"({summarize(differences.missing, quote=True)}), {len(doubled)} more than once "
                            f"({summarize(sorted(doubled), quote=True)})")
    return frame.drop_duplicates("id").set_index("id").loc[ids, classes].to_numpy(dtype)


def read_aligned(path: Path, ids, classes: list[str], expected_path: Path, *, oof: bool = False, exact: bool = True,
                 extra_word: str = "extra", dtype=np.float64) -> np.ndarray:
    """:func:`read_predictions` of ``path``, then :func:`aligned` to ``ids``."""
    frame = read_predictions(path, classes, oof=oof)
    return aligned(frame, ids, classes, path, expected_path, exact=exact, extra_word=extra_word, dtype=dtype)


def merge_oof(fold_files: list[Path], ids: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Concatenate per-fold OOF files into table order; every id exactly once or an error naming the ids."""
    merged = pd.concat([read_predictions(path, classes) for path in fold_files], ignore_index=True)
    differences = compare_ids(merged["id"], ids)
    if differences.doubled:
        raise DataError(f"OOF files {summarize([str(p) for p in fold_files], 2)} hold {len(differences.doubled)} ids "
                        f"more than once: {summarize(differences.doubled, quote=True)}")
    if differences:
        raise DataError(f"OOF files do not cover the training table: {len(differences.missing)} ids missing "
                        f"({summarize(differences.missing, quote=True)}), {len(differences.extra)} unknown "
                        f"({summarize(differences.extra, quote=True)})")
    return merged.set_index("id").loc[list(ids)].reset_index()


def average_predictions(files: list[Path], classes: list[str]) -> pd.DataFrame:
    """Mean of several prediction files over the same ids (aligned by id, in the first file's order)."""
    frames = [read_predictions(path, classes) for path in files]
    ids = frames[0]["id"].to_numpy()
    stacked = np.stack([aligned(frame, ids, classes, path, files[0]) for path, frame in zip(files, frames)])
    return prediction_frame(ids, stacked.mean(axis=0), classes)


def write_pseudo_labels(path: Path, ids: np.ndarray, targets: np.ndarray, columns: list[str]) -> None:
    """A fold's ``pseudo.csv``: id, then one column per model output (NaN: an unsure multi-label label)."""
    frame = pd.DataFrame(targets, columns=columns)
    frame.insert(0, "id", ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, frame, float_format=FLOAT_FORMAT)


def read_pseudo_labels(path: Path, columns: list[str]) -> pd.DataFrame:
    """The ``pseudo.csv`` of :func:`write_pseudo_labels`, its ``columns`` in that order."""
    frame = pd.read_csv(path, dtype={"id": str}, keep_default_na=True)
    return frame[["id", *columns]]
