"""Benchmark: hill-climb ensemble selection over 20 runs x 100,000 rows x 100 classes (multiclass).

Run: .venv/bin/python bench/ensemble.py [--runs 20] [--rows 100000] [--classes 100] [--metric accuracy]
Prints the time of the hill climb (Caruana selection, 30 rounds) and of the whole nested-CV fit, and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from kagglecv.core.blending import hill_climb
from kagglecv.core.metrics import get_metric


def synthetic_runs(runs: int, rows: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Runs of varying quality: softmax of noise plus a true-class boost, float32 like loaded OOF files."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, rows)
    predictions = np.empty((runs, rows, classes), dtype=np.float32)
    for run in range(runs):
        logits = rng.standard_normal((rows, classes), dtype=np.float32) * (1.0 + 0.1 * run)
        logits[np.arange(rows), targets] += 2.0
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        predictions[run] = logits / logits.sum(axis=1, keepdims=True)
    return predictions, targets


def run(quick: bool = False, runs: int = 20, rows: int = 100_000, classes: int = 100, rounds: int = 30,
        metric_name: str = "accuracy") -> dict:
    if quick:
        rows = 20_000
    predictions, targets = synthetic_runs(runs, rows, classes)
    metric = get_metric(metric_name, "multiclass")
    sign = 1.0 if metric.higher_is_better else -1.0
    start = time.perf_counter()
    weights = hill_climb(predictions, targets, lambda blend: sign * metric.fn(targets, blend), max_rounds=rounds)
    seconds = time.perf_counter() - start
    return {"runs": runs, "rows": rows, "classes": classes, "rounds": rounds, "metric": metric_name,
            "gib_float32": predictions.nbytes / 2**30, "hill_climb_seconds": seconds,
            "runs_selected": int(np.count_nonzero(weights)),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--metric", default="accuracy")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.runs, args.rows, args.classes, args.rounds, args.metric), indent=2))


if __name__ == "__main__":
    main()
