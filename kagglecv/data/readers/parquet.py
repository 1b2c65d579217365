"""Parquet pixel rows (Bengali.AI: ``train_image_data_{0..3}.parquet``, each row an ``image_id`` and 137 x 236
uint8 columns ``0..32331``), read with pyarrow row group by row group, only the id column and the pixel columns, into
one uint8 array of the table's rows (the rows of the files that the table does not name are skipped).

Bounded before allocating: the schema's column count, each file's declared row count, and the array the table's
rows need (``MAX_PARQUET_PIXEL_BYTES``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kagglecv.core.errors import DataError, require_extra, summarize
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.data.pixels import PixelImages

parquet = imported_on_first_use("pyarrow.parquet")

MAX_PARQUET_COLUMNS = 1 << 20
MAX_PARQUET_PIXEL_BYTES = 16 << 30


def read_parquet_pixels(files: list[Path], id_column: str, ids: np.ndarray, height: int | None, width: int | None,
                        source: Path) -> PixelImages:
    """The images of ``ids`` (in that order) from the pixel rows of ``files``."""
    require_extra("pyarrow", "parquet", "parquet pixel rows")
    if not files:
        raise DataError(f"{source}: no parquet files hold the images (data.reader.path matched none)")
    wanted = {str(image_id): row for row, image_id in enumerate(ids)}
    pixels, found = None, np.zeros(len(ids), dtype=bool)
    for path in files:
        handle = _open(path)
        columns = _pixel_columns(handle.schema_arrow.names, id_column, path)
        height, width = _shape(len(columns), height, width, path)
        if pixels is None:
            _check_allocation(len(ids), height * width, source)
            pixels = np.zeros((len(ids), height, width, 1), dtype=np.uint8)
        elif pixels.shape[1:3] != (height, width):
            raise DataError(f"{path}: {len(columns)} pixel columns, not the {pixels.shape[1] * pixels.shape[2]} of "
                            f"{files[0].name}")
        _fill_rows(handle, [id_column, *columns], wanted, pixels, found, path)
    if not found.all():
        missing = [str(image_id) for image_id in ids[~found]]
        raise DataError(f"{source}: {len(missing)} ids are in no parquet file: {summarize(missing, quote=True)}")
    return PixelImages(pixels, source)


def parquet_columns(path: Path) -> list[str]:
    """The column names of a parquet file, read from its footer (bounded as for reading)."""
    require_extra("pyarrow", "parquet", "parquet pixel rows")
    return list(_open(path).schema_arrow.names)


def _open(path: Path):
    try:
        handle = parquet.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for a file that is not parquet
        raise DataError(f"{path}: not a parquet file ({' '.join(str(exc).split())[:160]})") from None
    count = handle.metadata.num_columns
    if count > MAX_PARQUET_COLUMNS:
        raise DataError(f"{path}: {count:,} columns; at most {MAX_PARQUET_COLUMNS:,} are read")
    return handle


def _pixel_columns(names: list[str], id_column: str, path: Path) -> list[str]:
    """The pixel columns: every column but the id, named ``0..N-1`` (or ``pixel0..``) in order."""
    if id_column not in names:
        raise DataError(f"{path}: no id column {id_column!r}; columns are {summarize(names, quote=True)}")
    columns = [name for name in names if name != id_column]
    numbers = [name[5:] if name.startswith("pixel") else name for name in columns]
    if not all(number.isdigit() for number in numbers) or [int(n) for n in numbers] != list(range(len(numbers))):
        raise DataError(f"{path}: the columns besides {id_column!r} must be the pixels 0..N-1 in order; found "
                        f"{summarize(columns, quote=True)}")
    return columns


def _shape(count: int, height: int | None, width: int | None, path: Path) -> tuple[int, int]:
    if height and width:
        if height * width != count:
            raise DataError(f"{path}: data.reader height x width = {height * width}, but there are {count} pixel "
                            "columns")
        return height, width
    side = math.isqrt(count)
    if side * side != count:
        raise DataError(f"{path}: {count} pixel columns is not a square image; set data.reader.height and width "
                        "(Bengali.AI: 137 and 236)")
    return side, side


def _check_allocation(rows: int, values: int, source: Path) -> None:
    if rows * values > MAX_PARQUET_PIXEL_BYTES:
        raise DataError(f"{source}: {rows:,} images of {values:,} pixels would take {rows * values:,} bytes; at most "
                        f"{MAX_PARQUET_PIXEL_BYTES:,} are held in memory")


def _fill_rows(handle, columns: list[str], wanted: dict[str, int], pixels: np.ndarray, found: np.ndarray,
               path: Path) -> None:
    """Copy the wanted rows of each row group into ``pixels``; a value outside 0-255 or missing is an error."""
    for group in range(handle.num_row_groups):
        table = handle.read_row_group(group, columns=columns)
        keys = [str(value) for value in table.column(0).to_pylist()]
        rows = [(position, wanted[key]) for position, key in enumerate(keys) if key in wanted]
        if not rows:
            continue
        source_rows = np.array([position for position, _ in rows])
        values = np.column_stack([table.column(index).to_numpy(zero_copy_only=False)[source_rows]
                                  for index in range(1, table.num_columns)])
        if values.dtype != np.uint8:
            if np.isnan(values.astype(np.float64)).any() or values.min() < 0 or values.max() > 255 or \
                    (values.astype(np.float64) % 1 != 0).any():
                raise DataError(f"{path}: row group {group}: pixel values not integers in 0-255")
        targets = np.array([target for _, target in rows])
        if found[targets].any():
            twice = [keys[position] for position, target in rows if found[target]]
            raise DataError(f"{path}: ids appear twice among the parquet files: {summarize(twice, quote=True)}")
        pixels[targets] = values.astype(np.uint8).reshape(len(rows), *pixels.shape[1:])
        found[targets] = True
