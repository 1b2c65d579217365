"""Kaggle competitions whose images are not image files, rebuilt at tiny size in the shapes Kaggle ships them (file
names, table layouts, array types and nesting from each competition's data page and MLE-bench's prepare.py), with
sklearn's digits as the images: SETI's nested float16 ``.npy`` panels, RSNA's CT DICOM slices, ISIC 2024's HDF5 of
JPEG bytes with a three-row public test, Bengali.AI-style parquet pixel rows, Statoil's JSON bands, and a folder
whose images sit in archives inside an archive."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tests.workflows.kaggle_shapes import (
    TEST_ROWS,
    TRAIN_ROWS,
    Competition,
    _csv,
    _hex_ids,
    _save,
    _splits,
)


def _upsampled(images: np.ndarray, size: int = 32) -> np.ndarray:
    return np.kron(images, np.ones((size // images.shape[1], size // images.shape[2]), dtype=images.dtype))


def seti(root: Path) -> Competition:
    """train_labels.csv (id,target), train/{id[0]}/{id}.npy and test/{id[0]}/{id}.npy of float16 (6, H, W) cadence
    panels, a sample of zeros scored by AUC (MLE-bench's seti-breakthrough-listen)."""
    folder, (train, test) = root / "seti-breakthrough-listen", _splits(21)
    rng = np.random.default_rng(21)
    for split, ids, part in (("train", _hex_ids(TRAIN_ROWS, 21), train), ("test", _hex_ids(TEST_ROWS, 22), test)):
        for image_id, image in zip(ids, _upsampled(part.images)):
            signal = image.astype(np.float32) / 64.0
            panels = [signal if k % 2 == 0 else rng.normal(0, 0.5, signal.shape) for k in range(6)]
            (folder / split / image_id[0]).mkdir(parents=True, exist_ok=True)
            np.save(folder / split / image_id[0] / f"{image_id}.npy", np.stack(panels).astype(np.float16))
        if split == "train":
            _csv(pd.DataFrame({"id": ids, "target": (part.digits >= 5).astype(int)}), folder / "train_labels.csv")
        else:
            test_ids = ids
    _csv(pd.DataFrame({"id": test_ids, "target": 0.5}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"id": test_ids, "target": (test.digits >= 5).astype(int)})
    return Competition("seti", folder, "roc_auc", solution, "positive", ["0", "1"])


def _ct_slice(path: Path, image: np.ndarray) -> None:
    """A CT slice as RSNA ships them: MONOCHROME2, 16-bit signed stored values, slope 1 and intercept -1024."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID, meta.MediaStorageSOPClassUID = ExplicitVRLittleEndian, pydicom.uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = Dataset()
    dataset.file_meta, dataset.Modality = meta, "CT"
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = image.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, -1024
    dataset.WindowCenter, dataset.WindowWidth = 40, 80
    dataset.PixelData = (image.astype(np.int16) * 2 + 1000).tobytes()  # 1000..1510: -24..486 HU
    dataset.save_as(path, enforce_file_format=True)


def rsna_ct(root: Path) -> Competition:
    """stage_2_train/ID_<hex>.dcm and stage_2_test/ (CT slices), train.csv (ID,any), a sample of 0.5 scored by
    log loss: RSNA Intracranial Hemorrhage's files, with its ``any`` label as the one target."""
    folder, (train, test) = root / "rsna-intracranial-hemorrhage-detection", _splits(23)
    train_ids = [f"ID_{i}" for i in _hex_ids(TRAIN_ROWS, 23)]
    test_ids = [f"ID_{i}" for i in _hex_ids(TEST_ROWS, 24)]
    for split, ids, part in (("stage_2_train", train_ids, train), ("stage_2_test", test_ids, test)):
        (folder / split).mkdir(parents=True)
        for image_id, image in zip(ids, _upsampled(part.images)):
            _ct_slice(folder / split / f"{image_id}.dcm", image)
    _csv(pd.DataFrame({"ID": train_ids, "any": (train.digits % 2).astype(int)}), folder / "stage_2_train.csv")
    _csv(pd.DataFrame({"ID": test_ids, "any": 0.5}), folder / "stage_2_sample_submission.csv")
    solution = pd.DataFrame({"ID": test_ids, "any": (test.digits % 2).astype(int)})
    return Competition("rsna-ct", folder, "binary_log_loss", solution, "positive", ["0", "1"])


def isic_2024(root: Path) -> Competition:
    """train-metadata.csv (isic_id,target,patient_id,...), train-image.hdf5 (a dataset per isic_id holding the JPEG's
    bytes), test-metadata.csv and test-image.hdf5 of 3 rows, a sample of 0.3 (MLE-bench's isic-2024 public test)."""
    import h5py

    folder, (train, test) = root / "isic-2024-challenge", _splits(25)
    train_ids = [f"ISIC_{9_000_000 + i:07d}" for i in range(TRAIN_ROWS)]
    test_ids = [f"ISIC_{8_000_000 + i:07d}" for i in range(3)]
    folder.mkdir(parents=True)
    for name, ids, images in (("train-image.hdf5", train_ids, train.images), ("test-image.hdf5", test_ids,
                                                                              test.images[:3])):
        with h5py.File(folder / name, "w") as handle:
            for image_id, image in zip(ids, _upsampled(images, 64)):
                encoded = io.BytesIO()
                Image.fromarray(image).convert("RGB").save(encoded, format="JPEG", quality=95)
                handle[image_id] = np.bytes_(encoded.getvalue())
    target = (train.digits >= 5).astype(int)
    _csv(pd.DataFrame({"isic_id": train_ids, "target": target, "patient_id": [f"IP_{i % 20}" for i in range(TRAIN_ROWS)],
                       "age_approx": 40 + train.digits}), folder / "train-metadata.csv")
    _csv(pd.DataFrame({"isic_id": test_ids, "patient_id": ["IP_1", "IP_2", "IP_3"]}), folder / "test-metadata.csv")
    _csv(pd.DataFrame({"isic_id": test_ids, "target": 0.3}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"isic_id": test_ids, "target": (test.digits[:3] >= 5).astype(int)})
    return Competition("isic-2024", folder, "binary_log_loss", solution, "positive", ["0", "1"])


def _parquet_pixel_rows(folder: Path, train_ids: list[str], train_images: np.ndarray, test_ids: list[str],
                        test_images: np.ndarray) -> None:
    """Bengali.AI's image files: train_image_data_{0,1}.parquet and test_image_data_0.parquet, each row an
    image_id then its 16 x 16 pixels as columns 0..255, in row groups of 16."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    for name, ids, images, parts in (("train", train_ids, train_images, 2), ("test", test_ids, test_images, 1)):
        flat = _upsampled(images, 16).reshape(len(ids), -1)
        for part in range(parts):
            rows = np.arange(part, len(ids), parts)
            table = pa.table({"image_id": [ids[i] for i in rows], **{str(k): flat[rows, k] for k in range(256)}})
            pq.write_table(table, folder / f"{name}_image_data_{part}.parquet", row_group_size=16)


def parquet_pixels(root: Path) -> Competition:
    """train.csv (image_id,label), train_image_data_{0,1}.parquet of pixel rows (image_id, then columns 0..N-1 as
    Bengali.AI writes them), test.csv, test_image_data_0.parquet, a sample of zeros scored by accuracy."""
    folder, (train, test) = root / "bengaliai-style-pixels", _splits(26)
    train_ids = [f"Train_{i}" for i in range(TRAIN_ROWS)]
    test_ids = [f"Test_{i}" for i in range(TEST_ROWS)]
    _parquet_pixel_rows(folder, train_ids, train.images, test_ids, test.images)
    _csv(pd.DataFrame({"image_id": train_ids, "label": train.digits}), folder / "train.csv")
    _csv(pd.DataFrame({"image_id": test_ids}), folder / "test.csv")
    _csv(pd.DataFrame({"image_id": test_ids, "label": 0}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"image_id": test_ids, "label": test.digits})
    return Competition("parquet-pixels", folder, "accuracy", solution, "label", [str(k) for k in range(10)])


BENGALI_HEADS = ["grapheme_root", "vowel_diacritic", "consonant_diacritic"]


def _graphemes(digits: np.ndarray) -> dict[str, np.ndarray]:
    """Three heads the digit decides: the root its digit, the vowel its parity, the consonant its third."""
    return {"grapheme_root": digits, "vowel_diacritic": digits % 2, "consonant_diacritic": digits % 3}


def bengali(root: Path) -> Competition:
    """Bengali.AI as Kaggle ships it: train.csv (image_id, grapheme_root, vowel_diacritic, consonant_diacritic,
    grapheme), train_image_data_{0,1}.parquet of pixel rows, test.csv of row_id (Test_0_grapheme_root), image_id and
    component, test_image_data_0.parquet, a sample of row_id,target; macro recall per head, weighted 2:1:1."""
    folder, (train, test) = root / "bengaliai-cv19", _splits(29)
    train_ids, test_ids = [f"Train_{i}" for i in range(TRAIN_ROWS)], [f"Test_{i}" for i in range(TEST_ROWS)]
    _parquet_pixel_rows(folder, train_ids, train.images, test_ids, test.images)
    heads = _graphemes(train.digits)
    _csv(pd.DataFrame({"image_id": train_ids} | heads | {"grapheme": [f"g{d}" for d in train.digits]}),
         folder / "train.csv")
    row_ids = [f"{image}_{head}" for image in test_ids for head in BENGALI_HEADS]
    _csv(pd.DataFrame({"row_id": row_ids, "image_id": [image for image in test_ids for _ in BENGALI_HEADS],
                       "component": BENGALI_HEADS * len(test_ids)}), folder / "test.csv")
    _csv(pd.DataFrame({"row_id": row_ids, "target": 0}), folder / "sample_submission.csv")
    truth = _graphemes(test.digits)
    solution = pd.DataFrame({"row_id": row_ids, "target": [truth[head][index] for index in range(TEST_ROWS)
                                                           for head in BENGALI_HEADS]})
    return Competition("bengali", folder, "heads:recall_macro:grapheme_root=2", solution, "long-labels", [])


def statoil(root: Path) -> Competition:
    """train.json and test.json (records of id, band_1, band_2 as 75 x 75 dB floats, inc_angle a number or "na",
    is_iceberg in train), a sample of 0.5 scored by log loss (MLE-bench's statoil-iceberg-classifier-challenge)."""
    folder, (train, test) = root / "statoil-iceberg-classifier-challenge", _splits(27)
    folder.mkdir(parents=True)
    train_ids, test_ids = _hex_ids(TRAIN_ROWS, 27)[:TRAIN_ROWS], _hex_ids(TEST_ROWS, 28)

    def records(ids, part, labelled):
        out = []
        for index, (image_id, image) in enumerate(zip(ids, _upsampled(part.images, 24))):
            decibels = image.astype(np.float64) / 10.0 - 30.0
            record = {"id": image_id, "band_1": np.round(decibels, 4).ravel().tolist(),
                      "band_2": np.round(decibels[::-1] - 5.0, 4).ravel().tolist(),
                      "inc_angle": "na" if index % 7 == 3 else round(36.0 + index % 9, 4)}
            if labelled:
                record["is_iceberg"] = int(part.digits[index] >= 5)
            out.append(record)
        return out

    (folder / "train.json").write_text(json.dumps(records(train_ids, train, True)))
    (folder / "test.json").write_text(json.dumps(records(test_ids, test, False)))
    _csv(pd.DataFrame({"id": test_ids, "is_iceberg": 0.5}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"id": test_ids, "is_iceberg": (test.digits >= 5).astype(int)})
    return Competition("statoil", folder, "binary_log_loss", solution, "positive", ["0", "1"])


def nested_archive(root: Path) -> Competition:
    """train.csv (id,label), a sample, and images.zip holding train.zip and test.zip, each a flat folder of
    <id>.png: the images two archives deep, as a dataset re-uploaded from a download often is."""
    folder, (train, test) = root / "nested-archive-digits", _splits(29)
    train_ids, test_ids = _hex_ids(TRAIN_ROWS, 29), _hex_ids(TEST_ROWS, 30)
    staging = root / ".nested-staging"
    for split, ids, part in (("train", train_ids, train), ("test", test_ids, test)):
        _save(staging / split, [f"{i}.png" for i in ids], part.images)
        with zipfile.ZipFile(staging / f"{split}.zip", "w") as archive:
            for image_id in ids:
                archive.write(staging / split / f"{image_id}.png", f"{split}/{image_id}.png")
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "images.zip", "w") as archive:
        archive.write(staging / "train.zip", "images/train.zip")
        archive.write(staging / "test.zip", "images/test.zip")
    shutil.rmtree(staging)
    _csv(pd.DataFrame({"id": train_ids, "label": train.digits}), folder / "train.csv")
    _csv(pd.DataFrame({"id": test_ids, "label": 0}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"id": test_ids, "label": test.digits})
    return Competition("nested-archive", folder, "accuracy", solution, "label", [str(k) for k in range(10)])


READER_BUILDERS = {"seti-npy": seti, "rsna-dicom": rsna_ct, "isic-2024-hdf5": isic_2024,
                   "parquet-pixel-rows": parquet_pixels, "statoil-json-bands": statoil,
                   "nested-archive": nested_archive, "bengali-heads": bengali}
