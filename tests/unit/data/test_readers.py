"""The readers of images that are not image files, on files built here from real CIFAR-10 photographs with the real
libraries (numpy, pydicom with pylibjpeg-openjpeg, h5py, pyarrow, json): every row read back exactly, through the
competition loader, and every hostile file refused in one line naming it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kagglecv.core.config import DataConfig
from kagglecv.core.errors import DataError
from kagglecv.data.decoding import decode_image
from kagglecv.data.load import load_test, load_train
from kagglecv.data.readers import json_bands, parquet
from kagglecv.data.readers.npy import NpyImages
from tests.conftest import shared_dataset

ROWS = 10


@pytest.fixture(scope="module")
def photos():
    """Ten real CIFAR-10 training photographs: their files, ids and RGB pixels."""
    folder = shared_dataset("cifar10-mini") / "train"
    files = sorted(folder.glob("*.jpg"))[:ROWS]
    table = pd.read_csv(folder.parent / "train.csv", dtype=str).set_index("id")
    ids = [path.stem for path in files]
    return files, ids, [np.asarray(Image.open(path).convert("RGB")) for path in files], table.loc[ids, "label"].tolist()


def _table(folder: Path, ids, labels, name="train.csv") -> Path:
    pd.DataFrame({"id": ids, "label": labels}).to_csv(folder / name, index=False)
    return folder / name


# --- .npy -----------------------------------------------------------------------------------------------------------

def _six_panels(pixels: np.ndarray) -> np.ndarray:
    """SETI's layout: six float16 panels, C x H x W."""
    return np.concatenate([pixels.transpose(2, 0, 1), 255 - pixels.transpose(2, 0, 1)]).astype(np.float16) / 7


def test_npy_arrays_at_nested_paths_are_read_exactly_in_the_tables_order(photos, tmp_path):
    files, ids, pixels, labels = photos
    for image_id, image in zip(ids, pixels):
        (tmp_path / "train" / image_id[0]).mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "train" / image_id[0] / f"{image_id}.npy", _six_panels(image))
    order = list(reversed(range(ROWS)))
    config = DataConfig(train_csv=_table(tmp_path, [ids[i] for i in order], [labels[i] for i in order]),
                        image_dir=tmp_path / "train", reader={"kind": "npy", "path": "{id[0]}/{id}.npy"})
    data = load_train(config)
    assert isinstance(data.images, NpyImages) and not data.images.eight_bit
    for row, index in enumerate(order):
        expected = _six_panels(pixels[index]).astype(np.float32).transpose(1, 2, 0)
        read = data.images.read(row)
        assert read.dtype == np.float32 and read.shape == (32, 32, 6)
        np.testing.assert_array_equal(read, expected)
    assert data.subset(np.arange(ROWS) % 2 == 0).images.read(1).tobytes() == data.images.read(2).tobytes()


def test_a_missing_npy_file_is_named_with_its_row(photos, tmp_path):
    files, ids, pixels, labels = photos
    (tmp_path / "train").mkdir()
    for image_id, image in zip(ids[1:], pixels[1:]):
        np.save(tmp_path / "train" / f"{image_id}.npy", _six_panels(image))
    config = DataConfig(train_csv=_table(tmp_path, ids, labels), image_dir=tmp_path / "train", reader={"kind": "npy"})
    with pytest.raises(DataError, match=rf"1 image files not found: line 2 id '{ids[0]}'"):
        load_train(config)


@pytest.mark.parametrize("hostile, message", [
    ("pickle", "object values.*never does"),
    ("huge", "declares shape .*1,000,000,000,000 values"),
    ("truncated", "fewer than the .* its header declares"),
    ("text", "not a .npy array"),
])
def test_a_hostile_npy_file_is_refused_in_one_line_before_any_allocation(tmp_path, hostile, message):
    path = tmp_path / "x.npy"
    if hostile == "pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif hostile == "huge":
        header = {"descr": "<f4", "fortran_order": False, "shape": (1_000_000, 1_000_000)}
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
    elif hostile == "truncated":
        np.save(path, np.zeros((3, 8, 8), dtype=np.float32))
        path.write_bytes(path.read_bytes()[:-16])
    else:
        path.write_bytes(pickle.dumps({"not": "an array"}))
    with pytest.raises(DataError, match=message) as caught:
        NpyImages([path], "chw", tmp_path).read(0)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


# --- DICOM ----------------------------------------------------------------------------------------------------------

