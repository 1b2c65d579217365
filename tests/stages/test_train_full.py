"""Full-data refits, seed averaging, averaged weights and progressive resizing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.predictions import read_predictions
from kagglecv.core.runs import RunDir
from kagglecv.stages.ensemble import make_ensemble
from kagglecv.stages.folds import make_folds
from kagglecv.stages.report import build_report
from kagglecv.stages.score import score_run
from kagglecv.stages.submit import write_submission
from kagglecv.stages.train import train_run
from kagglecv.training.averaging import WeightAverager
from kagglecv.workflows.run import run_pipeline, train_experiment
from tests.conftest import tiny_config

QUIET = Console(quiet=True)


def test_full_refit_trains_every_row_for_the_median_best_epoch(tmp_path, digits_root):
    config = validate_config(tiny_config(tmp_path, digits_root, train={"epochs": 3}, model={"name": "test_resnet",
                                                                                           "img_size": 16}))
    make_folds(config)
    run_pipeline(config, console=QUIET)
    cv_run = RunDir(config.run_dir)
    best = sorted(cv_run.fold(k).read_done().best_epoch for k in range(2))
    [full_path] = train_experiment(config, full=True, console=QUIET)
    full = RunDir(full_path)
    info = full.read_info()
    assert info.kind == "full" and info.cv_best_epochs == [cv_run.fold(k).read_done().best_epoch for k in range(2)]
    assert info.epochs == int(np.ceil(np.median(best))) + 1
    done = full.fold(0).read_done()
    assert done.epochs_run == info.epochs and done.train_rows == 64 and done.valid_rows == 0
    assert not full.oof_path.exists()
    test = read_predictions(full.test_path, info.classes)
    assert len(test) == 16 and np.allclose(test[info.classes].sum(axis=1), 1, atol=1e-5)
    with pytest.raises(KagglecvError, match="no OOF"):
        score_run(full.path)
    # submit, an ensemble (weighed by the CV run's OOF) and the report's refit table all take it.
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"id": test["id"], "label": "zero"}).to_csv(sample, index=False)
    assert write_submission(full.path, sample, "full", out_dir=tmp_path / "subs").path.is_file()
    blend = make_ensemble([cv_run.path, full.path], method="mean", name="cv-and-full")
    assert blend.in_sample == pytest.approx(score_run(cv_run.path).overall)
    report = build_report(tmp_path / "runs", pictures=False, submissions_dir=tmp_path / "subs")
    assert f"| {full.name} | {cv_run.name} |" in report.markdown.read_text()
    assert full.name not in [entry.name for entry in report.leaderboard]


def test_seeds_train_one_run_per_seed_and_average_them(tmp_path, digits_root):
    config = validate_config(tiny_config(tmp_path, digits_root, train={"seeds": 2}))
    make_folds(config)
    summary = run_pipeline(config, console=QUIET)
    runs = tmp_path / "runs"
    seed0, seed1 = RunDir(runs / "tiny-multiclass"), RunDir(runs / "tiny-multiclass-seed1")
    assert seed1.read_config().train.seed == seed0.read_config().train.seed + 1000
    average = RunDir(runs / "ens-tiny-multiclass-seeds2")
    assert summary.experiment == average.name
    blend = pd.read_json(average.blend_score_path, typ="series")
    assert set(blend["single_scores"]) == {seed0.name, seed1.name}
    classes = seed0.read_info().classes
    mean = (read_predictions(seed0.test_path, classes)[classes].to_numpy()
            + read_predictions(seed1.test_path, classes)[classes].to_numpy()) / 2
    np.testing.assert_allclose(read_predictions(average.test_path, classes)[classes].to_numpy(), mean, atol=2e-6)


def test_weight_averager_keeps_the_last_or_the_best_epochs_and_averages_them(tmp_path):
    from kagglecv.core.runs import FoldDir

    folder = FoldDir(tmp_path / "fold0", 0)
    states = [{"w": torch.full((2,), float(epoch)), "n": torch.tensor(epoch)} for epoch in range(5)]
    scores = [0.1, 0.9, 0.3, 0.8, 0.2]
    last, best = WeightAverager("last", 3, folder), WeightAverager("best", 2, FoldDir(tmp_path / "b", 0))
    for epoch, (state, value) in enumerate(zip(states, scores)):
        last.add(epoch, value, state)
        best.add(epoch, value, state)
        last.remove_dropped()
        best.remove_dropped()
    assert [epoch for epoch, _ in last.kept] == [2, 3, 4]
    assert [epoch for epoch, _ in best.kept] == [1, 3]
    assert last.averaged_state()["w"].tolist() == [3.0, 3.0] and int(last.averaged_state()["n"]) == 4
    assert best.averaged_state()["w"].tolist() == [2.0, 2.0]
    assert sorted(path.name for path in folder.epoch_weights_dir.iterdir()) == [
        "epoch2.safetensors", "epoch3.safetensors", "epoch4.safetensors"]


def test_averaged_weights_are_scored_like_ema(tmp_path, digits_root):
    """(That a killed run resumes to the same averaged weights is in test_train's kill-and-resume test.)"""
    config = validate_config(tiny_config(tmp_path, digits_root, train={"epochs": 3, "avg_weights": "last",
                                                                        "avg_count": 2}))
    make_folds(config)
    train_run(config, console=QUIET)
    run = RunDir(config.run_dir)
    for folder in run.fold_dirs():
        history = folder.read_history()
        assert {"val_accuracy", "avg_val_accuracy", "avg_val_loss"} <= set(history.columns)
        assert np.isnan(history["avg_val_loss"].iloc[0]) and history["avg_val_loss"].iloc[1:].notna().all()
        assert sorted(path.name for path in folder.epoch_weights_dir.iterdir()) == [
            "epoch1.safetensors", "epoch2.safetensors"]
        done = folder.read_done()
        assert folder.weights(done.source).is_file()
        best_by_source = {source: history[f"{prefix}val_accuracy"].max() for source, prefix in
                          (("raw", ""), ("avg", "avg_"))}
        assert done.best_score == pytest.approx(max(best_by_source.values()))


def test_size_schedule_trains_small_first_and_validates_at_the_final_size(tmp_path, digits_root):
    config = validate_config(tiny_config(tmp_path, digits_root, train={"epochs": 3, "size_schedule": {0: 8, 2: 16}}))
    make_folds(config)
    train_run(config, folds=[0], console=QUIET)
    history = RunDir(config.run_dir).fold(0).read_history()
    assert history["train_size"].tolist() == [8, 8, 16]
    assert config.train.size_at(1, 16) == 8 and config.train.size_at(5, 16) == 16


def test_full_refit_predicts_the_test_set_with_the_cv_runs_tta(tmp_path, digits_root):
    config = validate_config(tiny_config(tmp_path, digits_root, predict={"tta": ["none", "hflip"]}))
    make_folds(config)
    run_pipeline(config, console=QUIET)
    [full_path] = train_experiment(config, full=True, console=QUIET)
    full = RunDir(full_path)
    assert pd.read_json(full.predict_path, typ="series")["tta"] == ["none", "hflip"]
    from kagglecv.data.load import load_test
    from kagglecv.nn.recipe import load_recipe

    classes = full.read_info().classes
    test = load_test(config.data, classes, "multiclass")
    replayed = load_recipe(full.path).predict(test, QUIET)
    np.testing.assert_allclose(read_predictions(full.test_path, classes)[classes].to_numpy(), replayed, atol=1e-6)
