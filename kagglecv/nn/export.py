"""A fold's chosen weights as an ONNX model for CPU time limits: normalization, every TTA view and the softmax or
sigmoid inside the graph, so ONNX Runtime alone (no torch) predicts as the run's recipe does.

The graph takes a batch of resized images as float32 NCHW in the images' units (0-255 for eight-bit ones) and
normalises them as the fold's recorded normalisation says; it returns probabilities (``[1 - p, p]`` for a binary
task, as prediction files hold them), or a regression target's values. Exported by torch's ONNX exporter
(``dynamo=True``, with onnxscript) with a dynamic batch; ``pack --format onnx`` checks each exported model against
PyTorch on the run's own images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kagglecv.core.errors import KagglecvError
from kagglecv.core.predictions import head_blocks
from kagglecv.core.records import NormalizationRecord
from kagglecv.nn.inference import FoldPredictor, tta_view
from kagglecv.nn.recipe import RunRecipe

OPSET = 18


class ProbabilitiesOfViews(nn.Module):
    """The recipe of one fold as a module: normalize, each view's logits, combined as ``predict.tta_space`` says."""

    def __init__(self, model: nn.Module, views: list[str], task: str, space: str,
                 normalization: NormalizationRecord, classes: list[str] | None = None):
        super().__init__()
        self.blocks = [block for _, block in head_blocks(classes)] if task == "heads" else []
        self.model, self.views, self.task, self.space = model, [tta_view(name) for name in views], task, space
        self.per_sample, scale = normalization.per_sample, normalization.max_pixel_value
        self.register_buffer("mean", torch.tensor(normalization.mean, dtype=torch.float32).view(1, -1, 1, 1) * scale)
        self.register_buffer("std", torch.tensor(normalization.std, dtype=torch.float32).view(1, -1, 1, 1) * scale)
        output = normalization.output
        self.bounded = output is not None and output.kind == "range"
        self.register_buffer("center", torch.tensor(output.center if output else [0.0], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(output.scale if output else [1.0], dtype=torch.float32))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        if self.task == "heads":  # kagglecv.core.predictions.head_probabilities
            return torch.cat([logits[:, block].softmax(dim=1) for block in self.blocks], dim=1)
        if self.task == "regression":  # kagglecv.core.predictions.values_from_outputs
            return self.center + self.scale * (logits.sigmoid() if self.bounded else logits)
        if self.task == "multiclass":
            return logits.softmax(dim=1)
        positive = logits.sigmoid()
        return torch.cat([1.0 - positive[:, :1], positive[:, :1]], dim=1) if self.task == "binary" else positive

    def normalized(self, images: torch.Tensor) -> torch.Tensor:
        if not self.per_sample:
            return (images - self.mean) / self.std
        # kagglecv.nn.images.PerImageNormalize: each channel by its own mean and population std, a constant one 0
        mean = images.mean(dim=(2, 3), keepdim=True)
        std = images.std(dim=(2, 3), keepdim=True, unbiased=False)
        return (images - mean) / torch.where(std > 0, std, torch.ones_like(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        normalized = self.normalized(images)
        logits = [self.model(view(normalized)) for view in self.views]
        if self.space == "logit" and self.task not in ("regression", "heads"):  # these average as predictions
            return self.probabilities(torch.stack(logits).mean(dim=0))
        return torch.stack([self.probabilities(each) for each in logits]).mean(dim=0)


def export_onnx(module: ProbabilitiesOfViews, size: int, channels: int, path: Path) -> None:
    """Write ``module`` to ``path`` as ONNX (opset 18, dynamic batch); an exporter failure names the model."""
    example = torch.rand(2, channels, size, size) * 255.0
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET, input_names=["images"],
                                    output_names=["probabilities"], dynamic_shapes=({0: batch},), verbose=False)
        program.save(str(path))
    except Exception as exc:  # the exporter raises many kinds; all mean this model cannot be exported
        raise KagglecvError(f"ONNX export of {path.parent.name} failed: {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:300]}") from None


def export_fold(recipe: RunRecipe, fold: int, path: Path) -> None:
    """Fold ``fold`` of a run's recipe (its chosen weights, views and space) as ``path``, an ONNX graph on the CPU."""
    if not isinstance(recipe.config.augment.eval, str):
        raise KagglecvError("--format onnx: augment.eval is a list of transforms; ONNX bundles resize as the presets "
                            "do (set augment.eval to a preset, or pack as torch)")
    predictor = FoldPredictor(recipe.config.model_copy(update={"train": recipe.config.train.model_copy(
        update={"device": "cpu"})}), recipe.run, recipe.task, recipe.classes)
    model = predictor.load(fold, recipe.sources[fold]).cpu()
    module = ProbabilitiesOfViews(model, recipe.views, recipe.task, recipe.space, predictor.normalization,
                                  recipe.classes).eval()
    export_onnx(module, recipe.config.model.img_size, recipe.config.model.in_chans, path)
