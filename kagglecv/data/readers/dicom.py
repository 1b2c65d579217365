"""DICOM files, one per row (RSNA Intracranial Hemorrhage, RSNA Breast Cancer, SIIM-ISIC), read with pydicom
(``pip install 'kagglecv[dicom]'``: pydicom, and pylibjpeg with pylibjpeg-openjpeg for JPEG 2000; never the GPL
pylibjpeg-libjpeg). Values go through the file's modality LUT (RescaleSlope/Intercept to Hounsfield units) and
then through windows, each window one channel on a 0-255 float scale, never squeezed to 8 bits:

* a named CT window in Hounsfield units (``brain`` 40/80, ``subdural`` 80/200, ``bone`` 600/2800, ``soft_tissue``
  40/400, ``lung`` -600/1500) or ``{center, width}``;
* ``file``: the file's own VOI LUT or WindowCenter/Width (pydicom's ``apply_voi_lut``), or the image's own range
  when it has none.

MONOCHROME1 images (bright is low) are inverted, so bright is high in every file. The header is read first, and a
file whose Rows x Columns x frames x samples would exceed one image's bound is refused before its pixels are decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kagglecv.core.errors import DataError, require_extra
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.data.sources import FilePerRow, check_value_count

pydicom = imported_on_first_use("pydicom")
pixels_module = imported_on_first_use("pydicom.pixels")

MAX_DICOM_BYTES = 1 << 30
WINDOWS = {"brain": (40.0, 80.0), "subdural": (80.0, 200.0), "bone": (600.0, 2800.0), "soft_tissue": (40.0, 400.0),
           "lung": (-600.0, 1500.0)}


class DicomImages(FilePerRow):
    """One DICOM file per row, read through ``windows`` (names, ``file``, or ``(center, width)`` pairs)."""

    what = "DICOM files"

    def __init__(self, paths: list[Path], windows: list, source: Path):
        require_extra("pydicom", "dicom", "DICOM images")
        super().__init__(paths, source)
        self.windows = list(windows)

    @property
    def eight_bit(self) -> bool:
        return True  # every window maps onto 0-255

    @property
    def uint8(self) -> bool:
        return False  # in float: the windows are not squeezed to 8 bits

    def read(self, row: int) -> np.ndarray:
        path = self.paths[row]
        dataset = read_dicom(path)
        try:
            stored = dataset.pixel_array
        except Exception as exc:  # pydicom raises many kinds for a missing decoder or corrupt pixel data
            raise DataError(f"{path}: cannot decode its pixels ({' '.join(str(exc).split())[:200]})") from None
        if stored.ndim == 3:
            return _colour(stored, dataset)
        values = pixels_module.apply_modality_lut(stored, dataset).astype(np.float64)
        channels = [self._window(values, dataset, window, path) for window in self.windows]
        image = np.stack(channels, axis=2)
        if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            image = 255.0 - image
        return image.astype(np.float32)

    def _window(self, values: np.ndarray, dataset, window, path: Path) -> np.ndarray:
        if window == "file":
            return _file_window(values, dataset, path)
        center, width = WINDOWS[window] if isinstance(window, str) else window
        return np.clip((values - (center - width / 2.0)) / width, 0.0, 1.0) * 255.0

    def check_file(self, path: Path) -> None:
        read_dicom(path, header_only=True)


def read_dicom(path: Path, header_only: bool = False):
    """The file's dataset, after bounding its size and its declared pixel count; one line naming it otherwise."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size > MAX_DICOM_BYTES:
        raise DataError(f"{path}: {size:,} bytes; a DICOM file over {MAX_DICOM_BYTES:,} bytes is refused")
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=header_only)
        shape = (int(dataset.Rows), int(dataset.Columns), int(dataset.get("NumberOfFrames", 1) or 1),
                 int(dataset.get("SamplesPerPixel", 1) or 1))
    except Exception as exc:  # pydicom raises many kinds for a file that is not DICOM or lacks the image tags
        raise DataError(f"{path}: not a DICOM image ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") \
            from None
    check_value_count(shape, str(path))
    if shape[2] != 1:
        raise DataError(f"{path}: {shape[2]} frames; kagglecv reads one frame per DICOM file")
    return dataset


def _file_window(values: np.ndarray, dataset, path: Path) -> np.ndarray:
    """The file's own VOI LUT or window onto 0-255; without one, the image's own range."""
    if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
        try:
            windowed = pixels_module.apply_voi_lut(values, dataset).astype(np.float64)
            # the range it maps onto (which depends on the LUT, the sign and the rescale): where the extremes go
            ends = pixels_module.apply_voi_lut(np.array([-1e15, 1e15]), dataset).astype(np.float64)
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise DataError(f"{path}: cannot apply the file's window ({' '.join(str(exc).split())[:160]})") from None
        low, high = float(ends.min()), float(ends.max())
    else:
        windowed, low, high = values, float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(windowed)
    return np.clip((windowed - low) / (high - low), 0.0, 1.0) * 255.0


def _colour(stored: np.ndarray, dataset) -> np.ndarray:
    """A colour image (three samples a pixel, RGB after pydicom's conversion) on the 0-255 scale."""
    peak = float(2 ** int(dataset.get("BitsStored", 8)) - 1)
    return (stored.astype(np.float64) * (255.0 / peak)).astype(np.float32)
