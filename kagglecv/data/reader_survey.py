"""What ``init`` reads off a competition folder whose images are not image files: which reader, where its files are,
and the keys it needs (``data.reader``, ``model.in_chans``, ``model.img_size``), each with its reason.

Recognised, in this order, when no folder of image files is beside the tables: HDF5 files (ISIC 2024's
``train-image.hdf5``, a dataset per id), parquet pixel rows (Bengali.AI's ``train_image_data_*.parquet``), folders
of ``.npy`` arrays named by id, flat or nested by the id's first characters (SETI's ``train/{id[0]}/{id}.npy``),
and folders of DICOM files (RSNA's ``stage_2_train/{id}.dcm``). JSON bands (Statoil's ``train.json``) are the
training table itself and are recognised with the tables (:func:`json_bands_table`).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from kagglecv.core.errors import DataError, KagglecvError, summarize
from kagglecv.data.readers.dicom import read_dicom
from kagglecv.data.readers.hdf5 import Hdf5Images
from kagglecv.data.readers.json_bands import is_json_records, json_records_head
from kagglecv.data.readers.npy import npy_header
from kagglecv.data.readers.parquet import parquet_columns
from kagglecv.data.sources import id_path

Add = Callable[[str, object, str], None]
HDF5_SUFFIXES = (".hdf5", ".h5")
NESTINGS = ("{id}", "{id[0]}/{id}", "{id[0]}/{id[1]}/{id}", "{id[0]}/{id[1]}/{id[2]}/{id}")  # SETI, G2Net
CT_WINDOWS = ["brain", "subdural", "bone"]
SMALL_IMAGE = 64  # px: at or below, native size, no flips unasked, a CIFAR-style stem
MAX_SIDE = 224


def survey_reader(add: Add, folder: Path, train_ids: list[str], test_ids: list[str]) -> bool:
    """Add the keys of the first reader that fits ``folder``; False when none does."""
    for recognise in (_hdf5, _parquet, _per_id_files):
        if recognise(add, folder, train_ids, test_ids):
            return True
    return False


def json_bands_table(folder: Path, split: str) -> Path | None:
    """``<split>*.json`` beside the sample holding a list of records (Statoil's ``train.json``)."""
    return next((path for path in sorted(folder.glob(f"{split}*.json")) if is_json_records(path)), None)


def survey_json_bands(add: Add, path: Path) -> tuple[list[str], dict]:
    """The bands of the first record (its lists of numbers of one square length) as ``data.reader``; returns them
    and the record's other fields."""
    record = json_records_head(path)
    bands = sorted(key for key, value in record.items() if isinstance(value, list) and value
                   and all(isinstance(item, (int, float)) for item in value[:64]))
    lengths = {len(record[key]) for key in bands}
    side = int(round(len(record[bands[0]]) ** 0.5)) if bands else 0
    if not bands or len(lengths) != 1 or side * side != lengths.pop():
        raise DataError(f"{path}: its first record has no square bands of one length (lists of numbers); found keys "
                        f"{summarize(list(record), quote=True)}")
    add("data.reader", {"kind": "json_bands", "bands": bands}, f"{path.name} is a list of records whose "
        f"{summarize(bands, quote=True)} are {side} x {side} bands: one channel each")
    _look(add, side, len(bands), "bands in their own units (normalised by the training folds' statistics)")
    return bands, {key: value for key, value in record.items() if key not in bands}


def _hdf5(add: Add, folder: Path, train_ids: list[str], test_ids: list[str]) -> bool:
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in HDF5_SUFFIXES and path.is_file())
    if not files:
        return False
    train = _one_named(files, "train", folder, "HDF5")
    test = next((path for path in files if "test" in path.name.lower()), None)
    reader = {"kind": "hdf5", "path": train.name, **({"test_path": test.name} if test else {})}
    images = Hdf5Images(train, train_ids[:16], None, "chw", folder)
    add("data.reader", reader, f"{train.name} holds a dataset per id (encoded images)"
        + (f"; {test.name} the test images" if test else ""))
    add("data.image_dir", folder, "the folder of the HDF5 files")
    sizes = [min(images.read(row).shape[:2]) for row in range(len(images))]
    _look(add, int(np.median(sizes)), 3, f"the median shorter side of {len(sizes)} images is {int(np.median(sizes))} "
          "px")
    return True


def _parquet(add: Add, folder: Path, train_ids: list[str], test_ids: list[str]) -> bool:
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() == ".parquet" and path.is_file())
    if not files:
        return False
    trains = [path for path in files if "train" in path.name.lower()]
    if not trains:
        raise KagglecvError(f"{folder}: parquet files {summarize([p.name for p in files], quote=True)}, none named "
                            "train; set data.reader by hand")
    tests = [path for path in files if "test" in path.name.lower()]
    names = parquet_columns(trains[0])
    id_column = names[0]
    pixels = len(names) - 1
    side = int(round(pixels ** 0.5))
    reader = {"kind": "parquet", "path": _glob_of(trains), "id_column": id_column,
              **({"test_path": _glob_of(tests)} if tests else {})}
    if side * side != pixels:
        raise DataError(f"{trains[0]}: {pixels} pixel columns is not a square image; write data.reader "
                        f"{{kind: parquet, path: {_glob_of(trains)!r}, height: H, width: W}} by hand")
    add("data.reader", reader, f"{len(trains)} parquet file(s) of pixel rows, {id_column!r} then {pixels} pixels")
    add("data.image_dir", folder, "the folder of the parquet files")
    _look(add, side, 1, f"{pixels} pixel columns: {side} x {side} grey images", grey=True)
    return True


