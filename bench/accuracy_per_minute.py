"""Accuracy per minute of training: one fold of a config trained for a number of epochs, then scored with TTA.

Trains ``kagglecv train CONFIG --fold 0`` (after ``kagglecv folds``) in a folder of its own, timed from start to
exit, then reads the fold back: the training time (the loop's data and step time, which is what a budget of
training minutes counts; validation and the test pass are outside it), the validation accuracy after each epoch
and the time to each target accuracy (the training time at the end of the first epoch at or above it), and the
fold's validation accuracy through the config's ``predict.tta`` views (the fold model's logits per view, averaged
as the predict stage does). The fold's test predictions stay in the run folder (``fold0/test.csv``).

Run alone (nothing else training), from the repository root:
  .venv/bin/python bench/accuracy_per_minute.py configs/cifar10-fast.yaml --out /tmp/fast26       (its 26 epochs)
  cd /tmp/fast16 && /path/to/repo/.venv/bin/python /path/to/repo/bench/accuracy_per_minute.py --existing runs/cifar10-fast
      (score a trained fold, from the folder it trained in: its config's relative paths start there;
       --tta none,hflip,... scores other views)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from common import machine

from kagglecv.core.config import load_config
from kagglecv.core.metrics import score
from kagglecv.core.predictions import combine_views
from kagglecv.core.runs import RunDir
from kagglecv.data.inputs import load_stage_inputs
from kagglecv.nn.recipe import RunRecipe

TARGETS = (0.90, 0.93, 0.94)
REPO = Path(__file__).resolve().parents[1]


def train(config: Path, out: Path, overrides: list[str]) -> tuple[Path, float]:
    """``kagglecv folds`` and ``kagglecv train --fold 0`` run in ``out`` on a copy of ``config`` whose relative
    data paths are made absolute (they are the repository root's); returns the run folder and the wall seconds of
    the train command."""
    out.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(config.read_text())
    for section, key in (("data", "train_csv"), ("data", "image_dir"), ("data", "test_csv"),
                         ("data", "test_image_dir"), ("submit", "sample")):
        if isinstance(raw.get(section, {}).get(key), str):
            raw[section][key] = str((REPO / raw[section][key]).resolve())
    if ".py:" in raw["model"]["name"]:  # an own-model file, relative to the repository root too
        file, name = raw["model"]["name"].rsplit(":", 1)
        raw["model"]["name"] = f"{(REPO / file).resolve()}:{name}"
    local = out / config.name
    local.write_text(yaml.safe_dump(raw, sort_keys=False))
    kagglecv = str(Path(sys.executable).with_name("kagglecv"))
    sets = [argument for override in overrides for argument in ("--set", override)]
    subprocess.run([kagglecv, "folds", local.name, *sets], cwd=out, check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run([kagglecv, "train", local.name, "--fold", "0", *sets], cwd=out, check=True)
    seconds = time.perf_counter() - start
    return out / load_config(local, overrides).run_dir, seconds


def fold_figures(run_path: Path, views: list[str] | None = None) -> dict:
    """Training time, accuracy by epoch, time to each target, and the fold's accuracy through its TTA views."""
    run = RunDir(run_path)
    config = run.read_config()
    history = pd.read_csv(run.fold(0).history_path)
    minutes = (history["data_time"] + history["step_time"]).cumsum() / 60
    # The better of the weights scored at each epoch (raw, and EMA or averaged ones where the config keeps them):
    # either is a model the fold has at that minute, and predict's weights: auto picks the better one too.
    accuracy = history[[column for column in history if column.endswith("val_accuracy")]].max(axis=1)
    reached = {f"{target:.0%}": _first_minute(minutes, accuracy, target) for target in TARGETS}
    inputs = load_stage_inputs(config)
    rows = np.flatnonzero(inputs.fold_of == 0)
    source = run.fold(0).read_done().get("source", "raw")
    views = views or list(config.predict.tta)
    recipe = RunRecipe(run, config, inputs.data.task, inputs.data.classes, views, config.predict.tta_space, {0: source})
    logits = recipe.view_logits(0, inputs.data.images, rows, views)
    targets = inputs.data.targets[rows]
    by_view = {name: score("accuracy", inputs.data.task, targets,
                           combine_views([logits[name]], inputs.data.task, config.predict.tta_space))
               for name in views}
    with_tta = score("accuracy", inputs.data.task, targets,
                     combine_views([logits[name] for name in views], inputs.data.task, config.predict.tta_space))
    return {"experiment": config.experiment, "model": config.model.name, "epochs": len(history),
            "train_images": int(np.sum(inputs.fold_of != 0)), "valid_images": len(rows),
            "training_minutes": float(minutes.iloc[-1]), "accuracy_by_epoch": [round(a, 4) for a in accuracy],
            "minutes_by_epoch": [round(m, 2) for m in minutes], "time_to": reached, "weights": source,
            "accuracy_by_view": by_view, "accuracy_tta": with_tta, "views": views}


def _first_minute(minutes: pd.Series, accuracy: pd.Series, target: float) -> float | None:
    above = np.flatnonzero(accuracy.to_numpy() >= target)
    return round(float(minutes.iloc[above[0]]), 2) if len(above) else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--existing", type=Path, help="score this trained run folder instead of training")
    parser.add_argument("--tta", help="comma-separated TTA views to score instead of the config's")
    args = parser.parse_args()
    wall = None
    if args.existing is None:
        run_path, wall = train(args.config, args.out, args.overrides)
        os.chdir(args.out)  # the run's recorded config names its folds file relative to where it trained
    else:
        run_path = args.existing
    print(json.dumps({"machine": machine(), "train_command_wall_minutes": wall and wall / 60,
                      **fold_figures(run_path, args.tta and args.tta.split(","))}, indent=2, default=float))


if __name__ == "__main__":
    main()
