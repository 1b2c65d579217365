"""The whole process of ``kagglecv train CONFIG --fold 0`` against a bare timm training script, same work.

Both train resnet10t at 32 px on cifar10-mini fold 0 of 5 (1,920 training, 480 validation images), 3 epochs, batch
64, 2 loader workers, AdamW 2e-3 with timm's cosine schedule and the same albumentations "medium" pipeline; both
validate each epoch and save the weights. The bare script (``bare_train.py`` beside this file) is what timm's
``train.py`` does per epoch (train, validate, write the checkpoint and a summary row) with nothing else: no image
checks, no OOF file, no curves. The processes alternate (kagglecv, bare, ...) and each is timed from its start to
its exit. Reported: the median wall time of each, the ratio (target: at most 1.05), and kagglecv's training and
validation images/s against the bare script's, so that a ratio above 1 is fixed work and not a slower loop.

timm's own ``train.py`` is not in the timm package; the script is its loop without its command line.

Run alone (nothing else training): .venv/bin/python bench/fixed_work.py [--rounds 3] [--kagglecv-env KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import machine, require_shared

HERE = Path(__file__).resolve().parent


def kagglecv_config(root: Path, data: Path) -> Path:
    path = root / "fixed.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "fixed", "runs_dir": str(root / "runs"),
        "data": {"train_csv": str(data / "train.csv"), "image_dir": str(data / "train")},
        "folds": {"near_duplicates": "off", "file": str(root / "folds.csv"), "n_splits": 5},
        "model": {"name": "resnet10t", "img_size": 32}, "augment": {"train": "medium"},
        "train": {"epochs": 3, "batch_size": 64, "num_workers": 2, "opt": "adamw", "lr": 2e-3, "sched": "cosine",
                  "warmup_epochs": 0, "label_smoothing": 0.1},
    }))
    return path


def timed_process(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env and {**os.environ, **env})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kagglecv-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the kagglecv side only (e.g. GOMP_SPINCOUNT=1000)")
    args = parser.parse_args()
    kagglecv_env = dict(item.split("=", 1) for item in args.kagglecv_env)
    data = require_shared("cifar10-mini")
    kagglecv = str(Path(sys.executable).with_name("kagglecv"))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        config = kagglecv_config(root, data)
        subprocess.run([kagglecv, "folds", str(config)], check=True, capture_output=True)
        walls: dict[str, list[float]] = {"kagglecv": [], "bare": []}
        rates: dict[str, list[float]] = {"kagglecv": [], "bare": []}
        for index in range(args.rounds):
            experiment = f"fixed{index}"
            walls["kagglecv"].append(timed_process([kagglecv, "train", str(config), "--fold", "0",
                                                    "--set", f"experiment={experiment}"], kagglecv_env))
            history = _read_history(root / "runs" / experiment / "fold0" / "history.csv")
            rates["kagglecv"].append(history)
            summary = root / f"bare{index}.json"
            walls["bare"].append(timed_process([sys.executable, str(HERE / "bare_train.py"), str(data),
                                                str(root / "folds.csv"), str(root / f"bare{index}"), str(summary)]))
            rates["bare"].append(json.loads(summary.read_text())["train_images_per_sec"])
    result = {"machine": machine(), "rounds": args.rounds, "kagglecv_env": kagglecv_env,
              "wall_s": {side: {"median": statistics.median(v), "values": v} for side, v in walls.items()},
              "train_images_per_sec": {side: statistics.median(v) for side, v in rates.items()}}
    result["ratio"] = result["wall_s"]["kagglecv"]["median"] / result["wall_s"]["bare"]["median"]
    print(json.dumps(result, indent=2))


def _read_history(path: Path) -> float:
    import pandas as pd

    history = pd.read_csv(path)
    return float(history["images_per_sec"].median())


if __name__ == "__main__":
    main()
