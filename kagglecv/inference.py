"""Batched inference: logits for every row a loader yields, and probabilities by task."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.inference_mode()
def run_inference(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None,
                  channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, logits)`` for every batch of ``loader``, in loader order; logits as float32 numpy."""
    was_training = model.training
    model.eval()
    rows, outputs = [], []
    for images, _, batch_rows in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)
        outputs.append(logits.float().cpu().numpy())
        rows.append(np.asarray(batch_rows))
    model.train(was_training)
    if not outputs:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(rows), np.concatenate(outputs)


def probabilities_from_logits(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax (multiclass), sigmoid (multilabel), or ``[1 - p, p]`` from one sigmoid logit (binary)."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == "multiclass":
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    positive = 1.0 / (1.0 + np.exp(-logits))
    if task == "binary":
        return np.hstack([1.0 - positive[:, :1], positive[:, :1]])
    return positive
