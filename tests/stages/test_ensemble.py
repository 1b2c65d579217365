import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kagglecv.core.blending import METHODS, hill_climb
from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import accuracy
from kagglecv.data.load import load_train
from kagglecv.stages.ensemble import make_ensemble


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_a_run_shaped_folder(trained_runs, tmp_path, task, method):
    runs = [trained_runs[(task, 1)].run_dir, trained_runs[(task, 2)].run_dir]
    options = {"user_weights": [0.3, 0.7]} if method == "weighted" else {}
    result = make_ensemble(runs, method, name=f"{task}-{method}", runs_dir=tmp_path, **options)
    folder = tmp_path / f"ens-{task}-{method}"
    member_oof = pd.read_csv(runs[0] / "oof.csv", dtype={"id": str})
    oof = pd.read_csv(folder / "oof.csv", dtype={"id": str})
    assert list(oof.columns) == list(member_oof.columns) and oof["id"].tolist() == member_oof["id"].tolist()
    assert (oof["fold"] == member_oof["fold"]).all()
    values = oof.iloc[:, 2:].to_numpy()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    test = pd.read_csv(folder / "test.csv", dtype={"id": str})
    assert test["id"].tolist() == pd.read_csv(runs[0] / "test.csv", dtype={"id": str})["id"].tolist()
    for name in ["weights.json", "score.json", "blend_score.json", "run.json", "config.yaml"]:
        assert (folder / name).is_file(), name
    assert json.loads((folder / "score.json").read_text())["overall"] == pytest.approx(result.nested)
    if method in ("mean", "weighted", "hill", "optimize"):
        weights = np.array(list(result.weights.values()), dtype=float)
        assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)


def test_an_ensemble_of_ensembles(trained_runs, tmp_path):
    runs = [trained_runs[("multiclass", 1)].run_dir, trained_runs[("multiclass", 2)].run_dir]
    first = make_ensemble(runs, "mean", name="a", runs_dir=tmp_path)
    second = make_ensemble([first.path, runs[0]], "hill", name="b", runs_dir=tmp_path)
    assert (second.path / "oof.csv").is_file() and np.isfinite(second.nested)


def test_hill_climb_never_below_the_best_single_and_weights_are_a_simplex():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    runs = []
    for noise in (0.5, 1.0, 1.5, 3.0):
        logits = rng.normal(0, noise, (300, 4)) + np.eye(4)[y]
        runs.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    runs = np.stack(runs)
    for init_top in (1, 2, 4):
        weights = hill_climb(runs, y, lambda blend: accuracy(y, blend), init_top=init_top, max_rounds=20)
        assert (weights >= 0).all() and weights.sum() == pytest.approx(1.0)
        if init_top == 1:
            assert accuracy(y, np.tensordot(weights, runs, axes=1)) >= max(accuracy(y, run) for run in runs)


def planted_runs(trained_runs, tmp_path):
    """Run A is perfect on fold 0 only, run B perfect everywhere but fold 0; elsewhere they are noise."""
    source = trained_runs[("multiclass", 1)]
    data = load_train(source.data)
    oof = pd.read_csv(source.run_dir / "oof.csv", dtype={"id": str})
    truth = np.eye(len(data.classes))[data.targets]
    noise = np.random.default_rng(1).dirichlet(np.ones(len(data.classes)), size=len(oof))
    in_fold0 = (oof["fold"] == 0).to_numpy()[:, None]
    folders = []
    for name, perfect_where in [("A", in_fold0), ("B", ~in_fold0)]:
        folder = tmp_path / name
        shutil.copytree(source.run_dir, folder)
        planted = oof.copy()
        planted[data.classes] = np.where(perfect_where, truth, noise)
        planted.to_csv(folder / "oof.csv", index=False)
        folders.append(folder)
    return folders, data, oof, noise


def test_nested_score_never_sees_the_held_out_fold(trained_runs, tmp_path):
    (run_a, run_b), data, oof, noise = planted_runs(trained_runs, tmp_path)
    result = make_ensemble([run_a, run_b], "hill", name="leak", runs_dir=tmp_path)
    fold0 = (oof["fold"] == 0).to_numpy()
    # Weights for fold 0 are fit on folds != 0, where only B is any good: fold 0 gets B's noise.
    assert result.nested_per_fold[0] == pytest.approx(accuracy(data.targets[fold0], noise[fold0]))
    assert result.in_sample > result.nested, "the in-sample blend is the optimistic one"


