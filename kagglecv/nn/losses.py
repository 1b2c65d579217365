"""The losses kagglecv writes itself: a regression target's (:class:`RegressionLoss`), and that of a fold that learns
from a teacher (pseudo-labels, distillation): dense float targets.

Each target row is ``[hard | teacher]``: ``hard`` is one-hot or probabilities (multiclass), or 0/1 or probabilities
per output (multi-label, binary) with NaN for a label that is left out (an unsure multi-label pseudo-label);
``teacher``, when distilling, is the teacher's probabilities. timm's mixup mixes such rows as they are (its
``multi_label`` mode), so a mixed label is unsure when either of its sources is.

The distillation term follows timm's ``LogitDistillationTask`` (``timm/task/distillation.py``): KL divergence
between the temperature-softened distributions, scaled by T^2 (Hinton, Vinyals & Dean 2015); the teacher's logits
are the log of its stored probabilities. For multi-label and binary outputs, each output is a two-class
distribution: binary cross-entropy of the softened student against the softened teacher, scaled by T^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPSILON = 1e-6


class HeadsLoss(nn.Module):
    """Several multiclass heads on one backbone: each head's cross-entropy over its block of logits, averaged with
    the heads' weights (``train.head_weights``)."""

    def __init__(self, blocks: list[slice], weights: list[float]):
        super().__init__()
        self.blocks = blocks
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.long().reshape(len(targets), -1)
        losses = [F.cross_entropy(logits[:, block].float(), targets[:, index])
                  for index, block in enumerate(self.blocks)]
        return (torch.stack(losses) * self.weights).sum()


class RegressionLoss(nn.Module):
    """A regression loss on the network's raw outputs, the targets normalised as the fold's
    :class:`~kagglecv.core.records.OutputScale` says: ``(y - center) / scale`` for mse, l1 and huber (delta 1, in
    standard deviations); ``(y - low) / width`` clipped to [0, 1] for BCE with logits (``bce_scaled``)."""

    def __init__(self, kind: str, center: list[float], scale: list[float]):
        super().__init__()
        self.kind = kind
        self.register_buffer("center", torch.tensor(center, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        unit = (targets.float() - self.center) / self.scale
        outputs = outputs.float()
        if self.kind == "bce_scaled":
            return F.binary_cross_entropy_with_logits(outputs, unit.clamp(0.0, 1.0))
        if self.kind == "l1":
            return F.l1_loss(outputs, unit)
        if self.kind == "huber":
            return F.huber_loss(outputs, unit, delta=1.0)
        return F.mse_loss(outputs, unit)


class TeacherLoss(nn.Module):
    """``(1 - weight) x hard-label loss + weight x distillation term`` on ``[hard | teacher]`` target rows.

    Args:
        outputs: the model's logits per row (classes; 1 for binary).
        multiclass: softmax cross-entropy (else per-output BCE).
        distill_weight: 0 without a teacher part in the targets.
        class_weight: CE class weights (multiclass) or BCE ``pos_weight`` (multi-label), as ``train.class_weights``.
    """

    def __init__(self, outputs: int, multiclass: bool, distill_weight: float = 0.0, temperature: float = 1.0,
                 class_weight: torch.Tensor | None = None):
        super().__init__()
        self.outputs, self.multiclass = outputs, multiclass
        self.distill_weight, self.temperature = distill_weight, temperature
        self.register_buffer("class_weight", class_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = self._hard(logits, targets[:, :self.outputs])
        if targets.shape[1] == self.outputs:
            return loss
        return (1 - self.distill_weight) * loss + self.distill_weight * self._distill(logits, targets[:, self.outputs:])

    def _hard(self, logits: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        if self.multiclass:
            return F.cross_entropy(logits, hard, weight=self.class_weight)  # probability targets
        return _masked_bce(logits, hard, self.class_weight)

    def _distill(self, logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        scale = self.temperature
        if self.multiclass:
            student = F.log_softmax(logits / scale, dim=-1)
            softened = F.log_softmax(torch.log(teacher.clamp_min(EPSILON)) / scale, dim=-1)
            return F.kl_div(student, softened, reduction="batchmean", log_target=True) * scale ** 2
        softened = torch.sigmoid(torch.logit(teacher, eps=EPSILON) / scale)
        return _masked_bce(logits / scale, softened, None) * scale ** 2


def _masked_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None) -> torch.Tensor:
    """Mean binary cross-entropy over the labels that are not NaN."""
    known = ~torch.isnan(targets)
    per_label = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), pos_weight=pos_weight,
                                                   reduction="none")
    return (per_label * known).sum() / known.sum().clamp_min(1)
