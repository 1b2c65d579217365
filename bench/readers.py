"""Benchmark: the image readers against image files, on real CIFAR-10 photographs (cifar10-full).

Part ``read``: images/s of reading rows one by one (what a loader worker does) from each source, built here from the
same photographs: the JPEG files themselves, an HDF5 of their bytes (ISIC 2024's layout), ``.npy`` float32 arrays
(SETI's), DICOM of 12-bit grey values through a window (RSNA's), parquet grey pixel rows (Bengali.AI's, the reading
of the files into memory included) and JSON bands (Statoil's, the streamed parse included).

Part ``infer``: ``kagglecv infer`` end to end (a 1-fold test_resnet run at 32 px, in a subprocess) on the 50,000
training photographs as files and as one HDF5 of their JPEG bytes, then on 400,000 rows (the 50,000 repeated under
new ids, ISIC 2024's hidden-test size) as an HDF5 and as files (hard links to the same bytes): images/s and the
peak resident memory of the process and of its loader workers.

Run: .venv/bin/python bench/readers.py [--part read|infer|both] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import machine, require_shared

READ_ROWS = 3000
INFER_ROWS, BIG_ROWS = 50_000, 400_000
ROUNDS = 3


def _files_by_id(folder: Path) -> dict[str, Path]:
    return {Path(name).stem: folder / name for name in os.listdir(folder)}


def _photos(count: int) -> tuple[list[Path], list[str]]:
    shared = require_shared("cifar10-full")
    ids = pd.read_csv(shared / "train.csv", dtype=str)["id"].tolist()[:count]
    by_id = _files_by_id(shared / "train")
    return [by_id[image_id] for image_id in ids], ids


def _rate(read, rows: int) -> float:
    start = time.perf_counter()
    for row in range(rows):
        read(row)
    return rows / (time.perf_counter() - start)


def _sources(work: Path, files: list[Path], ids: list[str]) -> dict:
    """Each reader's files, written from the photographs."""
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kagglecv.data.decoding import decode_image

    pixels = [decode_image(path) for path in files]
    with h5py.File(work / "images.hdf5", "w") as handle:
        for image_id, path in zip(ids, files):
            handle[image_id] = np.bytes_(path.read_bytes())
    (work / "npy").mkdir()
    for image_id, image in zip(ids, pixels):
        np.save(work / "npy" / f"{image_id}.npy", image.transpose(2, 0, 1).astype(np.float32))
    (work / "dicom").mkdir()
    for image_id, image in zip(ids, pixels):
        _dicom(work / "dicom" / f"{image_id}.dcm", image[:, :, 0].astype(np.uint16) * 16)
    grey = np.stack([image[:, :, 1] for image in pixels]).reshape(len(ids), -1)
    pq.write_table(pa.table({"image_id": ids, **{str(k): grey[:, k] for k in range(grey.shape[1])}}),
                   work / "pixels.parquet", row_group_size=1000)
    with open(work / "bands.json", "w") as handle:
        json.dump([{"id": image_id, "band_1": (image[:, :, 0] / 10 - 30).ravel().tolist(),
                    "band_2": (image[:, :, 2] / 10 - 30).ravel().tolist(), "inc_angle": 40.0}
                   for image_id, image in zip(ids, pixels)], handle)
    return {"pixels": pixels}


def _dicom(path: Path, stored: np.ndarray) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID, meta.MediaStorageSOPClassUID = ExplicitVRLittleEndian, pydicom.uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = Dataset()
    dataset.file_meta, dataset.Modality = meta, "CT"
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, -1024
    dataset.PixelData = stored.tobytes()
    dataset.save_as(path, enforce_file_format=True)


