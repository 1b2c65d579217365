"""A numeric target from init's config keys to the bundle: coco128's real object counts per image (``n_objects`` of
``../shared/data/coco128-multilabel/objects.csv``) predicted from the images, with folds stratified on bins of the
count, OOF values scored exactly, a ``bce_scaled`` run inside its range, submissions clipped to the training range,
a blend of the two runs, and ``pack`` + ``infer`` (torch and ONNX) replaying the test predictions."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import mean_absolute_error, root_mean_squared_error
from typer.testing import CliRunner

from kagglecv.cli import app
from tests.conftest import invoke, shared_dataset

pytestmark = pytest.mark.slow
runner = CliRunner()
Y_RANGE = [0.0, 50.0]


@pytest.fixture(scope="module")
def counted(tmp_path_factory) -> Path:
    """A competition folder of coco128's training images and their object counts, two finished runs on it (mse, and
    bce_scaled with data.y_range), and a planted solution of the test images' real counts."""
    source = shared_dataset("coco128-multilabel")
    root = tmp_path_factory.mktemp("counted")
    objects = pd.read_csv(source / "objects.csv", dtype={"id": str})
    train, test = objects[objects["split"] == "train"], objects[objects["split"] == "test"]
    train[["id", "n_objects"]].rename(columns={"n_objects": "count"}).to_csv(root / "train.csv", index=False)
    test[["id"]].to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "count": 0}).to_csv(root / "sample_submission.csv", index=False)
    pd.DataFrame({"id": test["id"], "count": test["n_objects"]}).to_csv(root / "solution.csv", index=False)
    config = {"experiment": "mse", "runs_dir": str(root / "runs"), "metric": "rmse",
              "data": {"train_csv": str(root / "train.csv"), "test_csv": str(root / "test.csv"),
                       "image_dir": str(source / "train"), "test_image_dir": str(source / "test"),
                       "target": "count", "task": "regression"},
              "folds": {"n_splits": 3, "near_duplicates": "off", "file": str(root / "folds.csv")},
              "model": {"name": "test_resnet", "pretrained": False, "img_size": 32},
              "train": {"epochs": 1, "batch_size": 16, "num_workers": 0},
              "submit": {"sample": str(root / "sample_submission.csv"), "dir": str(root / "submissions")}}
    (root / "mse.yaml").write_text(yaml.safe_dump(config))
    scaled = config | {"experiment": "scaled", "data": config["data"] | {"y_range": Y_RANGE},
                       "train": config["train"] | {"loss": "bce_scaled"}}
    (root / "scaled.yaml").write_text(yaml.safe_dump(scaled))
    for name in ("mse", "scaled"):
        invoke("run", str(root / f"{name}.yaml"))
    return root


def truth(root: Path) -> pd.Series:
    return pd.read_csv(root / "train.csv", dtype={"id": str}).set_index("id")["count"].astype(float)


def test_folds_stratify_on_bins_of_the_count(counted):
    report = json.loads((counted / "folds.json").read_text())
    folds = pd.read_csv(counted / "folds.csv", dtype={"id": str}).set_index("id")["fold"]
    counts = truth(counted)
    assert report["effective_method"] == "stratified" and len(report["counts"]) >= 5
    seen = 0
    for name, per_fold in report["counts"].items():
        low, high = map(float, re.findall(r"[-\d.e+]+", name))
        inside = counts[(counts >= low) & ((counts <= high) if name.endswith("]") else (counts < high))]
        assert per_fold == np.bincount(folds.loc[inside.index], minlength=3).tolist()
        assert max(per_fold) - min(per_fold) <= 1, (name, per_fold)  # each bin spread evenly over the folds
        seen += len(inside)
    assert seen == len(counts) == len(folds)


def test_oof_values_are_scored_exactly_and_bce_scaled_stays_in_its_range(counted):
    counts = truth(counted)
    for name in ("mse", "scaled"):
        oof = pd.read_csv(counted / "runs" / name / "oof.csv", dtype={"id": str})
        assert sorted(oof["id"]) == sorted(counts.index) and list(oof.columns) == ["id", "fold", "count"]
        score = json.loads((counted / "runs" / name / "score.json").read_text())
        expected = root_mean_squared_error(counts.loc[oof["id"]], oof["count"])
        assert score["metric"] == "rmse" and score["overall"] == pytest.approx(expected, abs=1e-9)
        assert score["other_metrics"]["mae"] == pytest.approx(mean_absolute_error(counts.loc[oof["id"]],
                                                                                    oof["count"]), abs=1e-9)
        for fold, rows in oof.groupby("fold"):
            assert score["per_fold"][str(fold)] == pytest.approx(
                root_mean_squared_error(counts.loc[rows["id"]], rows["count"]), abs=1e-9)
    for file in ("oof.csv", "test.csv"):
        values = pd.read_csv(counted / "runs" / "scaled" / file)["count"]
        assert ((values > Y_RANGE[0]) & (values < Y_RANGE[1])).all()
    recorded = json.loads((counted / "runs" / "scaled" / "fold0" / "normalization.json").read_text())["output"]
    assert recorded == {"kind": "range", "center": [0.0], "scale": [50.0]}


