"""JSON bands (Statoil/C-CORE Iceberg: ``train.json``, a list of records ``{"id", "band_1", "band_2", "inc_angle",
"is_iceberg"}``, each band 75 x 75 floats in dB): the table and its images at once. The named bands, stacked as
channels, become a float32 array in their own units; every other field stays in the table as a string column
(``inc_angle``'s ``"na"`` included).

The file is parsed record by record from a buffered stream (``json.JSONDecoder.raw_decode`` on a window that grows
only while a record is incomplete), so the whole file is never one string in memory (Statoil's test.json is 1.5 GB):
memory grows with the bands' values, 4 bytes each. A record over ``MAX_RECORD_BYTES`` characters (a 1 GB line), a
band of another length or a value that is not a finite number is refused, naming the record's index.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from kagglecv.core.errors import DataError, summarize
from kagglecv.data.pixels import PixelImages
from kagglecv.data.sources import check_value_count

MAX_RECORD_BYTES = 64 << 20
MAX_FIELD_CHARS = 65_536
CHUNK_BYTES = 1 << 20
_DECODER = json.JSONDecoder()


def read_json_bands(path: Path, bands: list[str], height: int | None = None,
                    width: int | None = None) -> tuple[pd.DataFrame, PixelImages]:
    """The scalar fields of ``path``'s records as a string table, and their ``bands`` as (N, H, W, bands) float32."""
    if not bands:
        raise DataError(f"{path}: data.reader.bands names no band (Statoil: [band_1, band_2])")
    fields: list[dict[str, str]] = []
    images: list[np.ndarray] = []
    shape = (height, width) if height and width else None
    for index, record in enumerate(_records(path)):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {index} is a {type(record).__name__}, not an object")
        planes = [_band(record, name, index, path) for name in bands]
        shape = shape or _square(len(planes[0]), index, path)
        if any(len(plane) != shape[0] * shape[1] for plane in planes):
            raise DataError(f"{path}: record {index}: bands of {[len(plane) for plane in planes]} values, not "
                            f"{shape[0]} x {shape[1]}")
        images.append(np.stack([plane.reshape(shape) for plane in planes], axis=2))
        fields.append({key: _scalar(value, key, index, path) for key, value in record.items() if key not in bands})
    if not images:
        raise DataError(f"{path}: no records")
    frame = pd.DataFrame(fields).fillna("").astype(str)
    return frame, PixelImages(np.stack(images), path)


def is_json_records(path: Path) -> bool:
    """Whether ``path`` is a ``.json`` file that opens a list of objects (``[{``, or an empty list): JSON bands, not a
    COCO label file (an object) nor anything else."""
    if Path(path).suffix.lower() != ".json":
        return False
    try:
        with open(path, "rb") as handle:
            start = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False
    return start[:1] == b"[" and start[1:].lstrip(b" \t\r\n")[:1] in (b"{", b"]")


def json_records_head(path: Path) -> dict:
    """The first record of ``path`` (read as far as it ends, not the whole file)."""
    first = next(iter(_records(path)), None)
    if not isinstance(first, dict):
        raise DataError(f"{path}: its first element is not a record (an object)")
    return first


def _band(record: dict, name: str, index: int, path: Path) -> np.ndarray:
    if name not in record:
        raise DataError(f"{path}: record {index} has no band {name!r}; its keys are "
                        f"{summarize(list(record), quote=True)}")
    values = record[name]
    if not isinstance(values, list) or not all(isinstance(value, (int, float)) and not isinstance(value, bool)
                                               for value in values):
        raise DataError(f"{path}: record {index} band {name!r} is not a list of numbers")
    check_value_count((len(values),), f"{path} record {index} band {name!r}")
    plane = np.asarray(values, dtype=np.float32)
    if not np.isfinite(plane).all():
        raise DataError(f"{path}: record {index} band {name!r} holds NaN or infinite values")
    return plane


def _square(count: int, index: int, path: Path) -> tuple[int, int]:
    side = math.isqrt(count)
    if side * side != count:
        raise DataError(f"{path}: record {index}: a band of {count} values is not square; set data.reader.height and "
                        "width")
    return side, side


def _scalar(value, key: str, index: int, path: Path) -> str:
    if isinstance(value, (dict, list)):
        raise DataError(f"{path}: record {index} field {key!r} is a {type(value).__name__}; list it in "
                        "data.reader.bands if it is a band")
    text = "" if value is None else str(value)
    if len(text) > MAX_FIELD_CHARS:
        raise DataError(f"{path}: record {index} field {key!r} is {len(text):,} characters long")
    return text


def _records(path: Path) -> Iterator[object]:
    """The elements of the top-level JSON list in ``path``, one at a time."""
    with open(path, "r", encoding="utf-8-sig") as handle:
        buffer, position = _fill(handle, ""), 0
        buffer = buffer.lstrip()
        if not buffer.startswith("["):
            raise DataError(f"{path}: not a JSON list of records")
        position, index = 1, 0
        while True:
            buffer, position = _skip(handle, buffer, position, ", \t\r\n" if index else " \t\r\n")
            if buffer[position:position + 1] == "]":
                return
            record, buffer, position = _next_value(handle, buffer, position, index, path)
            yield record
            index += 1
            buffer, position = _skip(handle, buffer, position, " \t\r\n")
            if buffer[position:position + 1] not in (",", "]"):
                raise DataError(f"{path}: record {index - 1} is not followed by ',' or ']'")


def _fill(handle, buffer: str) -> str:
    return buffer + handle.read(CHUNK_BYTES)


def _skip(handle, buffer: str, position: int, characters: str) -> tuple[str, int]:
    while True:
        while position < len(buffer) and buffer[position] in characters:
            position += 1
        if position < len(buffer):
            return buffer, position
        more = handle.read(CHUNK_BYTES)
        if not more:
            return buffer, position
        buffer, position = buffer[position:] + more, 0


def _next_value(handle, buffer: str, position: int, index: int, path: Path) -> tuple[object, str, int]:
    """The JSON value starting at ``position``, reading more (doubling the window) while it is incomplete."""
    buffer = buffer[position:]
    while True:
        try:
            value, end = _DECODER.raw_decode(buffer)
            return value, buffer, end
        except json.JSONDecodeError as exc:
            if len(buffer) > MAX_RECORD_BYTES:
                raise DataError(f"{path}: record {index} is over {MAX_RECORD_BYTES:,} characters (or not valid "
                                "JSON)") from None
            more = handle.read(max(CHUNK_BYTES, len(buffer)))
            if not more:
                raise DataError(f"{path}: record {index}: invalid JSON ({exc.msg})") from None
            buffer += more
