"""``data.cache``: every image decoded once, into one array (uint8, or float32 for a reader's raw values) shared by
the folds of a run and by the data-loader workers, instead of a decode per image per epoch per fold.

``memory`` stacks the decoded images in RAM (workers started by fork share the pages); ``disk`` writes them once as
a ``.npy`` file under ``<runs_dir>/.cache/`` (a name no experiment can take) and memory-maps it (every process maps
the same pages; a second run on the same table reads it back). The disk cache is named by a key over the table's
sha256 and each image file's path, size and modification time, so a changed table or a file changed under an
unchanged table makes a new cache instead of training on stale pixels. The cached images are what ``decode_image``
returns (RGB uint8), or what a reader's source reads (its files named as image files are: ``.npy``, DICOM, one
HDF5, parquet files), as a :class:`~kagglecv.data.pixels.PixelImages`, the path pixel tables already take; the
transforms run on them as on a decoded file. Images of several sizes are refused for now: resizing them in the cache
would change what the augmentation pipeline sees.

The cache is kagglecv's own file, yet it is read back as untrusted input: the folder must be a real folder inside
``runs_dir`` (never a link, so nothing is written into an input), and an entry must carry the header of what it
stands for (the first image's type, one row per image, the first image's shape), its sha256 must be the one written
beside it (``.sha256``) when it was made, and its first and last rows must be those images decoded now. Anything
else is one error naming the file: delete it and kagglecv makes it again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from kagglecv.core.errors import DataError, KagglecvError, summarize
from kagglecv.core.files import sha256_file, write_text
from kagglecv.data.decoding import check_images, decode_image
from kagglecv.data.pixels import PixelImages
from kagglecv.data.sources import ImageSource
from kagglecv.data.table import CompetitionData

CACHE_FOLDER = ".cache"  # under runs_dir; experiment names start with a letter or digit


def cache_key(paths: list[Path], table: Path) -> str:
    """The identity of the decoded images: the table's content and every file's path, size and mtime (ns)."""
    digest = hashlib.sha256(sha256_file(table).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def check_images_once(data: CompetitionData | None, folder: Path) -> Path | None:
    """:func:`~kagglecv.data.decoding.check_images` of ``data``'s image files, once per set of files: a check that
    passed is remembered by :func:`remember_checked` as ``<folder>/checked-<key>`` (the key of :func:`cache_key`: the
    table's content and each file's path, size and modification time), and a later command that finds it skips the
    check. A file replaced or changed since is checked again. Decoded and pixel images need no check: reading them
    was the check. Returns the marker to remember once the command has passed its output checks (None when there is
    nothing to remember): a check must not write into a folder the command then refuses to write."""
    if data is None or data.images is None:
        return None
    if isinstance(data.images, ImageSource):
        check_images(data.images)
        return None
    paths = [Path(path) for path in data.images]
    try:
        marker = Path(folder) / f"checked-{cache_key(paths, data.source)[:24]}"
    except OSError:  # a file gone since the table was read: the check names it
        marker = None
    if marker is not None and marker.is_file():
        return None
    check_images(paths)
    return marker


def remember_checked(markers: list[Path | None]) -> None:
    """Write the markers of :func:`check_images_once`. A marker that cannot be written (a full disk) only costs the
    next command a check, so it is skipped, not an error."""
    for marker in markers:
        if marker is None:
            continue
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            write_text(marker, "images opened\n")
        except (OSError, KagglecvError):
            continue


def with_cached_images(data: CompetitionData, mode: str, folder: Path) -> CompetitionData:
    """``data`` with its images replaced by their decoded arrays (``mode`` memory or disk): image files, or a
    reader's rows read from files (``.npy``, DICOM, HDF5); arrays in memory already and ``off`` unchanged."""
    images = data.images
    if mode == "off" or images is None or isinstance(images, PixelImages):
        return data
    rows, eight_bit = _RowReader(images), not isinstance(images, ImageSource) or images.eight_bit
    if mode == "memory":
        return replace(data, images=PixelImages(_decode_all(rows, data.source), data.source, eight_bit))
    path = checked_cache_folder(Path(folder)) / f"images-{cache_key(rows.files, data.source)[:24]}.npy"
    if path.is_file():
        pixels = _read_cache(path, rows)
    else:  # decoded just now from the files: nothing to check again
        _write_cache(path, rows, data.source)
        pixels = np.load(path, mmap_mode="r", allow_pickle=False)
    return replace(data, images=PixelImages(pixels, data.source, eight_bit))


