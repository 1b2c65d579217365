"""Kaggle image competitions in the shapes Kaggle ships them (image files, pixel tables, COCO label files, archives,
and the readers' shapes: .npy, DICOM, HDF5, parquet pixel rows, JSON bands): ``kagglecv init`` then ``kagglecv run`` on each with
no hand edit, a submission that matches the sample exactly, and a planted solution scored by ``score
--submission`` equal to an independent computation."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import MultiLabelBinarizer
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.core.metrics import (
    expected_grade,
    grades_from_cutoffs,
    map_at_k_lists,
    tune_grade_cutoffs,
)
from kagglecv.stages.score import score_submission
from tests.conftest import kaggle_pfbeta
from tests.workflows.kaggle_reader_shapes import READER_BUILDERS
from tests.workflows.kaggle_shapes import BUILDERS, VARIANTS, Competition

BUILDERS = BUILDERS | READER_BUILDERS

pytestmark = pytest.mark.slow
runner = CliRunner()
TINY = ["-s", "model.name=test_resnet", "-s", "model.pretrained=false", "-s", "model.img_size=16", "-s",
        "train.epochs=1", "-s", "train.batch_size=16", "-s", "train.num_workers=0", "-s", "folds.n_splits=2", "-s",
        "folds.allow_rare_classes=true", "-s", "folds.near_duplicates=off"]


def tree_checksums(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def independent_score(competition: Competition, submission: pd.DataFrame) -> float:
    """The competition's metric on the submission file, computed here with scikit-learn or the formula."""
    solution = competition.solution.astype(str)
    id_col, value_cols = solution.columns[0], list(solution.columns[1:])
    submitted = submission.astype(str).set_index(id_col).loc[solution[id_col]]
    if competition.metric == "log_loss" or (competition.metric or "").endswith(".py"):  # the file is Kaggle's log loss
        # Kaggle rescales each row to sum to one and clips at 1e-15 before the log
        probabilities = np.clip(submitted[competition.classes].astype(float).to_numpy(), 1e-15, 1 - 1e-15)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return skm.log_loss(solution[value_cols[0]], probabilities, labels=competition.classes)
    if competition.metric == "binary_log_loss":  # Kaggle's log loss of the positive class, clipped at 1e-15
        positive = np.clip(submitted[value_cols[0]].astype(float).to_numpy(), 1e-15, 1 - 1e-15)
        return skm.log_loss(solution[value_cols[0]].astype(int), positive, labels=[0, 1])
    if competition.metric == "rmse":
        return skm.root_mean_squared_error(solution[value_cols[0]].astype(float),
                                           submitted[value_cols[0]].astype(float))
    if (competition.metric or "").startswith("heads:"):  # Bengali.AI's grade: macro recall per component, 2:1:1
        components = ["grapheme_root", "vowel_diacritic", "consonant_diacritic"]
        scores = [skm.recall_score(solution[value_cols[0]][solution[id_col].str.endswith(c)],
                                   submitted[value_cols[0]][solution[id_col].str.endswith(c).to_numpy()],
                                   average="macro") for c in components]
        return float(np.average(scores, weights=[2, 1, 1]))
    if (competition.metric or "").startswith("weighted_log_loss:"):  # RSNA ICH: per image, any weighs 2; long files
        ids = solution[id_col].str.rsplit("_", n=1, expand=True)
        truth = solution.assign(image=ids[0], cls=ids[1]).pivot(index="image", columns="cls", values=value_cols[0])
        predicted = submitted[value_cols[0]].astype(float).set_axis(solution[id_col]).to_frame("p")
        predicted = predicted.assign(image=ids[0].to_numpy(), cls=ids[1].to_numpy()).pivot(
            index="image", columns="cls", values="p").loc[truth.index, truth.columns]
        weights = np.where(truth.columns == "any", 2.0, 1.0)
        p = np.clip(predicted.to_numpy(), 1e-15, 1 - 1e-15)
        y = truth.astype(int).to_numpy()
        losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        return float(np.mean((losses * weights).sum(axis=1) / weights.sum()))
    if competition.metric == "pf1":  # Kaggle's pfbeta of RSNA Breast, as its notebook writes it, row by row
        return kaggle_pfbeta(solution[value_cols[0]].astype(int).tolist(), submitted[value_cols[0]].astype(float).tolist())
    if competition.metric == "roc_auc":
        return skm.roc_auc_score(solution[value_cols[0]].astype(int), submitted[value_cols[0]].astype(float))
    if competition.metric == "roc_auc_macro":
        truth, scores = solution[value_cols].astype(int).to_numpy(), submitted[value_cols].astype(float).to_numpy()
        present = [c for c in range(truth.shape[1]) if 0 < truth[:, c].sum() < len(truth)]
        return float(np.mean([skm.roc_auc_score(truth[:, c], scores[:, c]) for c in present]))
    if competition.metric == "f2_samples":
        binarizer = MultiLabelBinarizer(classes=competition.classes)
        truth = binarizer.fit_transform(solution[value_cols[0]].str.split())
        predicted = binarizer.transform(submitted[value_cols[0]].str.split())
        return skm.fbeta_score(truth, predicted, beta=2, average="samples", zero_division=0)
    if competition.metric == "qwk_thresholds":  # the labels were cut already: the leaderboard's QWK
        return skm.cohen_kappa_score(solution[value_cols[0]], submitted[value_cols[0]], weights="quadratic")
    if competition.metric is None:  # MAP@5 of top-5 lists, as ml_metrics' mapk
        return map_at_k_lists(solution[value_cols[0]].tolist(), submitted[value_cols[0]].str.split().tolist(), 5)
    if competition.metric == "f1_micro":
        return skm.f1_score(solution[value_cols[0]], submitted[value_cols[0]], average="micro")
    if competition.metric == "f1_macro":  # Herbarium's grade.py: integer category ids, sklearn's macro F1
        return skm.f1_score(solution[value_cols[0]].astype(int), submitted[value_cols[0]].astype(int), average="macro")
    return skm.accuracy_score(solution[value_cols[0]], submitted[value_cols[0]])


