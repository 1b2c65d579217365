"""Benchmark: many identities (issue 43): top-k OOF files of 15,000 identities x 50,000 rows written, read, blended
and submitted with the unseen label, and the neighbour search at 50,000 x 512.

The scores are generated a chunk of rows at a time (2,048 x 15,000 float32, as a model's softmax would be made) and
only their top k kept, so no 50,000 x 15,000 matrix is ever held. Two runs are written as top-k files (k = 10),
read back with every row checked, blended, the unseen label placed at a threshold tuned on them, and a submission
written. The neighbour search: ``second.neighbours.neighbour_top_k`` (scikit-learn's ``NearestNeighbors``, brute
force, cosine) over a 50,000 x 512 float32 gallery, the 100 nearest of 10,000 queries ranked into top-k identities.

Run: .venv/bin/python bench/topk.py [--rows 50000] [--identities 15000] [--k 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import peak_rss_mib

from kagglecv.core.files import write_text
from kagglecv.core.topk import (
    TopK,
    blend_top_k,
    new_identity_truth,
    read_top_k,
    top_k_of_scores,
    tune_new_threshold,
    with_new_label,
    write_top_k,
)
from kagglecv.second.neighbours import neighbour_top_k

CHUNK = 2048


def synthetic_top_k(rows: int, identities: int, k: int, truth: np.ndarray, seed: int) -> TopK:
    """A run's top k: per chunk, softmax-like scores with the true identity boosted, only the top k kept."""
    rng = np.random.default_rng(seed)
    classes = [f"w_{index:05d}" for index in range(identities)]
    parts = []
    for start in range(0, rows, CHUNK):
        stop = min(rows, start + CHUNK)
        logits = rng.standard_normal((stop - start, identities), dtype=np.float32)
        logits[np.arange(stop - start), truth[start:stop]] += 3.0
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        parts.append(top_k_of_scores(np.arange(start, stop).astype(str), logits, classes, k))
    return TopK(np.concatenate([part.ids for part in parts]), np.concatenate([part.labels for part in parts]),
                np.concatenate([part.scores for part in parts]), np.arange(rows) % 5)


def run(quick: bool = False, rows: int = 50_000, identities: int = 15_000, k: int = 10) -> dict:
    if quick:
        rows, identities = 5_000, 2_000
    rng = np.random.default_rng(0)
    truth = rng.integers(0, identities, rows)
    timings = {}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        for seed in (1, 2):
            write_top_k(Path(folder) / f"run{seed}.csv", synthetic_top_k(rows, identities, k, truth, seed))
        timings["generate_and_write_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        runs = [read_top_k(Path(folder) / f"run{seed}.csv") for seed in (1, 2)]
        timings["read_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        blended = blend_top_k(runs, k=k)
        timings["blend_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        names = np.array([f"w_{index:05d}" for index in truth], dtype=object)
        oof_truth = new_identity_truth(names, blended.folds, "new_whale")
        threshold, tuned, never = tune_new_threshold(blended, list(oof_truth), 5, "new_whale")
        lists = with_new_label(blended, threshold, "new_whale", 5)
        write_text(Path(folder) / "submission.csv", "Image,Id\n" + "".join(
            f"{image},{' '.join(labels)}\n" for image, labels in zip(blended.ids, lists)))
        timings["tune_and_submit_seconds"] = time.perf_counter() - started
        file_mib = (Path(folder) / "run1.csv").stat().st_size / 2**20
    gallery = rng.standard_normal((rows, 512), dtype=np.float32)
    gallery_labels = np.array([f"w_{index:05d}" for index in truth], dtype=object)
    started = time.perf_counter()
    neighbour_top_k(gallery, gallery_labels, gallery[:10_000], np.arange(10_000), k=k, neighbours=100)
    timings["neighbours_seconds"] = time.perf_counter() - started
    return {"rows": rows, "identities": identities, "k": k, "top_k_file_mib": file_mib,
            "new_threshold": threshold, "map5_tuned": tuned, "map5_never_new": never, **timings,
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--identities", type=int, default=15_000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(run(rows=args.rows, identities=args.identities, k=args.k), indent=2, default=float))


if __name__ == "__main__":
    main()
