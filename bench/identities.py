"""Benchmark: a whale-shaped competition at a size the suite cannot afford, through ``init``, ``run`` and
``score --submission``: ArcFace + neighbours against a softmax over the same identities, and the tuned ``new_whale``.

The competition is built as ``tests/workflows/test_identities.py`` builds its tiny one, from CIFAR-10 photographs
(``cifar10-full``): each "individual" is one photograph, its images augmentations of it (a shift of up to 3 px, a
flip, brightness x0.8-1.2, JPEG at quality 90), one to four per individual; ``new_whale`` rows in training are
photographs of their own, and the test holds one new view of some known individuals and photographs nobody saw.
Both runs use the same folds, model, size and epochs; the figures are OOF MAP@5 (nested for the new label) and the
submission's MAP@5 against the test's solution.

Run: .venv/bin/python bench/identities.py [--individuals 600] [--epochs 12] [--folds 3] [--model resnet10t]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import SHARED_DATA, peak_rss_mib
from PIL import Image
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.stages.score import score_submission


def variant(base: np.ndarray, rng: np.random.Generator) -> Image.Image:
    shifted = np.pad(base, ((3, 3), (3, 3), (0, 0)), mode="reflect")
    top, left = rng.integers(0, 7, 2)
    image = shifted[top:top + 32, left:left + 32].astype(np.float64) * rng.uniform(0.8, 1.2)
    image = image[:, ::-1] if rng.random() < 0.5 else image
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def build(root: Path, individuals: int, labelled_new: int, unseen: int) -> pd.DataFrame:
    """The competition folder under ``root``; returns the test's solution."""
    source = SHARED_DATA / "cifar10-full"
    names = pd.read_csv(source / "train.csv", dtype=str)["id"].tolist()
    rng = np.random.default_rng(7)
    chosen = rng.permutation(len(names))[:individuals + labelled_new + unseen]
    bases = [np.asarray(Image.open(source / "train" / f"{names[i]}.jpg").convert("RGB")) for i in chosen]
    known, new_rows, never = bases[:individuals], bases[individuals:individuals + labelled_new], \
        bases[individuals + labelled_new:]
    whales = [f"w_{index:07x}" for index in rng.choice(16 ** 7, individuals, replace=False)]
    train = [(whale, base) for whale, base in zip(whales, known)
             for _ in range(int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.2, 0.15])))]
    train += [("new_whale", base) for base in new_rows]
    test = [(whales[i], known[i]) for i in rng.permutation(individuals)[:individuals // 2]]
    test += [("new_whale", base) for base in never]
    tables = {}
    for split, entries in {"train": train, "test": test}.items():
        (root / split).mkdir(parents=True)
        ids = [f"{index:06d}{split[:2]}.jpg" for index in rng.permutation(len(entries))]
        for image_id, (_, base) in zip(ids, entries):
            variant(base, rng).save(root / split / image_id, quality=90)
        tables[split] = pd.DataFrame({"Image": ids, "Id": [whale for whale, _ in entries]})
    tables["train"].to_csv(root / "train.csv", index=False)
    tables["test"].assign(Id="new_whale w_1287fbc w_98baff9 w_7554f44 w_1eafe46").to_csv(
        root / "sample_submission.csv", index=False)
    return tables["test"]


def invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        raise SystemExit(result.output)


def run(individuals: int, epochs: int, folds: int, model: str) -> dict:
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as name:
        work = Path(name)
        folder = work / "whale-categorization-playground"
        solution = build(folder, individuals, individuals // 4, individuals // 4)
        solution.to_csv(work / "solution.csv", index=False)
        rows = len(pd.read_csv(folder / "train.csv"))
        os.chdir(work)
        try:
            invoke("init", str(folder))
            settings = ["-s", f"model.name={model}", "-s", "model.pretrained=false", "-s", f"train.epochs={epochs}",
                        "-s", f"folds.n_splits={folds}", "-s", "folds.near_duplicates=off", "-s",
                        "train.num_workers=0", "-s", "train.batch_size=64"]
            seconds = {}
            for experiment, extra in (("arcface", []), ("softmax", ["-s", "model.identity=null"])):
                started = time.perf_counter()
                invoke("run", "whale-categorization-playground.yaml", *settings, "-s", f"experiment={experiment}",
                       *extra)
                seconds[experiment] = time.perf_counter() - started
            figures = {name: json.loads((work / "runs" / name / "score.json").read_text()) for name in seconds}
            record = json.loads((work / "runs" / "arcface" / "identities.json").read_text())
            submitted = {name: score_submission(work / "submissions" / f"{name}.csv", work / "solution.csv", "map@5")
                         for name in seconds}
        finally:
            os.chdir(previous)
    return {"individuals": individuals, "train_rows": rows, "test_rows": len(solution), "epochs": epochs, "folds": folds, "model": model,
            "softmax_oof_map5": figures["softmax"]["overall"],
            "arcface_oof_map5_without_new": figures["arcface"]["other_metrics"]["map_without_new_label"],
            "arcface_oof_map5_nested_new": figures["arcface"]["overall"],
            "arcface_oof_map5_in_sample_new": figures["arcface"]["other_metrics"].get("map_in_sample_threshold"),
            "new_label_threshold": record["threshold"], "oof_rows_new": record["new_rows"],
            "softmax_test_map5": submitted["softmax"], "arcface_test_map5": submitted["arcface"],
            "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--individuals", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--model", default="resnet10t")
    args = parser.parse_args()
    print(json.dumps(run(args.individuals, args.epochs, args.folds, args.model), indent=2, default=float))


if __name__ == "__main__":
    main()
