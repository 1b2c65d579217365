"""Benchmark: multi-label fold making on 100,000 rows x 100 labels, kagglecv vs iterative-stratification.

Run: .venv/bin/python bench/folds.py [--rows N] [--labels L]. Prints time, peak RSS and the largest per-fold
label-rate deviation of each. Labels are drawn with a long-tailed frequency (0.05 % to 20 %), like real
multi-label competitions.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from kagglecv.data.splitters import (
    MultilabelStratifiedGroupKFold,
    MultilabelStratifiedKFold,
)
from kagglecv.stages.folds import label_rate_deviation


def long_tailed_labels(rows: int, labels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = np.geomspace(0.0005, 0.2, labels)
    return (rng.random((rows, labels)) < rates).astype(np.int8)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def folds_from_splits(splitter, y, groups=None) -> np.ndarray:
    folds = np.empty(len(y), dtype=np.int64)
    for fold, (_, valid) in enumerate(splitter.split(y, y, groups)):
        folds[valid] = fold
    return folds


def run(quick: bool = False, rows: int = 100_000, labels: int = 100, with_iterstrat: bool = True) -> dict:
    if quick:
        rows = 20_000
    y = long_tailed_labels(rows, labels)
    groups = np.arange(rows) // 5
    results = {}
    folds, seconds = timed(lambda: MultilabelStratifiedKFold(5, random_state=42).assign(y))
    results["kagglecv multilabel"] = {"seconds": seconds, "max_rate_deviation": label_rate_deviation(y, folds)}
    folds, seconds = timed(lambda: MultilabelStratifiedGroupKFold(5, random_state=42).assign(y, groups))
    results["kagglecv multilabel_group (groups of 5)"] = {"seconds": seconds, "max_rate_deviation": label_rate_deviation(y, folds)}
    if with_iterstrat:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold as IterstratKFold

        splitter = IterstratKFold(n_splits=5, shuffle=True, random_state=42)
        folds, seconds = timed(lambda: folds_from_splits(splitter, y))
        results["iterative-stratification"] = {"seconds": seconds, "max_rate_deviation": label_rate_deviation(y, folds)}
    return {"rows": rows, "labels": labels, "results": results,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-iterstrat", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.rows, args.labels, not args.skip_iterstrat), indent=2))


if __name__ == "__main__":
    main()
