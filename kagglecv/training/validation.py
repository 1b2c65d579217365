"""One validation pass of a fold: the held-out rows' logits and loss, gathered from every rank in row order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kagglecv.core.predictions import (
    head_blocks,
    head_probabilities,
    values_from_outputs,
)
from kagglecv.nn.inference import run_inference
from kagglecv.nn.losses import HeadsLoss
from kagglecv.nn.runtime import Runtime, all_gather
from kagglecv.training.components import FoldComponents


def validation_logits(model: nn.Module, parts: FoldComponents, task: str, runtime: Runtime,
                      channels_last: bool, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """``(rows, logits, loss)`` of the fold's validation rows (gathered from every rank, in row order); the loss is
    CE per row, or BCE per label (whatever the training loss), so epochs and runs compare. A regression model's
    logits are its values (the fold's output scale applied), and the loss their squared error; several heads'
    are each head's probabilities, and the loss the mean of the heads' cross-entropies."""
    rows, by_view = run_inference(model, parts.valid_loader, runtime.device, parts.amp_dtype, channels_last)
    logits = by_view["none"]
    targets = torch.as_tensor(parts.loss_targets[rows])
    if task == "regression":
        logits = values_from_outputs(logits, parts.normalization.output)
    loss_sum = _loss_sum(task, torch.as_tensor(logits), targets, classes) if len(rows) else 0.0
    if task == "heads" and len(rows):
        logits = head_probabilities(logits, classes)
    gathered = all_gather((rows, logits, loss_sum), runtime)
    rows = np.concatenate([g[0] for g in gathered])
    logits = np.concatenate([g[1] for g in gathered])
    order = np.argsort(rows)
    per_row = 1 if task in ("multiclass", "heads") else logits.shape[1]
    return rows[order], logits[order], sum(g[2] for g in gathered) / max(len(rows) * per_row, 1)


def _loss_sum(task: str, logits: torch.Tensor, targets: torch.Tensor, classes: list[str] | None) -> float:
    if task == "heads":
        blocks = [block for _, block in head_blocks(classes)]
        return float(len(targets) * HeadsLoss(blocks, [1.0] * len(blocks))(logits, targets))
    if task == "regression":
        return float(nn.MSELoss(reduction="sum")(logits, targets.double()))
    loss_fn = nn.CrossEntropyLoss(reduction="sum") if task == "multiclass" else nn.BCEWithLogitsLoss(reduction="sum")
    return float(loss_fn(logits, targets))
