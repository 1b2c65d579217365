"""Benchmark: multi-label fold making on 100,000 rows x 100 labels, kagglecv vs iterative-stratification.

Run: .venv/bin/python bench/folds.py [--rows N] [--labels L]. Prints time, peak RSS and the largest per-fold
label-rate deviation of each. Labels are drawn with a long-tailed frequency (0.05 % to 20 %), like real
multi-label competitions.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from kagglecv.folds import label_rate_deviation
from kagglecv.splitters import MultilabelStratifiedGroupKFold, MultilabelStratifiedKFold


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--skip-iterstrat", action="store_true")
    args = parser.parse_args()
    y = long_tailed_labels(args.rows, args.labels)
    groups = np.arange(args.rows) // 5
    results = {}
    folds, seconds = timed(lambda: MultilabelStratifiedKFold(5, random_state=42).assign(y))
    results["kagglecv multilabel"] = (seconds, label_rate_deviation(y, folds))
    folds, seconds = timed(lambda: MultilabelStratifiedGroupKFold(5, random_state=42).assign(y, groups))
    results["kagglecv multilabel_group (groups of 5)"] = (seconds, label_rate_deviation(y, folds))
    if not args.skip_iterstrat:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold as IterstratKFold

        splitter = IterstratKFold(n_splits=5, shuffle=True, random_state=42)
        folds, seconds = timed(lambda: folds_from_splits(splitter, y))
        results["iterative-stratification"] = (seconds, label_rate_deviation(y, folds))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.rows:,} rows x {args.labels} labels, 5 folds; peak RSS of the process {peak_mib:.0f} MiB")
    for name, (seconds, deviation) in results.items():
        print(f"{name:42s} {seconds:7.2f} s   largest label-rate deviation {deviation:.5f}")


if __name__ == "__main__":
    main()