class _RowReader:
    """Row by row, what the cache holds: an image file decoded, or a reader's row; and the files whose path, size
    and modification time identify them all."""

    def __init__(self, images):
        self.images = images
        if isinstance(images, ImageSource):
            self.files = [Path(path) for path in images.identity_files()]
        else:
            self.files = [Path(path) for path in images]

    def __len__(self) -> int:
        return len(self.images)

    def read(self, row: int) -> np.ndarray:
        if isinstance(self.images, ImageSource):
            return self.images.read(row)
        return decode_image(self.images[row])

    def order(self) -> np.ndarray:
        """The rows in the order their source reads fastest."""
        if isinstance(self.images, ImageSource):
            return self.images.read_order()
        return np.arange(len(self.images))

    def name(self, row: int) -> str:
        if isinstance(self.images, ImageSource):
            return self.images.location(row)
        return Path(self.images[row]).name


def checked_cache_folder(folder: Path) -> Path:
    """``<runs_dir>/.cache``: a real folder inside ``runs_dir`` (created when missing), never a link out of it."""
    runs_dir = folder.parent
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()) or \
            (folder.exists() and folder.resolve().parent != runs_dir.resolve()):
        raise DataError(f"{folder}: the image cache must be a folder of {runs_dir} itself, not a link or a file; "
                        "remove it and kagglecv makes it again")
    return folder


def _read_cache(path: Path, rows: _RowReader) -> np.ndarray:
    """The cache entry memory-mapped, after checking it against its header, its recorded sha256 and two images."""
    first = rows.read(0)
    expected = (len(rows), *first.shape)
    fix = "; delete it and kagglecv makes it again"
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f".npy version {version}")
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a kagglecv image cache ({' '.join(str(exc).split())[:120]}){fix}") from None
    if dtype != first.dtype or fortran or tuple(shape) != expected:
        raise DataError(f"{path}: holds {dtype} {tuple(shape)}, expected {first.dtype} {expected} for these "
                        f"images{fix}")
    size = offset + int(np.prod(expected)) * first.dtype.itemsize
    if path.stat().st_size != size:
        raise DataError(f"{path}: {path.stat().st_size} bytes, not the {size} of its "
                        f"header (truncated?){fix}")
    recorded = _digest_path(path)
    if not recorded.is_file() or recorded.read_text(encoding="utf-8", errors="replace").strip() != sha256_file(path):
        raise DataError(f"{path}: its content is not the one kagglecv wrote ({recorded.name} differs or is "
                        f"missing){fix}")
    pixels = np.load(path, mmap_mode="r", allow_pickle=False)
    if not (np.array_equal(pixels[0], first) and np.array_equal(pixels[-1], rows.read(len(rows) - 1))):
        raise DataError(f"{path}: its first or last image differs from {rows.name(0)} or {rows.name(len(rows) - 1)}"
                        f"{fix}")
    return pixels


def _digest_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def _decode_all(rows: _RowReader, source: Path) -> np.ndarray:
    first = rows.read(0)
    pixels = np.empty((len(rows), *first.shape), dtype=first.dtype)
    pixels[0] = first
    _fill(pixels, rows, source, start=1)
    return pixels


def _fill(pixels: np.ndarray, rows: _RowReader, source: Path, start: int = 0) -> None:
    """Decode rows ``start:`` into ``pixels``; images of another size are all named in one error."""
    other = []
    for row in (int(row) for row in rows.order() if row >= start):
        image = rows.read(row)
        if image.shape != pixels.shape[1:]:
            other.append(f"{rows.name(row)} {image.shape[1]}x{image.shape[0]}")
            continue
        pixels[row] = image
    if other:
        raise DataError(f"{source}: data.cache needs images of one size ({pixels.shape[2]}x{pixels.shape[1]} "
                        f"first); {len(other)} differ: {summarize(other)}; set data.cache: off")


def _write_cache(path: Path, rows: _RowReader, source: Path) -> None:
    """The cache file, decoded straight into a memory-mapped .npy under a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    first = rows.read(0)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pixels = np.lib.format.open_memmap(partial, mode="w+", dtype=first.dtype, shape=(len(rows), *first.shape))
        pixels[0] = first
        _fill(pixels, rows, source, start=1)
        pixels.flush()
        del pixels
        write_text(_digest_path(path), sha256_file(partial) + "\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
