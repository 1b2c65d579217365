"""The table beside the image: ``data.features``' numeric and categorical columns read for given ids, and the
training table's columns that a test table lacks (leaks, never used).

A feature file is checked as every table is: a number column holding text, an infinite number, a column the test
table lacks, a test category the training rows never had, or an id the table does not hold is one error naming the
file, the column, the line and the value, before any model is fitted.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.config import DataConfig, FeaturesConfig
from kagglecv.core.errors import DataError, summarize
from kagglecv.data.load import read_competition_table
from kagglecv.data.table import CompetitionData, FeatureTable

CSV_HEADER_LINES = 1  # a frame's row r is line r + 2 of its file (the header is line 1)


def read_features(path: Path, config: DataConfig, ids: np.ndarray, features: FeaturesConfig,
                  group: str | None) -> FeatureTable:
    """``features``' columns (and ``group``) of the table at ``path`` for ``ids``, in their order.

    Raises:
        DataError: a column the table lacks, an id it lacks or holds twice, text or an infinite value in a number
            column, an empty group cell.
    """
    frame = read_competition_table(Path(path), config.pixels, with_images=False, coco_label=config.coco_label,
                                   reader=config.reader).frame
    wanted = [config.id_col, *features.columns(), *([group] if group else [])]
    missing = [column for column in dict.fromkeys(wanted) if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {summarize(missing, quote=True)} (data.features and the group must be "
                        f"columns of the training and the test table; a column only the training table has is a leak)")
    rows = _rows_of(frame[config.id_col].astype(str).str.strip(), ids, path, config.id_col)
    numeric = np.stack([_numbers(frame[name], path, name)[rows] for name in features.numeric], axis=1) \
        if features.numeric else np.zeros((len(ids), 0))
    categorical = np.stack([_categories(frame[name])[rows] for name in features.categorical], axis=1) \
        if features.categorical else np.zeros((len(ids), 0), dtype=object)
    groups = None if group is None else _groups(frame[group], path, group)[rows]
    return FeatureTable(np.asarray(ids), list(features.numeric), numeric, list(features.categorical), categorical,
                        groups, Path(path))


def _rows_of(table_ids: pd.Series, ids: np.ndarray, path: Path, id_col: str) -> np.ndarray:
    doubled = table_ids[table_ids.duplicated()].unique().tolist()
    if doubled:
        raise DataError(f"{path}: ids {summarize(doubled, quote=True)} appear more than once in column {id_col!r}; "
                        "features are read one row per id")
    position = pd.Series(np.arange(len(table_ids)), index=table_ids.to_numpy())
    absent = [image_id for image_id in ids if image_id not in position.index]
    if absent:
        raise DataError(f"{path}: no row for ids {summarize(absent, quote=True)} ({len(absent)} of {len(ids)}); the "
                        "features come from the table the predictions were made for")
    return position.loc[list(ids)].to_numpy()


def _numbers(column: pd.Series, path: Path, name: str) -> np.ndarray:
    text = column.astype(str).str.strip()
    empty = text.isin(["", "nan", "NaN", "NA", "None"])
    values = pd.to_numeric(text.where(~empty), errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero((np.isnan(values) & ~empty.to_numpy()) | np.isinf(values))
    if len(bad):
        first = bad[0]
        raise DataError(f"{path}: column {name!r} line {first + CSV_HEADER_LINES + 1}: {text.iloc[first]!r} is not a "
                        f"finite number ({len(bad)} such cells); list the column under data.features.categorical, "
                        "or clean it")
    return values


def _categories(column: pd.Series) -> np.ndarray:
    text = column.astype(str).str.strip()
    return np.array([None if value == "" else value for value in text], dtype=object)


def _groups(column: pd.Series, path: Path, name: str) -> np.ndarray:
    text = column.astype(str).str.strip()
    empty = np.flatnonzero(text.isin(["", "nan", "NaN", "NA", "None"]).to_numpy())
    if len(empty):
        raise DataError(f"{path}: group column {name!r} is empty on line {empty[0] + CSV_HEADER_LINES + 1} "
                        f"({len(empty)} rows); every row needs its group (patient) for the group-relative features")
    return text.to_numpy(dtype=object)


def check_test_categories(test: FeatureTable, known: dict[str, list[str]]) -> None:
    """Every category of the test features is one of ``known`` (the training rows' levels); else an error naming the
    column and values (a model fitted on the training rows has no encoding for them)."""
    for index, name in enumerate(test.categorical_names):
        unseen = sorted({value for value in test.categorical[:, index] if value is not None} - set(known.get(name, [])))
        if unseen:
            raise DataError(f"{test.source}: column {name!r} holds categories the training table never has: "
                            f"{summarize(unseen, quote=True)}; map them to a known category or leave the column "
                            "out of data.features.categorical")


def train_only_columns(train_columns: list[str], test_columns: list[str], used: list[str]) -> list[str]:
    """The training table's columns that the test table lacks, other than ``used`` (id, target, group, ...):
    information the hidden test will not have, so a model fed them learns a leak."""
    return [column for column in train_columns if column not in set(test_columns) and column not in set(used)]


def features_of(source: Path | None, config: DataConfig, ids: np.ndarray, features: FeaturesConfig,
                group: str | None) -> FeatureTable:
    """The rows' features (and groups) from their own table; with no column asked, an empty table of those rows and
    no file read. A test set that is a folder of images has no table: asking it for columns is an error."""
    if not features.columns() and group is None:
        return FeatureTable(np.asarray(ids, dtype=object), [], np.zeros((len(ids), 0)), [],
                            np.zeros((len(ids), 0), dtype=object), None, Path(source or ""))
    if source is None or not Path(source).is_file():
        asked = ", ".join([*features.columns(), *([group] if group else [])])
        raise DataError(f"{source or 'the test set'}: not a table; the rows' features and groups ({asked}) are read "
                        "from a test table (data.test_csv, or infer's --test TABLE)")
    return read_features(source, config, ids, features, group)


def with_features(data: CompetitionData, config: DataConfig) -> CompetitionData:
    """``data`` with ``data.features``' columns of its own table, for a model that takes them (a fusion head)."""
    return replace(data, features=features_of(data.source, config, data.ids, config.features, None))
