"""Shared fixtures: the real datasets in ../shared/data (skipped when absent) and tiny synthetic competitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from kagglecv.cli import app

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


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
    """The demo's real digits competitions (multiclass and multi-label mosaics), built once per session."""
    from kagglecv.workflows.demo import build_multiclass, build_multilabel

    root = tmp_path_factory.mktemp("digits")
    build_multiclass(root / "digits")
    build_multilabel(root / "mosaic")
    return root


def tiny_config(tmp_path: Path, digits_root: Path, task: str = "multiclass", rows: int = 64, **sections) -> dict:
    """A config for a few dozen real digit images, 2 folds, 1 epoch of timm's test_resnet at 16 px."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = digits_root / ("mosaic" if task == "multilabel" else "digits")
    frame = pd.read_csv(source / "train.csv", dtype=str, keep_default_na=False).head(rows)
    data = {"image_dir": str(source / "train"), "test_csv": str(tmp_path / "test.csv"),
            "test_image_dir": str(source / "test")}
    if task == "binary":
        frame["label"] = np.where(frame["label"] == "one", "one", "other")
    if task == "multilabel":
        data |= {"target": "labels", "classes_file": str(source / "classes.txt")}
    frame.to_csv(tmp_path / "train.csv", index=False)
    pd.read_csv(source / "test.csv", dtype=str).head(16).to_csv(tmp_path / "test.csv", index=False)
    config = {
        "experiment": f"tiny-{task}",
        "runs_dir": str(tmp_path / "runs"),
        "data": {"train_csv": str(tmp_path / "train.csv"), **data},
        "folds": {"method": "multilabel" if task == "multilabel" else "stratified", "n_splits": 2,
                  "file": str(tmp_path / "folds.csv"), "near_duplicates": "off", "allow_rare_classes": True},
        "model": {"name": "test_resnet", "img_size": 16},
        "augment": {"train": "light"},
        "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "lr": 3e-3},
    }
    for section, values in sections.items():
        config[section] = config.get(section, {}) | values
    return config


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, digits_root):
    """Two finished tiny runs per task (different seeds), shared by the predict, score, report and ensemble tests."""
    from kagglecv.core.config import validate_config
    from kagglecv.core.console import Console
    from kagglecv.stages.folds import make_folds
    from kagglecv.stages.train import train_run

    root = tmp_path_factory.mktemp("trained")
    runs = {}
    for task in ("multiclass", "multilabel"):
        for seed in (1, 2):
            raw = tiny_config(root / task, digits_root, task, rows=96, train={"seed": seed, "epochs": 2})
            raw["experiment"] = f"{task}-s{seed}"
            raw["notes"] = f"seed {seed}"
            config = validate_config(raw)
            make_folds(config)
            train_run(config, console=Console(quiet=True))
            runs[(task, seed)] = config
    return runs


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, with the reason, where torch sees no CUDA GPU (as Lightning's ``RunIf``)."""
    needs_gpu = [item for item in items if "gpu" in item.keywords]
    if not needs_gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    for item in needs_gpu:
        item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False here"))


def kaggle_pfbeta(labels: list[int], predictions: list[float], beta: float = 1) -> float:
    """RSNA Breast Cancer Detection's metric as Kaggle's notebook writes it, row by row: the reference kagglecv's
    ``pf1`` and its scored submissions are checked against."""
    y_true_count = ctp = cfp = 0
    for label, prediction in zip(labels, predictions):
        prediction = min(max(prediction, 0), 1)
        if label:
            y_true_count += 1
            ctp += prediction
        else:
            cfp += prediction
    c_precision, c_recall = ctp / (ctp + cfp), ctp / y_true_count
    if c_precision > 0 and c_recall > 0:
        return (1 + beta * beta) * (c_precision * c_recall) / (beta * beta * c_precision + c_recall)
    return 0


def invoke(*args: str) -> str:
    """``kagglecv ARGS`` in-process; its output, after asserting it succeeded (the output is the failure message)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output
