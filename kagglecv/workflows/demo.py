"""``kagglecv demo``: a real competition built from data a dependency ships, then the pipeline on it.

scikit-learn bundles the UCI handwritten digits (1,797 real 8x8 scans, 16 grey levels). They are written out as a
Kaggle-style competition: ``train.csv`` / ``test.csv`` / ``sample_submission.csv`` / ``solution.csv`` and PNG
images, plus a multi-label variant where each image is a 2x2 mosaic of digits and the labels are the digits
present (scored by mAP).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.files import write_csv
from kagglecv.stages.ensemble import make_ensemble
from kagglecv.stages.inspect import inspect_stale_runs
from kagglecv.stages.report import build_report
from kagglecv.stages.submit import write_submission
from kagglecv.workflows.run import run_pipeline

TEST_FRACTION = 0.25
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digit scans as uint8 8x8 arrays (0-255) and their labels."""

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def build_multiclass(root: Path, seed: int = 0) -> Path:
    """Write the multiclass digits competition under ``root``; returns ``root``."""
    images, labels = digit_images()
    rng = np.random.default_rng(seed)
    ids = np.array([f"d{index:05d}" for index in rng.permutation(100_000)[: len(images)]])
    is_test = rng.random(len(images)) < TEST_FRACTION
    names = np.array(DIGIT_NAMES)[labels]
    _write_split(root, ids, images, ~is_test, "train", {"label": names})
    _write_split(root, ids, images, is_test, "test", {})
    write_csv(root / "solution.csv", pd.DataFrame({"id": ids[is_test], "label": names[is_test]}))
    write_csv(root / "sample_submission.csv", pd.DataFrame({"id": ids[is_test], "label": DIGIT_NAMES[0]}))
    return root


def build_multilabel(root: Path, n_images: int = 1200, seed: int = 1) -> Path:
    """Write the multi-label mosaic competition (16x16 images of 2x2 digits; labels are the digits present)."""
    images, labels = digit_images()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(images), (n_images, 4))
    blank = rng.random((n_images, 4)) < 0.25  # some tiles stay empty, so label counts vary from 0 to 4
    mosaics = np.zeros((n_images, 16, 16), dtype=np.uint8)
    label_sets = []
    for row in range(n_images):
        present = set()
        for tile in range(4):
            if blank[row, tile]:
                continue
            y, x = divmod(tile, 2)
            mosaics[row, 8 * y : 8 * y + 8, 8 * x : 8 * x + 8] = images[picks[row, tile]]
            present.add(DIGIT_NAMES[labels[picks[row, tile]]])
        label_sets.append(" ".join(sorted(present, key=DIGIT_NAMES.index)))
    ids = np.array([f"m{index:05d}" for index in range(n_images)])
    is_test = rng.random(n_images) < TEST_FRACTION
    label_sets = np.array(label_sets, dtype=object)
    _write_split(root, ids, mosaics, ~is_test, "train", {"labels": label_sets})
    _write_split(root, ids, mosaics, is_test, "test", {})
    write_csv(root / "solution.csv", pd.DataFrame({"id": ids[is_test], "labels": label_sets[is_test]}))
    sample = pd.DataFrame({"id": ids[is_test]} | {name: 0.5 for name in DIGIT_NAMES})
    write_csv(root / "sample_submission.csv", sample)
    (root / "classes.txt").write_text("\n".join(DIGIT_NAMES) + "\n")
    return root


def _write_split(root: Path, ids, images, mask, split: str, columns: dict) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, pixels in zip(ids[mask], images[mask]):
        Image.fromarray(pixels, mode="L").save(folder / f"{image_id}.png")
    table = pd.DataFrame({"id": ids[mask]} | {name: values[mask] for name, values in columns.items()})
    write_csv(root / f"{split}.csv", table)


DIGIT_AUGMENT = [  # no flips: a mirrored 2 is not a 2
    {"__class_fullname__": "Affine", "scale": [0.9, 1.1], "rotate": [-10, 10], "translate_percent": [-0.05, 0.05], "p": 0.7},
]
DEMO_BACKBONES = ("test_resnet", "test_efficientnet")


def demo_config(root: Path, competition: str, backbone: str, epochs: int = 6) -> dict:
    """The config of one demo experiment, as a user would write it."""
    folder = root / competition
    data = {"train_csv": str(folder / "train.csv"), "image_dir": str(folder / "train"),
            "test_csv": str(folder / "test.csv"), "test_image_dir": str(folder / "test")}
    if competition == "mosaic":
        data |= {"target": "labels", "classes_file": str(folder / "classes.txt")}
    return {
        "experiment": f"{competition}-{backbone.replace('_', '-')}",
        "notes": f"demo: {backbone} on the {competition} competition",
        "runs_dir": str(root / "runs"),
        "data": data,
        "folds": {"method": "multilabel" if competition == "mosaic" else "stratified", "n_splits": 3,
                  "file": str(root / "folds" / f"{competition}-k3.csv"), "near_duplicates": "off"},
        "model": {"name": backbone, "img_size": 32},
        "augment": {"train": DIGIT_AUGMENT},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 3e-3, "warmup_epochs": 1},
        "predict": {"tta": ["none"]},
        "submit": {"sample": str(folder / "sample_submission.csv"), "dir": str(root / "submissions"),
                   "threshold": "oof"},
    }


def run_demo(root: Path, epochs: int = 6, console=None):
    """Build both demo competitions under ``root``, run two backbones on each, blend them, write submissions.

    Returns the report's leaderboard (best first per competition).
    """
    console = console or Console()
    root = Path(root).resolve()  # the run folders record absolute paths: report and submit work from anywhere
    if not (root / "mosaic" / "sample_submission.csv").is_file():
        build_multiclass(root / "digits")
        build_multilabel(root / "mosaic")
        console.line(f"built the demo competitions from scikit-learn's digits under {root}")
    for competition in ("digits", "mosaic"):
        runs = []
        for backbone in DEMO_BACKBONES:
            config = validate_config(demo_config(root, competition, backbone, epochs))
            summary = run_pipeline(config, console)
            console.line(f"{summary.experiment}: CV {summary.score.metric} {summary.score.overall:.4f} "
                         f"(folds {summary.score.fold_mean:.4f} ± {summary.score.fold_std:.4f}), submission {summary.submission}")
            runs.append(config.run_dir)
        blend = make_ensemble(runs, "hill", name=competition)
        sample = root / competition / "sample_submission.csv"
        submission = write_submission(blend.path, sample, f"{competition}-ensemble", threshold="oof",
                                      out_dir=root / "submissions")
        console.line(f"{blend.name}: best single {blend.best_single[1]:.4f}, blend in-sample {blend.in_sample:.4f}, "
                     f"nested (honest) {blend.nested:.4f}; submission {submission.path}")
    inspect_stale_runs(root / "runs")  # the inspect stage writes the error analysis the report reads
    report = build_report(root / "runs", submissions_dir=root / "submissions")
    console.line(f"report with pictures: {report.markdown} and {report.html}")
    return report.leaderboard
