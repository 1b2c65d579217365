"""The identity model (``model.identity``): a backbone's feature map, a GeM + BatchNorm neck and a sub-center ArcFace
classifier.

Sub-center ArcFace (Deng et al. 2020, "Sub-center ArcFace"; the Happywhale 1st place's head with k = 2): each class
has ``subcenters`` unit vectors, a class's cosine is the largest of its sub-centers' cosines with the unit
embedding, and in training the true class's angle is widened by ``margin`` before the cosines are scaled by
``scale``: ``s * cos(theta + m)`` for the target, ``s * cos(theta)`` for the others. Without targets (prediction)
the logits are ``s * cos(theta)``. GeM pooling (Radenovic et al. 2018): ``mean(x ** p) ** (1 / p)`` over the
spatial positions, ``p`` learned (1: average pooling; large: max pooling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GeM(nn.Module):
    """Generalised-mean pooling of an N x C x H x W map to N x C, with a learned exponent."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1))
        return pooled.pow(1.0 / self.p)


class IdentityNeck(nn.Module):
    """GeM, a linear projection to the embedding width, and BatchNorm: the embedding neighbours are searched on."""

    def __init__(self, channels: int, width: int, p: float = 3.0):
        super().__init__()
        self.pool = GeM(p)
        self.project = nn.Linear(channels, width)
        self.norm = nn.BatchNorm1d(width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(self.project(self.pool(features)))


class SubCenterArcFace(nn.Module):
    """Cosine logits of the embedding against each class's best sub-center, the target's angle widened in training."""

    def __init__(self, width: int, classes: int, subcenters: int = 2, margin: float = 0.3, scale: float = 30.0):
        super().__init__()
        if not (0.0 <= margin < math.pi / 2 and scale > 0 and subcenters >= 1):
            raise ValueError(f"ArcFace: margin in [0, pi/2), scale > 0 and subcenters >= 1; got {margin}, {scale}, "
                             f"{subcenters}")
        self.weight = nn.Parameter(torch.empty(classes * subcenters, width))
        nn.init.xavier_uniform_(self.weight)
        self.classes, self.subcenters, self.margin, self.scale = classes, subcenters, margin, scale

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        every = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        return every.view(-1, self.classes, self.subcenters).amax(dim=2)

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosines(embeddings)
        if targets is None:
            return self.scale * cosine
        angle = torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7))
        target = F.one_hot(targets.long(), self.classes).to(cosine.dtype)
        return self.scale * torch.where(target.bool(), torch.cos(angle + self.margin), cosine)


class IdentityModel(nn.Module):
    """A timm backbone's feature map through :class:`IdentityNeck` to an embedding, and :class:`SubCenterArcFace`
    over the identities. ``model(images, targets)`` in training gives the margin logits; ``model(images)`` the
    cosine logits (``scale * cos``), and ``embed(images)`` the embedding the neighbours are searched on."""

    takes_targets = True

    def __init__(self, backbone: nn.Module, classes: int, width: int, subcenters: int, margin: float, scale: float,
                 gem_p: float):
        super().__init__()
        if not hasattr(backbone, "forward_features"):
            raise ValueError(f"model.identity: {type(backbone).__name__} has no forward_features (a timm model's "
                             "feature map); use a timm backbone")
        self.backbone = backbone
        self.neck = IdentityNeck(backbone.num_features, width, gem_p)
        self.head = SubCenterArcFace(width, classes, subcenters, margin, scale)
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(images)
        if features.dim() != 4:
            raise ValueError(f"model.identity: the backbone's features have shape {tuple(features.shape)}; GeM pools "
                             "a convolutional network's N x C x H x W map")
        return self.neck(features)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(images), targets if self.training else None)