def test_the_submission_is_the_test_values_clipped_to_the_training_range_and_scored_exactly(counted):
    counts = truth(counted)
    info = json.loads((counted / "runs" / "mse" / "run.json").read_text())
    assert info["target_range"] == {"count": [counts.min(), counts.max()]}
    test = pd.read_csv(counted / "runs" / "mse" / "test.csv", dtype={"id": str}).set_index("id")["count"]
    submission = pd.read_csv(counted / "submissions" / "mse.csv", dtype={"id": str})
    sample = pd.read_csv(counted / "sample_submission.csv", dtype={"id": str})
    assert list(submission.columns) == ["id", "count"] and submission["id"].tolist() == sample["id"].tolist()
    np.testing.assert_allclose(submission["count"], np.clip(test.loc[submission["id"]], counts.min(), counts.max()),
                               rtol=1e-6)
    solution = pd.read_csv(counted / "solution.csv", dtype={"id": str}).set_index("id")["count"]
    printed = invoke("score", "--submission", str(counted / "submissions" / "mse.csv"), "--solution",
                     str(counted / "solution.csv"), "--metric", "rmse")
    expected = root_mean_squared_error(solution.loc[submission["id"]], submission["count"])
    assert float(printed.split()[-1]) == pytest.approx(expected, abs=1e-6)


def test_a_blend_of_two_regression_runs_averages_their_values(counted):
    runs = counted / "runs"
    invoke("ensemble", str(runs / "mse"), str(runs / "scaled"), "--method", "mean", "--name", "pair")
    frames = [pd.read_csv(runs / name / "oof.csv", dtype={"id": str}).set_index("id")["count"]
              for name in ("mse", "scaled", "ens-pair")]
    np.testing.assert_allclose(frames[2], (frames[0] + frames[1]).loc[frames[2].index] / 2, rtol=1e-6)
    expected = root_mean_squared_error(truth(counted).loc[frames[2].index], frames[2])
    score = json.loads((runs / "ens-pair" / "score.json").read_text())  # scored before oof.csv rounds to 7 digits
    assert score["overall"] == pytest.approx(expected, rel=1e-6)
    rescored = invoke("score", str(runs / "ens-pair"))
    assert json.loads((runs / "ens-pair" / "score.json").read_text())["overall"] == pytest.approx(expected, abs=1e-9)
    assert "rmse" in rescored
    refused = runner.invoke(app, ["ensemble", str(runs / "mse"), str(runs / "scaled"), "--method", "geometric"])
    assert refused.exit_code != 0 and "regression run's values blend by" in str(refused.exception)


@pytest.mark.parametrize("format", ["torch", "onnx"])
def test_pack_and_infer_replay_the_runs_test_values(counted, format, tmp_path):
    bundle = tmp_path / f"bundle-{format}"
    invoke("pack", str(counted / "runs" / "scaled"), "--out", str(bundle), "--format", format)
    out = tmp_path / "values.csv"
    invoke("infer", str(bundle), "--test", str(counted / "test.csv"), "--images",
           str(shared_dataset("coco128-multilabel") / "test"), "--out", str(out))
    replayed = pd.read_csv(out, dtype={"id": str}).set_index("id")["count"]
    recorded = pd.read_csv(counted / "runs" / "scaled" / "test.csv", dtype={"id": str}).set_index("id")["count"]
    np.testing.assert_allclose(replayed.loc[recorded.index], recorded, rtol=1e-5, atol=1e-4)


def test_a_stack_of_regression_runs_is_a_ridge_per_target_replayed_by_infer(counted, tmp_path):
    runs = counted / "runs"
    invoke("ensemble", str(runs / "mse"), str(runs / "scaled"), "--method", "stack", "--name", "ridge")
    recipe = json.loads((runs / "ens-ridge" / "weights.json").read_text())
    assert recipe["method"] == "stack" and len(recipe["stack_model"]) == 1
    assert len(recipe["stack_model"][0]["coef"]) == 2
    oof = pd.read_csv(runs / "ens-ridge" / "oof.csv", dtype={"id": str}).set_index("id")["count"]
    invoke("score", str(runs / "ens-ridge"))
    score = json.loads((runs / "ens-ridge" / "score.json").read_text())
    assert score["overall"] == pytest.approx(root_mean_squared_error(truth(counted).loc[oof.index], oof), abs=1e-9)
    out = tmp_path / "stacked.csv"
    invoke("infer", str(runs / "ens-ridge"), "--test", str(counted / "test.csv"), "--images",
           str(shared_dataset("coco128-multilabel") / "test"), "--out", str(out))
    replayed = pd.read_csv(out, dtype={"id": str}).set_index("id")["count"]
    recorded = pd.read_csv(runs / "ens-ridge" / "test.csv", dtype={"id": str}).set_index("id")["count"]
    np.testing.assert_allclose(replayed.loc[recorded.index], recorded, rtol=1e-5, atol=1e-4)


def test_a_stack_recipe_that_lies_is_refused_by_infer(counted, tmp_path):
    import shutil

    runs = counted / "runs"
    if not (runs / "ens-ridge").is_dir():
        invoke("ensemble", str(runs / "mse"), str(runs / "scaled"), "--method", "stack", "--name", "ridge")
    copy = runs / "ens-lying"
    shutil.copytree(runs / "ens-ridge", copy)
    recipe = json.loads((copy / "weights.json").read_text())
    recipe["stack_model"][0]["coef"] = [1.0, 2.0, 3.0]  # three runs' weights for two runs
    (copy / "weights.json").write_text(json.dumps(recipe))
    result = runner.invoke(app, ["infer", str(copy), "--test", str(counted / "test.csv"), "--images",
                                 str(shared_dataset("coco128-multilabel") / "test"), "--out", str(tmp_path / "x.csv")])
    assert result.exit_code != 0 and "stack_model[0]: coef (3,) does not fit 2 runs" in str(result.exception)
    assert not (tmp_path / "x.csv").exists()
    shutil.rmtree(copy)
