"""A fold model's pre-logit features (``kagglecv embed``): what its classifier sees, for a second stage.

timm models give them with ``forward_head(forward_features(x), pre_logits=True)``; an MLP-head model with its
backbone's pooled features; a fusion model with the image and table branches joined (``FusionModel.joined``).
"""

from __future__ import annotations

import torch
from torch import nn

from kagglecv.core.errors import KagglecvError
from kagglecv.nn.arcface import IdentityModel
from kagglecv.nn.fusion import FusionModel
from kagglecv.nn.models import MLPHeadModel


class PreLogits(nn.Module):
    """``module``'s input to its last linear layer; called as the module is (with rows for a fusion model)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        if not isinstance(module, (FusionModel, MLPHeadModel, IdentityModel)) and not (
                hasattr(module, "forward_features") and hasattr(module, "forward_head")):
            raise KagglecvError(f"{type(module).__name__} has no pre-logit features (timm's forward_features and "
                                "forward_head); embed a timm model")
        self.module = module

    def forward(self, images: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.module, FusionModel):
            return self.module.joined(images, rows)
        if isinstance(self.module, IdentityModel):
            return self.module.embed(images)
        if isinstance(self.module, MLPHeadModel):
            return self.module.backbone(images)
        return self.module.forward_head(self.module.forward_features(images), pre_logits=True)


class EmbeddingAndCosines(nn.Module):
    """An identity model's embedding and its head's cosine to every identity's center, side by side: one pass."""

    def __init__(self, module: IdentityModel):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embedding = self.module.embed(images)
        return torch.cat([embedding, self.module.head.cosines(embedding)], dim=1)
