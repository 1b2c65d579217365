"""One reader per image source that is not a folder of image files, chosen by ``data.reader`` (which ``init``
writes): ``.npy`` arrays, DICOM, HDF5, parquet pixel rows and JSON bands. Each turns a table's rows into an
:class:`~kagglecv.data.sources.ImageSource`, bounded before it allocates, and serves the training and the test
side (and a hidden test in a notebook) the same way. Readers needing a library outside kagglecv's core
dependencies import it on first use and name the extra to install when it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kagglecv.core.config import ReaderConfig
from kagglecv.core.errors import DataError
from kagglecv.data.readers.dicom import DicomImages
from kagglecv.data.readers.hdf5 import Hdf5Images
from kagglecv.data.readers.npy import NpyImages
from kagglecv.data.readers.parquet import ParquetImages
from kagglecv.data.sources import ImageSource

PER_ID_KINDS = ("npy", "dicom")   # one file per row, found from its id by reader.path
CONTAINER_KINDS = ("hdf5", "parquet")  # files holding many rows, named by reader.path under the image folder


def per_id_source(reader: ReaderConfig, paths: list[Path], source: Path) -> ImageSource:
    """The source of one file per row (``paths`` resolved and checked by the table's loader)."""
    if reader.kind == "npy":
        return NpyImages(paths, reader.layout, source)
    return DicomImages(paths, reader.windows, source)


def container_source(reader: ReaderConfig, roots: list[Path], ids: np.ndarray, id_col: str, source: Path,
                     test: bool) -> ImageSource:
    """The rows of ``ids`` from the HDF5 file or the parquet files that ``reader.path`` names under ``roots``."""
    pattern = reader.pattern(test)
    if reader.kind == "hdf5":
        files = contained_files(roots, pattern, glob=False)
        if len(files) != 1:
            raise DataError(f"data.reader.path: {pattern!r} is not a file under {', '.join(map(str, roots))}")
        return Hdf5Images(files[0], [str(image_id) for image_id in ids], reader.dataset, reader.layout, source)
    files = contained_files(roots, pattern, glob=True)
    return ParquetImages(files, reader.id_column or id_col, ids, reader.height, reader.width, source)


def contained_files(roots: list[Path], pattern: str, glob: bool) -> list[Path]:
    """The files ``pattern`` names (a glob when ``glob``) under each root, in name order; a name leading out of its
    root (``..``, an absolute path) is refused. Links in the folder are followed, as for image files: Kaggle's
    ``/kaggle/input`` and an unpacked archive's view are made of them."""
    if os.path.isabs(pattern) or ".." in Path(pattern).parts:
        raise DataError(f"data.reader.path: {pattern!r} leads outside the image folder; name the files inside it")
    found = []
    for root in roots:
        inside = os.path.join(os.path.normpath(os.path.abspath(root)), "")
        candidates = sorted(root.glob(pattern)) if glob else [root / pattern]
        for path in candidates:
            if not os.path.normpath(os.path.abspath(path)).startswith(inside):
                raise DataError(f"data.reader.path: {path} leads outside {root}")
            if path.is_file():
                found.append(path)
    return found
