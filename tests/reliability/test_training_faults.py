"""Killed, interrupted, corrupted and crashing training jobs never cost the user their work."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import remove_stale_temporaries
from kagglecv.core.metrics import get_metric
from kagglecv.nn.images import ImageDataset
from kagglecv.nn.weights import load_torch
from kagglecv.stages.folds import make_folds
from kagglecv.stages.predict import predict_run
from kagglecv.stages.train import train_run
from kagglecv.training.selection import BestEpoch

from ..conftest import tiny_config

QUIET = Console(quiet=True)
ACCURACY = get_metric("accuracy", "multiclass")
REPO = Path(__file__).resolve().parents[2]


class Recorder(Console):
    def __init__(self):
        super().__init__(interactive=False)
        self.lines = []

    def line(self, text):
        self.lines.append(text)


def cli(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "kagglecv", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})


WRITER = """
import sys
from kagglecv.core.files import write_bytes_keep_previous
target, previous = sys.argv[1], sys.argv[2]
for round in range(1000):
    write_bytes_keep_previous(target, bytes([round % 256]) * 50_000_000, previous)
"""


def test_sigkill_during_a_checkpoint_write_leaves_whole_files(tmp_path):
    target, previous = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    target.write_bytes(b"\xff" * 50_000_000)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(previous)])
    time.sleep(1.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for path in (target, previous):
        if path.exists():
            data = path.read_bytes()
            assert len(data) == 50_000_000 and data == data[:1] * len(data), f"{path.name} is partial"
    assert target.exists() or previous.exists()
    remove_stale_temporaries(tmp_path)
    assert not list(tmp_path.glob(".*.tmp")), "a new start removes what the killed writer left"


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_state_exits_non_zero_and_resumes_exactly(tmp_path, digits_root):
    sections = {"train": {"epochs": 3, "mixup": 0.2, "batch_size": 8}, "augment": {"train": "medium"}}
    weights = {}
    for name in ("straight", "interrupted"):
        folder = tmp_path / name
        config = tiny_config(folder, digits_root, rows=400, **sections)
        (folder / "c.yaml").write_text(yaml.safe_dump(config))
        make_folds(validate_config(config))
        fold = folder / "runs" / "tiny-multiclass" / "fold0"
        process = cli(["train", "c.yaml", "--fold", "0"], folder)
        if name == "interrupted":
            while not (fold / "history.csv").is_file():
                time.sleep(0.01)
            time.sleep(0.3)  # into the second epoch
            process.send_signal(signal.SIGTERM)
            output = process.communicate()[0]
            assert process.returncode == 128 + signal.SIGTERM, output
            assert "stopped by SIGTERM; saved epoch 2 step" in output  # 1-based: the second
            assert load_torch(fold / "last.pt")["step_in_epoch"] > 0, "the state of the middle of the epoch"
            process = cli(["train", "c.yaml", "--fold", "0", "--resume"], folder)
        output = process.communicate()[0]
        assert process.returncode == 0, output
        weights[name] = load_torch(fold / "last.pt")["model"]
    for key, value in weights["straight"].items():
        assert torch.equal(value, weights["interrupted"][key]), key


def test_resume_skips_finished_folds_without_rewriting_them(tmp_path, digits_root):
    raw = tiny_config(tmp_path, digits_root, rows=60)
    raw["folds"]["n_splits"] = 3
    config = validate_config(raw)
    make_folds(config)
    train_run(config, [0, 1], console=QUIET)
    run = tmp_path / "runs" / "tiny-multiclass"
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in run.glob("fold[01]/*")}
    outcomes = train_run(config, resume=True, console=QUIET)
    assert [o.skipped for o in outcomes] == [True, True, False]
    assert before == {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in run.glob("fold[01]/*")}
    assert (run / "oof.csv").is_file()


def test_a_corrupted_last_checkpoint_falls_back_to_the_previous_one(tmp_path, digits_root):
    config = validate_config(tiny_config(tmp_path, digits_root, train={"epochs": 2}))
    make_folds(config)
    train_run(config, [0], console=QUIET)
    fold = tmp_path / "runs" / "tiny-multiclass" / "fold0"
    (fold / "done.json").unlink()
    (fold / "last.pt").write_bytes(b"not a checkpoint")
    recorder = Recorder()
    longer = validate_config(tiny_config(tmp_path, digits_root, train={"epochs": 3}))
    train_run(longer, [0], resume=True, force=True, console=recorder)
    assert any("last.pt is unreadable" in line and "resuming from" in line and "last.prev.pt" in line
               for line in recorder.lines), recorder.lines
    assert any("resumed at the end of epoch 1" in line for line in recorder.lines)
    assert len(pd.read_csv(fold / "history.csv")) == 3
    (fold / "done.json").unlink()
    (fold / "last.pt").write_bytes(b"broken")
    (fold / "last.prev.pt").unlink()
    with pytest.raises(KagglecvError, match=r"fold 0: cannot resume: .*last\.pt: refused to load"):
        train_run(longer, [0], resume=True, force=True, console=QUIET)


def test_a_checkpoint_without_a_part_the_run_needs_is_one_clear_error(tmp_path, digits_root):
    """A last.pt of another schedule, or a plateau one without its counters (an older kagglecv's), cannot resume a
    plateau run exactly: one line naming the part and the file, not a KeyError."""
    config = validate_config(tiny_config(tmp_path, digits_root, train={"epochs": 2, "sched": "cosine"}))
    make_folds(config)
    train_run(config, [0], console=QUIET)
    fold = tmp_path / "runs" / "tiny-multiclass" / "fold0"
    (fold / "done.json").unlink()
    plateau = validate_config(tiny_config(tmp_path, digits_root, train={"epochs": 3, "sched": "plateau"}))
    with pytest.raises(KagglecvError, match=r"fold 0: cannot resume: the 'scheduler' state in .*last\.pt does not "
                                            r"fit this run \(KeyError: 'best'\); delete"):
        train_run(plateau, [0], resume=True, force=True, console=QUIET)
    state = load_torch(fold / "last.pt")
    state["scheduler"] = {"best": 0.5, "last_epoch": 2}  # a plateau scheduler's part, without the counters
    torch.save(state, fold / "last.pt")
    with pytest.raises(KagglecvError, match=r"fold 0: cannot resume: .*last\.pt holds no 'plateau' state"):
        train_run(plateau, [0], resume=True, force=True, console=QUIET)


def test_resuming_with_another_config_shows_the_difference(tmp_path, digits_root):
    config = validate_config(tiny_config(tmp_path, digits_root))
    make_folds(config)
    train_run(config, [0], console=QUIET)
    changed = validate_config(tiny_config(tmp_path, digits_root, train={"lr": 0.1}))
    with pytest.raises(KagglecvError, match=r"was started with another config: train\.lr: 0\.003 -> 0\.1; .*--force"):
        train_run(changed, [1], console=QUIET)
    neutral = validate_config(tiny_config(tmp_path, digits_root, train={"num_workers": 1}))
    train_run(neutral, [1], console=QUIET)  # workers change speed, not results: no error


def test_nan_never_counts_as_the_best_epoch():
    from kagglecv.training.selection import BestTracker

    best = BestTracker()
    best.load_state_dict({"raw": 0.5, "ema": -np.inf, "overall": 0.5, "epoch": 0, "source": "raw", "stale": 0})
    kept = BestEpoch(get_metric("accuracy", "multiclass")).keep(best, "raw", 3, float("nan"))  # the trainer saves only what is kept
    assert not kept and best.score == 0.5 and best.epoch == 0


def test_a_dying_data_worker_is_a_clear_error_with_no_orphans(tmp_path, digits_root, monkeypatch):
    def die_in_worker(self, key):
        if torch.utils.data.get_worker_info() is not None:
            os._exit(3)

    config = validate_config(tiny_config(tmp_path, digits_root, train={"num_workers": 1}))
    make_folds(config)
    monkeypatch.setattr(ImageDataset, "__getitem__", die_in_worker)
    started = time.time()
    with pytest.raises(KagglecvError, match="fold 0: a data-loading worker died"):
        train_run(config, [0], console=QUIET)
    assert time.time() - started < 120, "no hang"
    deadline = time.time() + 10
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children(), "no orphan worker processes"


@pytest.mark.slow
def test_one_ddp_rank_dying_stops_every_rank(tmp_path, digits_root):
    config = tiny_config(tmp_path, digits_root, rows=48)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    make_folds(validate_config(config))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29541", "-m", "tests.reliability.ddp_fault_entry", "train", "c.yaml",
                             "--fold", "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert time.time() - started < 180
    assert not (tmp_path / "runs" / "tiny-multiclass" / "fold0" / "done.json").exists()


def test_predict_refuses_a_run_whose_folds_are_still_training(tmp_path, digits_root):
    config = validate_config(tiny_config(tmp_path, digits_root))
    make_folds(config)
    train_run(config, [0], console=QUIET)
    with pytest.raises(KagglecvError, match=r"folds \[1\] are not trained yet"):
        predict_run(config.run_dir, console=QUIET)
