"""Benchmark: ``kagglecv stack``'s fitting at ISIC 2024's size (400,000 rows, about 1,000 patients, 0.1 % positives).

The table is coco128's real per-image table (``../shared/data/coco128-multilabel/objects.csv``: object count, box
cover, width, height; orientation from the size) resampled to 400,000 rows with 2 % jitter on the numbers, each row
given a patient (about 400 rows each, as ISIC's) and an image run's OOF score (the target's logit plus noise,
AUC about 0.85). Times reading the features from a CSV with ``read_features`` (the stage's path), the 5 nested fold
fits (LightGBM, 300 rounds, 15 leaves, group-relative features per patient) with their predictions, and the
in-sample fit the stage also reports; peak RSS of the process.

Run: .venv/bin/python bench/stack.py [--rows 400000] [--folds 5] [--model lightgbm]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import peak_rss_mib
from sklearn.metrics import roc_auc_score

from kagglecv.core.config import DataConfig, FeaturesConfig
from kagglecv.data.features import read_features
from kagglecv.second.design import DesignSpec
from kagglecv.second.models import ModelSettings
from kagglecv.second.stacking import LevelOne, fit_stack

OBJECTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco128-multilabel" / "objects.csv"
FEATURES = FeaturesConfig(numeric=["n_objects", "box_cover", "width", "height"], categorical=["orientation"])


def isic_sized_table(rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The resampled table, its targets (0.1 % positive, from the features) and the image run's OOF score."""
    rng = np.random.default_rng(seed)
    objects = pd.read_csv(OBJECTS, dtype={"id": str})
    table = objects.iloc[rng.integers(0, len(objects), rows)].reset_index(drop=True)
    for column in FEATURES.numeric:
        table[column] = table[column] * rng.normal(1.0, 0.02, rows)
    table["orientation"] = np.select([table.width > table.height, table.width < table.height],
                                     ["landscape", "portrait"], "square")
    table["id"] = [f"ISIC_{index:07d}" for index in range(rows)]
    table["patient_id"] = [f"IP_{value:04d}" for value in rng.integers(0, max(1, rows // 400), rows)]
    logit = 0.15 * table["n_objects"] - 2.0 * table["box_cover"] + rng.normal(0, 1, rows)
    targets = (logit > np.quantile(logit, 0.999)).to_numpy().astype(int)
    score = 1 / (1 + np.exp(-(2.0 * targets + rng.normal(0, 1, rows) - 2)))
    return table, targets, score


def run(quick: bool = False, rows: int = 400_000, folds: int = 5, model: str = "lightgbm") -> dict:
    if quick:
        rows = 50_000
    table, targets, score = isic_sized_table(rows)
    patients = table["patient_id"].unique()
    fold_of_patient = dict(zip(patients, np.random.default_rng(1).permutation(len(patients)) % folds))
    fold = table["patient_id"].map(fold_of_patient).to_numpy()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train-metadata.csv"
        table.drop(columns=["split"]).to_csv(path, index=False)
        started = time.perf_counter()
        features = read_features(path, DataConfig(train_csv=path), table["id"].to_numpy(), FEATURES, "patient_id")
        read_seconds = time.perf_counter() - started
    spec = DesignSpec(["image:1"], FEATURES.numeric, FEATURES.categorical, True)
    started = time.perf_counter()
    fitted = fit_stack(spec, ModelSettings(kind=model), "binary", 2, LevelOne(score[:, None], features), targets,
                       fold, None)
    fit_seconds = time.perf_counter() - started
    return {"rows": rows, "folds": folds, "patients": len(patients), "positives": int(targets.sum()),
            "model": model, "design_columns": len(spec.names()), "read_features_seconds": read_seconds,
            "fit_seconds_all": fit_seconds, "seconds_per_fold": fit_seconds / (folds + 1),
            "image_auc": roc_auc_score(targets, score), "nested_auc": roc_auc_score(targets, fitted.nested[:, 1]),
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--model", default="lightgbm")
    args = parser.parse_args()
    print(json.dumps(run(rows=args.rows, folds=args.folds, model=args.model), indent=2, default=float))


if __name__ == "__main__":
    main()
