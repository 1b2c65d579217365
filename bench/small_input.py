"""Benchmark: the small-input stem at equal wall time. resnet10t on cifar10-mini fold 0 of 5 (2,400 training
images) three ways: the plain stem at 32 px, ``model.small_input`` at 32 px (stride-1 stem, no max-pool), and the
plain stem on images upsampled to 64 px. Each variant gets the same wall-clock budget: a one-epoch probe measures
its epoch time, and the run gets as many epochs as fit in the budget (cosine schedule over them). Scored on the
fold's held-out rows and on cifar10-mini's held-out test split (solution.csv).

Run: .venv/bin/python bench/small_input.py [--budget 180]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import require_shared

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.stages.folds import make_folds
from kagglecv.stages.score import score_submission
from kagglecv.stages.submit import write_submission
from kagglecv.stages.train import train_run

WORK = Path("/tmp/kagglecv-bench-small-input")
VARIANTS = {"plain 32 px": {"img_size": 32}, "small_input 32 px": {"img_size": 32, "small_input": True},
            "plain 64 px (upsampled)": {"img_size": 64}}


def config_for(name: str, model: dict, epochs: int, cifar: Path) -> dict:
    return {"experiment": name.replace(" ", "-").replace("(", "").replace(")", ""), "runs_dir": str(WORK / "runs"),
            "data": {"train_csv": str(cifar / "train.csv"), "image_dir": str(cifar / "train"),
                     "test_csv": str(cifar / "test.csv"), "test_image_dir": str(cifar / "test")},
            "folds": {"method": "stratified", "n_splits": 5, "file": str(WORK / "folds.csv"), "near_duplicates": "off"},
            "model": {"name": "resnet10t"} | model, "augment": {"train": "medium"},
            "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "warmup_epochs": 1 if epochs > 2 else 0,
                      "label_smoothing": 0.1}}


def train_for(raw: dict) -> tuple[float, float]:
    """Train fold 0; the fold's best accuracy and the wall time."""
    config = validate_config(raw)
    shutil.rmtree(config.run_dir, ignore_errors=True)
    make_folds(config)
    start = time.perf_counter()
    outcome = train_run(config, [0], console=Console(quiet=True))[0]
    return outcome.best_score, time.perf_counter() - start


def run(budget: float) -> dict:
    cifar = require_shared("cifar10-mini")
    shutil.rmtree(WORK, ignore_errors=True)
    results = {}
    for name, model in VARIANTS.items():
        _, probe_seconds = train_for(config_for(name, model, 1, cifar))
        epochs = max(1, int(budget // probe_seconds))
        raw = config_for(name, model, epochs, cifar)
        accuracy, seconds = train_for(raw)
        run_dir = WORK / "runs" / raw["experiment"]
        shutil.copy(run_dir / "fold0" / "test.csv", run_dir / "test.csv")
        submission = write_submission(run_dir, cifar / "sample_submission.csv", raw["experiment"], out_dir=WORK)
        results[name] = {"epochs": epochs, "seconds": seconds, "seconds_per_epoch": probe_seconds,
                         "fold0_accuracy": accuracy,
                         "test_accuracy": score_submission(submission.path, cifar / "solution.csv", "accuracy")}
    return {"budget_seconds": budget, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=180.0)
    args = parser.parse_args()
    print(json.dumps(run(args.budget), indent=2))


if __name__ == "__main__":
    main()
