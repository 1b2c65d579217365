"""Pseudo-labels, distillation, full-data refit, seeds, averaged weights and progressive resizing, each against the
same baseline, on cifar10-mini (LeNet-5 from examples/cifar10/nets.py) and on a 10,000-row stratified slice of
the MNIST digit-recognizer table (mnist_8k_v2 from examples/mnist/nets.py, under 8k parameters).

    .venv/bin/python bench/techniques.py      # writes bench/out/techniques/ (about 35 minutes on 2 cores)

Reported per technique: the 5-fold CV accuracy, the accuracy on cifar10-mini's held-out test images
(solution.csv; MNIST's test rows carry no labels), and the wall time of the step (a teacher's own training not
counted: it is listed as its own row). Every step is the API a CLI command calls: run_pipeline (`kagglecv run`),
pseudo_config (`kagglecv pseudo`), train_experiment (`kagglecv train --full / --seeds`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import SHARED_DATA  # noqa: E402

from kagglecv.core.config import validate_config  # noqa: E402
from kagglecv.core.console import Console  # noqa: E402
from kagglecv.stages.folds import make_folds  # noqa: E402
from kagglecv.stages.score import score_submission  # noqa: E402
from kagglecv.stages.submit import write_submission  # noqa: E402
from kagglecv.workflows.run import (
    pseudo_config,  # noqa: E402
    run_pipeline,  # noqa: E402
    train_experiment,  # noqa: E402
)

OUT = HERE / "out" / "techniques"
REPO = HERE.parent
CONSOLE = Console(quiet=True)


def cifar_config(name: str, **sections) -> dict:
    root = SHARED_DATA / "cifar10-mini"
    raw = {"experiment": name, "runs_dir": str(OUT / "runs"),
           "data": {"train_csv": str(root / "train.csv"), "image_dir": str(root / "train"),
                    "test_csv": str(root / "test.csv"), "test_image_dir": str(root / "test")},
           "folds": {"method": "stratified", "n_splits": 5, "file": str(OUT / "folds" / "cifar.csv")},
           "model": {"name": str(REPO / "examples/cifar10/nets.py") + ":LeNet5", "img_size": 32},
           "augment": {"train": "none", "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]},
           "train": {"epochs": 15, "batch_size": 64, "opt": "adamw", "lr": 2e-3, "weight_decay": 0.05,
                     "sched": "cosine", "warmup_epochs": 1, "num_workers": 2},
           "submit": {"sample": str(root / "sample_submission.csv"), "dir": str(OUT / "submissions")}}
    for section, values in sections.items():
        raw[section] = raw.get(section, {}) | values
    return raw


def mnist_config(name: str, **sections) -> dict:
    raw = {"experiment": name, "runs_dir": str(OUT / "runs"),
           "data": {"train_csv": str(OUT / "mnist-10k.csv"), "test_csv": str(SHARED_DATA / "mnist-digit-recognizer"
                                                                              / "test.csv.gz"), "target": "label"},
           "folds": {"method": "stratified", "n_splits": 5, "file": str(OUT / "folds" / "mnist.csv"),
                     "near_duplicates": "off"},
           "model": {"name": str(REPO / "examples/mnist/nets.py") + ":mnist_8k_v2", "in_chans": 1, "img_size": 28},
           "augment": {"train": [{"__class_fullname__": "Affine", "rotate": [-7, 7],
                                  "translate_percent": [-0.06, 0.06], "p": 0.8}],
                       "hflip": False, "mean": [0.1307] * 3, "std": [0.3081] * 3},
           "train": {"epochs": 8, "batch_size": 64, "opt": "sgd", "lr": 0.08, "momentum": 0.9, "weight_decay": 1e-4,
                     "sched": "cosine", "warmup_epochs": 1, "min_lr": 1e-4, "num_workers": 2}}
    for section, values in sections.items():
        raw[section] = raw.get(section, {}) | values
    return raw


def held_out(run: Path, dataset: str) -> float | None:
    if dataset != "cifar":
        return None
    root = SHARED_DATA / "cifar10-mini"
    submission = write_submission(run, root / "sample_submission.csv", run.name, out_dir=OUT / "submissions")
    return score_submission(submission.path, root / "solution.csv", "accuracy")


def single_fold_held_out(run: Path) -> list[float]:
    """Each fold model's own accuracy on cifar10-mini's test images: what one model (not the 5-fold average)
    scores, the fair comparison for a full-data refit."""
    solution = pd.read_csv(SHARED_DATA / "cifar10-mini" / "solution.csv", dtype=str).set_index("id")["label"]
    scores = []
    for fold in sorted(run.glob("fold*/test.csv")):
        frame = pd.read_csv(fold, dtype={"id": str})
        classes = frame.columns[1:]
        predicted = classes[frame[classes].to_numpy().argmax(axis=1)]
        scores.append(float((predicted == solution.loc[frame["id"]].to_numpy()).mean()))
    return scores


def measure(rows: list, dataset: str, technique: str, step) -> Path:
    started = time.time()
    run = Path(step())
    seconds = time.time() - started
    score_file = run / "score.json"
    cv = json.loads(score_file.read_text())["overall"] if score_file.is_file() else None
    rows.append({"dataset": dataset, "technique": technique, "run": run.name, "cv": cv,
                 "held_out": held_out(run, dataset), "seconds": seconds,
                 "held_out_per_fold_model": single_fold_held_out(run) if dataset == "cifar" else None})
    print(json.dumps(rows[-1]), flush=True)
    (OUT / "results.json").write_text(json.dumps(rows, indent=2))
    return run


def pipeline(raw: dict) -> Path:
    config = validate_config(raw)
    run_pipeline(config, console=CONSOLE)
    return config.run_dir


def seeds_ensemble(raw: dict, seeds: int) -> Path:
    """The baseline (already trained: skipped) and seeds - 1 more runs, averaged."""
    summary = run_pipeline(validate_config(raw | {"train": raw["train"] | {"seeds": seeds}}), console=CONSOLE)
    return Path(raw["runs_dir"]) / summary.experiment


def techniques(rows: list, dataset: str, make, teacher_raw: dict | None, size_schedule: dict | None) -> None:
    base = measure(rows, dataset, "baseline", lambda: pipeline(make(f"{dataset}-base")))
    measure(rows, dataset, "pseudo-labels (threshold 0.9, hard)",
            lambda: pipeline(pseudo_config(base, f"{dataset}-pseudo", 0.9, None, False).model_dump(mode="json")))
    teacher = base
    if teacher_raw is not None:
        teacher = measure(rows, dataset, "teacher for distillation", lambda: pipeline(teacher_raw))
    measure(rows, dataset, f"distilled from {teacher.name} (w 0.5, T 2)",
            lambda: pipeline(make(f"{dataset}-distill", distill={"teacher": str(teacher)})))
    measure(rows, dataset, "full-data refit (median best epoch)",
            lambda: train_experiment(validate_config(make(f"{dataset}-base")), full=True, console=CONSOLE)[0])
    measure(rows, dataset, "2 seeds averaged (one more run)", lambda: seeds_ensemble(make(f"{dataset}-base"), 2))
    measure(rows, dataset, "averaged weights (best 3 epochs)",
            lambda: pipeline(make(f"{dataset}-avg", train={"avg_weights": "best", "avg_count": 3})))
    if size_schedule:
        measure(rows, dataset, f"size schedule {size_schedule}",
                lambda: pipeline(make(f"{dataset}-sizes", train={"size_schedule": size_schedule})))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(SHARED_DATA / "mnist-digit-recognizer" / "train.csv.gz")
    table.groupby("label", group_keys=False).head(1000).to_csv(OUT / "mnist-10k.csv", index=False)
    rows: list = []
    for raw in (cifar_config("x"), mnist_config("x")):
        make_folds(validate_config(raw))
    r10t = cifar_config("cifar-r10t-teacher", model={"name": "resnet10t", "img_size": 32},
                        augment={"train": "medium"}, train={"epochs": 10, "label_smoothing": 0.1})
    techniques(rows, "cifar", cifar_config, r10t, None)  # LeNet's dense layer fixes its input size: no schedule
    techniques(rows, "mnist", mnist_config, None, {0: 20, 5: 28})


if __name__ == "__main__":
    main()
