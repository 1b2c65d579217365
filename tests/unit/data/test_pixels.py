"""Pixel-table competitions: pixel0..pixelN columns read as uint8 images, with or without an id column, .csv.gz
like .csv, and a Digit Recognizer-shaped submission equal to its sample in header and ids."""

import gzip

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from kagglecv.core.config import DataConfig
from kagglecv.core.errors import DataError
from kagglecv.data.load import load_test, load_train
from kagglecv.data.pixels import PixelImages
from tests.conftest import shared_dataset

runner = CliRunner()


def digits_table(rows: int, offset: int = 0, label: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """sklearn's 8x8 digits as a Digit Recognizer table (values 0-16 scaled to 0-240)."""
    digits = load_digits()
    images = (digits.images[offset:offset + rows] * 15).astype(np.uint8)
    frame = pd.DataFrame(images.reshape(rows, -1), columns=[f"pixel{i}" for i in range(64)])
    if label:
        frame.insert(0, "label", digits.target[offset:offset + rows])
    return frame, images


def test_a_pixel_table_without_ids_is_numbered_by_row_and_read_exactly(tmp_path):
    frame, images = digits_table(30)
    frame.to_csv(tmp_path / "train.csv", index=False)
    data = load_train(DataConfig(train_csv=tmp_path / "train.csv"))
    assert isinstance(data.images, PixelImages) and data.images.pixels.dtype == np.uint8
    assert data.ids.tolist() == [str(i) for i in range(1, 31)]
    assert np.array_equal(data.images.pixels[:, :, :, 0], images)
    assert data.classes == [str(c) for c in sorted(set(frame["label"]))] and data.task == "multiclass"
    assert np.array_equal(data.images.image(3, 3)[:, :, 1], images[3]) and data.images.image(3, 1).shape == (8, 8, 1)


def test_a_pixel_table_with_ids_and_gzip_reads_like_the_csv(tmp_path):
    frame, _ = digits_table(20)
    frame.insert(0, "image_id", [f"img{i:03d}" for i in range(20)])
    frame.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress((tmp_path / "train.csv").read_bytes()))
    plain = load_train(DataConfig(train_csv=tmp_path / "train.csv", id_col="image_id"))
    zipped = load_train(DataConfig(train_csv=tmp_path / "train.csv.gz", id_col="image_id"))
    assert plain.ids.tolist() == zipped.ids.tolist() == frame["image_id"].tolist()
    assert np.array_equal(plain.images.pixels, zipped.images.pixels) and np.array_equal(plain.targets, zipped.targets)
    targets_only = load_train(DataConfig(train_csv=tmp_path / "train.csv.gz", id_col="image_id"), with_images=False)
    assert targets_only.images is None and np.array_equal(targets_only.targets, plain.targets)


def test_colour_pixel_tables_follow_the_configured_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 2, 3, 3), dtype=np.uint8)  # N, H, W, C
    for layout, flat in (("hwc", images.reshape(4, -1)), ("chw", images.transpose(0, 3, 1, 2).reshape(4, -1))):
        frame = pd.DataFrame(flat, columns=[f"pixel{i}" for i in range(18)])
        frame.insert(0, "label", ["a", "b", "a", "b"])
        frame.to_csv(tmp_path / "train.csv", index=False)
        data = load_train(DataConfig(train_csv=tmp_path / "train.csv",
                                     pixels={"width": 3, "height": 2, "channels": 3, "layout": layout}))
        assert np.array_equal(data.images.pixels, images), layout


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(pixel5=f["pixel5"].astype(str).where(f.index != 2, "256")), r"line 4 pixel5 = '256'"),
    (lambda f: f.assign(pixel7=f["pixel7"].astype(str).where(f.index != 0, "")), r"line 2 pixel7 = ''"),
    (lambda f: f.assign(pixel3=f["pixel3"].astype(str).where(f.index != 1, "-1")), r"line 3 pixel3 = '-1'"),
    (lambda f: f.assign(pixel9=f["pixel9"].astype(str).where(f.index != 5, "12.5")), r"line 7 pixel9 = '12.5'"),
    (lambda f: f.drop(columns=["pixel63"]), r"63 pixel columns is not a square grey image; set data.pixels"),
    (lambda f: f.drop(columns=["pixel10"]), r"pixel columns must be pixel0..pixel63, each once; missing 'pixel10'"),
])
def test_bad_pixel_tables_are_one_clear_error(tmp_path, edit, message):
    frame, _ = digits_table(6)
    edit(frame).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=message):
        load_train(DataConfig(train_csv=tmp_path / "train.csv"))


def test_the_official_mnist_table_is_read_as_uint8_images():
    root = shared_dataset("mnist-digit-recognizer")
    config = DataConfig(train_csv=root / "train.csv.gz", test_csv=root / "test.csv.gz")
    data = load_train(config)
    assert data.images.pixels.shape == (60000, 28, 28, 1) and data.images.pixels.dtype == np.uint8
    assert data.ids[0] == "1" and data.ids[-1] == "60000" and len(set(data.ids)) == 60000
    with gzip.open(root / "train.csv.gz", "rt") as stream:
        stream.readline()
        first = np.array(stream.readline().split(","), dtype=np.int64)
    assert data.classes[data.targets[0]] == str(first[0])
    assert np.array_equal(data.images.pixels[0].reshape(-1), first[1:])
    test = load_test(config, data.classes, data.task)
    assert len(test) == len(pd.read_csv(root.parent / "mnist-digit-recognizer" / "sample_submission.csv"))


def test_a_gzip_table_that_decompresses_past_the_limit_is_refused(tmp_path, monkeypatch):
    import kagglecv.data.table

    frame, _ = digits_table(40)
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    monkeypatch.setattr(kagglecv.data.table, "MAX_TABLE_BYTES", 4096)  # the real limit is 2 GiB
    with pytest.raises(DataError, match=r"train\.csv\.gz: decompresses to more than .* refused"):
        load_train(DataConfig(train_csv=tmp_path / "train.csv.gz"))
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"bad\.csv\.gz: cannot read: Not a gzipped file"):
        load_train(DataConfig(train_csv=tmp_path / "bad.csv.gz"))
