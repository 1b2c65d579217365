"""Benchmark: many identities (issue 43): two identity runs' top-k OOF and test files of 15,000 identities x
50,000 training rows (and Happywhale's 28,000 test rows) blended by the ensemble stage and submitted by the submit
stage, and the neighbour search at 50,000 x 512.

Each run's scores are generated a chunk of rows at a time (2,048 x 15,000 float32, as a model's softmax would be
made) and only their top k kept, so no 50,000 x 15,000 matrix is ever held; the runs are written as real run
folders (``config.yaml``, ``run.json``, ``identities.json``, top-k ``oof.csv`` and ``test.csv``) over a real
training table. Then ``kagglecv ensemble`` (``make_ensemble``: every file read and checked, blended, the new label's
threshold tuned in-sample and nested) and ``kagglecv submit`` (``write_submission``: the sample's 28,000 rows, five
identities each with ``new_whale`` placed). The neighbour search: ``second.neighbours.neighbour_top_k``
(scikit-learn's ``NearestNeighbors``, brute force, cosine) over a 50,000 x 512 float32 gallery, the 100 nearest of
10,000 queries ranked into top-k identities.

Run: .venv/bin/python bench/topk.py [--rows 50000] [--identities 15000] [--k 10]
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

from kagglecv.core.config import dump_config, validate_config
from kagglecv.core.runs import RunDir
from kagglecv.core.topk import TopK, top_k_of_scores, write_top_k
from kagglecv.second.neighbours import neighbour_top_k
from kagglecv.stages.ensemble import make_ensemble
from kagglecv.stages.submit import write_submission

CHUNK = 2048
TEST_ROWS = 28_000  # Happywhale's test set


def synthetic_top_k(ids: np.ndarray, identities: int, k: int, truth: np.ndarray, seed: int,
                    folds: np.ndarray | None) -> TopK:
    """A run's top k: per chunk, softmax-like scores with the true identity boosted, only the top k kept."""
    rng = np.random.default_rng(seed)
    classes = identity_names(identities)
    parts = []
    for start in range(0, len(ids), CHUNK):
        stop = min(len(ids), start + CHUNK)
        logits = rng.standard_normal((stop - start, identities), dtype=np.float32)
        logits[np.arange(stop - start), truth[start:stop]] += 3.0
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        parts.append(top_k_of_scores(ids[start:stop], logits, classes, k))
    return TopK(np.concatenate([part.ids for part in parts]), np.concatenate([part.labels for part in parts]),
                np.concatenate([part.scores for part in parts]), folds)


def identity_names(identities: int) -> list[str]:
    return [f"w_{index:05d}" for index in range(identities)]


def write_run(folder: Path, name: str, train: pd.DataFrame, test_ids: np.ndarray, identities: int, k: int,
              seed: int) -> Path:
    """A trained identity run's folder as the predict stage leaves it, with generated top-k scores."""
    run = RunDir(folder / "runs" / name)
    run.path.mkdir(parents=True)
    config = {"experiment": name, "metric": "map@5", "data": {
        "train_csv": str(folder / "train.csv"), "id_col": "Image", "target": "Id", "task": "multiclass",
        "image_dir": str(folder / "images")}, "model": {"identity": {}},
        "predict": {"identities": {"top_k": k, "new_label": "new_whale"}}}
    run.config_path.write_text(dump_config(validate_config(config)))
    run.write_info({"experiment": name, "task": "multiclass", "classes": sorted(set(train["Id"])),
                    "folds_sha256": "bench", "n_folds": 5})
    truth = train["Id"].str[2:].astype(int).to_numpy()
    write_top_k(run.oof_path, synthetic_top_k(train["Image"].to_numpy(object), identities, k, truth, seed,
                                              train["fold"].to_numpy()))
    rng = np.random.default_rng(seed + 10)
    write_top_k(run.test_path, synthetic_top_k(test_ids, identities, k, rng.integers(0, identities, len(test_ids)),
                                               seed + 20, None))
    run.write_identity_record({"top_k": k, "metric_k": 5, "new_label": "new_whale", "threshold": 0.1})
    return run.path


def run(quick: bool = False, rows: int = 50_000, identities: int = 15_000, k: int = 10) -> dict:
    if quick:
        rows, identities = 5_000, 2_000
    rng = np.random.default_rng(0)
    timings = {}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        train = pd.DataFrame({"Image": [f"{index:08x}.jpg" for index in range(rows)],
                              "Id": np.array(identity_names(identities), dtype=object)[
                                  rng.permutation(np.arange(rows) % identities)], "fold": np.arange(rows) % 5})
        train[["Image", "Id"]].to_csv(folder / "train.csv", index=False)
        test_ids = np.array([f"t{index:08x}.jpg" for index in range(TEST_ROWS)], dtype=object)
        pd.DataFrame({"Image": test_ids, "Id": "new_whale w_00001 w_00002 w_00003 w_00004"}).to_csv(
            folder / "sample_submission.csv", index=False)
        started = time.perf_counter()
        runs = [write_run(folder, f"arcface-{seed}", train, test_ids, identities, k, seed) for seed in (1, 2)]
        timings["generate_and_write_seconds"] = time.perf_counter() - started
        file_mib = RunDir(runs[0]).oof_path.stat().st_size / 2**20
        started = time.perf_counter()
        blend = make_ensemble(runs, method="mean", name="pair", runs_dir=folder / "runs")
        timings["ensemble_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        submission = write_submission(blend.path, folder / "sample_submission.csv", out_dir=folder / "submissions")
        timings["submit_seconds"] = time.perf_counter() - started
        record = RunDir(blend.path).read_identity_record()
        carries_new = int(pd.read_csv(submission.path)["Id"].str.contains("new_whale").sum())
    gallery = rng.standard_normal((rows, 512), dtype=np.float32)
    gallery_labels = np.array(identity_names(identities), dtype=object)[rng.integers(0, identities, rows)]
    started = time.perf_counter()
    neighbour_top_k(gallery, gallery_labels, gallery[:10_000], np.arange(10_000), k=k, neighbours=100)
    timings["neighbours_seconds"] = time.perf_counter() - started
    return {"rows": rows, "identities": identities, "test_rows": TEST_ROWS, "k": k, "top_k_file_mib": file_mib,
            "new_threshold": record.threshold, "map5_tuned": record.oof_tuned, "map5_nested": record.oof_nested,
            "map5_never_new": record.oof_never, "submission_rows_with_new_whale": carries_new, **timings,
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
