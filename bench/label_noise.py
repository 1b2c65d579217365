"""Label errors found by `kagglecv inspect` (cleanlab), and what dropping them gains, on cifar10-mini with 5 % of
the training labels flipped at random (seeded).

    .venv/bin/python bench/label_noise.py [--quick]     # writes bench/out/label_noise/ (about 25 minutes on 2 cores)

Every step is the kagglecv command a user would type: `run` on the noisy table, `inspect`, then `run` again with
`data.label_fixes` dropping (a) every flagged id and (b) the most likely 5 % of them. The same folds file serves all
three runs. Reported: precision and recall of the flipped ids among the flagged, the CV as kagglecv reports it
(on each run's own, noisy, rows), the OOF accuracy against the true labels on the rows all runs share, and the
accuracy on the official test images (solution.csv), which no label flip touched.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import SHARED_DATA  # noqa: E402

SHARE = 0.05
SEED = 0


def kagglecv(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "kagglecv", *args], capture_output=True, text=True, cwd=HERE.parent)
    if result.returncode != 0:
        raise SystemExit(f"kagglecv {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def noisy_table(out: Path, rows: int | None) -> tuple[pd.DataFrame, set[str]]:
    """cifar10-mini's train.csv with SHARE of the labels moved to another class; returns the clean table and the
    flipped ids."""
    clean = pd.read_csv(SHARED_DATA / "cifar10-mini" / "train.csv", dtype=str, keep_default_na=False)
    if rows:
        clean = clean.groupby("label", group_keys=False).head(rows // 10).reset_index(drop=True)
    classes = sorted(clean["label"].unique())
    rng = np.random.default_rng(SEED)
    flipped = rng.choice(len(clean), int(round(SHARE * len(clean))), replace=False)
    noisy = clean.copy()
    index = noisy["label"].map(classes.index).to_numpy()
    noisy.loc[flipped, "label"] = [classes[(index[row] + rng.integers(1, len(classes))) % len(classes)] for row in flipped]
    out.mkdir(parents=True, exist_ok=True)
    noisy.to_csv(out / "train.csv", index=False)
    return clean, set(clean["id"].to_numpy()[flipped])


def config(out: Path, name: str, epochs: int, fixes: Path | None = None) -> Path:
    root = SHARED_DATA / "cifar10-mini"
    raw = {"experiment": name, "runs_dir": str(out / "runs"),
           "data": {"train_csv": str(out / "train.csv"), "image_dir": str(root / "train"),
                    "test_csv": str(root / "test.csv"), "test_image_dir": str(root / "test")},
           "folds": {"method": "stratified", "n_splits": 5, "file": str(out / "folds.csv")},
           "model": {"name": "resnet10t", "img_size": 32},
           "augment": {"train": "medium", "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]},
           "train": {"epochs": epochs, "batch_size": 64, "opt": "adamw", "lr": 2.0e-3, "weight_decay": 0.05,
                     "sched": "cosine", "warmup_epochs": 1, "label_smoothing": 0.1},
           "submit": {"sample": str(root / "sample_submission.csv"), "dir": str(out / "submissions")}}
    if fixes is not None:
        raw["data"]["label_fixes"] = {"file": str(fixes), "action": "drop"}
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def measure(out: Path, name: str, clean: pd.DataFrame, shared_ids: list[str]) -> dict:
    run = out / "runs" / name
    score = json.loads((run / "score.json").read_text())
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str}).set_index("id")
    classes = list(oof.columns.drop("fold"))
    truth = clean.set_index("id").loc[shared_ids, "label"]
    predicted = oof.loc[shared_ids, classes].to_numpy().argmax(axis=1)
    test = kagglecv("score", "--submission", str(out / "submissions" / f"{name}.csv"),
                    "--solution", str(SHARED_DATA / "cifar10-mini" / "solution.csv"), "--metric", "accuracy")
    seconds = sum(json.loads((fold / "done.json").read_text()).get("seconds", 0.0) for fold in run.glob("fold*"))
    return {"rows": score["rows"], "cv": score["overall"], "true_label_oof": float(np.mean(np.asarray(classes)[predicted] == truth.to_numpy())),
            "test": float(test.split()[-1]), "train_minutes": seconds / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 rows, 2 epochs: checks the script, not a figure")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "label_noise")
    args = parser.parse_args()
    out, epochs = args.out.resolve(), 2 if args.quick else 15
    clean, flipped = noisy_table(out, 300 if args.quick else None)
    kagglecv("run", str(config(out, "noisy", epochs)))
    kagglecv("inspect", str(out / "runs" / "noisy"))
    issues = pd.read_csv(out / "runs" / "noisy" / "label_issues.csv", dtype=str, keep_default_na=False)
    flagged = set(issues["id"])
    top = issues.head(int(round(SHARE * len(clean))))  # as many as were flipped, most likely first
    top.to_csv(out / "top.csv", index=False)
    kagglecv("run", str(config(out, "drop-flagged", epochs, out / "runs" / "noisy" / "label_issues.csv")))
    kagglecv("run", str(config(out, "drop-top5", epochs, out / "top.csv")))
    shared_ids = [image_id for image_id in clean["id"] if image_id not in flagged]
    result = {
        "rows": len(clean), "flipped": len(flipped), "flagged": len(flagged),
        "precision": len(flagged & flipped) / max(len(flagged), 1), "recall": len(flagged & flipped) / len(flipped),
        "top5_precision": len(set(top["id"]) & flipped) / max(len(top), 1),
        "runs": {name: measure(out, name, clean, shared_ids) for name in ("noisy", "drop-flagged", "drop-top5")},
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
