"""Training batches sliced straight from an image array: no per-image Python work, no loader workers.

When the training images are one uint8 array (a pixel table, or ``data.cache: memory | disk``), the per-image
pipeline is only a resize to the size they already have (``augment.train: none``) and they have the channels the
model takes, a batch is one fancy index of the array. It goes to the device as uint8 (pinned and non-blocking on
CUDA: a quarter of the bytes of float32) and is normalised there in one table lookup (:class:`DeviceNormalize`);
``augment.batch`` then augments it on the device. The values equal those of the albumentations path
(``A.Normalize`` then ``ToTensorV2``) exactly.
"""

from __future__ import annotations

import math

import albumentations as A
import numpy as np
import torch

from kagglecv.data.pixels import PixelImages
from kagglecv.nn.sampling import EpochSampler


def array_batches_apply(images, augment_train, size: int, channels: int, normalization=None) -> bool:
    """Whether the training images can be sliced from their array: a uint8 array of ``size`` x ``size`` images
    with ``channels`` channels, no per-image augmentation, and no per-image normalisation."""
    if not isinstance(images, PixelImages) or images.pixels.dtype != np.uint8 or augment_train != "none":
        return False
    if normalization is not None and normalization.per_sample:
        return False
    _, height, width, image_channels = images.pixels.shape
    return height == width == size and image_channels == channels


class ArrayBatches:
    """Batches of ``(uint8 images N x C x H x W, targets, rows, 0)`` in the sampler's order, like the training
    DataLoader's (the last item is its count of unreadable images: none here)."""

    def __init__(self, images: PixelImages, targets: np.ndarray, sampler: EpochSampler, batch_size: int,
                 drop_last: bool, pin_memory: bool = False):
        self.pixels, self.targets, self.sampler = images.pixels, targets, sampler
        self.batch_size, self.drop_last, self.pin_memory = batch_size, drop_last, pin_memory

    def __len__(self) -> int:
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self):
        order = self.sampler.epoch_rows()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start:start + self.batch_size]
            images = torch.from_numpy(np.ascontiguousarray(self.pixels[rows])).permute(0, 3, 1, 2)
            yield self._pinned(images), self._pinned(self._targets(rows)), torch.from_numpy(rows), 0

    def _targets(self, rows: np.ndarray) -> torch.Tensor:
        targets = self.targets[rows]
        if targets.ndim == 2:  # as ImageDataset serves them: soft, multi-label or regression rows as float32
            return torch.from_numpy(targets.astype(np.float32))
        return torch.from_numpy(targets.astype(np.int64))

    def _pinned(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.pin_memory() if self.pin_memory else tensor


class DeviceNormalize:
    """uint8 batches to normalised float32 on ``device`` through one per-channel table of the 256 values.

    The table is what albumentations' ``Normalize`` makes of each value (it normalises uint8 images through such a
    table too), so a batch normalised here equals, bit for bit, the same images through the per-image pipeline: the
    cache and the array path change the cost, never a number. A float batch (already normalised by that pipeline)
    only moves to the device.
    """

    def __init__(self, mean, std, device: torch.device, max_pixel_value: float = 255.0):
        channels = len(mean)
        ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], channels, axis=2)  # 1 x 256 x C
        normalize = A.Normalize(mean=mean, std=std, max_pixel_value=max_pixel_value)
        table = normalize(image=ramp)["image"].reshape(256, channels)
        self.table = torch.from_numpy(np.ascontiguousarray(table.T, dtype=np.float32)).to(device).flatten()
        self.offsets = (torch.arange(channels, device=device) * 256)[None, :, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.table.device, non_blocking=True)
        if images.dtype != torch.uint8:
            return images
        return self.table[images.to(torch.int64) + self.offsets]
