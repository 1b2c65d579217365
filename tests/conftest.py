"""Shared fixtures: the real datasets in ../shared/data (skipped when absent) and tiny synthetic competitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not found at {path} (it lives in ../shared/data beside the repo)")
    return path


@pytest.fixture
def write_images():
    """Write random RGB images ``<folder>/<id>.<ext>``; returns the paths."""

    def _write(folder: Path, ids, size=(16, 16), ext="png", seed=0):
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        paths = []
        for image_id in ids:
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            path = folder / f"{image_id}.{ext}"
            Image.fromarray(pixels).save(path)
            paths.append(path)
        return paths

    return _write


@pytest.fixture
def tiny_multiclass(tmp_path, write_images):
    """A 40-row, 4-class competition with images, and the config dict that reads it."""
    ids = [f"{i:04d}" for i in range(40)]
    labels = [["cat", "dog", "bird", "fish"][i % 4] for i in range(40)]
    pd.DataFrame({"id": ids, "label": labels}).to_csv(tmp_path / "train.csv", index=False)
    write_images(tmp_path / "train", ids)
    return {
        "experiment": "tiny",
        "data": {"train_csv": str(tmp_path / "train.csv"), "image_dir": str(tmp_path / "train")},
        "folds": {"method": "stratified", "n_splits": 4, "file": str(tmp_path / "folds" / "tiny.csv")},
    }
