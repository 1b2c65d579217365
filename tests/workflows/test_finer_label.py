"""Training on a finer label than the competition scores (SIIM-ISIC 2020's 1st place: nine diagnoses, P(melanoma)
submitted), on a SIIM-ISIC-shaped folder of digit images: the diagnosis is the digit, the target 1 for the two
"malignant" digits. The network learns the ten digits; every score and the submission are of the target, each class
the sum of its digits' probabilities."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from kagglecv.cli import app
from tests.workflows.kaggle_shapes import _csv, _hex_ids, _save, _splits

pytestmark = pytest.mark.slow
runner = CliRunner()
DIAGNOSES = ["nevus", "melanoma", "seborrheic", "lentigo", "lichenoid", "solar", "cafe-au-lait", "atypical",
             "unknown", "bcc"]
MALIGNANT = {"melanoma", "bcc"}


@pytest.fixture(scope="module")
def siim(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("siim")
    (train, test) = _splits(17)
    train_ids, test_ids = [f"ISIC_{i}" for i in _hex_ids(len(train.digits), 170)], \
        [f"ISIC_{i}" for i in _hex_ids(len(test.digits), 171)]
    diagnosis = np.array(DIAGNOSES)[train.digits]
    _csv(pd.DataFrame({"image_name": train_ids, "patient_id": [f"IP_{i % 20}" for i in range(len(train_ids))],
                       "diagnosis": diagnosis, "target": [int(name in MALIGNANT) for name in diagnosis]}),
         root / "train.csv")
    _csv(pd.DataFrame({"image_name": test_ids}), root / "test.csv")
    _csv(pd.DataFrame({"image_name": test_ids, "target": 0.0}), root / "sample_submission.csv")
    _save(root / "jpeg" / "train", [f"{i}.jpg" for i in train_ids], train.images)
    _save(root / "jpeg" / "test", [f"{i}.jpg" for i in test_ids], test.images)
    config = {"experiment": "finer", "runs_dir": str(root / "runs"), "metric": "roc_auc",
              "data": {"train_csv": str(root / "train.csv"), "test_csv": str(root / "test.csv"),
                       "image_dir": str(root / "jpeg" / "train"), "test_image_dir": str(root / "jpeg" / "test"),
                       "id_col": "image_name", "target": "target",
                       "finer": {"column": "diagnosis", "to_target": {name: int(name in MALIGNANT)
                                                                        for name in DIAGNOSES}}},
              "folds": {"n_splits": 2, "near_duplicates": "off", "allow_rare_classes": True,
                        "file": str(root / "folds.csv")},
              "model": {"name": "test_resnet", "pretrained": False, "img_size": 16},
              "train": {"epochs": 1, "batch_size": 16, "num_workers": 0},
              "submit": {"sample": str(root / "sample_submission.csv"), "dir": str(root / "submissions")}}
    (root / "finer.yaml").write_text(yaml.safe_dump(config))
    (root / "seed.yaml").write_text(yaml.safe_dump(config | {"experiment": "seed",
                                                             "train": config["train"] | {"seed": 7}}))
    for name in ("finer", "seed"):
        result = runner.invoke(app, ["run", str(root / f"{name}.yaml")])
        assert result.exit_code == 0, result.output
    return root


def malignant(frame: pd.DataFrame) -> pd.Series:
    return frame[sorted(MALIGNANT)].sum(axis=1)


def test_the_run_learns_the_diagnoses_and_is_scored_on_the_target(siim):
    oof = pd.read_csv(siim / "runs" / "finer" / "oof.csv", dtype={"id": str}).set_index("id")
    info = json.loads((siim / "runs" / "finer" / "run.json").read_text())
    assert info["task"] == "multiclass" and sorted(info["classes"]) == sorted(DIAGNOSES)
    truth = pd.read_csv(siim / "train.csv", dtype=str).set_index("image_name").loc[oof.index, "target"].astype(int)
    score = json.loads((siim / "runs" / "finer" / "score.json").read_text())
    assert score["metric"] == "roc_auc" and score["per_class_kind"] == "recall" and set(score["per_class"]) == {"0", "1"}
    assert score["overall"] == pytest.approx(roc_auc_score(truth, malignant(oof)), abs=1e-6)
    for fold, rows in oof.groupby("fold"):
        assert score["per_fold"][str(fold)] == pytest.approx(roc_auc_score(truth.loc[rows.index], malignant(rows)),
                                                             abs=1e-6)


def test_the_submission_is_each_images_malignant_probability(siim):
    test = pd.read_csv(siim / "runs" / "finer" / "test.csv", dtype={"id": str}).set_index("id")
    submission = pd.read_csv(siim / "submissions" / "finer.csv", dtype={"image_name": str})
    assert list(submission.columns) == ["image_name", "target"]
    np.testing.assert_allclose(submission["target"], malignant(test).loc[submission["image_name"]], atol=2e-7)


@pytest.mark.parametrize("change, message", [
    ({"data.finer.to_target.bcc": None}, "no class for the fine classes 'bcc'"),
    ({"target_of_row": 3}, "target that is not the map of its 'diagnosis'"),
])
def test_a_map_that_misses_a_class_or_contradicts_the_target_is_one_error(siim, tmp_path, change, message):
    config = yaml.safe_load((siim / "finer.yaml").read_text())
    config["runs_dir"], config["folds"]["file"] = str(tmp_path / "runs"), str(tmp_path / "folds.csv")
    if "target_of_row" in change:
        table = pd.read_csv(siim / "train.csv", dtype=str)
        table.loc[change["target_of_row"], "target"] = "1" if table.loc[change["target_of_row"], "target"] == "0" else "0"
        table.to_csv(tmp_path / "train.csv", index=False)
        config["data"]["train_csv"] = str(tmp_path / "train.csv")
    else:
        del config["data"]["finer"]["to_target"]["bcc"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["folds", str(tmp_path / "c.yaml")])
    assert result.exit_code != 0 and message in str(result.exception), result.output
    assert not (tmp_path / "folds.csv").exists()


def test_an_ensemble_of_finer_runs_is_a_run_of_the_target(siim):
    runs = siim / "runs"
    result = runner.invoke(app, ["ensemble", str(runs / "finer"), str(runs / "seed"), "--method", "mean",
                                 "--name", "pair"])
    assert result.exit_code == 0, result.output
    oof = pd.read_csv(runs / "ens-pair" / "oof.csv", dtype={"id": str}).set_index("id")
    assert list(oof.columns) == ["fold", "0", "1"]
    members = [pd.read_csv(runs / name / "oof.csv", dtype={"id": str}).set_index("id") for name in ("finer", "seed")]
    np.testing.assert_allclose(oof["1"], (malignant(members[0]) + malignant(members[1])).loc[oof.index] / 2,
                               atol=1e-6)
    rescored = runner.invoke(app, ["score", str(runs / "ens-pair")])
    assert rescored.exit_code == 0, rescored.output
    truth = pd.read_csv(siim / "train.csv", dtype=str).set_index("image_name").loc[oof.index, "target"].astype(int)
    score = json.loads((runs / "ens-pair" / "score.json").read_text())
    assert score["overall"] == pytest.approx(roc_auc_score(truth, oof["1"]), abs=1e-9)
    submitted = runner.invoke(app, ["submit", str(runs / "ens-pair"), "--sample", str(siim / "sample_submission.csv"),
                                    "--out-dir", str(siim / "submissions")])
    assert submitted.exit_code == 0, submitted.output
