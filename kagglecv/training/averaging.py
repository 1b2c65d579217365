"""Averaged weights: of several epochs (``train.avg_weights``), scored on the validation fold like EMA weights, and
the EMA as Lookahead (``train.lookahead_every``).

The epochs kept are the last ``avg_count`` ones, or the ``avg_count`` best by the raw weights' validation score,
as timm's ``avg_checkpoints.py`` picks checkpoints (its ``-n`` newest, or best by the checkpoint saver's metric).
Each kept epoch's weights are a file in ``fold<K>/epochs/``, so the average survives a resume; an epoch that drops
out of the set is deleted once the checkpoint that no longer needs it is written.

The average follows ``avg_checkpoints.py``: each floating-point tensor (BatchNorm's running statistics included) is
the mean over the kept epochs, accumulated in float64; integer tensors (``num_batches_tracked``) are taken from the
newest epoch instead of timm's float cast, so the state dict loads into the model unchanged.
"""

from __future__ import annotations

import math

import torch
from timm.utils import ModelEmaV3
from torch import nn

from kagglecv.core.runs import FoldDir
from kagglecv.nn.weights import load_state_dict, save_weights


class WeightAverager:
    def __init__(self, mode: str, count: int, folder: FoldDir, write: bool = True):
        self.mode, self.count, self.folder, self.write = mode, count, folder, write
        self.kept: list[tuple[int, float]] = []  # (epoch, selection score), oldest first

    def add(self, epoch: int, score: float, state: dict[str, torch.Tensor]) -> bool:
        """Offer ``epoch``'s weights; True when the kept set changed (the average is new)."""
        offered = (epoch, score if math.isfinite(score) else -math.inf)
        candidates = [*self.kept, offered]
        if self.mode == "best":
            chosen = sorted(candidates, key=lambda item: (-item[1], -item[0]))[:self.count]
        else:
            chosen = candidates[-self.count:]
        chosen.sort()
        if offered not in chosen:
            return False
        if self.write:
            save_weights(self.folder.epoch_weights(epoch), {key: value.detach().cpu() for key, value in state.items()})
        self.kept = chosen
        return True

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The mean of the kept epochs' weights (integer tensors: the newest epoch's)."""
        states = [load_state_dict(self.folder.epoch_weights(epoch)) for epoch, _ in self.kept]
        newest = states[-1]
        averaged = {}
        for key, value in newest.items():
            if value.is_floating_point():
                total = sum(state[key].to(torch.float64) for state in states)
                averaged[key] = (total / len(states)).to(value.dtype)
            else:
                averaged[key] = value
        return averaged

    def remove_dropped(self) -> None:
        """Delete the epoch files no longer kept (after the checkpoint recording the new set is written)."""
        keep = {self.folder.epoch_weights(epoch).name for epoch, _ in self.kept}
        for path in self.folder.epoch_weights_dir.glob("epoch*.safetensors"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def state_dict(self) -> dict:
        return {"kept": [list(item) for item in self.kept]}

    def load_state_dict(self, state: dict) -> None:
        self.kept = [(int(epoch), float(score)) for epoch, score in state["kept"]]


class Lookahead:
    """The EMA of the weights as a Lookahead: every ``every`` optimizer steps the EMA takes the model's weights in
    (parameters and BatchNorm statistics) at decay ``ema_decay ** every * progress ** 3`` and the model restarts from
    the EMA; the run's last step leaves the model on the EMA. ``progress`` is the share of the run's ``total_steps``
    done, so early on the EMA follows the model and the pull grows towards the end.

    This is airbench94's ``LookaheadState`` (KellerJordan/cifar10-airbench, after hlb-cifar10), not timm's
    ``Lookahead`` optimizer wrapper, which interpolates towards slow weights at a fixed rate and keeps no EMA. Its
    state is the EMA's, which the checkpoint already holds, so a resumed run continues it unchanged.
    """

    def __init__(self, ema: ModelEmaV3, every: int, ema_decay: float, total_steps: int):
        self.ema, self.every, self.ema_decay, self.total_steps = ema, every, ema_decay, max(total_steps, 1)

    def decay(self, step: int) -> float:
        return self.ema_decay ** self.every * min(step / self.total_steps, 1.0) ** 3

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """After optimizer step ``step`` (1-based)."""
        if step % self.every == 0:
            self.ema.apply_update_(model, self.decay(step))
        elif step < self.total_steps:
            return
        for ema_value, value in zip(self.ema.module.state_dict().values(), model.state_dict().values()):
            if value.is_floating_point():
                value.copy_(ema_value)
