"""Error analysis on real data: planted label errors found by cleanlab, the gallery's order, confused pairs,
duplicates with different labels, and data.label_fixes dropping or relabelling listed ids with the folds kept."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import confusion_matrix
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.core.config import validate_config
from kagglecv.core.errors import DataError
from kagglecv.data.inputs import read_folds
from kagglecv.data.load import load_train
from kagglecv.data.table import ABSENT, DataWarning
from kagglecv.stages.inspect import (
    confused_pairs,
    label_issues,
    multilabel_errors,
    worst_predictions,
)
from tests.conftest import shared_dataset

runner = CliRunner()


def cifar_labels():
    root = shared_dataset("cifar10-mini")
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    return root, frame


def flip_labels(labels: np.ndarray, n_classes: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``share`` of the labels moved to another class at random; returns the noisy labels and the flipped rows."""
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), int(round(share * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
    return noisy, np.sort(flipped)


def model_like_probabilities(truth: np.ndarray, n_classes: int, accuracy: float, seed: int) -> np.ndarray:
    """Probabilities of an imperfect model that knows the true class: right on ``accuracy`` of the rows."""
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(n_classes), len(truth)) * 0.4
    guess = np.where(rng.random(len(truth)) < accuracy, truth, rng.integers(0, n_classes, len(truth)))
    probabilities[np.arange(len(truth)), guess] += 0.6
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def as_data(ids, targets, classes, task="multiclass"):
    from kagglecv.data.table import CompetitionData

    return CompetitionData(np.asarray(ids, dtype=object), None, task, list(classes), targets)


def test_cleanlab_finds_planted_label_errors_in_cifar10_mini():
    _, frame = cifar_labels()
    classes = sorted(frame["label"].unique())
    truth = frame["label"].map({name: index for index, name in enumerate(classes)}).to_numpy()
    noisy, flipped = flip_labels(truth, len(classes), 0.05, seed=0)
    probabilities = model_like_probabilities(truth, len(classes), accuracy=0.9, seed=1)
    issues = label_issues(as_data(frame["id"], noisy, classes), probabilities)
    flagged = set(issues["id"])
    planted = set(frame["id"].to_numpy()[flipped])
    recall = len(flagged & planted) / len(planted)
    assert recall >= 0.9, recall
    model_wrong = set(frame["id"].to_numpy()[probabilities.argmax(axis=1) != truth])
    assert flagged - planted <= model_wrong  # a flag without a flip is always a row the model itself gets wrong
    assert list(issues["label_quality"]) == sorted(issues["label_quality"])  # most likely error first
    by_id = issues.set_index("id")
    suggested_right = [by_id.loc[image_id, "suggested_label"] == classes[truth[row]]
                       for row, image_id in zip(flipped, frame["id"].to_numpy()[flipped]) if image_id in flagged]
    assert np.mean(suggested_right) >= 0.85
    given = by_id.loc[list(flagged & planted), "given_label"]
    assert all(given[image_id] == classes[noisy[frame.index[frame["id"] == image_id][0]]] for image_id in given.index)


def test_worst_predictions_and_confused_pairs_match_references():
    _, frame = cifar_labels()
    classes = sorted(frame["label"].unique())
    truth = frame["label"].map({name: index for index, name in enumerate(classes)}).to_numpy()
    probabilities = model_like_probabilities(truth, len(classes), accuracy=0.7, seed=2)
    data = as_data(frame["id"], truth, classes)
    worst = worst_predictions(data, probabilities, top=20)
    row_loss = -np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-7, 1 - 1e-7))
    assert [item["row"] for item in worst] == list(np.argsort(-row_loss, kind="stable")[:20])
    assert all(abs(item["loss"] - row_loss[item["row"]]) < 1e-9 for item in worst)
    reference = confusion_matrix(truth, probabilities.argmax(axis=1), labels=range(len(classes)))
    pairs = confused_pairs(data, probabilities, pairs=5, examples=3)
    off_diagonal = reference + reference.T
    np.fill_diagonal(off_diagonal, 0)
    assert [pair["count"] for pair in pairs] == sorted(np.triu(off_diagonal).ravel(), reverse=True)[:5]
    for pair in pairs:
        for direction in pair["directions"]:
            true, wrong = classes.index(direction["true"]), classes.index(direction["predicted"])
            assert direction["count"] == reference[true, wrong]
            for example in direction["examples"]:
                assert truth[example["row"]] == true and probabilities[example["row"]].argmax() == wrong


