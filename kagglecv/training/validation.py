"""One validation pass of a fold: the held-out rows' logits and loss, gathered from every rank in row order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kagglecv.core.predictions import values_from_outputs
from kagglecv.nn.inference import run_inference
from kagglecv.nn.runtime import Runtime, all_gather
from kagglecv.training.components import FoldComponents


def validation_logits(model: nn.Module, parts: FoldComponents, task: str, runtime: Runtime,
                      channels_last: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """``(rows, logits, loss)`` of the fold's validation rows (gathered from every rank, in row order); the loss is
    CE per row, or BCE per label (whatever the training loss), so epochs and runs compare. A regression model's
    logits are its values (the fold's output scale applied), and the loss their squared error."""
    rows, by_view = run_inference(model, parts.valid_loader, runtime.device, parts.amp_dtype, channels_last)
    logits = by_view["none"]
    targets = torch.as_tensor(parts.loss_targets[rows])
    multiclass = task == "multiclass"
    loss_fn = nn.CrossEntropyLoss(reduction="sum") if multiclass else nn.BCEWithLogitsLoss(reduction="sum")
    if task == "regression":
        logits, loss_fn = values_from_outputs(logits, parts.normalization.output), nn.MSELoss(reduction="sum")
        targets = targets.double()
    loss_sum = float(loss_fn(torch.as_tensor(logits), targets)) if len(rows) else 0.0
    gathered = all_gather((rows, logits, loss_sum), runtime)
    rows = np.concatenate([g[0] for g in gathered])
    logits = np.concatenate([g[1] for g in gathered])
    order = np.argsort(rows)
    per_row = 1 if multiclass else logits.shape[1]
    return rows[order], logits[order], sum(g[2] for g in gathered) / max(len(rows) * per_row, 1)
