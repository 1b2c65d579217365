"""Safe weight files: safetensors for weights, ``torch.load(weights_only=True)`` for everything else.

No file kagglecv reads can run code when loaded: pickles are refused unless they hold only tensors and plain
containers (PyTorch's weights-only unpickler).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from kagglecv.core.errors import KagglecvError, summarize
from kagglecv.core.files import write_bytes


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically."""
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
    write_bytes(path, save(tensors, metadata=metadata))


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A model state dict from .safetensors or a weights-only .pth/.pt (``state_dict``/``model`` keys unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise KagglecvError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise KagglecvError(f"{path}: not a readable safetensors file: {exc}") from None
    state = load_torch(path)
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise KagglecvError(f"{path}: expected a dict of tensors (a state dict)")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_torch(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: a file that would run code is refused with a clear error."""
    try:
        return torch.load(io.BytesIO(Path(path).read_bytes()), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for unsafe or broken files
        raise KagglecvError(f"{path}: refused to load: not a weights-only PyTorch file ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]})") from None


def load_checked(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load the weights file ``path`` into ``model`` after checking it against the model's state dict: the same
    names, the same shapes, and floating-point tensors where the model has them (an integer tensor would load as
    truncated weights). A mismatch is one error naming the file and the first key."""
    state, expected = load_state_dict(path), model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KagglecvError(f"{path}: does not fit the run's model: "
                            + "; ".join(f"{label} {summarize(keys, 3, quote=True)}" for label, keys in
                                        (("missing keys", missing), ("unexpected keys", unexpected)) if keys))
    for key, want in expected.items():
        got = state[key]
        if tuple(got.shape) != tuple(want.shape):
            raise KagglecvError(f"{path}: {key}: shape {tuple(got.shape)}, the run's model has {tuple(want.shape)}")
        if got.is_floating_point() != want.is_floating_point() or got.is_complex():
            raise KagglecvError(f"{path}: {key}: dtype {str(got.dtype).removeprefix('torch.')}, the run's model has "
                                f"{str(want.dtype).removeprefix('torch.')}")
    model.load_state_dict(state)
    return model
