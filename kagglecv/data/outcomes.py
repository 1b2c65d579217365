"""What the stages hand the presentation layer (rich tables, the HTML report): typed records, so a table or a page
reads named fields, and a stage's result is one object whichever way it is shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.data.scoring import ScoreResult


@dataclass
class Analysis:
    """What ``inspect_run`` found; ``to_dict`` is ``inspect.json``."""

    run: str
    task: str
    rows: int
    worst: list[dict]
    confused_pairs: list[dict]
    label_issues: int
    label_issues_path: Path
    duplicate_conflicts: list[dict]
    duplicates_checked: str
    pictures: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"run": self.run, "task": self.task, "rows": self.rows, "worst": self.worst,
                "confused_pairs": self.confused_pairs, "label_issues": self.label_issues,
                "label_issues_file": self.label_issues_path.name, "duplicate_conflicts": self.duplicate_conflicts,
                "duplicates_checked": self.duplicates_checked, "pictures": [path.name for path in self.pictures]}


@dataclass
class EnsembleResult:
    name: str
    method: str
    metric: str
    weights: dict[str, float]
    best_single: tuple[str, float]
    in_sample: float
    nested: float
    nested_per_fold: dict[int, float]
    correlation: pd.DataFrame
    marginal_gain: dict[str, float]
    path: Path
    details: dict = field(default_factory=dict)


@dataclass
class StackResult:
    name: str
    model: str
    metric: str
    best_single: tuple[str, float]
    in_sample: float
    nested: float
    nested_per_fold: dict[int, float]
    importance: dict[str, float]   # LightGBM's total gain per design column, mean over the fold models
    test_rows: int
    path: Path


@dataclass
class Entry:
    """One row of the leaderboard."""

    name: str
    path: Path
    kind: str
    created: str
    backbone: str
    img_size: int | None
    epochs: int | None
    params: int | None
    score: ScoreResult
    train_seconds: float
    notes: str | None
    config: dict
    classes: list[str] = field(default_factory=list)
    confusion: np.ndarray | None = None      # multiclass and binary
    change: list[str] = field(default_factory=list)
    pictures: list[Path] = field(default_factory=list)
    public: str = ""                          # the latest public leaderboard score of its submissions
    analysis: dict | None = None              # inspect.json
    analysis_error: str | None = None
    teaching: list[str] = field(default_factory=list)  # pseudo-labels per fold, and the student's agreement
