"""The second stage's design matrix: the image runs' predictions, the features, each categorical column's code in
the levels a fold was fitted on, and the group-relative features.

Group-relative features follow the ISIC 2024 winners' patient-relative ones: each prediction and number minus its
group's mean, its percentile rank within the group, and the group's size. They are computed over the rows given
together (a fold's training rows, its held-out rows, the test rows), never across them, so no held-out row shapes
a training row's feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.data.table import FeatureTable

GROUP_SIZE = "group_size"


@dataclass(frozen=True)
class DesignSpec:
    """The columns of the design matrix, by name, in order (recorded in ``stack.json``)."""

    predictions: list[str]   # "<run>:<class>", one per level-one output used
    numeric: list[str]
    categorical: list[str]
    grouped: bool            # group-relative features (a group column was given)
    embeddings: tuple[str, ...] = ()  # "<run>:e<i>": the runs' pre-logit features (``kagglecv embed``), last

    def relative(self) -> list[str]:
        return [*self.predictions, *self.numeric] if self.grouped else []

    def names(self) -> list[str]:
        relative = self.relative()
        return [*self.predictions, *self.numeric, *self.categorical, *[f"{name} - group mean" for name in relative],
                *[f"{name} group rank" for name in relative], *([GROUP_SIZE] if self.grouped else []),
                *self.embeddings]

    def categorical_positions(self) -> list[int]:
        start = len(self.predictions) + len(self.numeric)
        return list(range(start, start + len(self.categorical)))


def design_matrix(spec: DesignSpec, predictions: np.ndarray, features: FeatureTable,
                  levels: dict[str, list[str]], embeddings: np.ndarray | None = None) -> np.ndarray:
    """Rows x ``spec.names()``, float64: categories as their index in ``levels`` (NaN when empty or unseen)."""
    codes = np.stack([category_codes(features.categorical[:, index], levels[name])
                      for index, name in enumerate(spec.categorical)], axis=1) \
        if spec.categorical else np.zeros((len(predictions), 0))
    parts = [np.asarray(predictions, dtype=np.float64), features.numeric.astype(np.float64), codes]
    if spec.grouped:
        parts += group_relative(np.concatenate(parts[:2], axis=1), features.groups)
    if spec.embeddings:
        parts.append(np.asarray(embeddings, dtype=np.float64))
    return np.concatenate(parts, axis=1)


def category_codes(values: np.ndarray, levels: list[str]) -> np.ndarray:
    index = {level: code for code, level in enumerate(levels)}
    return np.array([index.get(value, np.nan) if value is not None else np.nan for value in values], dtype=np.float64)


def group_relative(values: np.ndarray, groups: np.ndarray) -> list[np.ndarray]:
    """Each column minus its group's mean, its percentile rank in the group, and the group's size."""
    frame = pd.DataFrame(values)
    grouped = frame.groupby(pd.Series(groups, dtype=object).to_numpy(), sort=False)
    centred = (frame - grouped.transform("mean")).to_numpy(np.float64)
    ranks = grouped.rank(pct=True).to_numpy(np.float64)
    members = pd.Series(groups, dtype=object)
    sizes = members.map(members.value_counts()).to_numpy(np.float64)[:, None]
    return [centred, ranks, sizes]


def level_one_names(runs: list, classes: list[str], task: str) -> list[str]:
    """The design columns of the runs' predictions, ``<run>:<class>``: the positive class's for binary (the other
    is its complement), every class's otherwise."""
    return [f"{Path(run).name}:{name}" for run in runs for name in _used_classes(classes, task)]


def level_one_columns(predictions: np.ndarray, classes: list[str], task: str) -> np.ndarray:
    """The runs' predictions (runs x rows x classes) as the design columns :func:`level_one_names` names."""
    used = [classes.index(name) for name in _used_classes(classes, task)]
    return np.concatenate([run[:, used] for run in predictions], axis=1).astype(np.float64)


def _used_classes(classes: list[str], task: str) -> list[str]:
    return classes[1:] if task == "binary" else list(classes)
