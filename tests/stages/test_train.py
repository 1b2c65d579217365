import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.core.predictions import merge_oof
from kagglecv.data.load import load_train
from kagglecv.nn.models import create_model
from kagglecv.nn.runtime import CudaDevice, autocast_dtype
from kagglecv.nn.weights import load_state_dict, load_torch, save_weights
from kagglecv.stages.folds import make_folds
from kagglecv.stages.train import train_run
from kagglecv.training.trainer import FoldTrainer
from tests.conftest import tiny_config

QUIET = Console(quiet=True)


def prepared(tmp_path, digits_root, task="multiclass", **sections):
    config = validate_config(tiny_config(tmp_path, digits_root, task, **sections))
    make_folds(config)
    return config


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "binary"])
def test_each_task_trains_and_leaves_fold_outputs_and_merged_predictions(tmp_path, digits_root, task):
    config = prepared(tmp_path, digits_root, task)
    outcomes = train_run(config, console=QUIET)
    data = load_train(config.data)
    run = tmp_path / "runs" / f"tiny-{task}"
    assert [o.fold for o in outcomes] == [0, 1]
    for fold in range(2):
        folder = run / f"fold{fold}"
        for name in ["best.safetensors", "last.pt", "history.csv", "curves.png", "oof.csv", "test.csv", "done.json"]:
            assert (folder / name).is_file(), name
        assert len(pd.read_csv(folder / "history.csv")) == 1
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert oof["id"].tolist() == list(data.ids), "every train id exactly once, in table order"
    assert list(oof.columns) == ["id", "fold", *data.classes]
    probabilities = oof[data.classes].to_numpy()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    if task != "multilabel":
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    folds = pd.read_csv(config.folds.file, dtype={"id": str})
    assert (oof["fold"].to_numpy() == folds["fold"].to_numpy()).all()
    test = pd.read_csv(run / "test.csv", dtype={"id": str})
    fold_tests = [pd.read_csv(run / f"fold{k}" / "test.csv", dtype={"id": str}) for k in range(2)]
    np.testing.assert_allclose(test[data.classes].to_numpy(),
                               (fold_tests[0][data.classes].to_numpy() + fold_tests[1][data.classes].to_numpy()) / 2,
                               atol=2e-7)
    again = train_run(config, console=QUIET)
    assert all(o.skipped for o in again), "done folds are skipped"


def test_oof_merge_rejects_a_missing_or_doubled_id(tmp_path):
    classes = ["a", "b"]
    pd.DataFrame({"id": ["1", "2"], "fold": 0, "a": 0.5, "b": 0.5}).to_csv(tmp_path / "f0.csv", index=False)
    pd.DataFrame({"id": ["3"], "fold": 1, "a": 0.5, "b": 0.5}).to_csv(tmp_path / "f1.csv", index=False)
    ids = np.array(["1", "2", "3", "4"], dtype=object)
    with pytest.raises(DataError, match=r"1 ids missing \('4'\)"):
        merge_oof([tmp_path / "f0.csv", tmp_path / "f1.csv"], ids, classes)
    pd.DataFrame({"id": ["3", "2"], "fold": 1, "a": 0.5, "b": 0.5}).to_csv(tmp_path / "f1.csv", index=False)
    with pytest.raises(DataError, match=r"1 ids more than once: '2'"):
        merge_oof([tmp_path / "f0.csv", tmp_path / "f1.csv"], ids[:3], classes)


def test_pretrained_file_loads_with_a_resized_head(tmp_path, digits_root):
    donor = create_model(validate_config(tiny_config(tmp_path, digits_root)).model, 7)
    save_weights(tmp_path / "donor.safetensors", donor.state_dict())
    torch.save(donor.state_dict(), tmp_path / "donor.pth")
    for name in ["donor.safetensors", "donor.pth"]:
        config = validate_config(tiny_config(tmp_path, digits_root, model={"pretrained": str(tmp_path / name)}))
        model = create_model(config.model, 10)
        state, reference = model.state_dict(), donor.state_dict()
        assert state["fc.weight"].shape == (10, reference["fc.weight"].shape[1])
        for key, value in reference.items():
            if not key.startswith("fc."):
                assert torch.equal(state[key], value), key


