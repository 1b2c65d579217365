"""A fold's ``last.pt``: every stateful training object saved and restored by one loop.

The objects are one ``{name: object}`` mapping (anything with ``state_dict``/``load_state_dict``; None for an
unused one), so a new piece of training state is one new key, never two edits. Writes are atomic and keep the
previous checkpoint as ``last.prev.pt``, which a resume falls back to when ``last.pt`` is unreadable.
"""

from __future__ import annotations

import io
from pathlib import Path
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
        source, state = self._load()
        for name, part in self.stateful.items():
            if part is not None:
                self._restore_part(name, part, state, source)
        restore_rng_state(state["rng"])
        return {key: value for key, value in state.items() if key not in self.stateful and key != "rng"}

    def _restore_part(self, name: str, part: Any, state: dict, source: Path) -> None:
        """One object's state; a checkpoint without it, or with another run's (another schedule, an older kagglecv),
        is one error naming the part, not a traceback."""
        if name not in state:
            raise self._cannot_resume(f"{source} holds no {name!r} state (another schedule's or an older "
                                      "kagglecv's checkpoint)")
        try:
            part.load_state_dict(state[name])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            raise self._cannot_resume(f"the {name!r} state in {source} does not fit this run ({reason})") from None

    def _load(self) -> tuple[Path, dict]:
        """``(file, state)`` of ``last.pt``, or of the previous checkpoint when it is unreadable; an error naming
        both when neither loads."""
        last, previous = self.folder.last_checkpoint, self.folder.previous_checkpoint
        try:
            return last, load_torch(last)
        except KagglecvError as exc:
            if not previous.is_file():
                raise self._cannot_resume(str(exc)) from None
            self.note(f"fold {self.folder.index}: {last} is unreadable ({type(exc).__name__}); resuming from {previous}")
            return previous, load_torch(previous)

    def _cannot_resume(self, reason: str) -> KagglecvError:
        return KagglecvError(f"fold {self.folder.index}: cannot resume: {reason}; delete {self.folder.path} to start "
                             "the fold again")


class PlateauCounters:
    """The state of the ``ReduceLROnPlateau`` inside timm's ``PlateauLRScheduler``, as a checkpoint part.

    timm's scheduler saves only ``best`` and ``last_epoch`` (its deprecation notice says so): the epochs without
    improvement and the cooldown left would restart at 0 on a resume, and the resumed run would lower its rate at
    other epochs than the run it continues. Saved beside the scheduler, they make both runs the same."""

    def __init__(self, scheduler):
        self.plateau = scheduler.lr_scheduler

    def state_dict(self) -> dict:
        return self.plateau.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.plateau.load_state_dict(state)


def _serialize(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
