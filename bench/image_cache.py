"""Benchmark: ``data.cache`` off, memory and disk for one fold, the whole ``kagglecv train`` process timed.

resnet10t at 32 px on cifar10-mini fold 0 of 5 (2,400 training images, 600 validated, the 1,000 test images
predicted), medium augmentation, 3 epochs, batch 64, 2 workers: the cifar10.yaml recipe at benchmark size. A fourth side,
memory+batch, swaps the per-image medium preset for batch flip and 2 px translate on the device (augment.batch:
flip_translate, train: none), the speed runs' augmentation. Rounds alternate (off, memory, disk, memory+batch, ...); the disk cache is removed before each disk round so every round decodes once.
Reports wall seconds of each (median, spread) and the training images/s of each epoch from the run's history.

Run: .venv/bin/python bench/image_cache.py [--rounds 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml
from common import alternate, machine, ratio, require_shared

ROOT = Path(__file__).resolve().parents[1]


SIDES = {"off": ("off", "medium", "none"), "memory": ("memory", "medium", "none"), "disk": ("disk", "medium", "none"),
         "memory+batch": ("memory", "none", "flip_translate")}


def config(folder: Path, mode: str, epochs: int) -> Path:
    data = require_shared("cifar10-mini")
    cache, per_image, batch = SIDES[mode]
    raw = {
        "experiment": f"cache-{mode.replace('+', '-')}", "runs_dir": str(folder / "runs"),
        "data": {"train_csv": str(data / "train.csv"), "image_dir": str(data / "train"),
                 "test_csv": str(data / "test.csv"), "test_image_dir": str(data / "test"), "cache": cache},
        "folds": {"n_splits": 5, "near_duplicates": "off", "file": str(folder / "folds.csv")},
        "model": {"name": "resnet10t", "img_size": 32, "pretrained": False},
        "augment": {"train": per_image, "batch": batch},
        "train": {"epochs": epochs, "batch_size": 64, "num_workers": 2, "lr": 2e-3},
    }
    path = folder / f"{mode.replace('+', '-')}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def one_fold(folder: Path, mode: str, epochs: int, seconds: dict) -> float:
    path = config(folder, mode, epochs)
    name = f"cache-{mode.replace('+', '-')}"
    shutil.rmtree(folder / "runs" / name, ignore_errors=True)
    shutil.rmtree(folder / "runs" / ".cache", ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kagglecv", "train", str(path), "--fold", "0"], check=True,
                   capture_output=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    history = pd.read_csv(folder / "runs" / name / "fold0" / "history.csv")
    seconds.setdefault(mode, []).append({"wall": elapsed,
                                         "images_per_sec": [round(v, 1) for v in history["images_per_sec"]]})
    return 1.0 / elapsed  # a rate, for alternate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kagglecv-cache-bench-") as scratch:
        folder = Path(scratch)
        subprocess.run([sys.executable, "-m", "kagglecv", "folds", str(config(folder, "off", args.epochs))],
                       check=True, capture_output=True, cwd=ROOT)
        seconds: dict = {}
        rates = alternate({mode: (lambda mode=mode: one_fold(folder, mode, args.epochs, seconds))
                           for mode in SIDES}, args.rounds)
    walls = {mode: sorted(round_["wall"] for round_ in rounds) for mode, rounds in seconds.items()}
    result = {"machine": machine(), "epochs": args.epochs, "rounds": args.rounds,
              "wall_seconds": {mode: {"median": 1 / rates[mode]["median"], "min": values[0], "max": values[-1]}
                               for mode, values in walls.items()},
              "memory_over_off": ratio(rates["off"], rates["memory"]), "disk_over_off": ratio(rates["off"], rates["disk"]),
              "memory_batch_over_off": ratio(rates["off"], rates["memory+batch"]),
              "rounds_detail": seconds}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
