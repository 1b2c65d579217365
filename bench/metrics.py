"""Benchmark 5: multi-label mAP on 100,000 x 1,000, kagglecv (all classes at once) vs a per-class scikit-learn loop.

Both must agree to 1e-12. Scores have ties (rounded to 3 decimals) so the tie handling is exercised.

Run: .venv/bin/python bench/metrics.py [--quick] [--rows 100000] [--classes 1000]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from common import alternate, peak_rss_mib, ratio, timed
from sklearn.metrics import average_precision_score

from kagglecv.core.metrics import average_precision_per_class


def run(quick: bool = False, rows: int = 100_000, classes: int = 1000) -> dict:
    if quick:
        rows, classes = 20_000, 200
    rng = np.random.default_rng(0)
    targets = (rng.random((rows, classes), dtype=np.float32) < np.geomspace(0.001, 0.3, classes, dtype=np.float32)).astype(np.int8)
    scores = np.round(rng.random((rows, classes)) * 0.7 + 0.3 * targets, 3)
    ours = average_precision_per_class(targets, scores)
    reference = np.array([average_precision_score(targets[:, c], scores[:, c]) for c in range(classes)])
    difference = float(np.nanmax(np.abs(ours - reference)))
    sides = alternate({"kagglecv": lambda: 1 / timed(lambda: average_precision_per_class(targets, scores))[1],
                       "sklearn per-class loop": lambda: 1 / timed(lambda: [average_precision_score(
                           targets[:, c], scores[:, c]) for c in range(classes)])[1]}, 2 if quick else 3)
    return {"rows": rows, "classes": classes, "kagglecv_seconds": 1 / sides["kagglecv"]["median"],
            "sklearn_loop_seconds": 1 / sides["sklearn per-class loop"]["median"],
            "speedup": ratio(sides["kagglecv"], sides["sklearn per-class loop"]), "max_abs_difference": difference,
            "equal_to_1e-12": difference <= 1e-12, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.rows, args.classes), indent=2))


if __name__ == "__main__":
    main()
