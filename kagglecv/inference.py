"""Batched inference: logits for every row a loader yields, and probabilities by task."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.inference_mode()
def run_inference(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None,
                  channels_last: bool = False, views: dict[str, Callable] | None = None) -> tuple[np.ndarray, dict]:
    """``(rows, {view: logits})`` for every batch of ``loader``, in loader order, logits as float32 numpy.

    ``views`` maps a name to a batch transform (test-time augmentation); each batch is loaded once for all views.
    Without views, the one view ``none`` is the batch as it is.
    """
    views = views or {"none": lambda images: images}
    was_training = model.training
    model.eval()
    rows, outputs = [], {name: [] for name in views}
    for images, _, batch_rows in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        for name, view in views.items():
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                outputs[name].append(model(view(images)).float().cpu().numpy())
        rows.append(np.asarray(batch_rows))
    model.train(was_training)
    if not rows:
        return np.zeros(0, dtype=np.int64), {name: np.zeros((0, 0), dtype=np.float32) for name in views}
    return np.concatenate(rows), {name: np.concatenate(chunks) for name, chunks in outputs.items()}


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
