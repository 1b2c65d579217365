"""Inference shared by the train and predict stages: a fold's weights loaded, batched logits with test-time
augmentation (TTA) views, and probabilities by task."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from kagglecv.core.config import Config, check_tta_view
from kagglecv.core.errors import ConfigError, KagglecvError
from kagglecv.core.predictions import head_probabilities, values_from_outputs
from kagglecv.core.records import NormalizationRecord
from kagglecv.core.runs import RunDir
from kagglecv.data.table import FeatureTable, num_outputs
from kagglecv.nn.embeddings import EmbeddingAndCosines, PreLogits
from kagglecv.nn.fusion import forward_batch, read_feature_scaling, takes_rows
from kagglecv.nn.images import ImageDataset
from kagglecv.nn.models import create_model
from kagglecv.nn.normalization import choose_normalization, pipeline
from kagglecv.nn.runtime import autocast_dtype, setup_runtime
from kagglecv.nn.sampling import EpochSampler, build_loader
from kagglecv.nn.weights import load_checked


@torch.inference_mode()
def run_inference(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None,
                  channels_last: bool = False, views: dict[str, Callable] | None = None,
                  progress=None) -> tuple[np.ndarray, dict]:
    """``(rows, {view: logits})`` for every batch of ``loader``, in loader order, logits as float32 numpy.

    ``views`` maps a name to a batch transform (test-time augmentation); each batch is loaded once for all views.
    Without views, the one view ``none`` is the batch as it is. ``progress`` (an ``ImageProgress``) advances per batch.
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
                outputs[name].append(forward_batch(model, view(images), batch_rows).float().cpu().numpy())
        rows.append(np.asarray(batch_rows))
        if progress is not None:
            progress.advance(len(batch_rows))
    model.train(was_training)
    if not rows:
        return np.zeros(0, dtype=np.int64), {name: np.zeros((0, 0), dtype=np.float32) for name in views}
    return np.concatenate(rows), {name: np.concatenate(chunks) for name, chunks in outputs.items()}