def test_a_kagglecv_checkpoint_is_a_pretrained_file_for_another_task(tmp_path, digits_root):
    config = prepared(tmp_path, digits_root, "multiclass")
    train_run(config, [0], console=QUIET)
    checkpoint = tmp_path / "runs" / "tiny-multiclass" / "fold0" / "best.safetensors"
    mosaic = validate_config(tiny_config(tmp_path, digits_root, "multilabel", model={"pretrained": str(checkpoint)}))
    model = create_model(mosaic.model, 10)
    assert torch.equal(model.state_dict()["conv1.0.weight"], load_state_dict(checkpoint)["conv1.0.weight"])


def test_pickled_code_is_refused_as_weights(tmp_path, digits_root):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"fc.weight": Evil()}, tmp_path / "evil.pth")
    config = validate_config(tiny_config(tmp_path, digits_root, model={"pretrained": str(tmp_path / "evil.pth")}))
    with pytest.raises(KagglecvError, match=r"evil\.pth: refused to load: not a weights-only PyTorch file"):
        create_model(config.model, 10)


def test_freezing_the_backbone_really_freezes_it_until_unfreeze(tmp_path, digits_root):
    donor = create_model(validate_config(tiny_config(tmp_path, digits_root)).model, 10)
    save_weights(tmp_path / "init.safetensors", donor.state_dict())
    model = {"pretrained": str(tmp_path / "init.safetensors"), "freeze": "backbone"}
    config = prepared(tmp_path, digits_root, model=model)
    train_run(config, [0], console=QUIET)
    trained = load_torch(tmp_path / "runs" / "tiny-multiclass" / "fold0" / "last.pt")["model"]
    initial = donor.state_dict()
    for key, value in initial.items():
        if key.startswith("fc."):
            assert not torch.equal(trained[key], value), f"{key} should train"
        else:
            assert torch.equal(trained[key], value), f"{key} changed although frozen"
    config = prepared(tmp_path / "later", digits_root, model=model | {"unfreeze_epoch": 1}, train={"epochs": 2})
    train_run(config, [0], console=QUIET)
    trained = load_torch(tmp_path / "later" / "runs" / "tiny-multiclass" / "fold0" / "last.pt")["model"]
    assert not torch.equal(trained["conv1.0.weight"], initial["conv1.0.weight"]), "unfrozen at epoch 1"


def test_ema_weights_are_kept_and_differ_from_raw(tmp_path, digits_root):
    config = prepared(tmp_path, digits_root, train={"ema": True, "ema_decay": 0.9})
    train_run(config, [0], console=QUIET)
    folder = tmp_path / "runs" / "tiny-multiclass" / "fold0"
    raw, ema = load_state_dict(folder / "best.safetensors"), load_state_dict(folder / "ema.safetensors")
    assert raw.keys() == ema.keys()
    assert not torch.equal(raw["conv1.0.weight"], ema["conv1.0.weight"])
    history = pd.read_csv(folder / "history.csv")
    assert {"ema_val_loss", "ema_val_accuracy"} <= set(history.columns)


