"""A second-stage model fitted on the same folds as the image runs, and its honest (nested) OOF predictions.

For each fold k: the categories are encoded with the levels of the other folds' rows, the group-relative features
are computed within the other folds' rows and within fold k's rows apart, the model is fitted on the other folds'
rows only and predicts fold k's rows. Those predictions are the stack's OOF file and its score, as the ensemble
stage's nested blend is. The test predictions are the fold models' mean on the test rows (each encoded with its own
fold's levels). ``in_sample`` (one model fitted and scored on every row) is reported beside it: the optimistic
number a stack scored on its own training rows gives.

What nesting cannot remove: the level-one OOF predictions of the other folds were made by image models that saw
fold k's images in training, so fold k's labels reach the level-two model's training rows at second hand. It is
the same leak every OOF stack has and is small when the level-one models do not overfit their training folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kagglecv.data.table import FeatureTable
from kagglecv.second.design import DesignSpec, design_matrix
from kagglecv.second.models import (
    Block,
    ModelSettings,
    as_probabilities,
    block_target,
    fit_block,
    output_blocks,
)


@dataclass
class LevelOne:
    """The rows a stack reads: the image runs' predictions (rows x level-one columns) and the features."""

    predictions: np.ndarray
    features: FeatureTable
    embeddings: np.ndarray | None = None   # the runs' pre-logit features side by side, when the stack takes them

    def take(self, rows: np.ndarray) -> "LevelOne":
        return LevelOne(self.predictions[rows], self.features.take(rows),
                        None if self.embeddings is None else self.embeddings[rows])


@dataclass
class FoldModel:
    """Fold k's level-two model: the category levels it was encoded with and its fitted blocks."""

    levels: dict[str, list[str]]
    blocks: list[Block]

    def predict(self, spec: DesignSpec, task: str, rows: LevelOne) -> np.ndarray:
        design = design_matrix(spec, rows.predictions, rows.features, self.levels, rows.embeddings)
        return as_probabilities(task, [block.predict(design) for block in self.blocks])


@dataclass
class StackFit:
    nested: np.ndarray            # OOF rows x classes: fold k predicted by the model fitted without it
    in_sample: np.ndarray         # one model fitted on every row, predicting those rows
    test: np.ndarray | None       # the fold models' mean on the test rows
    folds: list[FoldModel]


def fit_fold_model(spec: DesignSpec, settings: ModelSettings, task: str, n_classes: int, rows: LevelOne,
                   targets: np.ndarray) -> FoldModel:
    """A level-two model fitted on ``rows`` (its category levels are theirs)."""
    levels = rows.features.levels()
    design = design_matrix(spec, rows.predictions, rows.features, levels, rows.embeddings)
    blocks = [fit_block(settings, objective, width, design, block_target(task, targets, index),
                        spec.categorical_positions())
              for index, (objective, width) in enumerate(output_blocks(task, n_classes))]
    return FoldModel(levels, blocks)


def fit_stack(spec: DesignSpec, settings: ModelSettings, task: str, n_classes: int, train: LevelOne,
              targets: np.ndarray, folds: np.ndarray, test: LevelOne | list[LevelOne] | None) -> StackFit:
    """Nested OOF predictions, the in-sample predictions and the test predictions of the level-two model
    (``test``: the test rows, or one per fold when their embeddings are each fold model's)."""
    nested = np.zeros((len(folds), n_classes))
    models = []
    for fold in np.unique(folds):
        held = folds == fold
        model = fit_fold_model(spec, settings, task, n_classes, train.take(np.flatnonzero(~held)), targets[~held])
        nested[held] = model.predict(spec, task, train.take(np.flatnonzero(held)))
        models.append(model)
    everything = fit_fold_model(spec, settings, task, n_classes, train, targets)
    in_sample = everything.predict(spec, task, train)
    tests = test if isinstance(test, list) else [test] * len(models)
    predicted = None if test is None else np.mean([model.predict(spec, task, rows) for model, rows
                                                   in zip(models, tests)], axis=0)
    return StackFit(nested, in_sample, predicted, models)
