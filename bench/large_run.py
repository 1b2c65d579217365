"""Benchmark: memory of a run on a large table. The demo's digit images are repeated to 50,000 rows (each row
its own id, pointing at a real image through an image column), then folds, one epoch of test_resnet at 16 px per
fold (2 folds), and OOF merging, in this process; reports the peak RSS and the wall time.

Run: .venv/bin/python bench/large_run.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import peak_rss_mib

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.stages.folds import make_folds
from kagglecv.stages.train import train_run
from kagglecv.workflows.demo import build_multiclass


def run(quick: bool = False, rows: int = 50_000) -> dict:
    rows = 5_000 if quick else rows
    root = Path(tempfile.mkdtemp(prefix="kagglecv-large-"))
    build_multiclass(root / "digits")
    base = pd.read_csv(root / "digits" / "train.csv", dtype=str)
    repeats = np.arange(rows) % len(base)
    table = pd.DataFrame({"id": [f"r{i:06d}" for i in range(rows)], "image": base["id"].to_numpy()[repeats] + ".png",
                          "label": base["label"].to_numpy()[repeats]})
    table.to_csv(root / "train.csv", index=False)
    config = validate_config({
        "experiment": "large", "runs_dir": str(root / "runs"),
        "data": {"train_csv": str(root / "train.csv"), "image_dir": str(root / "digits" / "train"), "image_col": "image"},
        "folds": {"n_splits": 2, "file": str(root / "folds.csv"), "near_duplicates": "off", "duplicates": "ignore"},
        "model": {"name": "test_resnet", "img_size": 16}, "augment": {"train": "none"},
        "train": {"epochs": 1, "batch_size": 256},
    })
    start = time.perf_counter()
    make_folds(config)
    train_run(config, console=Console(quiet=True))
    seconds = time.perf_counter() - start
    oof_rows = sum(1 for _ in open(root / "runs" / "large" / "oof.csv")) - 1
    return {"rows": rows, "oof_rows": oof_rows, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.rows), indent=2))


if __name__ == "__main__":
    main()
