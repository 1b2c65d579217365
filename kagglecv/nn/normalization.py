"""How an image's values become the network's input: the one owner of ``augment.normalize``.

An eight-bit image (a decoded file, a pixel table) is normalised as timm's pretrained backbones expect: 0-1 values
minus the backbone's mean, over its std (or ``augment.mean`` / ``augment.std``). Any other source (16-bit or float
arrays, DICOM windows read in float, radar bands in dB, six SETI panels) keeps its own units: each channel's mean and
std are computed on the fold's training images (``dataset``), or each image is normalised by its own channel
statistics (``sample``). The fold's choice is recorded in ``fold<K>/normalization.json`` by training and read back
by everything that predicts with the fold's weights (predict, infer, pack, ONNX, the notebook), so a prediction
never normalises differently from the training that made the weights.

A regression target is normalised too (:func:`choose_output_scale`): the network learns the target standardised by
the fold's training rows (mse, l1, huber), or scaled to [0, 1] by ``data.y_range`` or their range (``bce_scaled``,
as Pawpularity's winners trained on ``Pawpularity / 100``); the record's ``output`` turns the network's outputs back
into values.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import nn

from kagglecv.core.errors import ConfigError, KagglecvError
from kagglecv.core.records import NormalizationRecord, OutputScale
from kagglecv.data.decoding import load_image
from kagglecv.data.sources import ImageSource
from kagglecv.nn.images import build_augment
from kagglecv.nn.models import input_normalization

STATISTICS_IMAGES = 1024  # at most this many training images (evenly spaced) give a channel's mean and std


def is_eight_bit(images) -> bool:
    """Image files and eight-bit sources are on the 0-255 scale; other sources are in their own units."""
    return not isinstance(images, ImageSource) or images.eight_bit


def choose_normalization(mode: str, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None,
                         in_chans: int, images, rows: np.ndarray) -> NormalizationRecord:
    """The fold's normalisation (see the module docstring); ``images`` and ``rows`` are its training images."""
    eight_bit = is_eight_bit(images)
    if mode == "auto":
        mode = "backbone" if eight_bit else "dataset"
    if mode == "sample":
        return NormalizationRecord(mean=[0.0] * in_chans, std=[1.0] * in_chans, max_pixel_value=1.0, per_sample=True)
    if mode == "backbone" or (mean is not None and eight_bit):
        chosen_mean, chosen_std = input_normalization(model, mean, std, in_chans)
        return _checked(NormalizationRecord(mean=list(chosen_mean), std=list(chosen_std), max_pixel_value=255.0),
                        in_chans)
    if mean is not None:
        return _checked(NormalizationRecord(mean=list(mean), std=list(std), max_pixel_value=1.0), in_chans)
    return channel_statistics(images, rows, in_chans)


def choose_output_scale(loss: str, targets: np.ndarray, y_range: tuple[float, float] | None) -> OutputScale:
    """How the fold's outputs become values, from its training rows' ``targets`` (rows x targets): their mean and std
    (``standard``), or the range's low end and width (``range``: ``bce_scaled``)."""
    if loss == "bce_scaled":
        low = np.full(targets.shape[1], y_range[0]) if y_range else targets.min(axis=0)
        high = np.full(targets.shape[1], y_range[1]) if y_range else targets.max(axis=0)
        if (high <= low).any():
            raise KagglecvError(f"train.loss bce_scaled: the fold's training targets hold one value ({low[0]:g}); "
                                "set data.y_range")
        return OutputScale(kind="range", center=low.tolist(), scale=(high - low).tolist())
    std = targets.std(axis=0)
    return OutputScale(kind="standard", center=targets.mean(axis=0).tolist(),
                       scale=np.where(std > 0, std, 1.0).tolist())


def channel_statistics(images, rows: np.ndarray, in_chans: int) -> NormalizationRecord:
    """Each channel's mean and std over up to :data:`STATISTICS_IMAGES` of ``rows`` (evenly spaced, every pixel of
    each), in float64 sums; a constant channel gets std 1 rather than a division by zero."""
    chosen = np.asarray(rows)[np.unique(np.linspace(0, len(rows) - 1, min(len(rows), STATISTICS_IMAGES)).astype(int))]
    total = np.zeros(in_chans)
    squares = np.zeros(in_chans)
    count = 0
    for row in chosen:
        pixels = load_image(images, int(row), in_chans).astype(np.float64).reshape(-1, in_chans)
        total += pixels.sum(axis=0)
        squares += np.square(pixels).sum(axis=0)
        count += len(pixels)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 0.0))
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise KagglecvError(f"{images.source}: the training images hold NaN or infinite values; their channel "
                            "statistics cannot be computed (set augment.mean and augment.std, or clean the arrays)")
    return NormalizationRecord(mean=mean.tolist(), std=np.where(std > 0, std, 1.0).tolist(), max_pixel_value=1.0)


def _checked(record: NormalizationRecord, in_chans: int) -> NormalizationRecord:
    if len(record.mean) != in_chans:
        raise ConfigError(f"augment.mean has {len(record.mean)} values, but model.in_chans is {in_chans}; give one "
                          "value per input channel")
    return record


def pipeline(spec, img_size: int, normalization: NormalizationRecord, images, *, train: bool,
             hflip: bool = True):
    """:func:`~kagglecv.nn.images.build_augment` normalising as ``normalization`` says, for ``images``."""
    colour = (not isinstance(images, ImageSource) or images.uint8) and len(normalization.mean) in (1, 3)
    return build_augment(spec, img_size, normalization.mean, normalization.std, train=train, hflip=hflip,
                         max_pixel_value=normalization.max_pixel_value, per_sample=normalization.per_sample,
                         eight_bit_colour=colour)