def _glob_of(files: list[Path]) -> str:
    """One glob naming ``files``: their common prefix then ``*`` and the suffix (``train_image_data_*.parquet``); one
    file numbered as a part (``test_image_data_0.parquet``) names its siblings too, as a hidden test has more."""
    if len(files) == 1:
        numbered = re.fullmatch(r"(.*_)\d+", files[0].stem)
        return f"{glob.escape(numbered[1])}*{files[0].suffix}" if numbered else files[0].name
    prefix = os.path.commonprefix([path.name for path in files])
    return f"{glob.escape(prefix)}*{files[0].suffix}"


def _per_id_files(add: Add, folder: Path, train_ids: list[str], test_ids: list[str]) -> bool:
    for suffix, kind in ((".npy", "npy"), (".dcm", "dicom")):
        for candidate in _folders(folder):
            nesting = _nesting(candidate, train_ids[:20], suffix)
            if nesting is None:
                continue
            pattern = f"{nesting}{suffix}"
            add("data.image_dir", candidate, f"the folder of the training {suffix} files")
            test_dir = next((other for other in _folders(folder) if "test" in other.name.lower()
                             and _nesting(other, test_ids[:20], suffix) == nesting), None)
            if test_dir is not None:
                add("data.test_image_dir", test_dir, f"the folder of the test {suffix} files")
            first = candidate / id_path(pattern, train_ids[0])
            (_npy_keys if kind == "npy" else _dicom_keys)(add, first, pattern)
            return True
    return False


def _folders(folder: Path) -> list[Path]:
    return [path for path in sorted(folder.iterdir()) if path.is_dir() and not path.name.startswith(".")]


def _nesting(folder: Path, ids: list[str], suffix: str) -> str | None:
    """How ids name files under ``folder``: the first of :data:`NESTINGS` under which the ids' files exist."""
    return next((nesting for nesting in NESTINGS if ids and all(
        (folder / id_path(f"{nesting}{suffix}", image_id)).is_file() for image_id in ids)), None)


def _npy_keys(add: Add, first: Path, pattern: str) -> None:
    shape, dtype, _, _ = npy_header(first)
    channels, layout = (1, "chw") if len(shape) == 2 else ((shape[0], "chw") if shape[0] <= shape[-1] else
                                                           (shape[-1], "hwc"))
    side = min(shape[1:] if layout == "chw" and len(shape) == 3 else shape[:2])
    add("data.reader", {"kind": "npy", "path": pattern, "layout": layout}, f"{first.name}: {dtype} of shape "
        f"{shape}, {channels} channel(s) {'first' if layout == 'chw' else 'last'}")
    _look(add, side, channels, f"arrays of {side} px on the shorter side")


def _dicom_keys(add: Add, first: Path, pattern: str) -> None:
    dataset = read_dicom(first, header_only=True)
    computed_tomography = str(dataset.get("Modality", "")) == "CT"
    windows = CT_WINDOWS if computed_tomography else ["file"]
    add("data.reader", {"kind": "dicom", "path": pattern, "windows": windows},
        "CT slices: the brain, subdural and bone windows as three channels" if computed_tomography else
        f"{dataset.get('Modality', 'DICOM')} images through the file's own window")
    side = min(int(dataset.Rows), int(dataset.Columns))
    _look(add, side, len(windows), f"{int(dataset.Rows)} x {int(dataset.Columns)} pixels", grey=len(windows) == 1)


def _one_named(files: list[Path], word: str, folder: Path, what: str) -> Path:
    named = [path for path in files if word in path.name.lower()]
    if len(named) != 1:
        raise KagglecvError(f"{folder}: {'no' if not named else 'several'} {what} files named {word} among "
                            f"{summarize([p.name for p in files], quote=True)}; set data.reader by hand")
    return named[0]


def input_size(side: int) -> int:
    """``model.img_size`` for images of ``side`` px (the shorter side's median): native when small, else a
    multiple of 32 between 32 and :data:`MAX_SIDE`."""
    return side if side <= SMALL_IMAGE else min(MAX_SIDE, max(32, side // 32 * 32))


def _look(add: Add, side: int, channels: int, why: str, grey: bool = False) -> None:
    size = input_size(side)
    add("model.img_size", size, why + ("" if size == side else f"; {side} px capped at {MAX_SIDE} and rounded to a "
                                       "multiple of 32"))
    if channels != 3:
        add("model.in_chans", channels, f"{channels} channel(s) a row")
    small_grey = grey and side <= SMALL_IMAGE
    add("image.small_grey", small_grey, "small grey images" if small_grey else "not small grey images")