def _write_dicom(path: Path, stored: np.ndarray, transfer_syntax, photometric="MONOCHROME1") -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = 2, -1024
    dataset.WindowCenter, dataset.WindowWidth = 100, 400
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    if transfer_syntax is not None:
        dataset.compress(transfer_syntax, encoding_plugin="pylibjpeg" if transfer_syntax == JPEG2000Lossless else "")
    dataset.save_as(path, enforce_file_format=True)


def _reference_windows(stored: np.ndarray, monochrome1: bool) -> np.ndarray:
    """The expected channels, by the DICOM standard's formulas written out here: Hounsfield units = stored x slope +
    intercept; the brain window (40/80) linear onto 0-255; the file's window (100/400) by PS3.3 C.11.2.1.2.1 onto
    the rescaled output range of 12 stored bits; MONOCHROME1 inverted."""
    hounsfield = stored.astype(np.float64) * 2 - 1024
    brain = np.clip((hounsfield - 0.0) / 80.0, 0, 1) * 255
    low, high = 0 * 2 - 1024.0, 4095 * 2 - 1024.0
    linear = ((hounsfield - (100 - 0.5)) / (400 - 1) + 0.5) * (high - low) + low
    own = np.clip(np.where(hounsfield <= 100 - 0.5 - (400 - 1) / 2, low,
                           np.where(hounsfield > 100 - 0.5 + (400 - 1) / 2, high, linear)), low, high)
    own = (own - low) / (high - low) * 255
    channels = np.stack([brain, own], axis=2)
    return 255 - channels if monochrome1 else channels


@pytest.mark.parametrize("syntax", ["explicit", "rle", "jpeg2000"])
def test_dicom_windows_through_the_modality_lut_match_the_standards_formulas(photos, tmp_path, syntax):
    pytest.importorskip("pydicom")
    from pydicom.uid import JPEG2000Lossless, RLELossless

    files, ids, pixels, labels = photos
    transfer = {"explicit": None, "rle": RLELossless, "jpeg2000": JPEG2000Lossless}[syntax]
    (tmp_path / "train").mkdir()
    stored = [(image[:, :, 0].astype(np.uint16) * 16) for image in pixels]
    for image_id, values in zip(ids, stored):
        _write_dicom(tmp_path / "train" / f"{image_id}.dcm", values, transfer)
    config = DataConfig(train_csv=_table(tmp_path, ids, labels), image_dir=tmp_path / "train",
                        reader={"kind": "dicom", "windows": ["brain", "file"]})
    data = load_train(config)
    assert data.images.eight_bit
    for row, values in enumerate(stored):
        read = data.images.read(row)
        assert read.dtype == np.float32 and read.shape == (32, 32, 2)
        np.testing.assert_allclose(read, _reference_windows(values, monochrome1=True), atol=1e-3)


