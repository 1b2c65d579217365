"""Images in: albumentations pipelines and the torch Dataset (decoding is :mod:`kagglecv.data.decoding`).

Augmentation randomness is keyed by (seed, epoch, row): the sampler hands the dataset ``(row, epoch)`` pairs and
the pipeline is re-seeded for each sample. The same image in the same epoch is therefore augmented the same way
whatever the number of workers, and a resumed run sees exactly the augmentations an uninterrupted one did.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from kagglecv.core.errors import DataError
from kagglecv.data.decoding import load_image
from kagglecv.data.sources import ImageSource

PRESETS = ("none", "light", "medium", "heavy")
SMALL_IMAGE = 64  # at or below this size, crops pad-and-crop (CIFAR style) rather than rescale


# Transforms that read values as eight-bit colour (or clip floats to 0-1): refused for other images.
EIGHT_BIT_ONLY = frozenset({
    "ColorJitter", "HueSaturationValue", "RGBShift", "ToGray", "ToSepia", "FancyPCA", "CLAHE", "Equalize",
    "Posterize", "Solarize", "RandomBrightnessContrast", "RandomGamma", "RandomToneCurve", "GaussNoise", "ISONoise",
    "ChannelDropout", "PlanckianJitter", "PhotoMetricDistort", "Illumination", "PlasmaBrightnessContrast",
    "AutoContrast", "Emboss", "Sharpen", "Superpixels", "ImageCompression", "Downscale",
})


def build_augment(
    spec: str | Sequence[dict[str, Any]],
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    train: bool,
    hflip: bool = True,
    max_pixel_value: float = 255.0,
    per_sample: bool = False,
    eight_bit_colour: bool = True,
) -> A.Compose:
    """An albumentations pipeline that ends in a normalized CHW float tensor.

    Args:
        spec: a preset (``none``, ``light``, ``medium``, ``heavy``) or a list of transforms in albumentations'
            serialized form (the ``transforms`` list of ``A.to_dict(pipeline)["transform"]``).
        img_size: output side in pixels; every pipeline resizes to it first unless the list does so itself.
        mean, std: per channel, ``(x - mean * max_pixel_value) / (std * max_pixel_value)``.
        train: presets add their random transforms only for training.
        hflip: presets flip images horizontally at random; off for digits, text or traffic signs.
        max_pixel_value: 255 for eight-bit images (mean and std in 0-1 units), 1 for values in their own units.
        per_sample: normalise each image by its own channel means and stds instead (``mean``/``std`` unused).
        eight_bit_colour: the images are eight-bit grey or RGB; otherwise (N channels, 16-bit, float) the presets
            leave out their colour and value transforms, and a list holding one (:data:`EIGHT_BIT_ONLY`) is refused.
    """
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise DataError(f"augment: unknown preset {spec!r}; expected one of {', '.join(PRESETS)} or a list")
        transforms = _preset(spec, img_size, hflip, eight_bit_colour) if train else [A.Resize(img_size, img_size)]
    else:
        serialized = {"__version__": A.__version__,
                      "transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": list(spec)}}
        try:
            transforms = [A.Resize(img_size, img_size), *A.from_dict(serialized).transforms]
        except Exception as exc:  # albumentations raises many kinds here; all mean a bad list
            raise DataError(f"augment: cannot build the transform list: {exc}") from None
        if not eight_bit_colour:
            _refuse_colour_transforms(transforms)
    normalize = PerImageNormalize() if per_sample else \
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=max_pixel_value)
    return A.Compose([*transforms, normalize, ToTensorV2()])


class PerImageNormalize(A.ImageOnlyTransform):
    """Each channel minus its mean over the image, over its (population) std; a constant channel becomes 0.

    Not albumentations' ``Normalize(normalization="image_per_channel")``: above four channels it turns a constant
    channel into NaN (0 / 0), and it clips at +-20; the exported ONNX graph computes exactly this formula."""

    def __init__(self):
        super().__init__(p=1.0)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        values = img.astype(np.float32)
        mean = values.mean(axis=(0, 1), dtype=np.float64)
        std = values.std(axis=(0, 1), dtype=np.float64)
        return ((values - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def _refuse_colour_transforms(transforms: list) -> None:
    names = sorted({type(part).__name__ for transform in transforms for part in _with_randomness(transform)}
                   & EIGHT_BIT_ONLY)
    if names:
        raise DataError(f"augment: {', '.join(names)} work on eight-bit grey or RGB images; these images are not "
                        "(N channels, 16-bit or float): remove them from the list")


def _preset(name: str, size: int, hflip: bool = True, colour: bool = True) -> list:
    if name == "none":
        return [A.Resize(size, size)]
    small = size <= SMALL_IMAGE
    if small:
        crop = [A.Resize(size, size), A.PadIfNeeded(size + size // 8, size + size // 8,
                                                    border_mode=cv2.BORDER_REFLECT_101), A.RandomCrop(size, size)]
    else:
        crop = [A.RandomResizedCrop(size=(size, size), scale=(0.35 if name == "heavy" else 0.6, 1.0))]
    light = [*crop, A.HorizontalFlip(p=0.5)] if hflip else crop
    if name == "light":
        return light
    jitter = [A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.5)] if colour else []
    medium = [
        *light,
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-15, 15), p=0.5),
        *jitter,
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1, 0.3), hole_width_range=(0.1, 0.3), p=0.3),
    ]
    if name == "medium":
        return medium
    if not colour:
        return [*medium, A.GaussianBlur(blur_limit=(3, 5), p=0.3)]
    return [
        *medium,
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.3),
        A.ToGray(p=0.05),
    ]


class ImageDataset(torch.utils.data.Dataset):
    """Rows of a competition table as ``(image tensor, target, row)``; the target is -1 for a test table.

    Indexed by ``row`` or by ``(row, epoch)``; with an epoch the pipeline is seeded from (seed, epoch, row).

    Args:
        images: image file per row, or an image source's rows (a pixel table, a reader's arrays).
        targets: class index per row (int64), or a rows x classes matrix (multilabel), or None (test).
        transform: an albumentations pipeline from :func:`build_augment`.
        seed: base seed of the augmentations; None for a pipeline without randomness (evaluation).
        skip_unreadable: a file that does not decode yields None (with a warning naming it) instead of an error;
            for training only, with :func:`kagglecv.nn.sampling.collate_skipping_unreadable`. A validation or test
            row is never skipped: an OOF or test prediction must not go missing.
        channels: the model's input channels: 3 for RGB, 1 for grayscale (ITU-R 601 luma of the decoded RGB
            image), or an image source's own count.
    """

    def __init__(self, images: Sequence[Path] | ImageSource, targets: np.ndarray | None, transform: A.Compose,
                 seed: int | None = 0, skip_unreadable: bool = False, channels: int = 3):
        self.images = images if isinstance(images, ImageSource) else [str(path) for path in images]
        self.targets = targets
        self.transform = transform
        self.seed = seed
        self.skip_unreadable = skip_unreadable
        self.channels = channels
        self._numpy_random = np.random.Generator(np.random.PCG64(seed or 0))
        self._python_random = random.Random(seed or 0)
        for part in _with_randomness(transform):
            part.random_generator = self._numpy_random
            part.py_random = self._python_random

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        row, epoch = key if isinstance(key, tuple) else (key, 0)
        if self.seed is not None:
            self._seed_transforms(row, epoch)
        try:
            pixels = load_image(self.images, row, self.channels)
        except DataError as exc:
            if not self.skip_unreadable:
                raise
            warnings.warn(f"skipping unreadable training image: {exc}", stacklevel=1)
            return None
        image = self.transform(image=pixels)["image"]
        if self.targets is None:
            return image, -1, row
        if self.targets.ndim == 2:
            return image, self.targets[row].astype(np.float32), row
        return image, int(self.targets[row]), row

    def _seed_transforms(self, row: int, epoch: int) -> None:
        """Re-seed the pipeline's generators in place from (seed, epoch, row).

        ``Compose.set_random_seed`` builds new generators for every transform, which costs more than decoding a
        small image; setting the state of one shared pair costs about 10 microseconds.
        """
        self._numpy_random.bit_generator.state = {
            "bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
            "state": {"state": _mix64(self.seed, epoch, row, 1) << 64 | _mix64(self.seed, epoch, row, 2),
                      "inc": (_mix64(self.seed, epoch, row, 3) << 1) | 1},
        }
        self._python_random.seed(_mix64(self.seed, epoch, row, 4))


_MASK64 = (1 << 64) - 1


def _mix64(*values: int) -> int:
    """A 64-bit hash of small integers: SplitMix64's finalizer (Steele, Lea & Flood, OOPSLA 2014)."""
    z = 0x632BE59BD9B4E019
    for value in values:
        z = (z ^ (value & _MASK64)) * 0x9E3779B97F4A7C15 & _MASK64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
        z ^= z >> 31
    return z


def _with_randomness(transform) -> list:
    """The pipeline and every transform inside it (they all draw from ``random_generator`` / ``py_random``)."""
    parts = [transform]
    for child in getattr(transform, "transforms", []):
        parts += _with_randomness(child)
    return parts


def worker_init(worker_id: int) -> None:
    """DataLoader worker set-up: OpenCV single-threaded (the workers are the parallelism)."""
    cv2.setNumThreads(0)