def check_shape(competition: Competition, submission: pd.DataFrame, sample: pd.DataFrame) -> None:
    """Header, ids and their order exactly the sample's; values of the competition's type."""
    assert list(submission.columns) == list(sample.columns)
    assert submission.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()
    values = submission.iloc[:, 1:]
    if competition.fmt in ("probabilities", "positive"):
        numbers = values.astype(float).to_numpy()
        assert ((numbers >= 0) & (numbers <= 1)).all()
        if competition.fmt == "probabilities" and competition.name != "planet":
            np.testing.assert_allclose(numbers.sum(axis=1), 1.0, atol=1e-5)
    elif competition.fmt == "long-labels":
        assert values.iloc[:, 0].str.fullmatch(r"\d+").all()
    elif competition.fmt == "long":
        numbers = values.astype(float).to_numpy()
        assert ((numbers >= 0) & (numbers <= 1)).all()
    elif competition.fmt == "values":
        assert np.isfinite(values.astype(float).to_numpy()).all()
    elif competition.fmt == "top_k":
        lists = values.iloc[:, 0].str.split()
        assert all(len(names) == 5 == len(set(names)) and set(names) <= set(competition.classes) for names in lists)
    elif competition.fmt == "labels":
        assert all(set(cell.split()) <= set(competition.classes) for cell in values.iloc[:, 0])
    else:
        assert set(values.iloc[:, 0]) <= set(competition.classes)


@pytest.mark.parametrize("name", [*BUILDERS, *VARIANTS])
def test_init_then_run_makes_a_submission_in_the_samples_shape_scored_exactly(name, tmp_path, monkeypatch):
    competition = (BUILDERS | VARIANTS)[name](tmp_path / "input")
    before = tree_checksums(competition.folder)
    monkeypatch.chdir(tmp_path)
    init = ["init", str(competition.folder)] + (["--metric", competition.metric] if competition.metric else [])
    if (competition.metric or "").endswith(".py"):
        init += ["--set", "metric_direction=minimize"]
    initialized = runner.invoke(app, init)
    assert initialized.exit_code == 0, initialized.output
    config = next(tmp_path.glob("*.yaml"))
    ran = runner.invoke(app, ["run", str(config), *TINY])
    assert ran.exit_code == 0, ran.output
    assert tree_checksums(competition.folder) == before, "nothing under the competition folder changed"
    sample_path = next(path for path in competition.folder.iterdir() if "sample" in path.name.lower())
    submission_path = tmp_path / "submissions" / f"{competition.folder.name}.csv"
    sample = pd.read_csv(sample_path, dtype=str, keep_default_na=False)
    submission = pd.read_csv(submission_path, dtype=str, keep_default_na=False)
    check_shape(competition, submission, sample)
    solution_path = tmp_path / "solution.csv"
    competition.solution.to_csv(solution_path, index=False)
    metric = competition.metric or "map@5"
    long_id = ["--long-id", "{id}_{class}"] if competition.fmt in ("long", "long-labels") else []
    scored = runner.invoke(app, ["score", "--submission", str(submission_path), "--solution", str(solution_path),
                                 "--metric", metric, *long_id])
    assert scored.exit_code == 0, scored.output
    expected = independent_score(competition, submission)
    printed = float(re.search(r"(-?\d+\.\d+)\s*$", scored.output.strip()).group(1))
    assert printed == pytest.approx(expected, abs=1e-6)
    assert score_submission(submission_path, solution_path, metric, long_id=(long_id or [None])[-1]) == \
        pytest.approx(expected, abs=1e-9)
    if (competition.metric or "").endswith(".py"):
        assert_the_cv_is_the_metric_files_score_of_the_oof(tmp_path / "runs" / competition.folder.name, competition)
    if competition.metric == "qwk_thresholds":
        assert_labels_are_the_grade_cut_at_the_oof_cutoffs(tmp_path / "runs" / competition.folder.name, submission)
    if competition.name == "rsna-breast":
        assert_the_cv_is_scored_per_breast_with_patients_whole(tmp_path / "runs" / competition.folder.name, competition)


