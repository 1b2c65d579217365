"""Images that are missing, broken, odd-shaped or hostile."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import DataError
from kagglecv.data.decoding import decode_image
from kagglecv.nn.images import ImageDataset, build_augment
from kagglecv.stages.folds import make_folds
from kagglecv.stages.train import train_run

from ..conftest import tiny_config

QUIET = Console(quiet=True)
PACKAGE = Path(__file__).resolve().parents[2] / "kagglecv"


def test_every_missing_image_is_listed_before_training_starts(tmp_path, digits_root):
    config = validate_config(tiny_config(tmp_path, digits_root, rows=40))
    make_folds(config)
    frame = pd.read_csv(tmp_path / "train.csv", dtype=str)
    frame.loc[[3, 17], "id"] = ["ghost1", "ghost2"]
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"2 image files not found: line 5 id 'ghost1'.*line 19 id 'ghost2'"):
        train_run(config, console=QUIET)
    assert not (tmp_path / "runs").exists(), "nothing was started"


def test_a_truncated_training_image_is_skipped_but_a_validation_one_is_an_error(tmp_path, digits_root):
    import shutil

    raw = tiny_config(tmp_path, digits_root, rows=48)
    images = tmp_path / "images"
    shutil.copytree(raw["data"]["image_dir"], images)
    raw["data"]["image_dir"] = str(images)
    config = validate_config(raw)
    result = make_folds(config)
    broken_row = int(np.flatnonzero(result.folds == 1)[0])  # a training row of fold 0, a validation row of fold 1
    broken = images / f"{pd.read_csv(tmp_path / 'train.csv', dtype=str)['id'][broken_row]}.png"
    content = broken.read_bytes()
    broken.write_bytes(content[: len(content) // 2])  # the header reads; the pixels end early
    with pytest.warns(UserWarning, match=rf"skipping unreadable training image: .*{broken.name}"):
        train_run(config, [0], console=QUIET)
    history = pd.read_csv(tmp_path / "runs" / "tiny-multiclass" / "fold0" / "history.csv")
    assert history["skipped_images"].tolist() == [1]
    with pytest.raises(DataError, match=rf"{broken.name}: cannot decode image"):
        train_run(config, [1], console=QUIET)


def test_a_1x1_and_a_10000x300_image_share_a_batch(tmp_path):
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "dot.png")
    Image.new("RGB", (10000, 300), (0, 0, 255)).save(tmp_path / "strip.png")
    dataset = ImageDataset([tmp_path / "dot.png", tmp_path / "strip.png"], np.array([0, 1]),
                           build_augment("light", 32, (0.5,) * 3, (0.5,) * 3, train=True))
    images, targets, rows = default_collate([dataset[(0, 0)], dataset[(1, 0)]])
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    Image.new("L", (40, 40)).save(tmp_path / "half.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own limit, lowered to test it quickly
    with pytest.raises(DataError, match=r"bomb\.png: refused"):
        decode_image(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=r"half\.png: refused"):  # above the limit, below twice: Pillow only warns
        decode_image(tmp_path / "half.png")


def test_kagglecv_never_switches_pillows_limit_off():
    for source in PACKAGE.rglob("*.py"):
        assert not re.search(r"MAX_IMAGE_PIXELS\s*=", source.read_text()), source
