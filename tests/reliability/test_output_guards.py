"""Outputs are complete or absent, have one writer at a time, survive a full disk, and a failed start leaves no trace."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kagglecv.core.errors import KagglecvError
from kagglecv.stages import ensemble as ensemble_module

from .test_hostile_inputs import _run, snapshot, world  # noqa: F401  (the module-scoped world fixture)


@pytest.fixture
def here(world, tmp_path):  # noqa: F811
    copy = tmp_path / "w"
    shutil.copytree(world, copy)
    return copy


@pytest.fixture
def full_disk(tmp_path):
    """A 512 KiB tmpfs, filled up by the test when it wants ENOSPC; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path) -> None:
    with open(mount / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the fcntl lock on ``path`` until it is killed."""
    code = ("import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); time.sleep(120)")
    process = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


# ----- a full disk --------------------------------------------------------------------------------------------------
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_partial_output(here, full_disk):
    (full_disk / "runs").mkdir()
    for run in ("base", "other"):
        (full_disk / "runs" / run).mkdir()
        for name in ("config.yaml", "run.json", "oof.csv", "test.csv"):
            shutil.copy(here / "runs" / run / name, full_disk / "runs" / run / name)
    fill(full_disk)
    before = snapshot(full_disk, ())
    commands = [
        (["submit", "runs/base", "--sample", "data/sample.csv", "--out-dir", str(full_disk / "subs")], "subs"),
        (["ensemble", str(full_disk / "runs/base"), str(full_disk / "runs/other"), "--name", "b"], "ens-b"),
        (["folds", "base.yaml", "--set", f"folds.file={full_disk / 'f.csv'}"], "f.csv"),
        (["train", "base.yaml", "--set", f"runs_dir={full_disk / 'runs'}", "--set", "experiment=big"], "runs/big"),
    ]
    for args, name in commands:
        code, output = _run(args, here)
        assert code == 2 and "the disk is full" in output and name in output, output
        assert "Traceback" not in output and output.count("error:") == 1, output
    leftovers = {p.relative_to(full_disk).as_posix() for p in full_disk.rglob("*") if p.is_file()} - set(before)
    assert not {p for p in leftovers if not p.endswith(".lock")}, f"partial outputs: {leftovers}"
    assert not list(full_disk.rglob("*.tmp")) and not list(full_disk.rglob("*.tmpdir"))


# ----- one writer per output ----------------------------------------------------------------------------------------
def test_a_second_folds_writer_is_refused_and_a_dead_writers_lock_is_ignored(here):
    holder = hold_lock(here / "folds" / ".new.csv.lock")
    try:
        code, output = _run(["folds", "base.yaml", "--set", "folds.file=folds/new.csv"], here)
        assert code == 2 and "being written by another kagglecv process" in output and "folds/new.csv" in output, output
        assert not (here / "folds" / "new.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    code, output = _run(["folds", "base.yaml", "--set", "folds.file=folds/new.csv"], here)
    assert code == 0 and (here / "folds" / "new.csv").is_file(), output


def test_a_fold_trained_by_another_process_is_refused(here):
    holder = hold_lock(here / "runs" / "fresh" / "fold0" / ".train.lock")
    try:
        code, output = _run(["train", "base.yaml", "--set", "experiment=fresh", "--fold", "0", "--resume"], here)
        assert code == 2 and "fold 0 of runs/fresh is being written by another" in output, output
        assert not (here / "runs" / "fresh" / "fold0" / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()


def test_two_folds_commands_at_once_leave_one_consistent_folds_file(here):
    def start(seed: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "kagglecv", "folds", "base.yaml", "--set", f"folds.seed={seed}",
                                 "--set", "folds.file=folds/race.csv"], cwd=here, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    processes = [start(1), start(2)]
    outputs = [process.communicate()[0] for process in processes]
    codes = [process.returncode for process in processes]
    assert sorted(codes) == [0, 2], outputs
    loser = outputs[codes.index(2)]
    assert "being written by another" in loser or "made with other settings" in loser, loser
    report = yaml.safe_load((here / "folds" / "race.json").read_text())
    assert report["seed"] == [1, 2][codes.index(0)], "the JSON describes the CSV that was written"
    from kagglecv.core.files import sha256_file

    assert report["folds_sha256"] == sha256_file(here / "folds" / "race.csv")


# ----- multi-file outputs complete or absent ------------------------------------------------------------------------
def test_an_ensemble_killed_while_writing_leaves_no_folder_and_keeps_the_previous_one(here, monkeypatch):
    code, output = _run(["ensemble", "runs/base", "runs/other", "--name", "pair", "--method", "mean"], here)
    assert code == 0, output
    previous = snapshot(here / "runs" / "ens-pair", ())

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # the job dies after oof.csv and test.csv, before run.json

    monkeypatch.chdir(here)  # the runs' configs name the data relative to the competition folder
    monkeypatch.setattr(ensemble_module, "_write_run_files", die)
    with pytest.raises(KeyboardInterrupt):
        ensemble_module.make_ensemble([here / "runs/base", here / "runs/other"], "hill", "pair")
    with pytest.raises(KeyboardInterrupt):
        ensemble_module.make_ensemble([here / "runs/base", here / "runs/other"], "hill", "fresh")
    assert snapshot(here / "runs" / "ens-pair", ()) == previous, "the earlier ensemble is untouched"
    assert not (here / "runs" / "ens-fresh").exists(), "a new ensemble is complete or absent"
    assert not [p for p in (here / "runs").iterdir() if p.name.startswith(".ens-") and p.is_dir()]
    monkeypatch.undo()
    code, output = _run(["ensemble", "runs/base", "runs/other", "--name", "pair", "--method", "hill"], here)
    assert code == 0, output
    assert yaml.safe_load((here / "runs/ens-pair/weights.json").read_text())["method"] == "hill", "replaced whole"
    code, output = _run(["report"], here)
    assert code == 0 and "ens-pair" in output, output


def test_an_ensemble_never_replaces_a_training_run(here, monkeypatch):
    monkeypatch.chdir(here)
    shutil.copytree(here / "runs" / "base", here / "runs" / "ens-taken")
    before = snapshot(here / "runs" / "ens-taken", ())
    with pytest.raises(KagglecvError, match="is a training run"):
        ensemble_module.make_ensemble([here / "runs/base", here / "runs/other"], "mean", "taken")
    assert snapshot(here / "runs" / "ens-taken", ()) == before


def test_a_killed_folds_writer_is_treated_as_absent(here):
    csv, report = here / "folds" / "digits.csv", here / "folds" / "digits.json"
    frame = pd.read_csv(csv, dtype=str)
    frame["fold"] = frame["fold"].map({"0": "1", "1": "0"})  # a CSV from a later writer killed before its JSON
    frame.to_csv(csv, index=False)
    code, output = _run(["folds", "base.yaml"], here)
    assert code == 0 and "wrote folds/digits.csv" in output, output
    from kagglecv.core.files import sha256_file

    assert yaml.safe_load(report.read_text())["folds_sha256"] == sha256_file(csv)


# ----- a failed start leaves nothing ---------------------------------------------------------------------------------
def test_a_start_that_fails_validation_leaves_no_run_identity(here):
    (here / "bad.safetensors").write_bytes(b"not weights")
    code, output = _run(["train", "base.yaml", "--set", "experiment=fresh", "--set", "model.pretrained=bad.safetensors"], here)
    assert code == 2 and "bad.safetensors" in output, output
    run = here / "runs" / "fresh"
    assert not (run / "config.yaml").exists() and not (run / "run.json").exists()
    code, output = _run(["train", "base.yaml", "--set", "experiment=fresh", "--fold", "0"], here)
    assert code == 0, output  # the corrected command needs no --force
    assert (run / "config.yaml").is_file() and (run / "run.json").is_file()


# ----- labels written two ways ---------------------------------------------------------------------------------------
def test_one_and_one_point_zero_are_one_class_with_a_warning(tmp_path, write_images):
    from kagglecv.core.config import DataConfig
    from kagglecv.data.load import load_train
    from kagglecv.data.table import DataWarning

    ids = [f"i{n}" for n in range(12)]
    labels = ["1", "1.0", "2", "2.0", "3", "3"] * 2
    pd.DataFrame({"id": ids, "label": labels}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.warns(DataWarning, match=r"'1\.0', '2\.0'"):
        data = load_train(DataConfig(train_csv=tmp_path / "train.csv"))
    assert data.classes == ["1", "2", "3"]
    assert data.targets.tolist() == [0, 0, 1, 1, 2, 2] * 2
