"""The data path: a run trained from the image cache equals the same run decoding its files (the cache changes the
cost, never a number; the folds share one disk cache), and a fold trains with batch augmentation, repeatably."""

import numpy as np
import pandas as pd
import pytest

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.stages.folds import make_folds
from kagglecv.stages.train import train_run
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


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
