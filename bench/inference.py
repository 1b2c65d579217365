"""Benchmark 4: test-set images/s of kagglecv's fold predictor without TTA and with hflip TTA, vs a bare loop.

resnet10t at 32 px over the 1,000 cifar10-mini test images, batch 128, same loader settings; rounds alternate.

Run: .venv/bin/python bench/inference.py [--quick]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import timm
import torch
from common import alternate, peak_rss_mib, quick_cli, ratio, require_shared
from torch.utils.data import DataLoader

from kagglecv.core.config import validate_config
from kagglecv.core.records import NormalizationRecord
from kagglecv.core.runs import RunDir
from kagglecv.data.load import load_test, load_train
from kagglecv.nn.images import ImageDataset, build_augment, worker_init
from kagglecv.nn.inference import FoldPredictor
from kagglecv.nn.runtime import available_cores

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def run(quick: bool = False, rounds: int = 3) -> dict:
    root = require_shared("cifar10-mini")
    config = validate_config({
        "experiment": "bench", "data": {"train_csv": str(root / "train.csv"), "image_dir": str(root / "train"),
                                        "test_csv": str(root / "test.csv"), "test_image_dir": str(root / "test")},
        "model": {"name": "resnet10t", "img_size": 32}, "train": {"batch_size": 64}, "predict": {"batch_size": 128}})
    data = load_train(config.data.model_copy(update={"image_dir": None}))
    test = load_test(config.data, data.classes, data.task)
    predictor = FoldPredictor(config, RunDir(Path("/tmp")), data.task, data.classes)
    model = timm.create_model("resnet10t", num_classes=10).eval()
    predictor.normalization = NormalizationRecord(mean=list(MEAN), std=list(STD), max_pixel_value=255.0)
    rows = np.arange(len(test))
    dataset = ImageDataset(test.images, None, build_augment("none", 32, MEAN, STD, train=False), seed=None)

    def kagglecv(views):
        start = time.perf_counter()
        predictor.views(model, test.images, rows, views)
        return len(rows) / (time.perf_counter() - start)

    @torch.inference_mode()
    def bare():  # a prediction script makes its loader once per fold, as kagglecv does
        start = time.perf_counter()
        loader = DataLoader(dataset, batch_size=128, num_workers=available_cores(), worker_init_fn=worker_init,
                            prefetch_factor=4)
        for images, _, _ in loader:
            model(images)
        return len(rows) / (time.perf_counter() - start)

    bare()  # warm-up
    sides = alternate({"kagglecv": lambda: kagglecv(["none"]), "kagglecv hflip TTA": lambda: kagglecv(["none", "hflip"]),
                       "bare": bare}, 2 if quick else rounds)
    return sides | {"ratio_no_tta": ratio(sides["kagglecv"], sides["bare"]),
                    "ratio_tta": ratio(sides["kagglecv hflip TTA"], sides["bare"]), "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    quick_cli(run, __doc__)


if __name__ == "__main__":
    main()