def test_multilabel_errors_and_issues_on_coco128():
    root = shared_dataset("coco128-multilabel")
    classes = (root / "classes.txt").read_text().split()
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    targets = np.array([[1 if name in labels.split() else ABSENT for name in classes] for labels in frame["labels"]],
                       dtype=np.int8)
    rng = np.random.default_rng(3)
    probabilities = np.clip(np.where(targets == 1, 0.8, 0.05) + rng.normal(0, 0.15, targets.shape), 0.001, 0.999)
    data = as_data(frame["id"], targets, classes, "multilabel")
    errors = multilabel_errors(data, probabilities, per_class=3, classes=4)
    assert errors
    for item in errors:
        column, row = classes.index(item["class"]), item["row"]
        if item["kind"] == "false negative":
            assert targets[row, column] == 1 and probabilities[row, column] < 0.5
            lower = probabilities[(targets[:, column] == 1) & (probabilities[:, column] < 0.5), column]
            assert (lower >= item["probability"]).sum() >= 1  # among the lowest: at most per_class below it
            assert (lower < item["probability"]).sum() < 3
        else:
            assert targets[row, column] == ABSENT and probabilities[row, column] >= 0.5
    person = classes.index("person")
    # planted: six images the model is sure show a person, whose person label was lost
    dropped = np.flatnonzero((targets[:, person] == 1) & (probabilities[:, person] > 0.7))[:6]
    assert len(dropped) == 6
    noisy = targets.copy()
    noisy[dropped, person] = ABSENT
    issues = label_issues(as_data(frame["id"], noisy, classes, "multilabel"), probabilities)
    found = set(frame["id"].to_numpy()[dropped]) & set(issues["id"])
    assert len(found) >= 4  # confident learning prunes by the estimated noise rate of the class: not all six
    assert all("person" in suggested.split() for suggested in issues.set_index("id").loc[sorted(found), "suggested_label"])
    assert all("person" not in given.split() for given in issues.set_index("id").loc[sorted(found), "given_label"])


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """A real tiny run on 60 cifar10-mini images plus one planted duplicate under another id and label."""
    root, frame = cifar_labels()
    work = tmp_path_factory.mktemp("inspect")
    images = work / "images"
    images.mkdir()
    subset = frame.groupby("label", group_keys=False).head(6).reset_index(drop=True)
    for image_id in subset["id"]:
        shutil.copy(root / "train" / f"{image_id}.jpg", images / f"{image_id}.jpg")
    original = subset.iloc[0]
    other_label = next(label for label in subset["label"] if label != original["label"])
    shutil.copy(images / f"{original['id']}.jpg", images / "planted-copy.jpg")
    subset = pd.concat([subset, pd.DataFrame([{"id": "planted-copy", "label": other_label}])], ignore_index=True)
    subset.to_csv(work / "train.csv", index=False)
    config = {"experiment": "cifar-tiny", "runs_dir": str(work / "runs"),
              "data": {"train_csv": str(work / "train.csv"), "image_dir": str(images)},
              "folds": {"n_splits": 2, "file": str(work / "folds.csv"), "near_duplicates": "warn"},
              "model": {"name": "test_resnet", "img_size": 32},
              "train": {"epochs": 1, "batch_size": 16, "num_workers": 0}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(work / "config.yaml")])
    assert result.exit_code == 0, result.output
    return work, subset, original, other_label


