"""augment.normalize: eight-bit images by the backbone's statistics, other sources by the fold's own training images
(never its validation rows), or each image by itself, the same in albumentations and in the exported ONNX graph."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from kagglecv.core.errors import ConfigError, DataError
from kagglecv.core.records import NormalizationRecord
from kagglecv.data.pixels import PixelImages
from kagglecv.nn.export import ProbabilitiesOfViews
from kagglecv.nn.images import ImageDataset
from kagglecv.nn.normalization import channel_statistics, choose_normalization, pipeline


@pytest.fixture(scope="module")
def model():
    return timm.create_model("test_resnet", pretrained=False, num_classes=2, in_chans=6)


def _bands(rows: int = 12, channels: int = 6) -> PixelImages:
    rng = np.random.default_rng(0)
    scale = np.arange(1, channels + 1, dtype=np.float32)
    return PixelImages((rng.normal(0, 1, (rows, 9, 9, channels)) * scale - 30).astype(np.float32), None)


def test_dataset_statistics_come_from_the_training_rows_only(model):
    images = _bands()
    images.pixels[11] += 1e6  # a validation row far off: it must not move the statistics
    training = np.arange(11)
    chosen = choose_normalization("auto", model, None, None, 6, images, training)
    values = images.pixels[:11].reshape(-1, 6).astype(np.float64)
    np.testing.assert_allclose(chosen.mean, values.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(chosen.std, values.std(axis=0), rtol=1e-9)
    assert chosen.max_pixel_value == 1.0 and not chosen.per_sample


def test_eight_bit_images_keep_the_backbones_statistics_and_a_given_mean_must_fit_the_channels(model):
    rgb = PixelImages(np.zeros((4, 8, 8, 3), dtype=np.uint8), None)
    three = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    chosen = choose_normalization("auto", three, None, None, 3, rgb, np.arange(4))
    resolved = timm.data.resolve_data_config({}, model=three)
    assert chosen.mean == list(resolved["mean"]) and chosen.max_pixel_value == 255.0
    with pytest.raises(ConfigError, match="augment.mean has 3 values, but model.in_chans is 6"):
        choose_normalization("dataset", model, [0.0] * 3, [1.0] * 3, 6, _bands(), np.arange(4))


def test_a_constant_channel_gets_std_one_and_nan_values_are_refused():
    images = _bands()
    images.pixels[:, :, :, 2] = 7.0
    assert channel_statistics(images, np.arange(12), 6).std[2] == 1.0
    images.pixels[3, 0, 0, 1] = np.nan
    with pytest.raises(Exception, match="NaN or infinite"):
        channel_statistics(images, np.arange(12), 6)


def test_normalised_inputs_have_zero_mean_and_unit_std_on_the_training_rows(model):
    images = _bands()
    record = choose_normalization("dataset", model, None, None, 6, images, np.arange(12))
    transform = pipeline("none", 9, record, images, train=False)
    batch = torch.stack([ImageDataset(images, None, transform, seed=None, channels=6)[row][0] for row in range(12)])
    np.testing.assert_allclose(batch.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(batch.std(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 6])
def test_per_sample_normalisation_in_the_onnx_module_equals_the_pipelines(channels):
    rng = np.random.default_rng(channels)
    images = rng.normal(5, 3, (4, 16, 16, channels)).astype(np.float32)
    images[1, :, :, 0] = 2.0  # a constant channel
    record = NormalizationRecord(mean=[0.0] * channels, std=[1.0] * channels, max_pixel_value=1.0, per_sample=True)
    transform = pipeline("none", 16, record, PixelImages(images, None), train=False)
    expected = np.stack([transform(image=image)["image"].numpy().transpose(1, 2, 0) for image in images])
    assert np.isfinite(expected).all() and (expected[1, :, :, 0] == 0).all()  # a constant channel is 0, not NaN
    with np.errstate(invalid="ignore"):  # the constant channel's 0 / 0, left out of the comparison below
        reference = (images - images.mean(axis=(1, 2), keepdims=True)) / images.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(expected[[0, 2, 3]], reference[[0, 2, 3]], atol=1e-4)
    module = ProbabilitiesOfViews(torch.nn.Identity(), ["none"], "multilabel", "prob", record)
    got = module.normalized(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_colour_transforms_are_left_out_of_presets_and_refused_in_lists_for_n_channel_inputs(model):
    images = _bands()
    record = choose_normalization("dataset", model, None, None, 6, images, np.arange(12))
    heavy = pipeline("heavy", 16, record, images, train=True)
    names = {type(part).__name__ for part in heavy.transforms}
    assert "ColorJitter" not in names and "ToGray" not in names and "Affine" in names
    ImageDataset(images, None, heavy, seed=0, channels=6)[(3, 1)]  # runs on 6 float channels
    with pytest.raises(DataError, match="ColorJitter work on eight-bit grey or RGB images"):
        pipeline([{"__class_fullname__": "ColorJitter", "p": 1.0}], 16, record, images, train=True)


def test_dicom_windows_in_float_get_no_colour_transforms_though_on_the_0_255_scale():
    """A DICOM window is eight-bit in scale but float: albumentations would clip it to 0-1 in ColorJitter or
    RandomBrightnessContrast, so the presets leave them out and a list holding one is refused."""
    windows = PixelImages(np.random.default_rng(1).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32), None,
                          eight_bit=True)
    three = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    record = choose_normalization("auto", three, None, None, 3, windows, np.arange(4))
    assert record.max_pixel_value == 255.0  # normalised as a photograph
    heavy = pipeline("heavy", 16, record, windows, train=True)
    names = {type(part).__name__ for part in heavy.transforms}
    assert not {"ColorJitter", "RandomBrightnessContrast", "ToGray"} & names
    with pytest.raises(DataError, match="RandomBrightnessContrast work on eight-bit"):
        pipeline([{"__class_fullname__": "RandomBrightnessContrast", "p": 1.0}], 16, record, windows, train=True)
    photographs = PixelImages(np.zeros((4, 16, 16, 3), dtype=np.uint8), None)
    assert "ColorJitter" in {type(part).__name__ for part in pipeline("heavy", 16, record, photographs,
                                                                      train=True).transforms}
