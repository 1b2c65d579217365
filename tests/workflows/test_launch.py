"""kagglecv launch on a local process pool and on a real local Ray cluster: the same OOF files as sequential
training, a killed job retried and resumed, Ctrl-C stopping every job cleanly."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import tiny_config

THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def two_experiments(tmp_path, digits_root, epochs=1):
    """Two tiny experiments (different seeds) sharing a 3-fold folds file, as YAML files in ``tmp_path``."""
    paths = []
    for seed in (1, 2):
        raw = tiny_config(tmp_path, digits_root, rows=60, folds={"n_splits": 3},
                          train={"seed": seed, "epochs": epochs, "num_workers": 0})
        raw["experiment"] = f"launch-s{seed}"
        path = tmp_path / f"s{seed}.yaml"
        path.write_text(yaml.safe_dump(raw))
        paths.append(path)
    return paths


def kagglecv(*args, cwd, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "kagglecv", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **THREADS, **(env or {})})


def sequential_oof(tmp_path, digits_root, name, epochs=1):
    """The OOF file of ``name`` made by plain `kagglecv folds` + `kagglecv train`, one fold after another, in a
    fresh folder."""
    reference = tmp_path / f"reference-{epochs}"
    paths = two_experiments(reference, digits_root, epochs=epochs)
    path = next(p for p in paths if yaml.safe_load(p.read_text())["experiment"] == name)
    for command in ("folds", "train"):
        result = kagglecv(command, path, cwd=reference)
        assert result.returncode == 0, result.stdout + result.stderr
    return pd.read_csv(reference / "runs" / name / "oof.csv", dtype={"id": str})


def assert_same_oof(run_dir, expected):
    got = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    assert list(got["id"]) == list(expected["id"]) and list(got["fold"]) == list(expected["fold"])
    np.testing.assert_allclose(got.iloc[:, 2:].to_numpy(), expected.iloc[:, 2:].to_numpy(), atol=1e-6)


@pytest.mark.slow
def test_local_launch_of_two_experiments_equals_sequential_training(tmp_path, digits_root):
    paths = two_experiments(tmp_path / "w", digits_root)
    result = kagglecv("launch", *paths, "--jobs", "2", "--cpus-per-job", "1", cwd=tmp_path / "w")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for name in ("launch-s1", "launch-s2"):
        for fold in range(3):
            assert f"{name}/fold{fold}: done" in out
            assert (tmp_path / "w" / "runs" / name / f"fold{fold}" / "launch.log").is_file()
        assert f"{name}: CV " in out
        assert (tmp_path / "w" / "runs" / name / "score.json").is_file()
    starts = [os.path.getmtime(tmp_path / "w" / "runs" / name / f"fold{fold}" / "launch.log")
              for name in ("launch-s1", "launch-s2") for fold in range(3)]
    assert len(starts) == 6
    for name in ("launch-s1", "launch-s2"):
        assert_same_oof(tmp_path / "w" / "runs" / name, sequential_oof(tmp_path, digits_root, name))
    logs = {path: path.read_bytes() for path in (tmp_path / "w" / "runs").glob("*/fold*/launch.log")}
    again = kagglecv("launch", *paths, "--jobs", "2", cwd=tmp_path / "w")
    assert again.returncode == 0 and "launch-s2: CV" in again.stdout
    assert {path: path.read_bytes() for path in logs} == logs  # finished folds are not run again


@pytest.mark.slow
def test_ctrl_c_stops_every_job_with_its_state_saved_and_a_second_launch_resumes(tmp_path, digits_root):
    paths = two_experiments(tmp_path, digits_root, epochs=300)  # minutes of work: stopped after two epochs
    process = subprocess.Popen([sys.executable, "-m", "kagglecv", "launch", str(paths[0]), "--jobs", "2"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **THREADS}, start_new_session=True,
                               # as from a terminal: an earlier test may leave SIGINT ignored, which a child inherits
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    histories = [tmp_path / "runs" / "launch-s1" / f"fold{fold}" / "history.csv" for fold in (0, 1)]
    deadline = time.time() + 300
    while not all(path.is_file() and len(path.read_text().splitlines()) >= 3 for path in histories):
        assert time.time() < deadline and process.poll() is None, process.communicate()[0]
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground group
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0, output
    assert "Traceback" not in output, output
    running = [fold for fold in range(2) if (tmp_path / "runs" / "launch-s1" / f"fold{fold}" / "last.pt").is_file()]
    assert running == [0, 1], output  # both running jobs saved their state
    assert not (tmp_path / "runs" / "launch-s1" / "fold0" / "done.json").is_file()
    assert "stopped" in output
    assert "stopped by SIGTERM" in (tmp_path / "runs" / "launch-s1" / "fold0" / "launch.log").read_text()


@pytest.fixture
def ray_available():
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[dev,ray]'")


@pytest.mark.slow
def test_ray_launch_on_a_local_cluster_retries_a_killed_job_and_resumes(tmp_path, digits_root, ray_available):
    paths = two_experiments(tmp_path / "w", digits_root, epochs=6)
    process = subprocess.Popen([sys.executable, "-m", "kagglecv", "launch", *map(str, paths), "--backend", "ray",
                                "--jobs", "2", "--cpus-per-job", "1"], cwd=tmp_path / "w", stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, **THREADS})
    victim = tmp_path / "w" / "runs" / "launch-s1" / "fold0"
    deadline = time.time() + 300
    while not ((victim / "history.csv").is_file() and len((victim / "history.csv").read_text().splitlines()) >= 3):
        assert time.time() < deadline and process.poll() is None, process.stdout.read() if process.poll() is not None else "timeout"
        time.sleep(0.3)
    killed = subprocess.run(["pkill", "-KILL", "-f", "s1.yaml --fold 0 --resume"], capture_output=True)
    assert killed.returncode == 0
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    log = (victim / "launch.log").read_text()
    assert "resumed" in log.lower() or "resum" in log.lower(), log
    for name in ("launch-s1", "launch-s2"):
        assert_same_oof(tmp_path / "w" / "runs" / name, sequential_oof(tmp_path, digits_root, name, 6))


def test_a_ray_task_that_cannot_see_the_run_folder_is_a_clear_error(tmp_path):
    from kagglecv.workflows.jobs import JobRefused, ray_job

    with pytest.raises(JobRefused, match="cannot see .*runs/ must be on storage every node"):
        ray_job(["true"], str(tmp_path), str(tmp_path / "log"), str(tmp_path / "elsewhere" / ".kagglecv-launch"), {})