def read_part(quick: bool) -> dict:
    from kagglecv.data.decoding import decode_image
    from kagglecv.data.readers.dicom import DicomImages
    from kagglecv.data.readers.hdf5 import Hdf5Images
    from kagglecv.data.readers.json_bands import read_json_bands
    from kagglecv.data.readers.npy import NpyImages
    from kagglecv.data.readers.parquet import ParquetImages

    rows = 500 if quick else READ_ROWS
    files, ids = _photos(rows)
    work = Path(tempfile.mkdtemp(prefix="kagglecv-bench-readers-"))
    try:
        _sources(work, files, ids)
        rates = {}
        for _ in range(2):  # the second round reads from a warm page cache, as a training's later epochs do
            rates["files (decode)"] = _rate(lambda row: decode_image(files[row]), rows)
            rates["hdf5 (the same encoded bytes)"] = _rate(Hdf5Images(work / "images.hdf5", ids, None, "chw", work).read, rows)
            rates["npy (float32 3x32x32)"] = _rate(NpyImages([work / "npy" / f"{i}.npy" for i in ids], "chw",
                                                             work).read, rows)
            rates["dicom (12-bit, 3 windows)"] = _rate(DicomImages([work / "dicom" / f"{i}.dcm" for i in ids],
                                                                   ["brain", "subdural", "bone"], work).read, rows)
            start = time.perf_counter()
            parquet = ParquetImages([work / "pixels.parquet"], "image_id", np.array(ids, dtype=object), None, None,
                                    work)
            _rate(parquet.read, rows)
            rates["parquet pixel rows (row groups of 1,000, in file order)"] = rows / (time.perf_counter() - start)
            start = time.perf_counter()
            _, bands = read_json_bands(work / "bands.json", ["band_1", "band_2"])
            _rate(bands.read, rows)
            rates["json bands (streamed parse + rows)"] = rows / (time.perf_counter() - start)
        files_rate = rates["files (decode)"]
        return {"rows": rows, "images_per_s": rates,
                "relative_to_files": {name: rate / files_rate for name, rate in rates.items()}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


INFER_CODE = """
import json, resource, sys, time
from pathlib import Path
from kagglecv.core.console import Console
from kagglecv.stages.infer import infer_test
run, table, images, out = map(Path, sys.argv[1:5])
start = time.perf_counter()
infer_test(run, table, images, out, console=Console(quiet=True), workers=int(sys.argv[5]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "main_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _run_folder(root: Path, name: str, data: dict, classes: list[str]):
    """A finished 1-fold run (test_resnet at 32 px, weights of the right shape) reading its images as ``data``."""
    import timm
    import torch
    from safetensors.torch import save_file

    from kagglecv.core.config import dump_config, validate_config
    from kagglecv.core.files import write_json, write_text
    from kagglecv.core.runs import RunDir

    config = validate_config({"experiment": name, "data": data, "metric": "accuracy",
                              "model": {"name": "test_resnet", "img_size": 32, "pretrained": False},
                              "augment": {"mean": [0.5] * 3, "std": [0.25] * 3}, "predict": {"batch_size": 256}})
    run = RunDir(root / name)
    write_text(run.config_path, dump_config(config))
    write_json(run.info_path, {"experiment": name, "kind": "run", "task": "multiclass", "classes": classes,
                               "n_folds": 1})
    write_json(run.predict_path, {"tta": ["none"], "tta_space": "prob"})
    run.fold(0).path.mkdir(parents=True)
    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet", num_classes=len(classes)).state_dict(), run.fold(0).best_weights)
    write_json(run.fold(0).done_path, {"fold": 0, "best_epoch": 0, "metric": "accuracy", "source": "raw"})
    return run


def _infer(run, table: Path, images: Path, out: Path, workers: int) -> dict:
    result = subprocess.run([sys.executable, "-c", INFER_CODE, str(run.path), str(table), str(images), str(out),
                             str(workers)], capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures | {"rows": len(pd.read_csv(table)), "images_per_s": len(pd.read_csv(table)) / figures["seconds"]}


def infer_part(quick: bool) -> dict:
    import h5py

    from kagglecv.nn.runtime import available_cores

    shared = require_shared("cifar10-full")
    rows, big = (5_000, 40_000) if quick else (INFER_ROWS, BIG_ROWS)
    table = pd.read_csv(shared / "train.csv", dtype=str).head(rows)
    classes = sorted(set(table["label"]))
    work = Path(tempfile.mkdtemp(prefix="kagglecv-bench-infer-hdf5-"))
    try:
        table[["id"]].to_csv(work / "test.csv", index=False)
        by_id = _files_by_id(shared / "train")
        files = {image_id: by_id[image_id] for image_id in table["id"]}
        (work / "small").mkdir()
        (work / "big").mkdir()
        (work / "big-files").mkdir()
        with h5py.File(work / "small" / "images.hdf5", "w") as small, \
                h5py.File(work / "big" / "images.hdf5", "w") as large:
            for image_id, path in files.items():
                small[image_id] = np.bytes_(path.read_bytes())
            ids = []
            for copy in range(big // rows):
                for image_id, path in files.items():
                    large[f"{image_id}_{copy}"] = np.bytes_(path.read_bytes())
                    os.link(path, work / "big-files" / f"{image_id}_{copy}{path.suffix}")  # the same bytes, no copy
                    ids.append(f"{image_id}_{copy}")
        pd.DataFrame({"id": ids}).to_csv(work / "big.csv", index=False)
        file_run = _run_folder(work, "files", {"train_csv": str(shared / "train.csv"),
                                               "image_dir": str(shared / "train")}, classes)
        hdf5_run = _run_folder(work, "hdf5", {"train_csv": str(work / "test.csv"), "image_dir": str(work / "small"),
                                              "reader": {"kind": "hdf5", "path": "images.hdf5"}}, classes)
        workers = available_cores()
        figures = {"files": [], "hdf5": []}
        for _ in range(ROUNDS):  # alternated
            figures["files"].append(_infer(file_run, work / "test.csv", shared / "train", work / "a.csv", workers))
            figures["hdf5"].append(_infer(hdf5_run, work / "test.csv", work / "small", work / "b.csv", workers))
        big_name = f"{big // 1000}k"
        figures[f"files {big_name}"] = _infer(file_run, work / "big.csv", work / "big-files", work / "c.csv", workers)
        figures[f"hdf5 {big_name}"] = _infer(hdf5_run, work / "big.csv", work / "big", work / "d.csv", workers)
        figures["hdf5_bytes"] = (work / "big" / "images.hdf5").stat().st_size
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=["read", "infer", "both"], default="both")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = {"machine": machine()}
    if args.part in ("read", "both"):
        figures["read"] = read_part(args.quick)
    if args.part in ("infer", "both"):
        figures["infer"] = infer_part(args.quick)
    print(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
