"""A fold's ``last.pt``: every stateful training object saved and restored by one loop.

The objects are one ``{name: object}`` mapping (anything with ``state_dict``/``load_state_dict``; None for an
unused one), so a new piece of training state is one new key, never two edits. Writes are atomic and keep the
previous checkpoint as ``last.prev.pt``, which a resume falls back to when ``last.pt`` is unreadable.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import torch

from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import write_bytes_keep_previous
from kagglecv.core.runs import FoldDir
from kagglecv.nn.runtime import capture_rng_state, restore_rng_state
from kagglecv.nn.weights import load_torch


class Checkpoints:
    def __init__(self, folder: FoldDir, stateful: dict[str, Any], note: Callable[[str], None]):
        self.folder, self.stateful, self.note = folder, stateful, note

    def exists(self) -> bool:
        return self.folder.has_checkpoint()

    def save(self, progress: dict) -> None:
        """The state of every object, the RNG streams, and the loop's ``progress`` (epoch, step, history, ...)."""
        state = {name: part.state_dict() for name, part in self.stateful.items() if part is not None}
        state |= progress | {"rng": capture_rng_state()}
        write_bytes_keep_previous(self.folder.last_checkpoint, _serialize(state), self.folder.previous_checkpoint)

    def restore(self) -> dict:
        """Load every object and the RNG streams from the newest readable checkpoint; return the loop's progress."""
        state = self._load()
        for name, part in self.stateful.items():
            if part is not None:
                part.load_state_dict(state[name])
        restore_rng_state(state["rng"])
        return {key: value for key, value in state.items() if key not in self.stateful and key != "rng"}

    def _load(self) -> dict:
        """``last.pt``, or the previous checkpoint when it is unreadable; an error naming both when neither loads."""
        last, previous, fold = self.folder.last_checkpoint, self.folder.previous_checkpoint, f"fold {self.folder.index}"
        try:
            return load_torch(last)
        except KagglecvError as exc:
            if not previous.is_file():
                raise KagglecvError(f"{fold}: cannot resume: {exc}; delete {self.folder.path} to start the fold "
                                    "again") from None
            self.note(f"{fold}: {last} is unreadable ({type(exc).__name__}); resuming from {previous}")
            return load_torch(previous)


def _serialize(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
