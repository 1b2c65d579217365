"""Pixel-table competitions (Digit Recognizer, Fashion-MNIST, Kannada-MNIST, Sign Language MNIST): one table row
of pixel values per image, columns ``pixel0..pixelN-1``, and no image files.

The pixels are parsed in chunks straight into one uint8 array (60,000 x 784 is 47 MB, never float64 or strings),
and the images are served from it by row: nothing is written to disk.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.errors import DataError, summarize
from kagglecv.data.sources import ImageSource, in_units, positions

PIXEL_COLUMN = re.compile(r"pixel(\d+)")
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class PixelShape:
    height: int
    width: int
    channels: int
    layout: str = "hwc"  # 3 channels: pixel index runs over (row, column, channel), or (channel, row, column)


class PixelImages(ImageSource):
    """Images held as one (N, H, W, C) array, indexed by row like a list of image files: a pixel table's rows
    (uint8), a parquet or JSON reader's, or a cache of decoded files or a reader's rows. Any number of channels;
    any type other than ``uint8`` is read as ``float32``; ``eight_bit`` (by default: uint8) says whether the values
    are on the 0-255 scale."""

    def __init__(self, pixels: np.ndarray, source: Path, eight_bit: bool | None = None):
        self.pixels, self.source = pixels, source
        self._eight_bit = pixels.dtype == np.uint8 if eight_bit is None else eight_bit

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def eight_bit(self) -> bool:
        return self._eight_bit

    @property
    def uint8(self) -> bool:
        return self.pixels.dtype == np.uint8

    def read(self, row: int) -> np.ndarray:
        return in_units(self.pixels[row])

    def take(self, rows: np.ndarray) -> "PixelImages":
        return PixelImages(self.pixels[positions(rows)], self.source, self._eight_bit)

    def raw_bytes(self, row: int) -> bytes:
        return self.pixels[row].tobytes()


def pixel_columns(columns: list[str], source: Path) -> list[str]:
    """The table's ``pixel<i>`` columns in pixel order; they must be exactly pixel0..pixelN-1 (or absent)."""
    found = {int(match[1]): name for name in columns if (match := PIXEL_COLUMN.fullmatch(name))}
    if not found:
        return []
    last = max(found)
    if last >= len(columns):  # checked before any range is built: pixel3000000000 in a short header
        raise DataError(f"{source}: pixel columns must be pixel0..pixel{len(found) - 1}; the header names "
                        f"pixel{last} among {len(found)} pixel columns")
    missing = sorted(set(range(last + 1)) - set(found))
    repeated = len(found) != sum(1 for name in columns if PIXEL_COLUMN.fullmatch(name))
    if missing or repeated:
        raise DataError(f"{source}: pixel columns must be pixel0..pixel{last}, each once; "
                        + (f"missing {summarize([f'pixel{i}' for i in missing], quote=True)}" if missing
                           else "some appear twice"))
    return [found[index] for index in range(len(found))]


def pixel_shape(n_pixels: int, settings, source: Path) -> PixelShape:
    """The configured ``data.pixels`` shape, or one inferred when unambiguous: a square single-channel image."""
    if settings is not None:
        shape = PixelShape(settings.height, settings.width, settings.channels, settings.layout)
        if shape.height * shape.width * shape.channels != n_pixels:
            raise DataError(f"{source}: data.pixels {shape.height}x{shape.width}x{shape.channels} = "
                            f"{shape.height * shape.width * shape.channels} values, but the table has {n_pixels} "
                            "pixel columns")
        return shape
    side = math.isqrt(n_pixels)
    if side * side != n_pixels:
        raise DataError(f"{source}: {n_pixels} pixel columns is not a square grey image; set data.pixels "
                        "{width, height, channels} (and layout for colour)")
    return PixelShape(side, side, 1)


def read_pixels(raw: bytes, sep: str, columns: list[str], shape: PixelShape, source: Path) -> np.ndarray:
    """The pixel columns of a CSV as (N, H, W, C) uint8, parsed in chunks by pandas' C parser; a value outside
    0-255, empty, or not an integer is an error naming its line and column."""
    chunks = []
    try:
        reader = pd.read_csv(io.BytesIO(raw), sep=sep, usecols=columns, dtype=np.float32, chunksize=CHUNK_ROWS,
                             encoding="utf-8-sig")
        for chunk in reader:
            chunks.append(_exact_uint8(chunk[columns].to_numpy()))
    except ValueError:
        raise DataError(_bad_pixel_cells(raw, sep, columns, source)) from None
    flat = np.concatenate(chunks) if chunks else np.zeros((0, len(columns)), dtype=np.uint8)
    if shape.channels == 3 and shape.layout == "chw":
        return flat.reshape(-1, 3, shape.height, shape.width).transpose(0, 2, 3, 1).copy()
    return flat.reshape(-1, shape.height, shape.width, shape.channels)


def _exact_uint8(values: np.ndarray) -> np.ndarray:
    """``values`` as uint8 when every one is an integer in 0-255, else ``ValueError``."""
    pixels, valid = _cast_to_pixels(values)
    if not valid.all():
        raise ValueError("not integers in 0-255")
    return pixels


def _cast_to_pixels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values as uint8, which cells were integers in 0-255)``: one cast and one comparison (8x faster than range
    and remainder tests). Whatever the cast makes of a value outside 0-255, of a fraction or of NaN (an empty or
    non-numeric cell), it is an integer in 0-255 and cannot equal that value."""
    with np.errstate(invalid="ignore"):
        pixels = values.astype(np.uint8)
    return pixels, pixels == values


def _bad_pixel_cells(raw: bytes, sep: str, columns: list[str], source: Path) -> str:
    """The message for a table whose pixels do not parse: the bad cells, found by a slower string pass."""
    cells = []
    reader = pd.read_csv(io.BytesIO(raw), sep=sep, usecols=columns, dtype=str, keep_default_na=False,
                         chunksize=CHUNK_ROWS, encoding="utf-8-sig")
    for index, chunk in enumerate(reader):
        chunk = chunk[columns]
        values = pd.to_numeric(chunk.stack(), errors="coerce").to_numpy(dtype=np.float64).reshape(chunk.shape)
        rows, cols = np.nonzero(~_cast_to_pixels(values)[1])
        cells += [f"line {index * CHUNK_ROWS + r + 2} {columns[c]} = {chunk.iat[r, c]!r}" for r, c in zip(rows, cols)]
        if len(cells) > 20:
            break
    return f"{source}: pixel values not integers in 0-255: {summarize(cells)}"
