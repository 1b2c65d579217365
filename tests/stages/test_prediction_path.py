"""One path for test predictions: the recipe's ``predict_fold`` makes every one (train's fold passes, predict with
TTA, a full refit, infer), and ``RunDir.write_test_predictions`` writes every run's ``test.csv``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.runs import RunDir
from kagglecv.nn.recipe import RunRecipe
from kagglecv.stages.folds import make_folds
from kagglecv.stages.infer import infer_test
from kagglecv.stages.predict import predict_run
from kagglecv.stages.train import train_run
from kagglecv.workflows.run import train_experiment
from tests.conftest import tiny_config

QUIET = Console(quiet=True)


def uniform(path, classes) -> bool:
    """Every probability of the file is 1 / classes: the mark only the patched recipe makes."""
    frame = pd.read_csv(path, dtype={"id": str})
    return np.allclose(frame[classes].to_numpy(), 1.0 / len(classes), atol=1e-9)


def test_every_test_prediction_is_the_recipes_and_one_function_writes_test_csv(tmp_path, digits_root, monkeypatch):
    calls, written = [], {}
    predict_fold, write_test = RunRecipe.predict_fold, RunDir.write_test_predictions

    def marked(self, fold, images, rows, *args, **kwargs):
        real = predict_fold(self, fold, images, rows, *args, **kwargs)
        calls.append((self.run.name, fold, tuple(self.views)))
        return np.full_like(real, 1.0 / real.shape[1])

    def recorded(self, ids, probabilities, classes):
        write_test(self, ids, probabilities, classes)
        written[self.test_path] = self.test_path.read_bytes()

    monkeypatch.setattr(RunRecipe, "predict_fold", marked)
    monkeypatch.setattr(RunDir, "write_test_predictions", recorded)
    config = validate_config(tiny_config(tmp_path, digits_root, predict={"tta": ["none", "hflip"]}))
    make_folds(config)
    run = RunDir(config.run_dir)
    classes = None

    train_run(config, console=QUIET)
    classes = run.read_info().classes
    assert calls == [(run.name, 0, ("none",)), (run.name, 1, ("none",))]
    predict_run(run.path, console=QUIET)
    assert calls[2:] == [(run.name, 0, ("none", "hflip")), (run.name, 1, ("none", "hflip"))]
    [full_path] = train_experiment(config, full=True, console=QUIET)
    full = RunDir(full_path)
    assert calls[4:] == [(full.name, 0, ("none", "hflip"))], "the refit predicts once, with the CV run's TTA"
    out = tmp_path / "inferred.csv"
    infer_test(run.path, tmp_path / "test.csv", config.data.test_image_dir, out, console=QUIET)
    assert calls[5:] == [(run.name, 0, ("none", "hflip")), (run.name, 1, ("none", "hflip"))]

    for path in [*(run.fold(k).test_path for k in (0, 1)), run.test_path, full.fold(0).test_path, full.test_path, out]:
        assert uniform(path, classes), f"{path} holds predictions the recipe did not make"
    for path in (run.test_path, full.test_path):
        assert written[path] == path.read_bytes(), f"{path} was rewritten by another function"