def test_a_dicom_declaring_terabytes_is_refused_before_its_pixels_are_decoded(tmp_path):
    pytest.importorskip("pydicom")
    from kagglecv.data.readers.dicom import DicomImages

    path = tmp_path / "huge.dcm"
    _write_dicom(path, np.zeros((4, 4), dtype=np.uint16), None, "MONOCHROME2")
    import pydicom

    dataset = pydicom.dcmread(path)
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = 65535, 65535, 1000
    dataset.save_as(path)
    with pytest.raises(DataError, match=r"huge.dcm: declares shape \(65535, 65535, 1000, 1\)"):
        DicomImages([path], ["file"], tmp_path).read(0)
    (tmp_path / "not.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(DataError, match="not.dcm: not a DICOM image"):
        DicomImages([tmp_path / "not.dcm"], ["file"], tmp_path).read(0)


# --- HDF5 -----------------------------------------------------------------------------------------------------------

def test_hdf5_datasets_of_jpeg_bytes_decode_as_the_files_do_for_train_and_a_three_row_test(photos, tmp_path):
    h5py = pytest.importorskip("h5py")
    files, ids, pixels, labels = photos
    with h5py.File(tmp_path / "train-image.hdf5", "w") as handle:
        for index, (image_id, path) in enumerate(zip(ids[:7], files)):  # ISIC's fixed-length bytes, or opaque
            handle[image_id] = np.bytes_(path.read_bytes()) if index % 2 else np.void(path.read_bytes())
    with h5py.File(tmp_path / "test-image.hdf5", "w") as handle:
        for image_id, path in zip(ids[7:], files[7:]):
            handle[image_id] = np.bytes_(path.read_bytes())
    pd.DataFrame({"id": ids[7:]}).to_csv(tmp_path / "test.csv", index=False)
    config = DataConfig(train_csv=_table(tmp_path, ids[:7], labels[:7]), image_dir=tmp_path,
                        test_csv=tmp_path / "test.csv",
                        reader={"kind": "hdf5", "path": "train-image.hdf5", "test_path": "test-image.hdf5"})
    train = load_train(config)
    test = load_test(config, train.classes, train.task)
    assert len(test) == 3
    for row, path in enumerate(files[:7]):
        np.testing.assert_array_equal(train.images.read(row), decode_image(path))
    for row, path in enumerate(files[7:]):
        np.testing.assert_array_equal(test.images.read(row), decode_image(path))
    assert pickle.loads(pickle.dumps(train.images))._handle is None  # a worker opens its own


def test_one_hdf5_array_dataset_gives_the_tables_rows_in_order(photos, tmp_path):
    h5py = pytest.importorskip("h5py")
    files, ids, pixels, labels = photos
    stack = np.stack(pixels).astype(np.uint16) * 257  # 16-bit, kept as it is
    with h5py.File(tmp_path / "images.h5", "w") as handle:
        handle.create_dataset("images", data=stack, compression="gzip", chunks=(1, 32, 32, 3))
    config = DataConfig(train_csv=_table(tmp_path, ids, labels), image_dir=tmp_path,
                        reader={"kind": "hdf5", "path": "images.h5", "dataset": "images", "layout": "hwc"})
    images = load_train(config).images
    assert not images.eight_bit
    for row in range(ROWS):
        np.testing.assert_array_equal(images.read(row), stack[row].astype(np.float32))


@pytest.mark.parametrize("hostile", ["external", "soft", "virtual", "stored outside", "missing", "array"])
def test_an_hdf5_pointing_outside_itself_or_lacking_an_id_is_refused_in_one_line(photos, tmp_path, hostile):
    h5py = pytest.importorskip("h5py")
    from kagglecv.data.readers.hdf5 import Hdf5Images

    files, ids, _, _ = photos
    with h5py.File(tmp_path / "outside.h5", "w") as handle:
        handle["secret"] = np.bytes_(files[0].read_bytes())
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        handle["inside"] = np.bytes_(files[1].read_bytes())
        if hostile == "external":
            handle["a"] = h5py.ExternalLink(str(tmp_path / "outside.h5"), "secret")
        elif hostile == "soft":
            handle["a"] = h5py.SoftLink("/inside")
        elif hostile == "virtual":
            layout = h5py.VirtualLayout(shape=(4,), dtype="u1")
            layout[:] = h5py.VirtualSource(str(tmp_path / "outside.h5"), "secret", shape=(4,))
            handle.create_virtual_dataset("a", layout)
        elif hostile == "stored outside":
            (tmp_path / "raw.bin").write_bytes(files[0].read_bytes())
            handle.create_dataset("a", shape=(files[0].stat().st_size,), dtype="u1",
                                  external=[(str(tmp_path / "raw.bin"), 0, files[0].stat().st_size)])
        elif hostile == "array":
            handle["a"] = np.zeros((4, 4), dtype=np.float32)
    expected = {"external": "'a' is an external link, not a dataset in this file", "soft": "'a' is a soft link",
                "virtual": "dataset 'a' is virtual", "missing": r"1 ids have no dataset: 'a'",
                "stored outside": "dataset 'a' is stored in external files",
                "array": "holds float32 of shape \\(4, 4\\); expected an encoded image's bytes"}[hostile]
    with pytest.raises(DataError, match=expected) as caught:
        Hdf5Images(tmp_path / "x.h5", ["a"], None, "chw", tmp_path).read(0)
    assert "x.h5" in str(caught.value) and "\n" not in str(caught.value)


# --- parquet --------------------------------------------------------------------------------------------------------

def _write_pixel_rows(folder: Path, ids, pixels, files: int = 2) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    grey = np.stack([image[:, :, 1] for image in pixels]).reshape(len(ids), -1)
    for part in range(files):
        rows = np.arange(part, len(ids), files)
        table = pa.table({"image_id": [ids[i] for i in rows], **{str(k): grey[rows, k] for k in range(grey.shape[1])}})
        pq.write_table(table, folder / f"train_image_data_{part}.parquet", row_group_size=2)


def test_parquet_pixel_rows_across_files_and_row_groups_are_the_tables_rows(photos, tmp_path):
    files, ids, pixels, labels = photos
    _write_pixel_rows(tmp_path, ids, pixels)
    order = [3, 0, 9, 4, 1, 8, 2, 7, 5, 6]
    pd.DataFrame({"image_id": [ids[i] for i in order], "label": [labels[i] for i in order]}).to_csv(
        tmp_path / "train.csv", index=False)
    config = DataConfig(train_csv=tmp_path / "train.csv", id_col="image_id", image_dir=tmp_path,
                        reader={"kind": "parquet", "path": "train_image_data_*.parquet"})
    images = load_train(config).images
    assert images.eight_bit and len(images) == ROWS and images.read(0).shape == (32, 32, 1)
    for row, index in enumerate(order):
        np.testing.assert_array_equal(images.read(row)[:, :, 0], pixels[index][:, :, 1])
    # read in file order, each row group (of two rows) is read once: never more than two kept
    read_groups = []
    original = parquet._read_group
    parquet._read_group = lambda *args: read_groups.append(args[:2]) or original(*args)
    try:
        fresh = load_train(config).images
        for row in fresh.read_order():
            fresh.read(int(row))
    finally:
        parquet._read_group = original
    assert len(read_groups) == len(set(read_groups)) == 6 and len(fresh._groups) <= parquet.GROUPS_KEPT


def test_parquet_refuses_an_id_in_no_file_too_many_columns_and_a_path_out_of_the_folder(photos, tmp_path, monkeypatch):
    files, ids, pixels, labels = photos
    _write_pixel_rows(tmp_path, ids[1:], pixels[1:])
    config = DataConfig(train_csv=_table(tmp_path, ids, labels), image_dir=tmp_path,
                        reader={"kind": "parquet", "path": "train_image_data_*.parquet", "id_column": "image_id"})
    with pytest.raises(DataError, match=rf"1 ids are in no parquet file: '{ids[0]}'"):
        load_train(config)
    monkeypatch.setattr(parquet, "MAX_PARQUET_COLUMNS", 1000)
    with pytest.raises(DataError, match=r"train_image_data_0.parquet: 1,025 columns; at most 1,000"):
        load_train(config)
    (tmp_path / "inner").mkdir()
    for pattern in ("../train_image_data_*.parquet", str(tmp_path / "*.parquet")):
        escaping = config.model_copy(update={"image_dir": tmp_path / "inner",
                                             "reader": config.reader.model_copy(update={"path": pattern})})
        with pytest.raises(DataError, match="leads outside"):
            load_train(escaping)


# --- JSON bands -----------------------------------------------------------------------------------------------------

def _statoil_records(ids, pixels, labels=None) -> list[dict]:
    records = []
    for index, (image_id, image) in enumerate(zip(ids, pixels)):
        record = {"id": image_id, "band_1": (image[:, :, 0] / 8.0 - 40).ravel().tolist(),
                  "band_2": (image[:, :, 2] / 8.0 - 35).ravel().tolist(), "inc_angle": "na" if index == 3 else 39.5}
        if labels is not None:
            record["is_iceberg"] = int(labels[index] in ("ship", "airplane"))
        records.append(record)
    return records


def test_json_bands_stream_record_by_record_into_channels_and_a_table(photos, tmp_path, monkeypatch):
    files, ids, pixels, labels = photos
    (tmp_path / "train.json").write_text(json.dumps(_statoil_records(ids, pixels, labels), indent=1))
    monkeypatch.setattr(json_bands, "CHUNK_BYTES", 97)  # many partial reads: a record never arrives whole
    config = DataConfig(train_csv=tmp_path / "train.json", target="is_iceberg",
                        reader={"kind": "json_bands", "bands": ["band_1", "band_2"]})
    data = load_train(config)
    assert data.ids.tolist() == ids and not data.images.eight_bit
    for row, image in enumerate(pixels):
        expected = np.stack([image[:, :, 0] / 8.0 - 40, image[:, :, 2] / 8.0 - 35], axis=2).astype(np.float32)
        np.testing.assert_array_equal(data.images.read(row), expected)
    frame, _ = json_bands.read_json_bands(tmp_path / "train.json", ["band_1", "band_2"])
    assert frame["inc_angle"].tolist()[3] == "na" and frame["inc_angle"].tolist()[0] == "39.5"


@pytest.mark.parametrize("hostile, message", [
    ("long", "record 0 is over 4,096 characters"),
    ("short band", r"record 1: bands of \[1024, 1023\] values, not 32 x 32"),
    ("nan", "record 0 band 'band_1' holds NaN"),
    ("not a list", "not a JSON list of records"),
    ("missing band", "record 0 has no band 'band_2'"),
])
def test_a_hostile_json_bands_file_is_refused_naming_the_record(photos, tmp_path, monkeypatch, hostile, message):
    files, ids, pixels, _ = photos
    records = _statoil_records(ids[:2], pixels[:2])
    text = json.dumps(records)
    if hostile == "long":
        monkeypatch.setattr(json_bands, "MAX_RECORD_BYTES", 4096)
        monkeypatch.setattr(json_bands, "CHUNK_BYTES", 1024)
    elif hostile == "short band":
        records[1]["band_2"] = records[1]["band_2"][:-1]
        text = json.dumps(records)
    elif hostile == "nan":
        text = text.replace("[", "[NaN, ", 2).replace("[NaN, {", "[{", 1)
        records[0]["band_1"] = [float("nan")] + records[0]["band_1"][1:]
        text = json.dumps(records)
    elif hostile == "not a list":
        text = json.dumps({"records": records})
    else:
        del records[0]["band_2"]
        text = json.dumps(records)
    (tmp_path / "train.json").write_text(text)
    with pytest.raises(DataError, match=message) as caught:
        json_bands.read_json_bands(tmp_path / "train.json", ["band_1", "band_2"])
    assert "train.json" in str(caught.value) and "\n" not in str(caught.value)


def test_data_cache_holds_a_readers_rows_exactly_and_a_changed_array_makes_a_new_cache(photos, tmp_path):
    from kagglecv.data.cache import with_cached_images

    files, ids, pixels, labels = photos
    (tmp_path / "train").mkdir()
    for image_id, image in zip(ids, pixels):
        np.save(tmp_path / "train" / f"{image_id}.npy", _six_panels(image))
    config = DataConfig(train_csv=_table(tmp_path, ids, labels), image_dir=tmp_path / "train", reader={"kind": "npy"})
    data = load_train(config)
    runs = tmp_path / "runs"
    runs.mkdir()
    cached = with_cached_images(data, "disk", runs / ".cache")
    assert cached.images.pixels.dtype == np.float32 and not cached.images.eight_bit
    for row in range(ROWS):
        np.testing.assert_array_equal(cached.images.read(row), data.images.read(row))
    assert len(list((runs / ".cache").glob("images-*.npy"))) == 1
    with_cached_images(load_train(config), "disk", runs / ".cache")  # unchanged: read back, not written again
    assert len(list((runs / ".cache").glob("images-*.npy"))) == 1
    changed = _six_panels(pixels[3]) + np.float16(1)
    np.save(tmp_path / "train" / f"{ids[3]}.npy", changed)
    again = with_cached_images(load_train(config), "disk", runs / ".cache")
    assert len(list((runs / ".cache").glob("images-*.npy"))) == 2
    np.testing.assert_array_equal(again.images.read(3), changed.astype(np.float32).transpose(1, 2, 0))


@pytest.mark.parametrize("module, extra, kind", [("h5py", "hdf5", "hdf5"), ("pydicom", "dicom", "dicom"),
                                                 ("pyarrow", "parquet", "parquet")])
def test_a_reader_whose_library_is_missing_names_the_extra_to_install(photos, tmp_path, monkeypatch, module, extra,
                                                                      kind):
    from kagglecv.core.errors import KagglecvError

    files, ids, pixels, labels = photos
    monkeypatch.setitem(__import__("sys").modules, module, None)  # as if it were not installed
    (tmp_path / "train").mkdir()
    for image_id in ids:
        (tmp_path / "train" / f"{image_id}.dcm").write_bytes(b"")
    (tmp_path / "train" / "x.h5").write_bytes(b"")
    (tmp_path / "train" / "x.parquet").write_bytes(b"")
    reader = {"hdf5": {"kind": "hdf5", "path": "x.h5"}, "dicom": {"kind": "dicom"},
              "parquet": {"kind": "parquet", "path": "*.parquet"}}[kind]
    config = DataConfig(train_csv=_table(tmp_path, ids, labels), image_dir=tmp_path / "train", reader=reader)
    with pytest.raises(KagglecvError, match=rf"needs {module}: pip install 'kagglecv\[{extra}\]'"):
        load_train(config)
