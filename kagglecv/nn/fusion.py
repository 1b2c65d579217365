"""The fusion head (``model.features_head``): an image model whose classifier also sees the row's features.

``FusionModel`` joins the backbone's pooled features with a small MLP over the row's normalised ``data.features``
(the Pawpularity and bone-age winners' metadata branch). The features travel by row: a batch's row indices pick
them from the table the model is given (``use_table``), so loaders, samplers and TTA views stay the image
pipeline they are. ``FeatureScaling`` normalises them as the second stage's linear models do (numbers standardised
and imputed with the fold's training means, categories one-hot over the fold's training levels), fitted on the
fold's training rows only and recorded in ``fold<K>/features.json`` for every later prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kagglecv.core.errors import KagglecvError
from kagglecv.core.runs import FoldDir, read_json
from kagglecv.data.table import FeatureTable
from kagglecv.second.design import DesignSpec, design_matrix
from kagglecv.second.models import LinearInputs


@dataclass
class FeatureScaling:
    """How a fold's model sees the features: the category levels and the scaling its training rows gave."""

    numeric: list[str]
    categorical: list[str]
    levels: dict[str, list[str]]
    inputs: LinearInputs

    @classmethod
    def fit(cls, features: FeatureTable, rows: np.ndarray) -> "FeatureScaling":
        part = features.take(rows)
        levels = part.levels()
        spec = DesignSpec([], features.numeric_names, features.categorical_names, False)
        matrix = design_matrix(spec, np.zeros((len(rows), 0)), part, levels)
        return cls(features.numeric_names, features.categorical_names, levels,
                   LinearInputs.fit(matrix, spec.categorical_positions()))

    @property
    def width(self) -> int:
        return len(self.inputs.numeric) + sum(self.inputs.levels)

    def transform(self, features: FeatureTable) -> np.ndarray:
        if features.numeric_names != self.numeric or features.categorical_names != self.categorical:
            raise KagglecvError(f"{features.source}: features {features.numeric_names + features.categorical_names}; "
                                f"the fold's model was trained on {self.numeric + self.categorical}")
        spec = DesignSpec([], self.numeric, self.categorical, False)
        matrix = design_matrix(spec, np.zeros((len(features.ids), 0)), features, self.levels)
        return self.inputs.transform(matrix).astype(np.float32)

    def record(self) -> dict:
        return {"numeric": self.numeric, "categorical": self.categorical, "levels": self.levels,
                "inputs": self.inputs.state()}

    @classmethod
    def from_record(cls, record: dict, source) -> "FeatureScaling":
        try:
            inputs = LinearInputs.from_state(record["inputs"])
            scaling = cls([str(n) for n in record["numeric"]], [str(n) for n in record["categorical"]],
                          {str(k): [str(v) for v in values] for k, values in record["levels"].items()}, inputs)
        except (KeyError, TypeError, ValueError, AttributeError, KagglecvError) as exc:
            raise KagglecvError(f"{source}: not a feature scaling kagglecv wrote ({exc}); train the fold "
                                "again") from None
        if len(inputs.numeric) != len(scaling.numeric) or inputs.levels != [len(scaling.levels.get(name, []))
                                                                             for name in scaling.categorical]:
            raise KagglecvError(f"{source}: its scaling does not fit its columns; train the fold again")
        return scaling


class FusionModel(nn.Module):
    """A backbone (classifier removed) and an MLP over the row's features, one linear classifier over both."""

    def __init__(self, backbone: nn.Module, width: int, hidden: int, dropout: float, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.image_norm = nn.LayerNorm(backbone.num_features)  # both branches on one scale before the classifier
        self.table_mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(backbone.num_features + hidden, num_classes)
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})
        self.table: torch.Tensor | None = None  # not a buffer: the rows' features are data, not weights

    def use_table(self, features: np.ndarray) -> "FusionModel":
        """The features of the rows the next batches index (a training table, a test table)."""
        self.table = torch.as_tensor(np.asarray(features, dtype=np.float32))
        return self

    def forward(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.joined(images, rows))

    def joined(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The classifier's input: the normalised image features and the features' MLP output, side by side."""
        if self.table is None:
            raise KagglecvError("a fusion model predicts with its rows' features; none were given")
        table = self.table[rows.cpu().long()].to(images.device, non_blocking=True)
        return torch.cat([self.image_norm(self.backbone(images)), self.table_mlp(table.to(images.dtype))], dim=1)


def takes_rows(model: nn.Module) -> bool:
    """The model (or the one a DDP or compiled wrapper holds) is fed each batch's rows with its images."""
    for inner in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        if isinstance(inner, FusionModel):
            return True
    return False


def takes_targets(model: nn.Module) -> bool:
    """The model (or the one a wrapper holds) widens its target's angle in training (an ArcFace head)."""
    return any(getattr(inner, "takes_targets", False)
               for inner in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)))


def forward_batch(model: nn.Module, images: torch.Tensor, rows: torch.Tensor,
                  targets: torch.Tensor | None = None) -> torch.Tensor:
    """The model's logits for a batch: with its rows for a fusion model, with the targets for a training identity
    model's margin, the images alone otherwise."""
    if takes_rows(model):
        return model(images, torch.as_tensor(rows))
    return model(images, targets) if targets is not None and takes_targets(model) else model(images)


def read_feature_scaling(folder: FoldDir) -> FeatureScaling:
    """A fusion fold's ``features.json``; missing or damaged, an error naming it."""
    if not folder.features_path.is_file():
        raise KagglecvError(f"{folder.features_path}: missing; a fusion model's fold records how it scaled the "
                            "features (train the fold again)")
    return FeatureScaling.from_record(read_json(folder.features_path, "a fold's feature scaling"), folder.features_path)
