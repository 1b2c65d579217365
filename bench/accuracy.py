"""Benchmark 3: accuracy per budget. The default recipe (resnet10t, 32 px, medium augmentation, AdamW, cosine,
label smoothing 0.1) at a fixed number of epochs: 5-fold CV and held-out accuracy on cifar10-mini (its
solution.csv), and group 4-fold CV on gtsrb-mini (tracks kept whole), with wall time and the learning curves.

Run: .venv/bin/python bench/accuracy.py [--quick] [--epochs 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd
from common import peak_rss_mib, require_shared

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.stages.folds import make_folds
from kagglecv.stages.predict import predict_run
from kagglecv.stages.score import score_run, score_submission
from kagglecv.stages.submit import write_submission
from kagglecv.stages.train import train_run

WORK = Path("/tmp/kagglecv-bench-accuracy")
OUT = Path(__file__).resolve().parent


def recipe(name: str, data: dict, folds: dict, epochs: int) -> dict:
    return {"experiment": name, "runs_dir": str(WORK / "runs"), "data": data,
            "folds": folds | {"file": str(WORK / f"{name}-folds.csv"), "near_duplicates": "off"},
            "model": {"name": "resnet10t", "img_size": 32}, "augment": {"train": "medium"},
            "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "warmup_epochs": 1, "label_smoothing": 0.1},
            "predict": {"tta": ["none", "hflip"]}}


def run_recipe(raw: dict, console: Console) -> tuple[dict, float]:
    config = validate_config(raw)
    start = time.perf_counter()
    make_folds(config)
    train_run(config, console=console)
    predict_run(config.run_dir, console=console)
    result = score_run(config.run_dir)
    curves = OUT / f"curves-{config.experiment}.png"
    shutil.copy(config.run_dir / "fold0" / "curves.png", curves)
    return {"cv": result.overall, "fold_mean": result.fold_mean, "fold_std": result.fold_std,
            "per_fold": result.per_fold, "curves": curves.name}, time.perf_counter() - start


def run(quick: bool = False, epochs: int = 8) -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    console = Console(quiet=True)
    epochs = 2 if quick else epochs
    cifar, gtsrb = require_shared("cifar10-mini"), require_shared("gtsrb-mini")
    cifar_train = cifar / "train.csv"
    if quick:  # a third of the rows keeps --quick quick
        WORK.mkdir(parents=True)
        pd.read_csv(cifar_train, dtype=str).groupby("label").head(100).to_csv(WORK / "cifar-train.csv", index=False)
        cifar_train = WORK / "cifar-train.csv"
    results = {}
    data = {"train_csv": str(cifar_train), "image_dir": str(cifar / "train"), "test_csv": str(cifar / "test.csv"),
            "test_image_dir": str(cifar / "test")}
    cifar_result, seconds = run_recipe(recipe("cifar10", data, {"method": "stratified", "n_splits": 2 if quick else 5},
                                              epochs), console)
    submission = write_submission(WORK / "runs" / "cifar10", cifar / "sample_submission.csv", "cifar10", out_dir=WORK)
    cifar_result["held_out_accuracy"] = score_submission(submission.path, cifar / "solution.csv", "accuracy")
    results["cifar10-mini"] = cifar_result | {"seconds": seconds}
    data = {"train_csv": str(gtsrb / "train.csv"), "image_dir": str(gtsrb / "train"), "group_col": "track"}
    gtsrb_result, seconds = run_recipe(recipe("gtsrb", data, {"method": "stratified_group", "n_splits": 4}, epochs), console)
    results["gtsrb-mini (group folds)"] = gtsrb_result | {"seconds": seconds}
    return {"epochs": epochs, "recipe": "resnet10t 32 px, medium, AdamW lr 2e-3, cosine, warmup 1, smoothing 0.1, TTA hflip",
            "results": results, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.epochs), indent=2, default=float))


if __name__ == "__main__":
    main()
