"""End to end: `kagglecv run` on tiny real data, every output checked; the example configs validate."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.core.config import load_config
from tests.conftest import tiny_config
from tests.unit.data.test_pixels import digits_table

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_run_command_from_table_to_submission(tmp_path, digits_root, task, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, digits_root, task, rows=80, predict={"tta": ["none", "hflip"]})
    train = pd.read_csv(tmp_path / "train.csv", dtype=str, keep_default_na=False)
    test_ids = pd.read_csv(tmp_path / "test.csv", dtype=str)["id"]
    classes = (digits_root / "mosaic" / "classes.txt").read_text().split() if task == "multilabel" else sorted(train["label"].unique())
    if task == "multilabel":
        sample = pd.DataFrame({"id": test_ids} | {name: 0.5 for name in classes})
    else:
        sample = pd.DataFrame({"id": test_ids, "label": classes[0]})
    sample.to_csv(tmp_path / "sample_submission.csv", index=False)
    config["submit"] = {"sample": str(tmp_path / "sample_submission.csv"), "dir": str(tmp_path / "subs")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))

    result = runner.invoke(app, ["run", "c.yaml"])
    assert result.exit_code == 0, result.output
    assert "CV " in result.output and "submission:" in result.output

    run = tmp_path / "runs" / f"tiny-{task}"
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"id": str})
    assert folds["id"].tolist() == train["id"].tolist() and set(folds["fold"]) == {0, 1}
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert list(oof.columns) == ["id", "fold", *classes] and oof["id"].tolist() == train["id"].tolist()
    assert (oof["fold"].to_numpy() == folds["fold"].to_numpy()).all()
    values = oof[classes].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    if task == "multiclass":
        np.testing.assert_allclose(values.sum(axis=1), 1, atol=1e-5)
    test = pd.read_csv(run / "test.csv", dtype={"id": str})
    assert test["id"].tolist() == test_ids.tolist() and list(test.columns) == ["id", *classes]
    assert json.loads((run / "predict.json").read_text())["tta"] == ["none", "hflip"]
    score = json.loads((run / "score.json").read_text())
    assert set(score["per_fold"]) == {"0", "1"} and np.isfinite(score["overall"])
    submission = pd.read_csv(tmp_path / "subs" / f"tiny-{task}.csv", dtype={"id": str})
    assert list(submission.columns) == list(sample.columns) and submission["id"].tolist() == test_ids.tolist()
    per_fold = []
    for fold in (0, 1):
        assert json.loads((run / f"fold{fold}" / "done.json").read_text())["fold"] == fold
        # Train skipped its test pass; predict wrote each fold's TTA'd test predictions (a student's teacher folds).
        per_fold.append(pd.read_csv(run / f"fold{fold}" / "test.csv", dtype={"id": str})[classes].to_numpy())
    np.testing.assert_allclose(test[classes].to_numpy(), np.mean(per_fold, axis=0), atol=2e-6)

    again = runner.invoke(app, ["run", "c.yaml"])
    assert again.exit_code == 0 and "done already" in again.output, "a second run skips the trained folds"


@pytest.mark.parametrize("path", sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "examples").rglob("*.yaml")]),
                         ids=lambda p: p.name)
def test_example_configs_load_and_validate(path):
    config = load_config(path)
    assert config.experiment and config.data.train_csv


def test_run_without_tta_predicts_nothing_twice_and_reads_the_table_once(tmp_path, digits_root, monkeypatch):
    import kagglecv.data.load
    import kagglecv.workflows.run
    from kagglecv.stages.predict import predict_run

    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, digits_root, rows=60, predict={"tta": ["none"]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    table_reads = []
    real_read = kagglecv.data.load.read_table_bytes  # where the loader looks it up
    monkeypatch.setattr(kagglecv.data.load, "read_table_bytes", lambda path: table_reads.append(Path(path)) or real_read(path))

    def no_second_predict(*args, **kwargs):
        raise AssertionError("predict_run was called although train's predictions are the final ones")

    monkeypatch.setattr(kagglecv.workflows.run, "predict_run", no_second_predict)
    result = runner.invoke(app, ["run", "c.yaml"])
    assert result.exit_code == 0, result.output
    assert table_reads.count(Path(config["data"]["train_csv"])) == 1, table_reads

    run = tmp_path / "runs" / "tiny-multiclass"
    recorded = json.loads((run / "predict.json").read_text())
    assert recorded["tta"] == ["none"]
    assert recorded["oof_score"] == pytest.approx(json.loads((run / "score.json").read_text())["overall"], abs=1e-12)
    kept_oof, kept_test = pd.read_csv(run / "oof.csv"), pd.read_csv(run / "test.csv")
    predict_run(run)  # what the skipped stage would have written
    classes = [c for c in kept_test.columns if c != "id"]
    np.testing.assert_allclose(pd.read_csv(run / "oof.csv")[classes], kept_oof[classes], atol=1e-6)
    np.testing.assert_allclose(pd.read_csv(run / "test.csv")[classes], kept_test[classes], atol=1e-6)


def test_a_sample_without_a_test_table_gives_the_test_ids(tmp_path, digits_root):
    """Kaggle ships many competitions with no test.csv: the sample's rows are the test set, in its order."""
    config = tiny_config(tmp_path, digits_root, rows=48)
    ids = pd.read_csv(tmp_path / "test.csv", dtype=str)["id"].tolist()[:6][::-1]
    pd.DataFrame({"id": ids, "label": "zero"}).to_csv(tmp_path / "sample.csv", index=False)
    del config["data"]["test_csv"]
    config["submit"] = {"sample": str(tmp_path / "sample.csv"), "dir": str(tmp_path / "subs")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(tmp_path / "c.yaml")])
    assert result.exit_code == 0, result.output
    submission = pd.read_csv(tmp_path / "subs" / "tiny-multiclass.csv", dtype=str)
    assert submission["id"].tolist() == ids and list(submission.columns) == ["id", "label"]
    recorded = yaml.safe_load((tmp_path / "runs" / "tiny-multiclass" / "config.yaml").read_text())
    assert recorded["data"]["test_csv"] == str(tmp_path / "sample.csv"), "the written config says where the ids came from"


