"""``.npy`` arrays, one file per row (SETI Breakthrough Listen: ``train/{id[0]}/{id}.npy``, float16 6 x 273 x 256;
G2Net): read with numpy, never unpickled, memory-mapped after the header was checked against the file's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kagglecv.core.errors import DataError
from kagglecv.data.sources import (
    FilePerRow,
    as_channels_last,
    check_value_count,
    in_units,
)

MAX_HEADER_BYTES = 1 << 16


def npy_header(path: Path, check_shape=None) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data offset)`` of a ``.npy`` file, read from its header only; a file that is
    not one, holds objects (pickles), declares more values than one image may hold (or than ``check_shape``, called
    with the shape and the file's name, allows) or is shorter than its header says is an error naming it."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # 3.0 only adds structured names
            if read is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read(handle, max_header_size=MAX_HEADER_BYTES)
            offset = handle.tell()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, SyntaxError, TypeError) as exc:
        raise DataError(f"{path}: not a .npy array ({' '.join(str(exc).split())[:160]})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise DataError(f"{path}: holds {dtype} values; expected numbers (an object array would need unpickling, "
                        "which kagglecv never does)")
    (check_shape or check_value_count)(shape, str(path))
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise DataError(f"{path}: {size} bytes, fewer than the {expected} its header declares (truncated?)")
    return tuple(int(side) for side in shape), dtype, bool(fortran), offset


class NpyImages(FilePerRow):
    """One ``.npy`` file per row; a 3-D array is C x H x W (``layout: chw``, SETI's cadence panels) or H x W x C."""

    what = "arrays"

    def __init__(self, paths: list[Path], layout: str, source: Path):
        super().__init__(paths, source)
        self.layout = layout
        self._eight_bit = npy_header(self.paths[0])[1] == np.uint8 if self.paths else True

    @property
    def eight_bit(self) -> bool:
        return self._eight_bit

    def check_file(self, path: Path) -> None:
        npy_header(path)

    def read(self, row: int) -> np.ndarray:
        path = self.paths[row]
        shape, dtype, fortran, offset = npy_header(path)
        array = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        pixels = as_channels_last(array, self.layout, str(path))
        if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
            raise DataError(f"{path}: holds NaN or infinite values")
        return in_units(pixels)
