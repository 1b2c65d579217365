"""Training batches sliced from an image array equal the per-image pipeline's, bit for bit, in the sampler's order."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from kagglecv.data.pixels import PixelImages
from kagglecv.nn.array_batches import ArrayBatches, DeviceNormalize, array_batches_apply
from kagglecv.nn.images import ImageDataset, build_augment
from kagglecv.nn.sampling import EpochSampler

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@pytest.fixture
def images(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (37, 12, 12, 3), dtype=np.uint8)
    return PixelImages(pixels, tmp_path / "train.csv")


def per_image_batches(images, targets, sampler, batch_size):
    dataset = ImageDataset(images, targets, build_augment("none", 12, MEAN, STD, train=True), seed=0)
    return list(DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True))


def test_array_batches_equal_the_per_image_pipeline_bit_for_bit_in_the_samplers_order(images):
    targets = np.arange(len(images)) % 5
    sampler = EpochSampler(np.arange(3, 37), shuffle=True, seed=7)
    sampler.set_epoch(2)
    normalize = DeviceNormalize(MEAN, STD, torch.device("cpu"))
    sliced = list(ArrayBatches(images, targets, sampler, batch_size=8, drop_last=True))
    expected = per_image_batches(images, targets, sampler, batch_size=8)
    assert len(sliced) == len(expected) == 34 // 8
    for (uint8, labels, rows, skipped), (floats, expected_labels, expected_rows) in zip(sliced, expected):
        assert uint8.dtype == torch.uint8 and skipped == 0
        assert torch.equal(normalize(uint8), floats)
        assert torch.equal(rows, expected_rows) and torch.equal(labels, expected_labels)


def test_a_resumed_epoch_continues_with_the_batches_it_would_have_made(images):
    targets = np.arange(len(images)) % 5
    sampler = EpochSampler(np.arange(37), shuffle=True, seed=1)
    whole = [rows for _, _, rows, _ in ArrayBatches(images, targets, sampler, 8, drop_last=False)]
    sampler.set_start(16)
    resumed = [rows for _, _, rows, _ in ArrayBatches(images, targets, sampler, 8, drop_last=False)]
    assert [len(rows) for rows in whole] == [8, 8, 8, 8, 5]
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole[2:])) and len(resumed) == 3


def test_soft_multilabel_and_regression_targets_are_served_as_the_dataset_serves_them(images):
    values = np.random.default_rng(1).uniform(-0.5, 1.5, (len(images), 4))  # regression values leave 0-1
    sampler = EpochSampler(np.arange(37), shuffle=False)
    (_, labels, rows, _), = list(ArrayBatches(images, values, sampler, 64, drop_last=False))
    assert labels.dtype == torch.float32
    assert torch.equal(labels, torch.from_numpy(values[rows.numpy()].astype(np.float32)))
    dataset = ImageDataset(images, values, build_augment("none", 16, (0.5,) * 3, (0.5,) * 3, train=False), None)
    assert all(np.array_equal(dataset[int(row)][1], labels[index].numpy()) for index, row in enumerate(rows))


def test_a_float_batch_only_moves_and_grey_images_normalise_with_one_channel():
    normalize = DeviceNormalize((0.5,), (0.25,), torch.device("cpu"))
    floats = torch.randn(2, 1, 4, 4)
    assert normalize(floats) is floats
    grey = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert torch.allclose(normalize(grey), (grey.float() / 255 - 0.5) / 0.25, atol=1e-6)


def test_only_arrays_of_the_training_size_channels_and_no_per_image_augmentation_take_the_path(images, tmp_path):
    assert array_batches_apply(images, "none", 12, 3)
    assert not array_batches_apply(images, "light", 12, 3), "a per-image augmentation must run"
    assert not array_batches_apply(images, "none", 16, 3), "a resize must run"
    assert not array_batches_apply(images, "none", 12, 1), "a channel conversion must run"
    assert not array_batches_apply([tmp_path / "a.jpg"], "none", 12, 3), "files are decoded per image"
