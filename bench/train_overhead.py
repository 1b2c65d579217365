"""Benchmark: training images/s of kagglecv's loop vs a bare PyTorch loop, same model, batch, data and loader.

Both sides train resnet10t at 32 px on cifar10-mini fold 0 (2,400 images) for one epoch per round, with the same
albumentations pipeline, DataLoader settings and AdamW; the rounds alternate (kagglecv, bare, kagglecv, ...) so a
noisy machine affects both alike. Reports the median images/s of each, their spread and the ratio.

Run: .venv/bin/python bench/train_overhead.py [--rounds 3] [--model resnet10t] [--data ../shared/data/cifar10-mini]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader

from kagglecv.config import validate_config
from kagglecv.console import Console, EpochProgress
from kagglecv.data import load_train
from kagglecv.folds import assign_folds
from kagglecv.images import build_augment, decode_image, worker_init
from kagglecv.run_dir import RunDir
from kagglecv.runtime import Runtime, available_cores
from kagglecv.train import FoldTrainer


class BareDataset(torch.utils.data.Dataset):
    """What a hand-written loop would use: decode, augment, return."""

    def __init__(self, paths, targets, transform):
        self.paths, self.targets, self.transform = paths, targets, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, row):
        return self.transform(image=decode_image(self.paths[row]))["image"], int(self.targets[row]), row


def kagglecv_epoch(trainer: FoldTrainer) -> float:
    start = time.perf_counter()
    with EpochProgress(trainer.console, 0, 1, len(trainer.train_loader), enabled=False) as progress:
        row = trainer._train_epoch(progress)
    trainer.epoch += 1
    return row_images(trainer) / (time.perf_counter() - start)


def row_images(trainer: FoldTrainer) -> int:
    return len(trainer.train_loader) * trainer.cfg.batch_size


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cifar10-mini")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    config = validate_config({
        "experiment": "bench", "runs_dir": "/tmp/kagglecv-bench",
        "data": {"train_csv": str(args.data / "train.csv"), "image_dir": str(args.data / "train")},
        "folds": {"near_duplicates": "off", "file": "/tmp/kagglecv-bench/folds.csv"},
        "model": {"name": args.model, "img_size": 32},
        "augment": {"train": "light"},
        "train": {"epochs": 100, "batch_size": args.batch_size, "sched": "none", "weight_decay": 0.0},
    })
    data = load_train(config.data)
    fold_of, _ = assign_folds(data, config.folds)
    trainer = FoldTrainer(config, data, fold_of, None, 0, RunDir(Path("/tmp/kagglecv-bench/bench")),
                          Runtime(torch.device("cpu")), Console(quiet=True))

    model = timm.create_model(args.model, num_classes=len(data.classes))
    transform = build_augment("light", 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), train=True)
    dataset = BareDataset(data.paths, data.targets, transform)
    workers = available_cores()
    train_rows = np.flatnonzero(fold_of != 0).tolist()
    loader = DataLoader(torch.utils.data.Subset(dataset, train_rows), batch_size=args.batch_size, shuffle=True,
                        drop_last=True, num_workers=workers, persistent_workers=True, worker_init_fn=worker_init,
                        prefetch_factor=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    criterion = nn.CrossEntropyLoss()

    kagglecv_epoch(trainer), bare_epoch(model, loader, optimizer, criterion)  # warm-up: workers start, caches fill
    ours, bare = [], []
    for _ in range(args.rounds):
        ours.append(kagglecv_epoch(trainer))
        bare.append(bare_epoch(model, loader, optimizer, criterion))
    ratio = statistics.median(ours) / statistics.median(bare)
    ratios = [a / b for a, b in zip(ours, bare)]
    print(f"{args.model} 32 px, batch {args.batch_size}, {workers} workers, {args.rounds} alternating rounds")
    print(f"kagglecv train loop: median {statistics.median(ours):.1f} img/s (min {min(ours):.1f}, max {max(ours):.1f})")
    print(f"bare PyTorch loop:   median {statistics.median(bare):.1f} img/s (min {min(bare):.1f}, max {max(bare):.1f})")
    print(f"ratio kagglecv / bare: {ratio:.3f} (per-round {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
