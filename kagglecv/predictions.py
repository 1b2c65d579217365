"""Prediction files: ``id``, (``fold`` in OOF files), then one probability column per class in the run's order.

Every run and ensemble writes this one shape, so scoring, ensembling and submission work on any of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, summarize
from .files import write_csv

FLOAT_FORMAT = "%.7g"


def prediction_frame(ids, probabilities: np.ndarray, classes: list[str], folds=None) -> pd.DataFrame:
    columns = {"id": np.asarray(ids, dtype=object)}
    if folds is not None:
        columns["fold"] = np.asarray(folds, dtype=np.int64)
    frame = pd.DataFrame(columns)
    return pd.concat([frame, pd.DataFrame(probabilities, columns=classes)], axis=1)


def write_predictions(path: Path, ids, probabilities: np.ndarray, classes: list[str], folds=None) -> None:
    write_csv(path, prediction_frame(ids, probabilities, classes, folds), float_format=FLOAT_FORMAT)


def read_predictions(path: Path, classes: list[str] | None = None) -> pd.DataFrame:
    """Read a prediction file with string ids; check the class columns and that values are finite."""
    if not Path(path).is_file():
        raise DataError(f"prediction file not found: {path}")
    frame = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    value_columns = [column for column in frame.columns if column not in ("id", "fold")]
    if classes is not None and value_columns != list(classes):
        raise DataError(f"{path}: class columns {summarize(value_columns)} differ from the run's classes {summarize(classes)}")
    values = frame[value_columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        raise DataError(f"{path}: {len(rows)} rows with NaN, inf or non-numbers: {summarize([f'line {r + 2}' for r in rows])}")
    return frame


def merge_oof(fold_files: list[Path], ids: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Concatenate per-fold OOF files into table order; every id exactly once or an error naming the ids."""
    merged = pd.concat([read_predictions(path, classes) for path in fold_files], ignore_index=True)
    doubled = merged.loc[merged["id"].duplicated(), "id"].tolist()
    if doubled:
        raise DataError(f"OOF files {summarize([str(p) for p in fold_files], 2)} hold {len(doubled)} ids more than once: {summarize(doubled, quote=True)}")
    present = set(merged["id"])
    missing = [image_id for image_id in ids if image_id not in present]
    extra = sorted(present - set(ids))
    if missing or extra:
        raise DataError(f"OOF files do not cover the training table: {len(missing)} ids missing ({summarize(missing, quote=True)}), "
                        f"{len(extra)} unknown ({summarize(extra, quote=True)})")
    return merged.set_index("id").loc[list(ids)].reset_index()


def average_predictions(files: list[Path], classes: list[str]) -> pd.DataFrame:
    """Mean of several prediction files over the same ids (aligned by id, in the first file's order)."""
    frames = [read_predictions(path, classes) for path in files]
    ids = frames[0]["id"]
    for path, frame in zip(files[1:], frames[1:]):
        if set(frame["id"]) != set(ids) or len(frame) != len(ids):
            raise DataError(f"{path}: ids differ from {files[0]}")
    stacked = np.stack([frame.set_index("id").loc[ids, classes].to_numpy(np.float64) for frame in frames])
    return prediction_frame(ids.to_numpy(), stacked.mean(axis=0), classes)
