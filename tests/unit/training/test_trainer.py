"""``FoldTrainer`` on its own, in-process: real digit images, timm's test_resnet at 16 px, a few epochs, no stage
around it. Resumed equals uninterrupted, accumulation steps as timm's loop does, patience stops, NaN is never the
best epoch, and a full refit keeps its last weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.metrics import get_metric
from kagglecv.core.runs import RunDir
from kagglecv.data.load import load_train
from kagglecv.nn.runtime import Runtime
from kagglecv.stages.folds import assign_folds
from kagglecv.training import trainer as trainer_module
from kagglecv.training.components import build_fold_components, loop_settings
from kagglecv.training.selection import BestEpoch, LastEpoch
from kagglecv.training.trainer import FoldTrainer
from tests.conftest import tiny_config

QUIET = Console(quiet=True)
ACCURACY = get_metric("accuracy", "multiclass")


class Stop(Exception):
    """Stands for the process dying right after a checkpoint."""


@pytest.fixture(scope="module")
def fold_inputs(tmp_path_factory, digits_root):
    root = tmp_path_factory.mktemp("trainer")
    config = validate_config(tiny_config(root, digits_root, augment={"train": "none", "hflip": False}))
    data = load_train(config.data)
    fold_of, _ = assign_folds(data, config.folds)
    return root, config, data, fold_of


def trainer_for(fold_inputs, name: str, selection=None, **train) -> FoldTrainer:
    root, config, data, fold_of = fold_inputs
    config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 3, **train})})
    runtime = Runtime(torch.device("cpu"))
    parts = build_fold_components(config, data, fold_of, 0, runtime)
    folder = RunDir(root / name).fold(0)
    return FoldTrainer(loop_settings(config), data, parts, folder, runtime, QUIET, selection or BestEpoch(ACCURACY))


def test_a_fold_stopped_after_a_checkpoint_and_resumed_ends_with_the_uninterrupted_weights(fold_inputs, monkeypatch):
    straight = trainer_for(fold_inputs, "straight")
    straight.fit()
    original = FoldTrainer._save_last

    def dying_after_epoch_two(self):
        original(self)
        if self.epoch == 2:
            raise Stop
    monkeypatch.setattr(FoldTrainer, "_save_last", dying_after_epoch_two)
    with pytest.raises(Stop):
        trainer_for(fold_inputs, "resumed").fit()
    monkeypatch.setattr(FoldTrainer, "_save_last", original)
    resumed = trainer_for(fold_inputs, "resumed")
    outcome = resumed.fit(resume=True)
    timing = ("images_per_sec", "data_time", "step_time")
    untimed = [[{k: v for k, v in row.items() if k not in timing} for row in t.history] for t in (straight, resumed)]
    assert outcome.epochs_run == 3 and untimed[0] == untimed[1]
    for name, tensor in straight.parts.model.state_dict().items():
        assert torch.equal(tensor, resumed.parts.model.state_dict()[name]), name
    kept = [load_file(str(t.folder.weights(t.best.source))) for t in (straight, resumed)]
    assert all(torch.equal(kept[0][key], kept[1][key]) for key in kept[0])


def test_accumulation_steps_the_optimizer_once_a_group_and_after_the_last_batch(fold_inputs):
    trainer = trainer_for(fold_inputs, "accumulated", accum_steps=3, epochs=1)
    trainer.fit()
    assert trainer.global_step == math.ceil(trainer.parts.batches_per_epoch / 3)


def test_patience_stops_the_fold_and_nan_is_never_the_best_epoch(fold_inputs, monkeypatch):
    scores = iter([0.5, math.nan, 0.4, 0.3, 0.2, 0.1])
    monkeypatch.setattr(trainer_module, "score_predictions", lambda *args: next(scores))
    trainer = trainer_for(fold_inputs, "patient", patience=2, epochs=6)
    outcome = trainer.fit()
    assert outcome.epochs_run == 3, "epochs 2 and 3 brought nothing better: stopped after 2 without"
    assert outcome.best_epoch == 0 and outcome.best_score == 0.5
    oof = RunDir(trainer.folder.path.parent).fold(0).oof_path
    assert oof.is_file()


def test_a_full_refit_keeps_the_last_weights_of_its_source_and_writes_no_oof(fold_inputs):
    trainer = trainer_for(fold_inputs, "refit", selection=LastEpoch("ema", ACCURACY), epochs=2)
    outcome = trainer.fit()
    assert outcome.source == "raw" and outcome.best_epoch == 1 and math.isnan(outcome.best_score)  # no EMA: raw
    assert not trainer.folder.oof_path.exists()
    saved = load_file(str(trainer.folder.weights("raw")))
    assert all(torch.equal(saved[key], value) for key, value in trainer.parts.model.state_dict().items()
               if key in saved and value.dtype.is_floating_point)
    assert np.isnan(np.array([row.get("val_loss", np.nan) for row in trainer.history])).all()
