"""The competition as the train and predict stages see it: the training table, its folds and the test table.

Read, validated and hashed once; ``kagglecv run`` hands one ``StageInputs`` to every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kagglecv.core.config import Config
from kagglecv.data.table import CompetitionData, load_test, load_train
from kagglecv.stages.folds import read_folds


@dataclass
class StageInputs:
    data: CompetitionData
    fold_of: np.ndarray
    test: CompetitionData | None

    @property
    def n_folds(self) -> int:
        return int(self.fold_of.max()) + 1


def load_stage_inputs(config: Config, data: CompetitionData | None = None) -> StageInputs:
    """The config's tables and folds file, each checked; ``data`` when the caller has read the training table."""
    data = data if data is not None else load_train(config.data)
    fold_of = read_folds(Path(config.folds.file), data)
    test = load_test(config.data, data.classes, data.task) if config.data.test_csv else None
    return StageInputs(data, fold_of, test)
