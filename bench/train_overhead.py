"""Benchmark 1: training images/s of kagglecv's loop vs a bare PyTorch loop, same model, batch, data and loader.

Both sides train resnet10t at 32 px on cifar10-mini fold 0 (2,400 images) with the same albumentations pipeline,
DataLoader settings (a worker per core, persistent, prefetch 4) and AdamW; rounds alternate (kagglecv, bare, ...),
each one epoch. Reports median images/s of each, their spread and the ratio.

Run: .venv/bin/python bench/train_overhead.py [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import timm
import torch
from common import alternate, peak_rss_mib, ratio, require_shared
from torch import nn
from torch.utils.data import DataLoader

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console, EpochProgress
from kagglecv.core.metrics import resolve_metric
from kagglecv.core.runs import RunDir
from kagglecv.data.decoding import decode_image
from kagglecv.data.load import load_train
from kagglecv.nn.images import build_augment, worker_init
from kagglecv.nn.runtime import Runtime, available_cores
from kagglecv.stages.folds import assign_folds
from kagglecv.training.components import build_fold_components, loop_settings
from kagglecv.training.selection import BestEpoch, epoch_metric
from kagglecv.training.trainer import FoldTrainer


class BareDataset(torch.utils.data.Dataset):
    """What a hand-written loop would use: decode, augment, return."""

    def __init__(self, paths, targets, transform):
        self.paths, self.targets, self.transform = paths, targets, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, row):
        return self.transform(image=decode_image(self.paths[row]))["image"], int(self.targets[row]), row


LAST_ROWS: list[dict] = []


def kagglecv_epoch(trainer: FoldTrainer) -> float:
    start = time.perf_counter()
    with EpochProgress(trainer.console, 0, 1, len(trainer.parts.train_loader), enabled=False) as progress:
        LAST_ROWS.append(trainer._train_epoch(progress))
    trainer.epoch += 1
    return len(trainer.parts.train_loader) * trainer.settings.batch_size / (time.perf_counter() - start)


def bare_epoch(model, loader, optimizer, criterion) -> float:
    model.train()
    start = time.perf_counter()
    seen = 0
    for images, targets, _ in loader:
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(images)
    return seen / (time.perf_counter() - start)


def run(quick: bool = False, rounds: int = 5, model_name: str = "resnet10t", batch_size: int = 64) -> dict:
    data_root = require_shared("cifar10-mini")
    config = validate_config({
        "experiment": "bench", "runs_dir": "/tmp/kagglecv-bench",
        "data": {"train_csv": str(data_root / "train.csv"), "image_dir": str(data_root / "train")},
        "folds": {"near_duplicates": "off", "file": "/tmp/kagglecv-bench/folds.csv"},
        "model": {"name": model_name, "img_size": 32},
        "augment": {"train": "light"},
        "train": {"epochs": 100, "batch_size": batch_size, "sched": "none", "weight_decay": 0.0},
    })
    data = load_train(config.data)
    fold_of, _ = assign_folds(data, config.folds)
    runtime = Runtime(torch.device("cpu"))
    parts = build_fold_components(config, data, fold_of, 0, runtime)
    metric = epoch_metric(config.train.metric, resolve_metric(config.metric, data.task), data.task)
    trainer = FoldTrainer(loop_settings(config), data, parts, RunDir(Path("/tmp/kagglecv-bench/bench")).fold(0),
                          runtime, Console(quiet=True), BestEpoch(metric))
    model = timm.create_model(model_name, num_classes=len(data.classes))
    transform = build_augment("light", 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), train=True)
    train_rows = np.flatnonzero(fold_of != 0).tolist()
    loader = DataLoader(torch.utils.data.Subset(BareDataset(data.images, data.targets, transform), train_rows),
                        batch_size=batch_size, shuffle=True, drop_last=True, num_workers=available_cores(),
                        persistent_workers=True, worker_init_fn=worker_init, prefetch_factor=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    criterion = nn.CrossEntropyLoss()
    kagglecv_epoch(trainer), bare_epoch(model, loader, optimizer, criterion)  # warm-up: workers start, caches fill
    results = alternate({"kagglecv": lambda: kagglecv_epoch(trainer),
                         "bare": lambda: bare_epoch(model, loader, optimizer, criterion)}, 2 if quick else rounds)
    return {"model": model_name, "img_size": 32, "batch_size": batch_size, "workers": available_cores(),
            "kagglecv": results["kagglecv"], "bare": results["bare"],
            "ratio": ratio(results["kagglecv"], results["bare"]),
            "data_time_share": LAST_ROWS[-1]["data_time"] / (LAST_ROWS[-1]["data_time"] + LAST_ROWS[-1]["step_time"]),
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="resnet10t")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.rounds, args.model), indent=2))


if __name__ == "__main__":
    main()
