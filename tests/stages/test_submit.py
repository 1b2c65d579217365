import gzip
import io
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.data.submission import tune_thresholds
from kagglecv.stages.score import score_submission
from kagglecv.stages.submit import write_submission


def sample_for(run_dir, tmp_path, columns, value, shuffle=True):
    test = pd.read_csv(run_dir / "test.csv", dtype={"id": str})
    ids = test["id"].sample(frac=1, random_state=0) if shuffle else test["id"]
    sample = pd.DataFrame({"id": ids.to_numpy()} | {column: value for column in columns})
    path = tmp_path / "sample_submission.csv"
    sample.to_csv(path, index=False)
    return path, test


def test_label_submission_keeps_the_sample_order_and_ids(trained_runs, tmp_path):
    run = trained_runs[("multiclass", 1)].run_dir
    sample, test = sample_for(run, tmp_path, ["label"], "zero")
    result = write_submission(run, sample, "labels", out_dir=tmp_path / "subs")
    written = pd.read_csv(result.path, dtype=str)
    expected_ids = pd.read_csv(sample, dtype=str)["id"]
    assert result.format == "label" and written["id"].tolist() == expected_ids.tolist()
    classes = list(test.columns[1:])
    best = test.set_index("id").loc[expected_ids, classes].to_numpy().argmax(axis=1)
    assert written["label"].tolist() == [classes[i] for i in best]


def test_probability_columns_follow_the_samples_column_order(trained_runs, tmp_path):
    run = trained_runs[("multiclass", 1)].run_dir
    test = pd.read_csv(run / "test.csv", dtype={"id": str})
    classes = list(test.columns[1:])
    shuffled = list(reversed(classes))
    sample, _ = sample_for(run, tmp_path, shuffled, 0.1)
    result = write_submission(run, sample, "probs", out_dir=tmp_path / "subs", compress=True)
    written = pd.read_csv(io.BytesIO(gzip.decompress(result.path.read_bytes())), dtype={"id": str})
    assert result.path.name == "probs.csv.gz" and list(written.columns) == ["id", *shuffled]
    expected = test.set_index("id").loc[written["id"], shuffled].to_numpy()
    np.testing.assert_allclose(written[shuffled].to_numpy(), expected, atol=1e-6)


def test_multilabel_labels_with_thresholds_tuned_on_oof(trained_runs, tmp_path):
    run = trained_runs[("multilabel", 1)].run_dir
    sample, _ = sample_for(run, tmp_path, ["labels"], "one two")
    result = write_submission(run, sample, "ml", threshold="oof", out_dir=tmp_path / "subs")
    assert result.format == "labels" and set(result.thresholds) == set(pd.read_csv(run / "test.csv").columns[1:])
    written = pd.read_csv(result.path, dtype=str, keep_default_na=False)
    classes = set(result.thresholds)
    assert all(label in classes for cell in written["labels"] for label in cell.split())


def test_tuned_thresholds_maximize_each_class_f1():
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 3)) < [0.1, 0.4, 0.7]).astype(int)
    scores = np.clip(targets * 0.3 + rng.random((300, 3)) * 0.8, 0, 1)
    thresholds = tune_thresholds(targets, scores)
    for column in range(3):
        tuned = f1_score(targets[:, column], scores[:, column] >= thresholds[column])
        brute = max(f1_score(targets[:, column], scores[:, column] >= t) for t in np.unique(scores[:, column]))
        assert tuned == pytest.approx(brute, abs=1e-12)


def test_thresholds_tuned_for_an_fbeta_metric_maximize_each_class_fbeta():
    """Planet is scored by F2: its thresholds favour recall, so they sit below F1's."""
    from sklearn.metrics import fbeta_score

    from kagglecv.core.metrics import threshold_beta

    assert threshold_beta("fbeta:2:samples", "multilabel") == 2.0 and threshold_beta("f2_samples", "multilabel") == 2.0
    assert threshold_beta("map", "multilabel") == 1.0 and threshold_beta(None, "binary") == 1.0
    rng = np.random.default_rng(1)
    targets = (rng.random((400, 4)) < [0.1, 0.3, 0.5, 0.8]).astype(int)
    scores = np.clip(targets * 0.25 + rng.random((400, 4)) * 0.8, 0, 1)
    f2 = tune_thresholds(targets, scores, beta=2.0)
    for column in range(4):
        tuned = fbeta_score(targets[:, column], scores[:, column] >= f2[column], beta=2.0)
        brute = max(fbeta_score(targets[:, column], scores[:, column] >= t, beta=2.0)
                    for t in np.unique(scores[:, column]))
        assert tuned == pytest.approx(brute, abs=1e-12)
    assert (f2 <= tune_thresholds(targets, scores) + 1e-12).all() and (f2 < tune_thresholds(targets, scores)).any()