def assert_the_cv_is_scored_per_breast_with_patients_whole(run_path: Path, competition: Competition) -> None:
    """Every patient's images in one fold; the CV (score.json) is the pF1 of the breasts' mean predictions against
    their labels, computed here from oof.csv and train.csv."""
    import json

    train = pd.read_csv(competition.folder / "train.csv", dtype=str).set_index("image_id")
    oof = pd.read_csv(run_path / "oof.csv", dtype={"id": str}).set_index("id").loc[train.index]
    assert (oof.groupby(train["patient_id"])["fold"].nunique() == 1).all()
    breast = train["patient_id"] + "_" + train["laterality"]
    predicted = oof["1"].groupby(breast, sort=False).mean()
    truth = train["cancer"].astype(int).groupby(breast, sort=False).first().loc[predicted.index]
    score = json.loads((run_path / "score.json").read_text())
    assert score["rows"] == breast.nunique() < len(train)
    assert score["overall"] == pytest.approx(kaggle_pfbeta(truth.tolist(), predicted.tolist()), rel=1e-6)


def assert_the_cv_is_the_metric_files_score_of_the_oof(run_path: Path, competition: Competition) -> None:
    """The run's CV (score.json) is the metric file's value on the OOF predictions, recomputed here with
    scikit-learn as Kaggle scores log loss."""
    import json

    oof = pd.read_csv(run_path / "oof.csv", dtype={"id": str})
    truth = pd.read_csv(competition.folder / "train.csv", dtype=str).set_index("id").loc[oof["id"], "species"]
    probabilities = np.clip(oof[competition.classes].to_numpy(), 1e-15, 1 - 1e-15)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    expected = skm.log_loss(truth, probabilities, labels=competition.classes)
    recorded = json.loads((run_path / "score.json").read_text())
    assert recorded["metric"] == competition.metric
    assert recorded["overall"] == pytest.approx(expected, abs=1e-9)


def assert_labels_are_the_grade_cut_at_the_oof_cutoffs(run_path: Path, submission: pd.DataFrame) -> None:
    """APTOS: the submitted classes are the test's expected grades cut where QWK on the OOF predictions is best."""
    classes = [str(k) for k in range(5)]
    oof = pd.read_csv(run_path / "oof.csv", dtype={"id": str})
    truth = pd.read_csv(next(run_path.parents[1].glob("input/*/train.csv")), dtype=str).set_index("id_code")
    targets = truth.loc[oof["id"], "diagnosis"].astype(int).to_numpy()
    cutoffs = tune_grade_cutoffs(targets, expected_grade(oof[classes].to_numpy()), 5)
    test = pd.read_csv(run_path / "test.csv", dtype={"id": str}).set_index("id").loc[submission.iloc[:, 0]]
    expected = grades_from_cutoffs(expected_grade(test[classes].to_numpy()), cutoffs)
    assert submission.iloc[:, 1].astype(int).tolist() == expected.tolist()


def linked_read_only_copy(folder: Path, root: Path) -> Path:
    """The competition as Kaggle mounts it under /kaggle/input: folders of symbolic links to the files, read-only."""
    mirror = root / folder.name
    for path in sorted(folder.rglob("*")):
        target = mirror / path.relative_to(folder)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    for path in sorted(mirror.rglob("*"), reverse=True):
        if path.is_dir():
            path.chmod(0o555)
    mirror.chmod(0o555)
    return mirror


