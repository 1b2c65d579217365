"""Parquet pixel rows (Bengali.AI: ``train_image_data_{0..3}.parquet``, each row an ``image_id`` and 137 x 236
uint8 columns ``0..32331``, about 50,000 rows a file), read with pyarrow (``pip install 'kagglecv[parquet]'``).

Streamed, never loaded whole: opening reads only the id column of every row group, to know where each of the
table's ids is; a row is then read with its row group's pixel columns, the last row groups kept per process
(:data:`GROUPS_KEPT`), so memory is bounded by row groups, not by the files. Reading the rows in
:meth:`ParquetImages.read_order` (file, row group, position) reads each row group once: what ``data.cache: disk``
does to hold a shuffled training's images as one memory-mapped array. Bounded before allocating: the schema's
column count and a row group's pixel bytes.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from kagglecv.core.errors import DataError, require_extra, summarize
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.data.sources import ImageSource

parquet = imported_on_first_use("pyarrow.parquet")

MAX_PARQUET_COLUMNS = 1 << 20
MAX_GROUP_PIXEL_BYTES = 4 << 30
GROUPS_KEPT = 2


class ParquetImages(ImageSource):
    """The rows of ``ids`` in the pixel rows of ``files`` (grey, uint8), read row group by row group."""

    def __init__(self, files: list[Path], id_column: str, ids: np.ndarray, height: int | None, width: int | None,
                 source: Path):
        require_extra("pyarrow", "parquet", "parquet pixel rows")
        if not files:
            raise DataError(f"{source}: no parquet files hold the images (data.reader.path matched none)")
        self.files, self.id_column, self.source = [Path(path) for path in files], id_column, source
        self.columns, self.shape = _layout(self.files, id_column, height, width)
        self.file_of, self.group_of, self.offset_of = _locate(self.files, id_column, ids, source)
        self._groups: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_groups": OrderedDict()}

    def __len__(self) -> int:
        return len(self.file_of)

    @property
    def eight_bit(self) -> bool:
        return True

    def location(self, row: int) -> str:
        return f"{self.files[self.file_of[row]]} row group {self.group_of[row]} row {self.offset_of[row]}"

    def identity_files(self) -> list[Path]:
        return self.files

    def read_order(self) -> np.ndarray:
        """The rows in file order: each row group read once."""
        return np.lexsort((self.offset_of, self.group_of, self.file_of))

    def read(self, row: int) -> np.ndarray:
        return self._group(int(self.file_of[row]), int(self.group_of[row]))[self.offset_of[row]]

    def _group(self, file: int, group: int) -> np.ndarray:
        if self._pid != os.getpid():  # a forked loader worker keeps none of its parent's row groups
            self._groups, self._pid = OrderedDict(), os.getpid()
        key = (file, group)
        if key not in self._groups:
            self._groups[key] = _read_group(self.files[file], group, self.columns, self.shape)
            while len(self._groups) > GROUPS_KEPT:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        return self._groups[key]


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


def _layout(files: list[Path], id_column: str, height: int | None, width: int | None) -> tuple[list[str], tuple]:
    """The pixel columns and the image shape, the same in every file."""
    columns = None
    for path in files:
        found = _pixel_columns(_open(path).schema_arrow.names, id_column, path)
        if columns is not None and found != columns:
            raise DataError(f"{path}: {len(found)} pixel columns, not the {len(columns)} of {files[0].name}")
        columns = found
    return columns, (*_shape(len(columns), height, width, files[0]), 1)


def _locate(files: list[Path], id_column: str, ids: np.ndarray, source: Path) -> tuple[np.ndarray, ...]:
    """For each of ``ids``: its file, row group and position there, from the id columns alone."""
    wanted = {str(image_id): row for row, image_id in enumerate(ids)}
    where = np.full((3, len(ids)), -1, dtype=np.int64)
    twice = []
    for file, path in enumerate(files):
        handle = _open(path)
        for group in range(handle.num_row_groups):
            keys = handle.read_row_group(group, columns=[id_column]).column(0).to_pylist()
            for offset, key in enumerate(keys):
                row = wanted.get(str(key))
                if row is None:
                    continue
                if where[0, row] >= 0:
                    twice.append(str(key))
                where[:, row] = (file, group, offset)
    if twice:
        raise DataError(f"{source}: ids appear twice among the parquet files: {summarize(twice, quote=True)}")
    missing = [str(image_id) for image_id in ids[where[0] < 0]]
    if missing:
        raise DataError(f"{source}: {len(missing)} ids are in no parquet file: {summarize(missing, quote=True)}")
    return where[0], where[1], where[2]


def _read_group(path: Path, group: int, columns: list[str], shape: tuple) -> np.ndarray:
    """One row group's images as (rows, H, W, 1) uint8; a value outside 0-255, fractional or missing is an error."""
    handle = _open(path)
    rows = handle.metadata.row_group(group).num_rows
    if rows * len(columns) > MAX_GROUP_PIXEL_BYTES:
        raise DataError(f"{path}: row group {group} holds {rows:,} x {len(columns):,} pixels; at most "
                        f"{MAX_GROUP_PIXEL_BYTES:,} are read at once")
    table = handle.read_row_group(group, columns=columns)
    values = np.empty((rows, len(columns)), dtype=np.uint8)
    for index in range(len(columns)):
        column = table.column(index)
        if column.null_count:
            raise DataError(f"{path}: row group {group} column {columns[index]!r} has empty pixels")
        numbers = column.to_numpy()
        if numbers.dtype != np.uint8 and not _exact_uint8(numbers):
            raise DataError(f"{path}: row group {group} column {columns[index]!r}: pixel values not integers in 0-255")
        values[:, index] = numbers
    return values.reshape(rows, *shape)


def _exact_uint8(numbers: np.ndarray) -> bool:
    if numbers.dtype.kind not in "iuf":
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.array_equal(numbers.astype(np.uint8), numbers))


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