def run_cli(args, cwd, **kwargs):
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "kagglecv", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.slow
def test_a_killed_and_resumed_fold_ends_with_the_same_weights(tmp_path, digits_root):
    sections = {"train": {"epochs": 4, "mixup": 0.2, "ema": True, "lookahead_every": 3, "avg_weights": "last",
                          "avg_count": 2, "size_schedule": {0: 12, 2: 16}},
                "augment": {"train": "medium", "batch": "flip", "alternate_flip": True}}
    results = {}
    for name in ["straight", "killed"]:
        folder = tmp_path / name
        folder.mkdir()
        config = tiny_config(folder, digits_root, rows=200, **sections)
        (folder / "c.yaml").write_text(yaml.safe_dump(config))
        make_folds(validate_config(config))
        history = folder / "runs" / "tiny-multiclass" / "fold0" / "history.csv"
        process = run_cli(["train", "c.yaml", "--fold", "0"], folder)
        if name == "killed":
            deadline = time.time() + 120
            while not (history.is_file() and len(history.read_text().splitlines()) >= 3) and time.time() < deadline:
                time.sleep(0.02)  # two epochs done: kill during the third
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert not (history.parent / "done.json").exists(), "the kill must land before the fold finished"
            refused = run_cli(["train", "c.yaml", "--fold", "0"], folder)
            assert refused.wait() == 2 and "--resume" in refused.stdout.read()
            process = run_cli(["train", "c.yaml", "--fold", "0", "--resume"], folder)
        output = process.communicate()[0]
        assert process.returncode == 0, output
        results[name] = load_torch(history.parent / "last.pt")
    assert "resumed at the end of epoch" in output
    straight, resumed = results["straight"], results["killed"]
    assert straight["epoch"] == resumed["epoch"] == 4
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for key, value in straight["ema"].items():
        assert torch.equal(value, resumed["ema"][key]), key
    assert straight["history"][-1]["val_loss"] == resumed["history"][-1]["val_loss"]
    assert straight["averager"] == resumed["averager"]  # the averaged epochs, and their weights
    assert straight["history"][-1]["avg_val_loss"] == resumed["history"][-1]["avg_val_loss"]
    assert [row["train_size"] for row in resumed["history"]] == [12, 12, 16, 16]


class KilledAfterTheCheckpoint(BaseException):
    """What a kill between two epochs leaves: the epoch's last.pt written, the fold not done."""


def test_a_resumed_plateau_schedule_lowers_the_rate_at_the_same_epoch(tmp_path, digits_root, monkeypatch):
    """timm's plateau scheduler saves only its best score; the epochs without improvement must survive a resume."""
    # A frozen backbone and a tiny rate: the score never improves after epoch 1, so with patience 1 the rate
    # drops at the end of epoch 3, and epoch 4 trains at a tenth of it.
    sections = {"model": {"freeze": "backbone"},
                "train": {"epochs": 4, "sched": "plateau", "patience_epochs": 1, "lr": 1e-6, "min_lr": 0.0,
                          "weight_decay": 0.0}}
    rates = {}
    for name in ["straight", "killed"]:
        config = prepared(tmp_path / name, digits_root, **sections)
        if name == "killed":
            save_last = FoldTrainer._save_last

            def killed_after_epoch_2(trainer):
                save_last(trainer)
                if trainer.epoch == 2:
                    raise KilledAfterTheCheckpoint

            with monkeypatch.context() as patched:
                patched.setattr(FoldTrainer, "_save_last", killed_after_epoch_2)
                with pytest.raises(KilledAfterTheCheckpoint):
                    train_run(config, [0], console=QUIET)
            train_run(config, [0], resume=True, console=QUIET)
        else:
            train_run(config, [0], console=QUIET)
        history = pd.read_csv(tmp_path / name / "runs" / "tiny-multiclass" / "fold0" / "history.csv")
        rates[name] = history["lr"].tolist()
    assert rates["straight"] == pytest.approx([1e-6, 1e-6, 1e-6, 1e-7], rel=1e-6, abs=0)
    assert rates["killed"] == pytest.approx(rates["straight"], rel=1e-6, abs=0)


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes(tmp_path, digits_root):
    config = tiny_config(tmp_path, digits_root, rows=48)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    make_folds(validate_config(config))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                             "-m", "kagglecv", "train", "c.yaml", "--fold", "0"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("fold 0: best") == 1, "only rank 0 reports"
    folder = tmp_path / "runs" / "tiny-multiclass" / "fold0"
    oof = pd.read_csv(folder / "oof.csv", dtype={"id": str})
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(folds.loc[folds["fold"] == 0, "id"]), "each held-out row scored exactly once"
    test = pd.read_csv(folder / "test.csv", dtype={"id": str})
    assert test["id"].tolist() == pd.read_csv(tmp_path / "test.csv", dtype=str)["id"].tolist()