def broken_run(trained_runs, tmp_path, edit):
    run = tmp_path / "run"
    shutil.copytree(trained_runs[("multiclass", 1)].run_dir, run)
    frame = pd.read_csv(run / "test.csv", dtype={"id": str})
    edit(frame)
    frame.to_csv(run / "test.csv", index=False)
    return run


@pytest.mark.parametrize(("fault", "message"), [
    ("sample_id_missing_from_predictions", r"no prediction for 1 ids of .*sample_submission\.csv: 'ghost'"),
    ("prediction_id_not_in_sample", r"1 ids are not in .*sample_submission\.csv"),
    ("nan_prediction", r"test\.csv: 1 rows with NaN"),
    ("probability_above_one", r"values outside \[0, 1\]"),
    ("unknown_class_column", r"columns 'zebra' are not classes of the run"),
    ("index_column", r"an index column written by pandas"),
    ("duplicated_sample_id", r"ids appear more than once"),
])
def test_every_check_fires_and_nothing_is_written(trained_runs, tmp_path, fault, message):
    run = trained_runs[("multiclass", 1)].run_dir
    classes = list(pd.read_csv(run / "test.csv").columns[1:])
    sample, test = sample_for(run, tmp_path, classes, 0.5, shuffle=False)
    frame = pd.read_csv(sample, dtype={"id": str})
    if fault == "sample_id_missing_from_predictions":
        frame.loc[0, "id"] = "ghost"
    elif fault == "prediction_id_not_in_sample":
        frame = frame.iloc[1:]
    elif fault == "nan_prediction":
        run = broken_run(trained_runs, tmp_path, lambda f: f.__setitem__(classes[0], [np.nan] + [0.1] * (len(f) - 1)))
    elif fault == "probability_above_one":
        run = broken_run(trained_runs, tmp_path, lambda f: f.__setitem__(classes[0], [1.5] + [0.1] * (len(f) - 1)))
    elif fault == "unknown_class_column":
        frame = frame.rename(columns={classes[0]: "zebra"})
    elif fault == "index_column":
        frame.insert(0, "Unnamed: 0", range(len(frame)))
        frame = frame[["id", "Unnamed: 0", *classes]]
    elif fault == "duplicated_sample_id":
        frame.loc[1, "id"] = frame.loc[0, "id"]
    frame.to_csv(sample, index=False)
    with pytest.raises(DataError, match=message):
        write_submission(run, sample, "bad", out_dir=tmp_path / "subs")
    assert not (tmp_path / "subs").exists() or not list((tmp_path / "subs").iterdir())


def test_score_a_submission_against_a_solution(trained_runs, tmp_path):
    run = trained_runs[("multiclass", 1)].run_dir
    sample, test = sample_for(run, tmp_path, ["label"], "zero")
    result = write_submission(run, sample, "s", out_dir=tmp_path / "subs")
    submitted = pd.read_csv(result.path, dtype=str)
    truth = submitted.copy()
    truth.loc[: len(truth) // 2, "label"] = "nine"
    truth.to_csv(tmp_path / "solution.csv", index=False)
    expected = float((submitted["label"] == truth["label"]).mean())
    assert score_submission(result.path, tmp_path / "solution.csv", "accuracy") == pytest.approx(expected, abs=1e-12)
    truth.iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"ids differ .* 0 missing .* 1 extra"):
        score_submission(result.path, tmp_path / "short.csv", "accuracy")