def test_run_on_a_read_only_folder_of_links_is_the_one_command_baseline(tmp_path, monkeypatch):
    competition = BUILDERS["planet"](tmp_path / "files")
    mirror = linked_read_only_copy(competition.folder, tmp_path / "kaggle" / "input")
    before = tree_checksums(mirror)
    work = tmp_path / "working"
    work.mkdir()
    monkeypatch.chdir(work)
    ran = runner.invoke(app, ["run", str(mirror), "--metric", "f2_samples", *TINY])
    assert ran.exit_code == 0, ran.output
    config = work / f"{mirror.name}.yaml"
    assert config.is_file() and "data.test_image_dir" in ran.output and "test-jpg-additional" in config.read_text()
    submission = pd.read_csv(work / "submissions" / f"{mirror.name}.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(mirror / "sample_submission_v2.csv", dtype=str, keep_default_na=False)
    check_shape(competition, submission, sample)
    assert tree_checksums(mirror) == before and all(path.is_symlink() for path in mirror.rglob("*.jpg"))
    again = runner.invoke(app, ["run", str(mirror), *TINY])
    assert again.exit_code == 0 and f"using {mirror.name}.yaml" in again.output, again.output


def test_an_ambiguous_folder_asks_for_the_metric_with_the_choices(tmp_path):
    competition = BUILDERS["histopathologic"](tmp_path)
    result = runner.invoke(app, ["init", str(competition.folder), "--out", str(tmp_path / "c.yaml")])
    assert result.exit_code != 0 and not (tmp_path / "c.yaml").exists()
    assert str(result.exception) == (
        "--metric: the sample's values (one 0/1 column (a label or a probability)) fit several metrics and the folder "
        "does not say which scores it; give --metric, e.g. one of roc_auc, binary_log_loss, binary_accuracy, "
        "binary_f1, accuracy, or a metric file (path/to/metric.py)")
    inside = runner.invoke(app, ["init", str(competition.folder), "--metric", "roc_auc", "--out",
                                 str(competition.folder / "c.yaml")])
    assert "inside the input folder" in str(inside.exception) and not (competition.folder / "c.yaml").exists()


def test_two_training_tables_or_unmatched_ids_name_the_flag_or_key_that_settles_it(tmp_path):
    competition = BUILDERS["cifar-10"](tmp_path)
    extra = competition.folder / "train_extra.csv"
    (competition.folder / "trainLabels.csv").rename(competition.folder / "train_labels.csv")
    extra.write_text((competition.folder / "train_labels.csv").read_text())
    refused = runner.invoke(app, ["init", str(competition.folder), "--metric", "accuracy", "--out",
                                  str(tmp_path / "a.yaml")])
    assert "several training tables ('train_extra.csv', 'train_labels.csv'); give --train FILE" in \
        str(refused.exception) and not (tmp_path / "a.yaml").exists()
    chosen = runner.invoke(app, ["init", str(competition.folder), "--metric", "accuracy", "--out",
                                 str(tmp_path / "a.yaml"), "--train", str(competition.folder / "train_labels.csv")])
    assert chosen.exit_code == 0, chosen.output
    assert "train_csv: " + str(competition.folder / "train_labels.csv") in (tmp_path / "a.yaml").read_text()
    for image in (competition.folder / "train").iterdir():
        image.rename(image.with_name(f"img_{image.name}"))
    unmatched = runner.invoke(app, ["init", str(competition.folder), "--metric", "accuracy", "--out",
                                    str(tmp_path / "b.yaml"), "--train", str(extra)])
    assert re.search(r"no file is named after the ids \('1', '2', '3' and 47 more\); it holds 'img_1', 'img_10', "
                     r"'img_11'; set data.image_col", str(unmatched.exception)), unmatched.exception


def test_init_replaces_only_a_config_it_wrote(tmp_path):
    competition = BUILDERS["cassava"](tmp_path)
    mine = tmp_path / "mine.yaml"
    mine.write_text("experiment: mine  # my own notes\n")
    refused = runner.invoke(app, ["init", str(competition.folder), "--metric", "accuracy", "--out", str(mine)])
    assert "exists and is not an earlier output of this command" in str(refused.exception)
    assert mine.read_text() == "experiment: mine  # my own notes\n"
    written = tmp_path / "written.yaml"
    for _ in range(2):  # the second run replaces what the first wrote
        again = runner.invoke(app, ["init", str(competition.folder), "--metric", "accuracy", "--out", str(written)])
        assert again.exit_code == 0, again.output
    assert written.read_text().startswith("# kagglecv init:")