def tta_view(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch transform of a TTA name (NCHW tensors); views joined by ``+`` apply left to right
    (``hflip+shift:1:1``: airbench's flipped and shifted views); an unknown name is a ``ConfigError``."""
    views = [_single_view(part) for part in str(name).split("+")]
    if len(views) == 1:
        return views[0]
    return lambda x: functools.reduce(lambda images, view: view(images), views, x)


def _single_view(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    fixed = {
        "none": lambda x: x,
        "hflip": lambda x: x.flip(-1),
        "vflip": lambda x: x.flip(-2),
        "transpose": lambda x: x.transpose(-1, -2),
        "rot90": lambda x: x.rot90(1, (-2, -1)),
        "rot180": lambda x: x.rot90(2, (-2, -1)),
        "rot270": lambda x: x.rot90(3, (-2, -1)),
    }
    try:
        spec = check_tta_view(name)
    except ValueError as exc:
        raise ConfigError(f"predict.tta: {exc}") from None
    if spec is None:
        return fixed[name]
    kind, numbers = spec
    if kind == "scale":
        return lambda x: F.interpolate(x, scale_factor=numbers[0], mode="bilinear", align_corners=False)
    if kind == "shift":
        return lambda x: _shift(x, int(numbers[0]), int(numbers[1]))
    return lambda x: _rotate(x, numbers[0])


def _shift(images: torch.Tensor, right: int, down: int) -> torch.Tensor:
    """The batch moved by whole pixels, the uncovered border reflected as ``augment.batch``'s training shifts fill
    it (and airbench's shifted test views); repeated instead where the shift is not smaller than the image."""
    height, width = images.shape[-2:]
    pad = max(abs(right), abs(down))
    if pad == 0:
        return images
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect" if pad < min(height, width) else "replicate")
    return padded[..., pad - down:pad - down + height, pad - right:pad - right + width]


def _rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """The batch rotated counter-clockwise about its centre, bilinear, zeros (the normalized mean) outside."""
    angle = torch.tensor(np.deg2rad(degrees), dtype=images.dtype, device=images.device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros((), dtype=images.dtype, device=images.device)
    # affine_grid maps output to input coordinates: rotating the image by +D samples it at -D.
    theta = torch.stack([torch.stack([cos, -sin, zero]), torch.stack([sin, cos, zero])]).unsqueeze(0)
    grid = F.affine_grid(theta.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class FoldPredictor:
    """Loads a fold's weights and predicts rows with TTA views; shared by the train and predict stages."""

    def __init__(self, config: Config, run: RunDir, task: str, classes: list[str]):
        self.config, self.run, self.task, self.classes = config, run, task, classes
        self.runtime = setup_runtime(config.train.device)
        self.num_outputs = num_outputs(task, classes)
        self.batch_size = config.inference_batch_size
        self.amp_dtype = autocast_dtype(config.train.amp, self.runtime.device)

    def load(self, fold: int, source: str | None = None) -> torch.nn.Module:
        """The fold's ``raw`` (best.safetensors) or ``ema`` weights; by default as ``predict.weights`` says."""
        folder = self.run.fold(fold)
        source = source or self.config.predict.weights
        if source == "auto":
            source = folder.read_done().source
        weights = folder.weights(source)
        self.feature_scaling = None if self.config.model.features_head is None else read_feature_scaling(folder)
        model = create_model(self.config.model.model_copy(update={"pretrained": False}), self.num_outputs,
                             code_file=self.run.model_code(),
                             features_width=self.feature_scaling.width if self.feature_scaling else None)
        load_checked(model, weights)
        self.normalization = folder.read_normalization() or self._unrecorded_normalization(model, folder)
        output = self.normalization.output
        if (self.task == "regression") != (output is not None) or (output and len(output.center) != self.num_outputs):
            raise KagglecvError(f"{folder.normalization_path}: its output scale does not fit a {self.task} model of "
                                f"{self.num_outputs} outputs (train the fold again)")
        return model.to(self.runtime.device).eval()

    def _unrecorded_normalization(self, model: torch.nn.Module, folder) -> NormalizationRecord:
        """A fold trained before its normalisation was recorded normalised as the backbone does; any other choice
        needs the record, since its statistics came from training images this command may not have."""
        augment = self.config.augment
        if augment.normalize not in ("auto", "backbone"):
            raise KagglecvError(f"{folder.normalization_path}: missing; augment.normalize {augment.normalize!r} "
                                "needs the statistics training recorded there (train the fold again)")
        return choose_normalization("backbone", model, augment.mean, augment.std, self.config.model.in_chans,
                                    None, np.zeros(0, dtype=np.int64))

    def views(self, model, paths, rows: np.ndarray, views: list[str], progress=None,
              features: FeatureTable | None = None) -> dict[str, np.ndarray]:
        """Logits of every view for ``rows`` of ``paths``, in ``rows`` order; each image decoded once. ``features``:
        the table's ``data.features`` beside ``paths``, for a fusion model."""
        logits = self.outputs(model, paths, rows, views, progress, features)
        if self.normalization.output is not None:  # a regression model: its values, views averaged in output space
            return {name: values_from_outputs(values, self.normalization.output) for name, values in logits.items()}
        if self.task == "heads":  # each head's probabilities, views averaged as probabilities
            return {name: head_probabilities(values, self.classes) for name, values in logits.items()}
        return logits

    def embeddings(self, model, paths, rows: np.ndarray, features: FeatureTable | None = None) -> np.ndarray:
        """The pre-logit features of ``rows`` of ``paths`` (no TTA), float32, in ``rows`` order."""
        return self.outputs(PreLogits(model), paths, rows, ["none"], None, features)["none"]

    def identity_outputs(self, model, paths, rows: np.ndarray, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """An identity model's embeddings of ``rows`` and its head's cosines to every identity (no TTA)."""
        inner = getattr(model, "module", model)
        joined = self.outputs(EmbeddingAndCosines(inner), paths, rows, ["none"], progress)["none"]
        width = inner.head.weight.shape[1]
        return joined[:, :width].astype(np.float32), joined[:, width:]

    def outputs(self, model, paths, rows: np.ndarray, views: list[str], progress=None,
                features: FeatureTable | None = None) -> dict[str, np.ndarray]:
        """``model``'s raw outputs of every view for ``rows`` of ``paths``, in ``rows`` order."""
        if takes_rows(model):
            if features is None:
                raise KagglecvError(f"{self.run.path}: a fusion model (model.features_head) predicts from each row's "
                                    "features; this table was read without them")
            getattr(model, "module", model).use_table(self.feature_scaling.transform(features))
        transform = pipeline(self.config.augment.eval, self.config.model.img_size, self.normalization, paths,
                             train=False)
        dataset = ImageDataset(paths, None, transform, seed=None, channels=self.config.model.in_chans)
        loader = build_loader(dataset, EpochSampler(rows, shuffle=False),
                              self.batch_size, self.config.train.num_workers, self.runtime.device)
        with progress or contextlib.nullcontext() as bar:
            _, outputs = run_inference(model, loader, self.runtime.device, self.amp_dtype,
                                       self.config.train.channels_last, {name: tta_view(name) for name in views}, bar)
        return outputs