def test_digit_recognizer_shaped_competition_from_table_to_submission(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, _ = digits_table(60)
    test, _ = digits_table(12, offset=100, label=False)
    train.to_csv("train.csv", index=False)
    test.to_csv("test.csv", index=False)
    sample = pd.DataFrame({"ImageId": range(1, 13), "Label": 0})
    sample.to_csv("sample_submission.csv", index=False)
    config = {
        "experiment": "digits-pixels", "runs_dir": "runs",
        "data": {"train_csv": "train.csv", "test_csv": "test.csv"},
        "folds": {"n_splits": 2, "file": "folds.csv", "allow_rare_classes": True},
        "model": {"name": "test_resnet", "img_size": 16, "in_chans": 1},
        "augment": {"hflip": False},
        "train": {"epochs": 1, "batch_size": 16, "num_workers": 0},
        "predict": {"tta": ["none", "scale:1.15"]},
        "submit": {"sample": "sample_submission.csv", "dir": "subs"},
    }
    Path("c.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", "c.yaml"])
    assert result.exit_code == 0, result.output
    submission_text = Path("subs/digits-pixels.csv").read_text()
    submission = pd.read_csv("subs/digits-pixels.csv", dtype=str)
    assert submission_text.splitlines()[0] == "ImageId,Label"
    assert submission["ImageId"].tolist() == [str(i) for i in range(1, 13)]
    assert set(submission["Label"]) <= {str(c) for c in range(10)}
    oof = pd.read_csv("runs/digits-pixels/oof.csv", dtype={"id": str})
    assert sorted(oof["id"], key=int) == [str(i) for i in range(1, 61)]