@pytest.mark.parametrize("options", [
    {"model": {"head": {"hidden": [16], "dropout": 0.1}}},
    {"model": {"freeze": 1, "drop_rate": 0.2}},
    {"model": {"layer_decay": 0.7}},
    {"model": {"in_chans": 1}, "augment": {"train": "medium"}},
    {"train": {"loss": "focal"}, "task": "multilabel"},
    {"train": {"loss": "asl"}, "task": "multilabel"},
    {"train": {"mixup": 0.4, "cutmix": 1.0}, "task": "multilabel"},
    {"train": {"mixup": 0.4, "label_smoothing": 0.1}},
    {"train": {"sampler": "balanced", "class_weights": True}},
    {"train": {"class_weights": True}, "task": "binary"},
    {"train": {"accum_steps": 2, "clip_grad": 1.0, "channels_last": True, "opt": "sgd"}},
    {"train": {"sched": "step", "decay_epochs": 1, "warmup_epochs": 1, "epochs": 2}},
    {"train": {"sched": "plateau", "epochs": 2}},
    {"train": {"sched": "multistep", "decay_milestones": [1], "epochs": 2, "metric": "loss"}},
    {"train": {"metric": "log_loss"}},
    {"augment": {"train": "heavy", "eval": [{"__class_fullname__": "HorizontalFlip", "p": 1.0}]}},
])
def test_training_options_run_and_record_a_finite_score(tmp_path, digits_root, options):
    options = dict(options)
    task = options.pop("task", "multiclass")
    config = prepared(tmp_path, digits_root, task, **options)
    outcome = train_run(config, [0], console=QUIET)[0]
    assert np.isfinite(outcome.best_score)
    history = pd.read_csv(tmp_path / "runs" / f"tiny-{task}" / "fold0" / "history.csv")
    assert len(history) == config.train.epochs and np.isfinite(history["train_loss"]).all()


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, digits_root):
    # A frozen backbone (BatchNorm statistics included) and a vanishing lr: accuracy cannot improve after epoch 0.
    config = prepared(tmp_path, digits_root, model={"freeze": "backbone"},
                      train={"epochs": 6, "patience": 2, "lr": 1e-12, "sched": "none", "weight_decay": 0.0})
    outcome = train_run(config, [0], console=QUIET)[0]
    history = pd.read_csv(tmp_path / "runs" / "tiny-multiclass" / "fold0" / "history.csv")
    assert len(history) == 3, "epoch 0 is best; epochs 1 and 2 do not improve; patience 2 stops there"
    assert outcome.best_epoch == 0


def test_nan_loss_stops_the_fold_naming_fold_step_and_lr(tmp_path, digits_root):
    config = prepared(tmp_path, digits_root, train={"opt": "sgd", "lr": 1e30, "sched": "none", "epochs": 2})
    with pytest.raises(KagglecvError, match=r"fold 0: loss is (nan|inf) at epoch \d step \d+ \(lr 1e\+30\)"):
        train_run(config, [0], console=QUIET)
    assert not (tmp_path / "runs" / "tiny-multiclass" / "fold0" / "done.json").exists()


