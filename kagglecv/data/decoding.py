"""Image files in: one policy for opening them in every stage, and decoding to RGB uint8.

Only Pillow, OpenCV and numpy: the folds stage decodes every image (for duplicate hashes) without loading torch.
An image source is a list of files or an :class:`~kagglecv.data.sources.ImageSource` (a pixel table, or a reader's
arrays); ``load_image`` reads a row of either.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps

from kagglecv.core.errors import DataError
from kagglecv.core.files import sha256_file
from kagglecv.data.sources import ImageSource, check_each


@contextlib.contextmanager
def open_image(path: str | Path | io.BytesIO, name: str | None = None) -> Iterator[Image.Image]:
    """Open an image under kagglecv's one policy, for every stage: Pillow's decompression-bomb limit stays on and
    its warning (above the limit, below twice it) is an error too; any failure is a ``DataError`` naming the file.

    Opening reads the header only; decoding happens on ``load()`` or a conversion inside the ``with`` block.
    ``path`` may be encoded bytes in memory (an HDF5 dataset's), then named ``name`` in errors.
    """
    path_name = name or path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, do not just warn
            with Image.open(path) as image:
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path_name}: refused: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path_name}: cannot decode image: {exc}") from None


def decode_image(path: str | Path | io.BytesIO, name: str | None = None) -> np.ndarray:
    """Read any common image as RGB uint8 (H, W, 3): EXIF orientation applied, 16-bit scaled, alpha dropped.

    Palette, grayscale, CMYK and 16-bit images are converted; the full image is decoded, so a truncated file
    raises here rather than yielding a partly grey image.
    """
    with open_image(path, name) as image:
        image = ImageOps.exif_transpose(image)
        image.load()
        return _to_rgb_uint8(image)


def load_image(images: Sequence[str | Path] | ImageSource, row: int, channels: int = 3) -> np.ndarray:
    """Row ``row`` of an image source (files, or a reader's) as H x W x ``channels``: uint8 for a file, in the
    source's units otherwise; grey is ITU-R 601 luma of the RGB image, as OpenCV computes it."""
    if isinstance(images, ImageSource):
        return images.image(row, channels)
    pixels = decode_image(images[row])
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None] if channels == 1 else pixels


def preview_image(images: Sequence[str | Path] | ImageSource, row: int) -> np.ndarray:
    """Row ``row`` as an eight-bit picture (RGB for a file; see :meth:`ImageSource.preview`)."""
    if isinstance(images, ImageSource):
        return images.preview(row)
    return decode_image(images[row])


def image_bytes_digest(images: Sequence[str | Path] | ImageSource, row: int) -> str:
    """sha256 of the image's bytes: the file, or the source's values."""
    if isinstance(images, ImageSource):
        return hashlib.sha256(images.raw_bytes(row)).hexdigest()
    return sha256_file(images[row])


def check_images(paths: Sequence[str | Path] | ImageSource) -> None:
    """Open every image's header before anything trains: a file that is empty, no image, or over the pixel limit
    is named now, all at once, rather than when its fold is validated hours later. (A reader's source checks
    itself.)"""
    if isinstance(paths, ImageSource):
        paths.check()
        return
    check_each(paths, _check_header, "images")


def _check_header(path: str | Path) -> None:
    with open_image(path) as image:
        if image.width < 1 or image.height < 1:
            raise DataError(f"{path}: image of size {image.width}x{image.height}")


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        gray = np.clip(np.round(pixels * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("RGB")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