def test_inspect_command_writes_gallery_label_issues_and_duplicate_conflicts(cifar_run):
    work, subset, original, other_label = cifar_run
    run = work / "runs" / "cifar-tiny"
    result = runner.invoke(app, ["inspect", str(run), "--top", "12"])
    assert result.exit_code == 0, result.output
    report = yaml.safe_load((run / "inspect.json").read_text())
    assert report["rows"] == len(subset) and len(report["worst"]) == 12
    assert [item["loss"] for item in report["worst"]] == sorted((item["loss"] for item in report["worst"]), reverse=True)
    assert {item["id"] for item in report["worst"]} <= set(subset["id"])
    conflicts = report["duplicate_conflicts"]
    assert [sorted(conflict["ids"]) for conflict in conflicts] == [sorted([original["id"], "planted-copy"])]
    assert sorted(conflicts[0]["labels"]) == sorted([original["label"], other_label])
    issues = pd.read_csv(run / "label_issues.csv", dtype=str, keep_default_na=False)
    assert list(issues.columns) == ["id", "given_label", "suggested_label", "label_quality"]
    assert set(issues["id"]) <= set(subset["id"])
    for name in ("errors.png", "confused_pairs.png", "duplicate_conflicts.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and name in report["pictures"]


def test_label_fixes_drop_and_relabel_keep_the_folds_of_the_whole_table(cifar_run, tmp_path):
    work, subset, original, other_label = cifar_run
    raw = yaml.safe_load((work / "config.yaml").read_text())
    whole = validate_config(raw)
    full = load_train(whole.data, with_images=False)
    folds_before = dict(zip(full.ids, read_folds(whole.folds.file, full)))
    listed = subset.iloc[[3, 10, 20]]
    fixes = tmp_path / "fixes.csv"
    pd.DataFrame({"id": listed["id"], "given_label": listed["label"], "suggested_label": "frog"}).to_csv(fixes, index=False)

    raw["data"]["label_fixes"] = {"file": str(fixes), "action": "drop"}
    with pytest.warns(DataWarning, match=r"dropped 3 of 61 training rows listed in .*fixes.csv"):
        dropped = load_train(validate_config(raw).data, with_images=True)
    assert len(dropped) == len(full) - 3 and not set(listed["id"]) & set(dropped.ids)
    assert len(dropped.images) == len(dropped) and all(path.stem == image_id for path, image_id in zip(dropped.images, dropped.ids))
    folds_after = read_folds(whole.folds.file, dropped)
    assert all(folds_before[image_id] == fold for image_id, fold in zip(dropped.ids, folds_after))

    raw["data"]["label_fixes"] = {"file": str(fixes), "action": "relabel"}
    with pytest.warns(DataWarning, match="relabelled 3"):
        relabelled = load_train(validate_config(raw).data, with_images=False)
    frog = relabelled.classes.index("frog")
    changed = np.flatnonzero(relabelled.targets != full.targets)
    assert set(relabelled.ids[changed]) <= set(listed["id"])
    assert all(relabelled.targets[list(relabelled.ids).index(image_id)] == frog for image_id in listed["id"])
    np.testing.assert_array_equal(read_folds(whole.folds.file, relabelled), read_folds(whole.folds.file, full))


def test_label_fixes_errors_name_the_file_and_the_value(cifar_run, tmp_path):
    work, *_ = cifar_run
    raw = yaml.safe_load((work / "config.yaml").read_text())
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("id,suggested_label\nno-such-id,cat\n")
    raw["data"]["label_fixes"] = {"file": str(fixes)}
    with pytest.raises(DataError, match=r"fixes.csv: 1 ids are not in .*train.csv: line 2 'no-such-id'"):
        load_train(validate_config(raw).data, with_images=False)
    first = pd.read_csv(raw["data"]["train_csv"], dtype=str)["id"][0]
    fixes.write_text(f"id,suggested_label\n{first},unicorn\n")
    raw["data"]["label_fixes"] = {"file": str(fixes), "action": "relabel"}
    with warnings.catch_warnings(), pytest.raises(DataError, match=r"fixes.csv: 1 suggested labels are not classes .*'unicorn'"):
        load_train(validate_config(raw).data, with_images=False)


def test_a_run_with_dropped_ids_trains_on_the_rest_with_the_same_folds(cifar_run, tmp_path):
    work, subset, *_ = cifar_run
    listed = subset.iloc[[0, 7, 33, 60]]  # the planted copy (row 60) and its original among them
    fixes = tmp_path / "reviewed.csv"
    listed.to_csv(fixes, index=False)
    raw = yaml.safe_load((work / "config.yaml").read_text())
    raw["experiment"] = "cifar-tiny-clean"
    raw["data"]["label_fixes"] = {"file": str(fixes), "action": "drop"}
    (tmp_path / "clean.yaml").write_text(yaml.safe_dump(raw))
    with pytest.warns(DataWarning, match=f"dropped {len(listed)} of {len(subset)} training rows"):
        result = runner.invoke(app, ["run", str(tmp_path / "clean.yaml")])
    assert result.exit_code == 0, result.output
    run = work / "runs" / "cifar-tiny-clean"
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(set(subset["id"]) - set(listed["id"]))
    before = pd.read_csv(work / "runs" / "cifar-tiny" / "oof.csv", dtype={"id": str}).set_index("id")["fold"]
    assert all(before[image_id] == fold for image_id, fold in zip(oof["id"], oof["fold"]))
    recorded = yaml.safe_load((run / "run.json").read_text())["label_fixes"]
    assert recorded["action"] == "drop" and recorded["dropped_ids"] == len(listed)
