"""Test predictions of an ONNX bundle with ONNX Runtime, without torch (``pip install kagglecv[onnx]``).

Images are decoded as every stage decodes them (:func:`kagglecv.data.decoding.load_image`) and resized as the run's
evaluation transform does (OpenCV, bilinear, to ``model.img_size``); the exported graph does the rest
(normalization, the TTA views, softmax or sigmoid). ``pack --format onnx`` measured the difference from the PyTorch
recipe on the run's own images and stated it in the manifest.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kagglecv.core.errors import KagglecvError, require_extra
from kagglecv.data.decoding import load_image

ONNX_FILE = "model.onnx"


def resized_batch(images, rows: np.ndarray, size: int, channels: int) -> np.ndarray:
    """``rows`` of an image source as float32 0-255 N x C x size x size, as the evaluation transform resizes them."""
    batch = np.empty((len(rows), channels, size, size), dtype=np.float32)
    for position, row in enumerate(rows):
        pixels = load_image(images, int(row), channels)
        if pixels.shape[:2] != (size, size):
            pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)
        batch[position] = (pixels[:, :, None] if pixels.ndim == 2 else pixels).transpose(2, 0, 1)
    return batch


class OnnxFold:
    """One fold's exported model in an ONNX Runtime session on the CPU."""

    def __init__(self, path: Path, threads: int | None = None):
        require_extra("onnxruntime", "onnx", "an ONNX bundle")
        import onnxruntime

        if not Path(path).is_file():
            raise KagglecvError(f"{path}: missing; an ONNX bundle holds fold<K>/{ONNX_FILE} (pack it again)")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own kinds for a corrupt or foreign file
            raise KagglecvError(f"{path}: not a model ONNX Runtime can run ({' '.join(str(exc).split())[:200]})") \
                from None

    def predict(self, images, rows: np.ndarray, size: int, channels: int, batch_size: int,
                progress=None) -> np.ndarray:
        """Probabilities of ``rows`` of ``images``, in ``rows`` order."""
        chunks = []
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            chunks.append(self.session.run(None, {"images": resized_batch(images, part, size, channels)})[0])
            if progress is not None:
                progress.advance(len(part))
        return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, 0))