def test_different_folds_and_misaligned_ids_are_refused(trained_runs, tmp_path):
    good = trained_runs[("multiclass", 1)].run_dir
    other_folds = tmp_path / "other_folds"
    shutil.copytree(trained_runs[("multiclass", 2)].run_dir, other_folds)
    info = json.loads((other_folds / "run.json").read_text())
    (other_folds / "run.json").write_text(json.dumps(info | {"folds_sha256": "0" * 64}))
    with pytest.raises(KagglecvError, match=r"other_folds: made with other folds"):
        make_ensemble([good, other_folds], "mean", runs_dir=tmp_path)
    renamed = tmp_path / "renamed"
    shutil.copytree(trained_runs[("multiclass", 2)].run_dir, renamed)
    frame = pd.read_csv(renamed / "oof.csv", dtype={"id": str})
    first_id = frame.loc[0, "id"]
    frame.loc[0, "id"] = "not-an-id"
    frame.to_csv(renamed / "oof.csv", index=False)
    with pytest.raises(KagglecvError, match=rf"renamed/oof.csv: ids differ .*first mismatching id '{first_id}'"):
        make_ensemble([good, renamed], "mean", runs_dir=tmp_path)
    multilabel = trained_runs[("multilabel", 1)].run_dir
    with pytest.raises(KagglecvError, match="class order differs"):
        make_ensemble([good, multilabel], "mean", runs_dir=tmp_path)


def test_per_class_weights_for_multilabel(trained_runs, tmp_path):
    runs = [trained_runs[("multilabel", 1)].run_dir, trained_runs[("multilabel", 2)].run_dir]
    result = make_ensemble(runs, "hill", name="per-class", runs_dir=tmp_path, per_class=True)
    weights = json.loads((result.path / "weights.json").read_text())["weights"]
    classes = list(pd.read_csv(runs[0] / "oof.csv", nrows=0).columns[2:])
    assert set(weights) == {run.name for run in runs}
    for name in classes:
        per_class = [weights[run.name][name] for run in runs]
        assert min(per_class) >= 0 and sum(per_class) == pytest.approx(1.0)
    with pytest.raises(KagglecvError, match="--per-class applies to multi-label tasks only"):
        make_ensemble([trained_runs[("multiclass", 1)].run_dir, trained_runs[("multiclass", 2)].run_dir], "hill",
                      runs_dir=tmp_path, per_class=True)


def test_a_doubled_oof_id_is_refused_by_name(trained_runs, tmp_path):
    doubled = tmp_path / "doubled"
    shutil.copytree(trained_runs[("multiclass", 2)].run_dir, doubled)
    frame = pd.read_csv(doubled / "oof.csv", dtype={"id": str})
    frame.iloc[1, 0] = frame.iloc[0, 0]
    frame.to_csv(doubled / "oof.csv", index=False)
    with pytest.raises(KagglecvError, match=rf"doubled/oof.csv: ids differ .*1 doubled: '{frame.iloc[0, 0]}'"):
        make_ensemble([trained_runs[("multiclass", 1)].run_dir, doubled], "mean", runs_dir=tmp_path)


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_a_run_that_hurts_the_blend_has_a_negative_marginal_gain_whatever_the_metrics_direction(trained_runs,
                                                                                                 tmp_path, metric):
    """Two real runs and one confidently wrong (each row's likeliest class moved to the next): leaving the wrong
    one out scores better, so its gain is negative, for accuracy (higher is better) and log loss (lower) alike."""
    good = [trained_runs[("multiclass", seed)].run_dir for seed in (1, 2)]
    wrong = tmp_path / "wrong"
    shutil.copytree(good[0], wrong)
    for name in ("oof.csv", "test.csv"):
        frame = pd.read_csv(wrong / name, dtype={"id": str})
        columns = [column for column in frame.columns if column not in ("id", "fold")]
        likeliest = frame[columns].to_numpy().argmax(axis=1)
        confident = np.full((len(frame), len(columns)), 0.02 / (len(columns) - 1))
        confident[np.arange(len(frame)), (likeliest + 1) % len(columns)] = 0.98
        frame[columns] = confident
        frame.to_csv(wrong / name, index=False)
    result = make_ensemble([*good, wrong], "mean", name=f"gain-{metric}", runs_dir=tmp_path, metric=metric)
    assert result.marginal_gain["wrong"] < 0, result.marginal_gain