def test_a_binary_probability_submission_is_scored_exactly_or_refused(tmp_path):
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    rng = np.random.default_rng(3)
    ids = [f"{i:04x}.jpg" for i in range(60)]
    truth = rng.integers(0, 2, 60)
    probability = np.clip(truth * 0.3 + rng.random(60) * 0.7, 0, 1)
    pd.DataFrame({"id": ids, "has_cactus": truth}).to_csv(tmp_path / "solution.csv", index=False)
    pd.DataFrame({"id": ids[::-1], "has_cactus": probability[::-1]}).to_csv(tmp_path / "sub.csv", index=False)
    for metric in ("roc_auc", "roc_auc_ovr"):
        got = score_submission(tmp_path / "sub.csv", tmp_path / "solution.csv", metric)
        assert got == pytest.approx(roc_auc_score(truth, probability), abs=1e-9)
    got = score_submission(tmp_path / "sub.csv", tmp_path / "solution.csv", "binary_log_loss")
    assert got == pytest.approx(log_loss(truth, probability), abs=1e-9)
    for metric in ("accuracy", "map", "qwk"):  # no exact number for these on probabilities: refused, never 0.0
        with pytest.raises(KagglecvError, match=f"--metric '{metric}': cannot score probabilities"):
            score_submission(tmp_path / "sub.csv", tmp_path / "solution.csv", metric)
    hard = (probability >= 0.5).astype(int)
    pd.DataFrame({"id": ids, "has_cactus": hard}).to_csv(tmp_path / "labels.csv", index=False)
    got = score_submission(tmp_path / "labels.csv", tmp_path / "solution.csv", "accuracy")
    assert got == pytest.approx(accuracy_score(truth, hard), abs=1e-12)
    pd.DataFrame({"id": ids, "has_cactus": probability + 1}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        score_submission(tmp_path / "bad.csv", tmp_path / "solution.csv", "roc_auc")


def test_oof_thresholds_follow_the_runs_fbeta_metric(trained_runs, tmp_path):
    """submit, pack and infer share decide_submission: with metric fbeta:2:samples they are F2's, not F1's."""
    import yaml

    from kagglecv.core.predictions import read_predictions
    from kagglecv.core.runs import RunDir
    from kagglecv.data.inputs import load_run_table
    from kagglecv.data.submission import decide_submission

    run = tmp_path / "run"
    shutil.copytree(trained_runs[("multilabel", 1)].run_dir, run)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["metric"] = "fbeta:2:samples"
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    classes = RunDir(run).read_info().classes
    data = load_run_table(RunDir(run))
    oof = read_predictions(RunDir(run).oof_path, classes).set_index("id").loc[list(data.ids), classes].to_numpy()
    expected = dict(zip(classes, tune_thresholds(data.targets, oof, beta=2.0)))
    tuned = decide_submission(RunDir(run), classes, "multilabel", threshold="oof").thresholds_for()
    assert tuned == pytest.approx(expected, abs=1e-12)
    f1 = dict(zip(classes, tune_thresholds(data.targets, oof)))
    assert any(abs(expected[name] - f1[name]) > 1e-9 for name in classes), "F2 and F1 thresholds must differ here"


def test_submit_takes_the_runs_own_threshold_as_run_and_infer_do(trained_runs, tmp_path):
    """A multi-label run whose config says ``submit.threshold: oof``: ``kagglecv submit`` without --threshold writes
    the labels ``run`` writes (it passes the config's threshold) and ``infer`` writes (it reads the config too)."""
    import yaml

    from kagglecv.core.console import Console
    from kagglecv.stages.infer import infer_test

    config = trained_runs[("multilabel", 1)]
    run = tmp_path / "runs" / "ml-oof"
    shutil.copytree(config.run_dir, run)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["submit"] = recorded.get("submit", {}) | {"threshold": "oof"}
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    sample, _ = sample_for(run, tmp_path, ["labels"], "one two", shuffle=False)
    submitted = write_submission(run, sample, "plain", out_dir=tmp_path / "subs")
    as_run = write_submission(run, sample, "as-run", threshold="oof", out_dir=tmp_path / "subs")
    at_half = write_submission(run, sample, "half", threshold="0.5", out_dir=tmp_path / "subs")
    inferred = tmp_path / "inferred.csv"
    infer_test(run, config.data.test_csv, config.data.test_image_dir, inferred, sample, console=Console(quiet=True))
    labels = [pd.read_csv(path, dtype=str, keep_default_na=False)["labels"].tolist()
              for path in (submitted.path, as_run.path, inferred, at_half.path)]
    assert labels[0] == labels[1] == labels[2]
    assert labels[0] != labels[3], "the tuned thresholds must change some labels here, or the test shows nothing"
