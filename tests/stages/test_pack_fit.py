"""``pack --fit``: a planted slow member is dropped when the time budget is tight and kept when it is loose, and the
bundle replays exactly the recipe whose OOF score the manifest states."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import score
from kagglecv.core.predictions import read_predictions
from kagglecv.core.runs import RunDir
from kagglecv.data.inputs import load_run_table
from kagglecv.nn.recipe import EnsembleRecipe, RunRecipe, load_recipe
from kagglecv.stages.ensemble import make_ensemble
from kagglecv.stages.folds import make_folds
from kagglecv.stages.pack import fit_budget, pack_run
from kagglecv.stages.predict import predict_run
from kagglecv.stages.train import train_run
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow
QUIET = Console(quiet=True)
IMAGES = 4000
SLOW_VIEW_SECONDS = 0.005 * 2 * IMAGES  # the slow member's sleep for IMAGES images through its two folds, one view
runner = CliRunner()
SLOW_NET = '''
import time

from torch import nn


class SlowNet(nn.Module):
    """A small conv net that sleeps 5 ms per image when it predicts: the planted slow member."""

    def __init__(self, num_classes=10, in_chans=3, drop_rate=0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x):
        if not self.training:
            time.sleep(0.005 * x.shape[0])
        return self.body(x)
'''


@pytest.fixture(scope="module")
def members(tmp_path_factory, digits_root):
    """An accurate slow run and a fast one that barely learned (lr 1e-7), both with TTA, and their mean."""
    root = tmp_path_factory.mktemp("fit")
    (root / "slow_net.py").write_text(SLOW_NET)
    runs = []
    for name, model, lr, epochs in (("slow", {"name": f"{root / 'slow_net.py'}:SlowNet"}, 1e-2, 4),
                                    ("fast", {}, 1e-7, 1)):
        raw = tiny_config(root, digits_root, rows=160, model={"img_size": 16, **model},
                          train={"lr": lr, "epochs": epochs, "seed": 1}, augment={"train": "none", "hflip": False},
                          predict={"tta": ["none", "hflip"]})
        raw["experiment"] = name
        config = validate_config(raw)
        if not runs:
            make_folds(config)
        train_run(config, console=QUIET, predict_test=False)
        predict_run(config.run_dir, console=QUIET)
        runs.append(config.run_dir)
    make_ensemble(runs, method="mean", name="both")
    return {"root": root, "slow": runs[0], "fast": runs[1], "ensemble": root / "runs" / "ens-both"}


def replayed_oof_score(bundle, ensemble_source) -> float:
    """The bundle's recipe on every training row by the fold model that held it out, scored independently."""
    recipe = load_recipe(bundle)
    reference = RunDir(ensemble_source)
    leaf = RunDir(members_of(recipe)[0])
    data = load_run_table(leaf, with_images=True)
    folds = read_predictions(reference.oof_path, oof=True).set_index("id").loc[list(data.ids), "fold"].to_numpy()
    probabilities = np.zeros((len(data), len(data.classes)))
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        probabilities[rows] = recipe.predict_fold(int(fold), data.images, rows)
    return score("accuracy", data.task, data.targets, probabilities)


def members_of(recipe) -> list:
    if isinstance(recipe, RunRecipe):
        return [recipe.run.path]
    return [path for member in recipe.members for path in members_of(member)]


def test_the_slow_member_is_dropped_when_the_budget_is_tight_and_kept_when_it_is_loose(members, tmp_path):
    slow_alone = json.loads((members["slow"] / "predict.json").read_text())["oof_score"]
    fast_alone = json.loads((members["fast"] / "predict.json").read_text())["oof_score"]
    assert slow_alone > fast_alone + 0.1, "the planted slow member must be the better one"
    tight = pack_run(members["ensemble"], tmp_path / "tight", timing_images=32,
                     fit=fit_budget(IMAGES, SLOW_VIEW_SECONDS * 0.75 / 60, 1.0), console=QUIET)
    loose = pack_run(members["ensemble"], tmp_path / "loose", timing_images=32,
                     fit=fit_budget(IMAGES, 60.0, 1.0), console=QUIET)
    tight_fit, loose_fit = (json.loads((path / "manifest.json").read_text())["fit"] for path in (tight.path, loose.path))
    assert [entry["run"] for entry in tight_fit["chosen"]] == ["fast"]
    assert not (tmp_path / "tight" / "members").exists() and isinstance(load_recipe(tight.path), RunRecipe)
    assert {unit["run"] for unit in tight_fit["units"] if unit["kept"]} == {"fast"}
    assert "slow" in [entry["run"] for entry in loose_fit["chosen"]]
    if len(loose_fit["chosen"]) > 1:  # both runs: a weighted mean, each run's votes its weight
        weights = json.loads((loose.path / "weights.json").read_text())
        assert weights["method"] == "weighted" and sum(weights["weights"].values()) == pytest.approx(1.0)
        assert isinstance(load_recipe(loose.path), EnsembleRecipe)
    for fitted in (tight_fit, loose_fit):
        assert fitted["predicted_minutes"] <= fitted["max_minutes"]
    slow_units = [unit for unit in loose_fit["units"] if unit["run"] == "slow"]
    assert all(unit["seconds_per_image"] > 0.005 * 2 * 0.9 for unit in slow_units), "sleeps 5 ms per image and fold"
    assert loose_fit["oof_score"] >= tight_fit["oof_score"]
    for bundle, fitted in ((tight.path, tight_fit), (loose.path, loose_fit)):
        assert replayed_oof_score(bundle, members["ensemble"]) == pytest.approx(fitted["oof_score"], abs=1e-9)


def test_a_fitted_run_keeps_only_the_views_that_pay_and_infer_replays_it(members, tmp_path):
    budget = fit_budget(IMAGES, SLOW_VIEW_SECONDS * 1.35 / 60, 1.0)
    result = pack_run(members["slow"], tmp_path / "slow-fit", timing_images=32, fit=budget, console=QUIET)
    recipe = load_recipe(result.path)
    assert isinstance(recipe, RunRecipe) and len(recipe.views) == 1, "two views of 40 s each cannot fit 54 s"
    predict = json.loads((result.path / "predict.json").read_text())
    assert predict["tta"] == recipe.views and "oof_score" not in predict, "the run's own score was for both views"
    assert replayed_oof_score(result.path, members["slow"]) == pytest.approx(result.fit.oof_score, abs=1e-9)


def test_fit_without_the_target_speed_is_refused_and_writes_nothing(members, tmp_path):
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["pack", str(members["ensemble"]), "--out", str(out), "--fit", "--images", "100",
                                 "--max-minutes", "5"])
    assert isinstance(result.exception, KagglecvError) and str(result.exception) == (
        "--fit needs --device-speed: the hidden test's number of images, the notebook's time limit in minutes, and how "
        "many times as fast as this machine the target device runs these models (time `kagglecv infer` on both; "
        "kagglecv does not guess it)")
    assert not out.exists()


def test_fit_on_the_cli_prints_what_it_kept(members, tmp_path):
    result = runner.invoke(app, ["pack", str(members["fast"]), "--out", str(tmp_path / "b"), "--fit", "--images",
                                 "100", "--max-minutes", "5", "--device-speed", "0.5", "--timing-images", "32"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("fit: kept fast ["))
    assert "OOF accuracy" in line and "of 5 minutes for 100 images at 0.5x this machine" in line