@pytest.mark.slow
def test_two_folds_trained_at_once_by_separate_processes(tmp_path, digits_root):
    config = tiny_config(tmp_path, digits_root, rows=96)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    make_folds(validate_config(config))
    processes = [run_cli(["train", "c.yaml", "--fold", str(fold)], tmp_path) for fold in (0, 1)]
    outputs = [process.communicate()[0] for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    run = tmp_path / "runs" / "tiny-multiclass"
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert oof["id"].tolist() == pd.read_csv(tmp_path / "train.csv", dtype=str)["id"].tolist()
    for fold in (0, 1):
        fold_oof = pd.read_csv(run / f"fold{fold}" / "oof.csv", dtype={"id": str})
        assert (fold_oof["fold"] == fold).all()
        merged = oof.set_index("id").loc[fold_oof["id"]]
        np.testing.assert_allclose(merged.iloc[:, 1:].to_numpy(), fold_oof.iloc[:, 2:].to_numpy())


def test_the_last_accumulation_group_of_an_epoch_is_stepped(tmp_path, digits_root):
    from kagglecv.nn.weights import load_torch

    config = validate_config(tiny_config(tmp_path, digits_root, rows=80,
                                         train={"accum_steps": 3, "batch_size": 4, "epochs": 1}))
    make_folds(config)
    train_run(config, [0], console=Console(quiet=True))
    state = load_torch(tmp_path / "runs" / "tiny-multiclass" / "fold0" / "last.pt")
    assert state["global_step"] == 4, "10 batches with accum_steps=3 make 4 optimizer steps (3 + 3 + 3 + 1)"


def test_training_and_prediction_share_one_autocast_dtype(tmp_path, digits_root):
    import torch

    from kagglecv.core.runs import RunDir
    from kagglecv.nn.inference import FoldPredictor

    cpu = torch.device("cpu")
    assert [autocast_dtype(amp, cpu) for amp in ("auto", "off", "bf16", "fp16")] == [None, None, torch.bfloat16, torch.float16]

    assert autocast_dtype("auto", torch.device("cuda"), CudaDevice("NVIDIA A100", (8, 0))) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cuda"), CudaDevice("Tesla T4", (7, 5))) is torch.float16
    for amp, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("off", None)):
        config = validate_config(tiny_config(tmp_path, digits_root, train={"amp": amp, "device": "cpu"}))
        assert FoldPredictor(config, RunDir(tmp_path), "multiclass", ["a", "b"]).amp_dtype is dtype


def test_best_tracking_counts_epochs_since_the_best_and_ignores_nan():
    from kagglecv.training.selection import BestTracker

    best = BestTracker()
    assert best.update("raw", 0.5, epoch=0) and best.is_overall_best("raw", 0)
    best.end_epoch()
    assert not best.update("raw", float("nan"), epoch=1) and not best.update("raw", 0.4, epoch=1)
    assert best.update("ema", 0.45, epoch=1) and not best.is_overall_best("ema", 1), "ema's best, not the overall"
    best.end_epoch()
    assert best.epochs_since_best == 1 and (best.epoch, best.source, best.score) == (0, "raw", 0.5)
    restored = BestTracker()
    restored.load_state_dict(best.state_dict())
    assert restored.state_dict() == best.state_dict()

CUDA = torch.device("cuda")


def test_a_run_records_the_autocast_dtype_it_chose(trained_runs):
    info = json.loads((trained_runs[("multiclass", 1)].run_dir / "run.json").read_text())
    assert info["amp"] == "off"  # train.amp: auto on this CPU


@pytest.mark.parametrize("interval, draws", [(60.0, [3]), (0.0, [1, 2, 3])])
def test_curves_are_drawn_at_the_fold_end_and_at_most_once_per_interval(tmp_path, digits_root, monkeypatch,
                                                                         interval, draws):
    from kagglecv.training import trainer

    drawn = []
    monkeypatch.setattr(trainer, "CURVES_EVERY_S", interval)
    monkeypatch.setattr(trainer, "plot_curves", lambda history, *args, **kwargs: drawn.append(len(history)))
    config = prepared(tmp_path, digits_root, train={"epochs": 3})
    train_run(config, [0], console=QUIET)
    assert drawn == draws, "a short fold draws its curves once, with every epoch in them"
