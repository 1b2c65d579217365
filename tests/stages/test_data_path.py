"""The data path: a run trained from the image cache equals the same run decoding its files (the cache changes the
cost, never a number; the folds share one disk cache), and a fold trains with batch augmentation, repeatably."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from kagglecv.core.config import load_config, validate_config
from kagglecv.core.console import Console
from kagglecv.stages.folds import make_folds
from kagglecv.stages.predict import predict_run
from kagglecv.stages.train import train_run
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_training_from_the_cache_equals_training_from_the_files(tmp_path, digits_root):
    predictions = {}
    for mode in ("off", "memory", "disk"):
        raw = tiny_config(tmp_path, digits_root, rows=48, data={"cache": mode}, train={"num_workers": 0})
        raw["experiment"] = f"cache-{mode}"
        config = validate_config(raw)
        if mode == "off":
            make_folds(config)
        train_run(config, console=Console(quiet=True))
        predictions[mode] = (pd.read_csv(config.run_dir / "oof.csv", dtype={"id": str}),
                             pd.read_csv(config.run_dir / "test.csv", dtype={"id": str}))
    for mode in ("memory", "disk"):
        for cached, decoded in zip(predictions[mode], predictions["off"]):
            pd.testing.assert_frame_equal(cached, decoded)
    caches = list((tmp_path / "runs" / ".cache").glob("*.npy"))
    assert len(caches) == 2, "one cache for the training table and one for the test table, shared by both folds"
    assert np.load(caches[0], mmap_mode="r").dtype == np.uint8


def test_a_fold_trains_with_batch_augmentation_and_its_seed_repeats_it(tmp_path, digits_root):
    oof = []
    for name in ("a", "b"):
        raw = tiny_config(tmp_path / name, digits_root, rows=32, augment={"train": "none", "batch": "flip_translate",
                                                                           "cutout": 4},
                          train={"num_workers": 0})
        config = validate_config(raw)
        make_folds(config)
        train_run(config, console=Console(quiet=True), predict_test=False)
        oof.append(pd.read_csv(config.run_dir / "oof.csv"))
    pd.testing.assert_frame_equal(oof[0], oof[1])
    assert np.isfinite(oof[0].iloc[:, 2:].to_numpy()).all()


def test_the_cifar10_fast_config_trains_fold_0_for_an_epoch_and_predicts_with_its_views(tmp_path, write_images):
    """configs/cifar10-fast.yaml as documented (folds, train --fold 0, the other folds, predict with its TTA views),
    on 48 images of 32 px: the batches come from the disk cache's array, the whitening layer is computed, every row
    of fold 0 gets an out-of-fold prediction, and the test images a prediction through the config's views."""
    ids = [f"c{index:03d}" for index in range(48)]
    pd.DataFrame({"id": ids, "label": [f"k{index % 3}" for index in range(48)]}).to_csv(tmp_path / "train.csv",
                                                                                      index=False)
    pd.DataFrame({"id": ids[:8]}).to_csv(tmp_path / "test.csv", index=False)
    write_images(tmp_path / "train", ids, size=(32, 32), ext="jpg")
    write_images(tmp_path / "test", ids[:8], size=(32, 32), ext="jpg", seed=1)
    overrides = [f"data.train_csv={tmp_path / 'train.csv'}", f"data.image_dir={tmp_path / 'train'}",
                 f"data.test_csv={tmp_path / 'test.csv'}", f"data.test_image_dir={tmp_path / 'test'}",
                 f"folds.file={tmp_path / 'folds.csv'}", "folds.n_splits=3", "folds.near_duplicates=off",
                 f"runs_dir={tmp_path / 'runs'}", "train.epochs=1", "train.batch_size=8", "train.warmup_epochs=0",
                 "train.decay_epochs=1"]
    config = load_config(REPO / "configs" / "cifar10-fast.yaml", overrides)
    make_folds(config)
    train_run(config, folds=[0], console=Console(quiet=True))
    fold = config.run_dir / "fold0"
    history = pd.read_csv(fold / "history.csv")
    assert history["train_size"].tolist() == [32] and len(list((tmp_path / "runs" / ".cache").glob("*.npy"))) == 2
    whitening = load_file(fold / "best.safetensors")["whiten_weight"]
    half = len(whitening) // 2
    assert torch.equal(whitening[half:], -whitening[:half]), "the whitening filters, not the initial weights"
    oof = pd.read_csv(fold / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(pd.read_csv(config.folds.file, dtype={"id": str}).query("fold == 0")["id"])
    train_run(config, console=Console(quiet=True))  # folds 1 and 2: predict scores the whole run
    result = predict_run(config.run_dir, console=Console(quiet=True))
    assert result.tta == ["none", "hflip", "shift:1:1", "shift:-1:-1", "hflip+shift:1:1", "hflip+shift:-1:-1"] and np.isfinite(result.oof_score)
    test = pd.read_csv(config.run_dir / "test.csv", dtype={"id": str})
    assert test["id"].tolist() == ids[:8] and np.allclose(test.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-4)
