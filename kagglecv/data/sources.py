"""What a row's image is read from, when it is not an image file: one interface for every reader.

An image source is indexed by table row like a list of image files. It reads a row as an H x W x C array in its own
units: ``uint8`` on the 0-255 scale of a decoded image (a pixel table, an HDF5 of JPEG bytes), or ``float32`` for
anything else (16-bit or float arrays, DICOM windows, radar bands), never squeezed to 8 bits. The pipeline
normalises an eight-bit source with the backbone's statistics, any other with statistics of its own
(:mod:`kagglecv.nn.images`). The readers: :mod:`kagglecv.data.pixels` (pixel tables and decoded arrays) and
:mod:`kagglecv.data.readers` (``.npy``, DICOM, HDF5, parquet pixel rows, JSON bands).
"""

from __future__ import annotations

import abc
import re
from pathlib import Path

import cv2
import numpy as np

from kagglecv.core.config import ID_FIELD
from kagglecv.core.errors import DataError, summarize

MAX_IMAGE_VALUES = 1 << 28   # one image (all channels, frames) holding more values than this is refused unread


class ImageSource(abc.ABC):
    """The images of a table's rows, read one row at a time."""

    source: Path

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def read(self, row: int) -> np.ndarray:
        """Row ``row`` as H x W x C, ``uint8`` (eight-bit) or ``float32``."""

    def take(self, rows: np.ndarray) -> "ImageSource":
        """The source of ``rows`` only (positions or a mask), in that order: a view that reads them lazily."""
        return RowsOf(self, positions(rows))

    @property
    @abc.abstractmethod
    def eight_bit(self) -> bool:
        """Whether the values are on the 0-255 scale of a decoded image file (normalised as one)."""

    @property
    def uint8(self) -> bool:
        """Whether rows are read as ``uint8``: albumentations' colour and value transforms take floats as 0-1 and
        clip them, so they run only on these (a DICOM window is eight-bit in scale but float)."""
        return self.eight_bit

    def location(self, row: int) -> str:
        """Where row ``row`` is read from, for messages."""
        return f"{self.source} row {row}"

    def raw_bytes(self, row: int) -> bytes:
        """The row's values as bytes: what byte-identical duplicates are found by."""
        return np.ascontiguousarray(self.read(row)).tobytes()

    def image(self, row: int, channels: int) -> np.ndarray:
        """Row ``row`` with ``channels`` channels: as read, grey repeated to three, or an eight-bit RGB image as
        ITU-R 601 luma; any other count differs from the model's ``in_chans``, which is an error naming the row."""
        pixels = self.read(row)
        have = pixels.shape[2]
        if have == channels:
            return pixels
        if have == 1 and channels == 3:
            return np.repeat(pixels, 3, axis=2)
        if have == 3 and channels == 1 and pixels.dtype == np.uint8:
            return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)[:, :, None]
        raise DataError(f"{self.location(row)}: an image of {have} channels, but the model takes {channels}; set "
                        f"model.in_chans: {have}")

    def preview(self, row: int) -> np.ndarray:
        """Row ``row`` as an eight-bit grey or RGB picture, for perceptual hashes and montages: an eight-bit image of
        one or three channels as it is, any other's first channel stretched over its own range to 0-255."""
        pixels = self.read(row)
        if pixels.dtype == np.uint8 and pixels.shape[2] in (1, 3):
            return pixels
        first = pixels[:, :, 0].astype(np.float64)
        low, high = np.nanmin(first), np.nanmax(first)
        scaled = (first - low) * (255.0 / (high - low)) if high > low else np.zeros_like(first)
        return np.nan_to_num(np.round(scaled)).astype(np.uint8)[:, :, None]

    def read_order(self) -> np.ndarray:
        """The order that reads every row fastest (a reader of row groups reads each group once)."""
        return np.arange(len(self))

    def identity_files(self) -> list[Path]:
        """The files the rows are read from: their paths, sizes and modification times name a cache of them."""
        raise DataError(f"{self.source}: data.cache holds images read from files; these are in memory already")

    def check(self) -> None:
        """Every row's image is there and bounded, checked before anything trains; a reader that checked at
        construction has nothing left to do."""


