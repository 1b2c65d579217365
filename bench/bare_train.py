"""A bare timm training script, the reference side of ``fixed_work.py``: what timm's train.py does per epoch.

Usage: bare_train.py DATA_DIR FOLDS_CSV OUT_DIR SUMMARY_JSON (fold 0 validates; resnet10t, 32 px, 3 epochs).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import timm
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Images(torch.utils.data.Dataset):
    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, row):
        pixels = np.asarray(Image.open(self.paths[row]).convert("RGB"))
        return self.transform(image=pixels)["image"], int(self.labels[row])


def pipelines(size: int = 32):
    """kagglecv's "medium" preset for small images, and its evaluation pipeline."""
    pad = size + size // 8
    train = A.Compose([
        A.Resize(size, size), A.PadIfNeeded(pad, pad, border_mode=cv2.BORDER_REFLECT_101), A.RandomCrop(size, size),
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-15, 15), p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.3), hole_width_range=(0.1, 0.3), p=0.3),
        A.Normalize(mean=MEAN, std=STD), ToTensorV2()])
    return train, A.Compose([A.Resize(size, size), A.Normalize(mean=MEAN, std=STD), ToTensorV2()])


def worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(0)


def main(data: Path, folds_csv: Path, out: Path, summary_path: Path, epochs: int = 3) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(data / "train.csv", dtype=str).merge(pd.read_csv(folds_csv, dtype={"id": str}), on="id")
    classes = sorted(table["label"].unique())
    labels = table["label"].map({name: index for index, name in enumerate(classes)}).to_numpy()
    paths = [str(data / "train" / f"{image_id}.jpg") for image_id in table["id"]]
    train_rows, valid_rows = np.flatnonzero(table["fold"] != 0), np.flatnonzero(table["fold"] == 0)
    train_tf, eval_tf = pipelines()
    loaders = {}
    for name, rows, transform in (("train", train_rows, train_tf), ("valid", valid_rows, eval_tf)):
        dataset = Images([paths[row] for row in rows], labels[rows], transform)
        loaders[name] = torch.utils.data.DataLoader(
            dataset, batch_size=64, shuffle=name == "train", drop_last=name == "train", num_workers=2,
            persistent_workers=True, prefetch_factor=4, worker_init_fn=worker_init)
    torch.manual_seed(42)
    model = timm.create_model("resnet10t", num_classes=len(classes))
    optimizer = create_optimizer_v2(model, opt="adamw", lr=2e-3, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=epochs, warmup_epochs=0,
                                       updates_per_epoch=len(loaders["train"]), step_on_epochs=False)
    loss_fn, valid_loss_fn = LabelSmoothingCrossEntropy(0.1), torch.nn.CrossEntropyLoss()
    rates, updates = [], 0
    for epoch in range(epochs):
        model.train()
        start, seen = time.perf_counter(), 0
        for images, targets in loaders["train"]:
            loss = loss_fn(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            updates += 1
            scheduler.step_update(num_updates=updates)
            seen += len(images)
        rates.append(seen / (time.perf_counter() - start))
        model.eval()
        correct, total, valid_loss = 0, 0, 0.0
        with torch.no_grad():
            for images, targets in loaders["valid"]:
                logits = model(images)
                valid_loss += valid_loss_fn(logits, targets).item() * len(images)
                correct += (logits.argmax(1) == targets).sum().item()
                total += len(images)
        scheduler.step(epoch + 1)
        torch.save({"epoch": epoch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
                   out / "checkpoint.pth.tar")
        with open(out / "summary.csv", "a", newline="") as handle:
            csv.writer(handle).writerow([epoch, valid_loss / total, correct / total])
    summary_path.write_text(json.dumps({"train_images_per_sec": float(np.median(rates)), "accuracy": correct / total}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
