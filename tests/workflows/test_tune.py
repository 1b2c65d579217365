"""kagglecv tune with the real Optuna: trials are ordinary runs, a bad trial is pruned, a killed study resumes
(the trial it was running is queued again and resumes its run folder), and the best config is ready to train."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_config

pytest.importorskip("optuna", reason="Optuna is an optional extra: pip install -e '.[dev,tune]'")

SPACE = {"train.lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
         "augment.train": {"type": "categorical", "choices": ["none", "light"]}}


def setup(tmp_path, digits_root, epochs=4):
    raw = tiny_config(tmp_path, digits_root, rows=64, train={"epochs": epochs, "num_workers": 0})
    raw["experiment"] = "tiny"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    return ["tune", "base.yaml", "--space", "space.yaml", "--folds", "0"]


def kagglecv(args, cwd, timeout=900):
    return subprocess.run([sys.executable, "-m", "kagglecv", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def trials_of(tmp_path):
    return pd.read_csv(tmp_path / "runs" / "tune-tiny" / "trials.csv", keep_default_na=False)


@pytest.mark.slow
def test_tune_runs_trials_as_runs_prunes_and_writes_the_best_config(tmp_path, digits_root):
    import optuna

    args = setup(tmp_path, digits_root)
    storage = f"sqlite:///{tmp_path / 'runs/tune-tiny/study.db'}"
    (tmp_path / "runs" / "tune-tiny").mkdir(parents=True)
    planted = optuna.create_study(study_name="tune-tiny", storage=storage, direction="maximize")
    for lr, augment in ((3e-3, "light"), (3e-3, "none"), (1e-6, "none")):  # the third cannot learn: pruned
        planted.enqueue_trial({"train.lr": lr, "augment.train": augment})
    result = kagglecv([*args, "--trials", "4"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = trials_of(tmp_path)
    assert len(trials) == 4 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert trials["state"][2] == "PRUNED", trials
    study = optuna.load_study(study_name="tune-tiny", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    for trial in study.trials:
        experiment = trial.user_attrs["experiment"]
        fold0 = tmp_path / "runs" / experiment / "fold0"
        config = yaml.safe_load((tmp_path / "runs" / experiment / "config.yaml").read_text())
        assert config["train"]["lr"] == pytest.approx(trial.params["train.lr"])
        assert config["augment"]["train"] == trial.params["augment.train"]
        history = pd.read_csv(fold0 / "history.csv")
        assert sorted(trial.intermediate_values) == list(history["epoch"])[:len(trial.intermediate_values)]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            oof = pd.read_csv(fold0 / "oof.csv", dtype={"id": str})
            truth = pd.read_csv(tmp_path / "train.csv", dtype=str).set_index("id").loc[oof["id"], "label"]
            accuracy = (oof.iloc[:, 2:].idxmax(axis=1).to_numpy() == truth.to_numpy()).mean()
            assert trial.value == pytest.approx(accuracy, abs=1e-12)
    from kagglecv.stages.report import build_report

    report = build_report(tmp_path / "runs", pictures=False, submissions_dir=tmp_path / "subs")
    shown = {entry.name: entry for entry in report.leaderboard}
    for trial in study.trials:  # every finished trial is in the report, scored on the fold it trained
        if trial.state == optuna.trial.TrialState.COMPLETE:
            entry = shown[trial.user_attrs["experiment"]]
            assert entry.kind == "partial: 1 of 2 folds" and entry.score.overall == pytest.approx(trial.value, abs=1e-12)
    assert "tune-tiny: " in report.markdown.read_text()  # the journal's motivation names the trial's values
    best = yaml.safe_load((tmp_path / "runs" / "tune-tiny" / "best.yaml").read_text())
    assert best["experiment"] == "tiny-best"
    assert best["train"]["lr"] == pytest.approx(study.best_params["train.lr"])
    assert f"--set train.lr={study.best_params['train.lr']}"[:20] in result.stdout


@pytest.mark.slow
def test_a_killed_tune_resumes_the_trial_it_was_running(tmp_path, digits_root):
    args = setup(tmp_path, digits_root, epochs=30)
    process = subprocess.Popen([sys.executable, "-m", "kagglecv", *args, "--trials", "3", "--pruner", "none"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    runs = tmp_path / "runs"
    deadline = time.time() + 300
    while time.time() < deadline:
        histories = list(runs.glob("tiny-*/fold0/history.csv"))
        if histories and len(histories[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)  # the tune process dies at once; its job gets SIGTERM and saves its state
    process.wait()
    job = f"experiment={histories[0].parent.parent.name}"
    while subprocess.run(["pgrep", "-f", job], capture_output=True).returncode == 0:
        assert time.time() < deadline, "the training job outlived the tune process"
        time.sleep(0.2)
    first = histories[0].parent
    assert not (first / "done.json").is_file()
    result = kagglecv([*args, "--trials", "3", "--pruner", "none"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = trials_of(tmp_path)
    assert list(trials["state"]).count("FAIL") == 1 and list(trials["state"]).count("COMPLETE") == 3
    failed = trials[trials["state"] == "FAIL"].iloc[0]
    retried = trials[(trials["state"] == "COMPLETE") & (trials["experiment"] == failed["experiment"])]
    assert len(retried) == 1 and failed["experiment"] == first.parent.name  # same parameters, same run folder
    assert "resumed at" in (first / "launch.log").read_text()
    assert (first / "done.json").is_file()


@pytest.mark.slow
def test_tune_on_ray_trains_its_trials_as_ray_tasks(tmp_path, digits_root):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[dev,ray]'")
    args = setup(tmp_path, digits_root, epochs=2)
    result = kagglecv([*args, "--trials", "2", "--backend", "ray", "--pruner", "none"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = trials_of(tmp_path)
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    for experiment in trials["experiment"]:
        assert (tmp_path / "runs" / experiment / "fold0" / "done.json").is_file()
        assert "best accuracy" in (tmp_path / "runs" / experiment / "fold0" / "launch.log").read_text()
    assert (tmp_path / "runs" / ".kagglecv-launch").is_file()  # the shared-storage check ran on the Ray side