class FilePerRow(ImageSource):
    """A source of one file per row (``.npy``, DICOM): its paths name the rows, the cache and the messages."""

    what = "files"  # their name in messages

    def __init__(self, paths: list[Path], source: Path):
        self.paths, self.source = [Path(path) for path in paths], source

    def __len__(self) -> int:
        return len(self.paths)

    def location(self, row: int) -> str:
        return str(self.paths[row])

    def identity_files(self) -> list[Path]:
        return self.paths

    def check(self) -> None:
        check_each(self.paths, self.check_file, self.what)

    @abc.abstractmethod
    def check_file(self, path: Path) -> None:
        """Read ``path``'s header: a ``DataError`` naming it when the file cannot be used."""


def check_each(paths, check_file, what: str) -> None:
    """``check_file`` on every path, and every failure named in one error (the first five, and the count)."""
    problems = []
    for path in paths:
        try:
            check_file(path)
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        raise DataError(f"{len(problems)} {what} cannot be used: {summarize(problems, 5)}")


def positions(keep: np.ndarray) -> np.ndarray:
    """Row positions from a boolean mask or positions."""
    keep = np.asarray(keep)
    return np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)


def as_channels_last(array: np.ndarray, layout: str, where: str) -> np.ndarray:
    """A 2-D (H x W) or 3-D array as H x W x C; ``layout`` says whether a 3-D array is ``chw`` or ``hwc``."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise DataError(f"{where}: an array of shape {tuple(array.shape)}; expected H x W or a 3-D {layout.upper()} "
                        "array")
    return np.moveaxis(array, 0, 2) if layout == "chw" else array


def in_units(pixels: np.ndarray) -> np.ndarray:
    """``uint8`` as it is; any other number type as ``float32`` (16-bit and float values kept, not rescaled)."""
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def check_value_count(shape: tuple[int, ...], where: str) -> None:
    """Refuse, before any allocation, an image declaring more than :data:`MAX_IMAGE_VALUES` values."""
    count = 1
    for side in shape:
        count *= int(side)
    if count > MAX_IMAGE_VALUES or any(int(side) < 0 for side in shape):
        raise DataError(f"{where}: declares shape {tuple(int(side) for side in shape)} ({count:,} values); at most "
                        f"{MAX_IMAGE_VALUES:,} values an image are read")


def id_path(pattern: str, image_id: str) -> str:
    """``pattern`` with ``{id}`` and ``{id[N]}`` filled from ``image_id`` (``{id[0]}/{id}.npy`` -> ``a/a1b2.npy``);
    an id shorter than N characters gives an empty part."""
    def fill(match: re.Match) -> str:
        if match[1] is None:
            return image_id
        index = int(match[1])
        return image_id[index] if index < len(image_id) else ""
    return ID_FIELD.sub(fill, pattern)


class RowsOf(ImageSource):
    """Some rows of another source, in a given order: the ``take`` of a reader that reads rows lazily."""

    def __init__(self, base: ImageSource, rows: np.ndarray):
        self.base, self.rows, self.source = base, positions(rows), base.source

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def eight_bit(self) -> bool:
        return self.base.eight_bit

    @property
    def uint8(self) -> bool:
        return self.base.uint8

    def read(self, row: int) -> np.ndarray:
        return self.base.read(int(self.rows[row]))

    def location(self, row: int) -> str:
        return self.base.location(int(self.rows[row]))

    def take(self, rows: np.ndarray) -> "RowsOf":
        return RowsOf(self.base, self.rows[positions(rows)])

    def read_order(self) -> np.ndarray:
        rank = np.empty(len(self.base), dtype=np.int64)
        rank[self.base.read_order()] = np.arange(len(self.base))
        return np.argsort(rank[self.rows], kind="stable")


class JoinedImages(ImageSource):
    """The rows of one source, then those of another (training images, then pseudo-labelled test images)."""

    def __init__(self, first: ImageSource, second: ImageSource):
        if first.eight_bit != second.eight_bit:
            raise DataError(f"{second.source}: its images are {'' if second.eight_bit else 'not '}eight-bit, those of "
                            f"{first.source} {'are' if first.eight_bit else 'are not'}; they cannot train together")
        self.first, self.second, self.source = first, second, first.source

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    @property
    def eight_bit(self) -> bool:
        return self.first.eight_bit

    @property
    def uint8(self) -> bool:
        return self.first.uint8 and self.second.uint8

    def _part(self, row: int) -> tuple[ImageSource, int]:
        return (self.first, row) if row < len(self.first) else (self.second, row - len(self.first))

    def read(self, row: int) -> np.ndarray:
        part, index = self._part(row)
        return part.read(index)

    def location(self, row: int) -> str:
        part, index = self._part(row)
        return part.location(index)
