"""Two kagglecv trainings at once against one after the other, on this machine's cores.

Each training is ``kagglecv train CONFIG --fold 0`` in its own process: resnet10t at 32 px on cifar10-mini (fold 0
of 5: 2,400 training images), 2 epochs, batch 64, a loader worker per core. Measured with kagglecv's entry point
(``kagglecv.cli.main``, which sets the thread policy before torch loads) and, for comparison, with the bare Typer
app (``kagglecv.cli.app``: what kagglecv did before, the OpenMP defaults). Reports the wall time of A then B, of A
and B started together, and their ratio (target: at most 1.1).

Run alone (nothing else training): .venv/bin/python bench/concurrent_training.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import require_shared

ENTRY = {"kagglecv": "from kagglecv.cli import main as entry", "before": "from kagglecv.cli import app as entry"}


def config(root: Path, data: Path, epochs: int) -> Path:
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "a", "runs_dir": str(root / "runs"),
        "data": {"train_csv": str(data / "train.csv"), "image_dir": str(data / "train")},
        "folds": {"near_duplicates": "off", "file": str(root / "folds.csv")},
        "model": {"name": "resnet10t", "img_size": 32}, "augment": {"train": "light"},
        "train": {"epochs": epochs, "batch_size": 64},
    }))
    return path


def start(entry: str, config_path: Path, experiment: str) -> subprocess.Popen:
    argv = ["kagglecv", "train", str(config_path), "--fold", "0", "--set", f"experiment={experiment}"]
    code = f"import sys; {ENTRY[entry]}; sys.argv = {argv!r}; entry()"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _, errors = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a training failed: {errors[-2000:]}")


def measure(entry: str, config_path: Path, tag: str) -> dict:
    started = time.perf_counter()
    for name in ("a", "b"):
        wait_all([start(entry, config_path, f"{tag}-seq-{name}")])
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    wait_all([start(entry, config_path, f"{tag}-par-{name}") for name in ("a", "b")])
    concurrent = time.perf_counter() - started
    return {"sequential_s": round(sequential, 1), "concurrent_s": round(concurrent, 1),
            "ratio": round(concurrent / sequential, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--entries", nargs="+", choices=sorted(ENTRY), default=["before", "kagglecv"])
    args = parser.parse_args()
    data = require_shared("cifar10-mini")
    with tempfile.TemporaryDirectory(prefix="kagglecv-concurrent-") as folder:
        config_path = config(Path(folder), data, args.epochs)
        subprocess.run([sys.executable, "-m", "kagglecv", "folds", str(config_path)], check=True, capture_output=True)
        wait_all([start("kagglecv", config_path, "warm-up")])  # page cache, imports
        results = {entry: measure(entry, config_path, entry) for entry in args.entries}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
