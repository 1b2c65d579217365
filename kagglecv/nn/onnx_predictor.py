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
MAX_ONNX_BYTES = 2 << 30               # protobuf's own limit for one model file
MAX_TENSOR_ELEMENTS = 1 << 28          # one weight or constant (a ViT-H's largest matrix is 2.6e6 x 256 = 6.5e8 bytes)
MAX_MODEL_ELEMENTS = 1 << 30           # every weight and constant together (4 GiB of float32)
SHAPE_MAKERS = ("ConstantOfShape", "Expand", "Tile")  # ops whose constant input sets the size of what they allocate


def resized_batch(images, rows: np.ndarray, size: int, channels: int) -> np.ndarray:
    """``rows`` of an image source as float32 N x C x size x size in the images' units (0-255 for eight-bit
    ones), as the evaluation transform resizes them."""
    batch = np.empty((len(rows), channels, size, size), dtype=np.float32)
    for position, row in enumerate(rows):
        pixels = load_image(images, int(row), channels)
        if pixels.shape[:2] != (size, size):
            pixels = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)
        if pixels.ndim == 2:  # OpenCV drops a single channel when it resizes
            pixels = pixels[:, :, None]
        batch[position] = pixels.transpose(2, 0, 1)
    return batch


class OnnxFold:
    """One fold's exported model in an ONNX Runtime session on the CPU."""

    def __init__(self, path: Path, threads: int | None = None):
        require_extra("onnxruntime", "onnx", "an ONNX bundle")
        import onnxruntime

        if not Path(path).is_file():
            raise KagglecvError(f"{path}: missing; an ONNX bundle holds fold<K>/{ONNX_FILE} (pack it again)")
        check_graph(Path(path))
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


def check_graph(path: Path) -> None:
    """An ONNX file from someone else, read as data before ONNX Runtime sees it: every weight's external data
    inside the fold's folder, and no weight, constant or constant-shaped allocation past the bounds.

    Raises:
        KagglecvError: naming the file and the tensor, node or location.
    """
    require_extra("onnx", "onnx", "an ONNX bundle")
    import onnx

    if path.is_file() and path.stat().st_size > MAX_ONNX_BYTES:
        raise KagglecvError(f"{path}: {path.stat().st_size} bytes; an ONNX model file is at most {MAX_ONNX_BYTES}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own kinds for a foreign file
        raise KagglecvError(f"{path}: not an ONNX model ({' '.join(str(exc).split())[:200]})") from None
    constants: dict[str, object] = {}
    total = 0
    for tensor in _graph_tensors(model.graph):
        total += _checked_tensor(tensor, path)
        constants[tensor.name] = tensor
    if total > MAX_MODEL_ELEMENTS:
        raise KagglecvError(f"{path}: weights and constants of {total} elements; at most {MAX_MODEL_ELEMENTS}")
    for node in model.graph.node:
        if node.op_type in SHAPE_MAKERS and len(node.input) >= 1:
            shape = constants.get(node.input[-1] if node.op_type != "ConstantOfShape" else node.input[0])
            if shape is not None:
                _check_allocation(node, onnx.numpy_helper.to_array(shape), path)


def _graph_tensors(graph):
    """Every initializer and Constant-node value of ``graph`` and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph)


def _checked_tensor(tensor, path: Path) -> int:
    """The tensor's element count, after checking it against the bound and its data (inline or external)."""
    elements = int(np.prod([int(dim) for dim in tensor.dims], dtype=object)) if len(tensor.dims) else 1
    if any(int(dim) < 0 for dim in tensor.dims) or elements > MAX_TENSOR_ELEMENTS:
        raise KagglecvError(f"{path}: tensor {tensor.name!r} of shape {list(tensor.dims)}; at most "
                            f"{MAX_TENSOR_ELEMENTS} elements a tensor")
    if tensor.data_location == tensor.EXTERNAL:
        _check_external(tensor, path)
    return elements


def _check_external(tensor, path: Path) -> None:
    """External data named by a weight: a plain relative file inside the model's folder, the span inside it."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    folder = path.parent.resolve()
    target = (path.parent / location).resolve()
    if not location or Path(location).is_absolute() or ".." in Path(location).parts or folder not in target.parents \
            or (path.parent / location).is_symlink() or not target.is_file():
        raise KagglecvError(f"{path}: tensor {tensor.name!r} reads its data from {location!r}; external data must be "
                            f"a file beside the model inside {path.parent}")
    try:
        end = int(entries.get("offset", 0)) + int(entries.get("length", 0))
    except ValueError:
        raise KagglecvError(f"{path}: tensor {tensor.name!r}: external offset or length is not a number") from None
    if end > target.stat().st_size:
        raise KagglecvError(f"{path}: tensor {tensor.name!r} reads up to byte {end} of {location!r}, which has "
                            f"{target.stat().st_size}")


def _check_allocation(node, shape: np.ndarray, path: Path) -> None:
    values = [int(value) for value in np.asarray(shape).ravel()] if np.asarray(shape).dtype.kind in "iu" else []
    elements = int(np.prod([max(value, 1) for value in values], dtype=object)) if values else 1
    if elements > MAX_TENSOR_ELEMENTS:
        raise KagglecvError(f"{path}: node {node.name or node.op_type!r} ({node.op_type}) makes a tensor of shape "
                            f"{values}; at most {MAX_TENSOR_ELEMENTS} elements")
