"""HDF5 files (ISIC 2024: ``train-image.hdf5`` and ``test-image.hdf5``, a dataset per ``isic_id`` holding the JPEG's
bytes), read with h5py (``pip install 'kagglecv[hdf5]'``). Two layouts: a dataset per id holding an encoded image
(decoded as an image file is, under the same pixel limit), or one array dataset (``reader.dataset``) whose rows are
the table's rows in order.

The file is opened lazily, once per process, and never pickled: a data-loader worker started by fork opens its own
handle. An HDF5 file is untrusted input: a link that is not a hard link (an external link to another file, a soft
link), a virtual dataset or one stored in external raw files is refused, as is a dataset declaring more bytes than an
encoded image or an image may hold, before it is read.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from kagglecv.core.errors import DataError, require_extra, summarize
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.data.decoding import decode_image
from kagglecv.data.sources import (
    ImageSource,
    as_channels_last,
    check_value_count,
    in_units,
)

h5py = imported_on_first_use("h5py")

MAX_ENCODED_BYTES = 256 << 20  # one encoded image


class Hdf5Images(ImageSource):
    """Rows read from one HDF5 file: ``keys[row]`` datasets of encoded bytes, or rows of the array ``dataset``."""

    def __init__(self, path: Path, keys: list[str], dataset: str | None, layout: str, source: Path):
        require_extra("h5py", "hdf5", "HDF5 images")
        self.path, self.keys, self.dataset, self.layout, self.source = Path(path), list(keys), dataset, layout, source
        self._handle, self._pid, self._descriptor = None, None, None
        self._eight_bit = True
        try:
            self._check_layout()
        finally:  # no handle crosses a fork into a loader worker
            self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            os.close(self._descriptor)
        self._handle, self._pid, self._descriptor = None, None, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": None, "_descriptor": None}

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def eight_bit(self) -> bool:
        return self._eight_bit

    def location(self, row: int) -> str:
        return f"{self.path} dataset {self.keys[row]!r}" if self.dataset is None else \
            f"{self.path} {self.dataset}[{row}]"

    def identity_files(self) -> list[Path]:
        return [self.path]

    def file(self):
        """This process's handle on the file (opened on first use, again in a forked worker)."""
        if self._handle is None or self._pid != os.getpid():
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"{self.path}: not an HDF5 file h5py can open ({' '.join(str(exc).split())[:160]})") \
                    from None
            self._pid, self._descriptor = os.getpid(), os.open(self.path, os.O_RDONLY)
        return self._handle

    def read(self, row: int) -> np.ndarray:
        if self.dataset is not None:
            array = self.file()[self.dataset][row]
            return in_units(as_channels_last(np.asarray(array), self.layout, self.location(row)))
        where = self.location(row)
        encoded = _read_encoded(self.file().id, self._descriptor, self.keys[row], self.path, where)
        return decode_image(io.BytesIO(encoded), where)

    def _check_layout(self) -> None:
        """Every key present as a plain dataset (or the array dataset of the right length), checked now."""
        handle = self.file()
        if self.dataset is not None:
            node = _checked_dataset(handle, self.dataset, self.path)
            if node.ndim not in (3, 4) or node.shape[0] != len(self.keys):
                raise DataError(f"{self.path}: dataset {self.dataset!r} has shape {node.shape}; expected one image a "
                                f"row for the table's {len(self.keys)} rows")
            check_value_count(node.shape[1:], f"{self.path} dataset {self.dataset!r}")
            self._eight_bit = node.dtype == np.uint8
            return
        missing = [key for key in self.keys if not _linked(handle.id, key)]
        if missing:
            raise DataError(f"{self.path}: {len(missing)} ids have no dataset: {summarize(missing, quote=True)}")


LINK_KINDS = {1: "a soft link", 64: "an external link"}  # h5py.h5l.TYPE_SOFT, TYPE_EXTERNAL


def _checked_dataset(handle, key: str, path: Path):
    """``handle[key]`` when it is a hard-linked dataset stored in this file; one error naming it otherwise."""
    _check_link(handle.id, key, path)
    node = handle[key]
    if not isinstance(node, h5py.Dataset):
        raise DataError(f"{path}: {key!r} is a group, not a dataset")
    plist = node.id.get_create_plist()
    _check_storage(plist, key, path)
    return node


def _linked(group_id, key: str) -> bool:
    """Whether ``key`` names a link in the file (a sixth of the cost of ``key in handle``)."""
    try:
        return bool(group_id.links.exists(key.encode()))
    except (KeyError, ValueError):  # a path through a missing group
        return False


def _check_link(group_id, key: str, path: Path) -> None:
    try:
        link = group_id.links.get_info(key.encode())
    except KeyError:
        raise DataError(f"{path}: no dataset {key!r}") from None
    if link.type != h5py.h5l.TYPE_HARD:
        raise DataError(f"{path}: {key!r} is {LINK_KINDS.get(link.type, 'a user-defined link')}, not a dataset in "
                        "this file; links out of it are refused")


def _check_storage(plist, key: str, path: Path) -> None:
    virtual = plist.get_layout() == h5py.h5d.VIRTUAL
    if virtual or plist.get_external_count() > 0:
        raise DataError(f"{path}: dataset {key!r} is {'virtual' if virtual else 'stored in external files'}; "
                        "only data inside the file is read")


def _read_encoded(group_id, descriptor: int, key: str, path: Path, where: str) -> bytes:
    """An encoded image's bytes, checked and bounded before they are read: a scalar fixed-length byte string or
    opaque value, or a 1-D uint8 array. Through h5py's low-level API: a dataset with a raw-data address in this
    file (contiguous, unfiltered, not virtual, not external: HDF5 gives no address otherwise; ISIC 2024's layout)
    is one ``pread`` at it; any other has its storage checked, then is read by HDF5."""
    _check_link(group_id, key, path)
    try:
        dataset = h5py.h5o.open(group_id, key.encode())
    except KeyError:
        raise DataError(f"{path}: no dataset {key!r}") from None
    if not isinstance(dataset, h5py.h5d.DatasetID):
        raise DataError(f"{path}: {key!r} is a group, not a dataset")
    offset = dataset.get_offset()
    if offset is None:
        _check_storage(dataset.get_create_plist(), key, path)
    dtype, shape = dataset.dtype, dataset.shape
    if not ((dtype.kind in "SV" and shape == ()) or (dtype == np.uint8 and len(shape) == 1)):
        if dtype.kind == "O" and shape == () and h5py.check_string_dtype(dtype) is not None:
            return _variable_length(h5py.Dataset(dataset)[()], where)
        raise DataError(f"{where}: holds {dtype} of shape {shape}; expected an encoded image's bytes (or set "
                        "data.reader.dataset for one array of images)")
    declared = dtype.itemsize * (shape[0] if shape else 1)
    if declared > MAX_ENCODED_BYTES:
        raise DataError(f"{where}: {declared:,} bytes; an encoded image over {MAX_ENCODED_BYTES:,} is refused")
    if offset is not None:
        encoded = os.pread(descriptor, declared, offset)  # raw bytes: S, V and u1 need no conversion
        if len(encoded) != declared:
            raise DataError(f"{where}: the file ends before the dataset's {declared:,} bytes (truncated?)")
        return encoded
    value = np.empty(shape, dtype=dtype)
    dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, value)
    return value.tobytes()


def _variable_length(value, where: str) -> bytes:
    if len(value) > MAX_ENCODED_BYTES:
        raise DataError(f"{where}: {len(value):,} bytes; an encoded image over {MAX_ENCODED_BYTES:,} is refused")
    return value if isinstance(value, bytes) else value.encode("latin-1")
