"""Benchmark 2: decode + augment images/s in one worker, kagglecv's albumentations pipeline vs torchvision.

The `medium` preset on cifar10-mini JPEGs (32 px) and on COCO JPEGs (up to 640 px, output 224 px), against the
equivalent torchvision.transforms.v2 pipeline on PIL images; rounds alternate.

Run: .venv/bin/python bench/input_pipeline.py [--quick]
"""

from __future__ import annotations

import time

import torch
from common import alternate, peak_rss_mib, quick_cli, ratio, require_shared
from PIL import Image
from torchvision.transforms import v2

from kagglecv.nn.images import ImageDataset, build_augment

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_medium(size: int) -> v2.Compose:
    """What `medium` does, in torchvision: crop, flip, affine, colour jitter, erasing, normalize."""
    crop = [v2.Resize((size, size)), v2.RandomCrop(size, padding=size // 16, padding_mode="reflect")] if size <= 64 \
        else [v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True)]
    return v2.Compose([
        v2.PILToTensor(), *crop, v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomAffine(degrees=15, translate=(0.06, 0.06), scale=(0.9, 1.1))], p=0.5),
        v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.02)], p=0.5),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD),
        v2.RandomErasing(p=0.3, scale=(0.01, 0.09)),
    ])


def rate_of(fn, n: int) -> float:
    start = time.perf_counter()
    for row in range(n):
        fn(row)
    return n / (time.perf_counter() - start)


def run(quick: bool = False, rounds: int = 3) -> dict:
    torch.set_num_threads(1)
    results = {}
    for name, folder, size, n in [("cifar10-mini 32 px", "cifar10-mini", 32, 500 if quick else 2000),
                                  ("coco128 640 px -> 224", "coco128-multilabel", 224, 40 if quick else 128)]:
        root = require_shared(folder)
        paths = sorted((root / "train").glob("*.jpg"))[:n]
        dataset = ImageDataset(paths, None, build_augment("medium", size, MEAN, STD, train=True))
        vision = torchvision_medium(size)

        def torchvision_item(row):
            with Image.open(paths[row]) as image:
                return vision(image.convert("RGB"))

        sides = alternate({"albumentations (kagglecv)": lambda: rate_of(lambda r: dataset[(r, 0)], len(paths)),
                           "torchvision v2": lambda: rate_of(torchvision_item, len(paths))}, 2 if quick else rounds)
        results[name] = sides | {"ratio": ratio(sides["albumentations (kagglecv)"], sides["torchvision v2"])}
    return {"per_worker": results, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    quick_cli(run, __doc__)


if __name__ == "__main__":
    main()
