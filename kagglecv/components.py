"""What one fold trains with, built from the config: model, loaders, optimizer, scheduler, loss, mixup, EMA, scaler.

``build_fold_components`` is the only place that turns config keys into training objects; the loop in train.py
only uses them. Optimizer and scheduler arguments go through timm's own ``optimizer_kwargs`` / ``scheduler_kwargs``
(the keys of ``train:`` are named after timm's train.py arguments), so a timm option is one config field away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import create_classification_loss
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from .config import Config
from .data import CompetitionData
from .errors import KagglecvError
from .images import ImageDataset, build_augment
from .models import check_parameter_budget, create_model, input_normalization, num_outputs
from .runtime import Runtime, autocast_dtype, seed_everything
from .sampling import EpochSampler, balanced_weights, build_loader, collate_skipping_unreadable


@dataclass
class FoldComponents:
    """Everything a fold's loop touches. ``model`` is the bare network (its weights are saved); ``train_model`` is
    what the forward pass runs (DDP- and/or compile-wrapped); ``ddp_model`` is the DDP wrapper, if any."""

    model: nn.Module
    train_model: nn.Module
    ddp_model: nn.parallel.DistributedDataParallel | None
    train_rows: np.ndarray
    valid_rows: np.ndarray
    loss_targets: np.ndarray
    train_sampler: EpochSampler
    train_loader: DataLoader
    valid_loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    criterion: nn.Module
    mixup: Mixup | None
    ema: ModelEmaV3 | None
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_loader)


def build_fold_components(config: Config, data: CompetitionData, fold_of: np.ndarray, fold: int,
                          runtime: Runtime) -> FoldComponents:
    """The fold's training objects, seeded by ``train.seed + fold`` so a fold is the same wherever it runs."""
    cfg = config.train
    check_fold_settings(config, data)
    seed_everything(cfg.seed + fold)
    device = runtime.device
    model = create_model(config.model, num_outputs(data.task, data.classes))
    check_parameter_budget(model, config.model)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_rows, valid_rows = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    loss_targets = targets_for_loss(data)
    sampler, train_loader, valid_loader = _loaders(config, data, model, loss_targets, train_rows, valid_rows,
                                                   fold, runtime)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(_timm_args(config)))
    scheduler = _scheduler(config, optimizer, steps_per_epoch=max(1, math.ceil(len(train_loader) / cfg.accum_steps)))
    criterion = _criterion(config, data, loss_targets[train_rows]).to(device)
    mixup = _mixup(config, data)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
    amp_dtype = autocast_dtype(cfg.amp, device)
    # timm.utils.NativeScaler would also run the backward and the clipping, but it cannot skip DDP's all-reduce on
    # accumulation micro-steps (no_sync); the bare GradScaler keeps that in the loop, in three lines.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    train_model, ddp_model = _wrap(model, config, runtime)
    return FoldComponents(model, train_model, ddp_model, train_rows, valid_rows, loss_targets, sampler, train_loader,
                          valid_loader, optimizer, scheduler, criterion, mixup, ema, scaler, amp_dtype)


def targets_for_loss(data: CompetitionData) -> np.ndarray:
    """Class indices (multiclass), or float 0/1 per output (binary, multi-label; VOC's "difficult" counts as 0)."""
    if data.task == "multilabel":
        return (data.targets != 0).astype(np.float32)
    if data.task == "binary":
        return data.targets.astype(np.float32)[:, None]
    return data.targets


def _timm_args(config: Config) -> SimpleNamespace:
    """The train section as timm's train.py argument namespace (plus model.layer_decay, which timm keeps there)."""
    return SimpleNamespace(**config.train.model_dump(), layer_decay=config.model.layer_decay,
                           sched_on_updates=config.train.sched != "plateau")


def _loaders(config: Config, data: CompetitionData, model: nn.Module, loss_targets: np.ndarray,
             train_rows: np.ndarray, valid_rows: np.ndarray, fold: int, runtime: Runtime):
    cfg, in_chans = config.train, config.model.in_chans
    mean, std = input_normalization(model, config.augment.mean, config.augment.std, in_chans)
    size, seed = config.model.img_size, cfg.seed + fold
    train_set = ImageDataset(data.images, loss_targets,
                             build_augment(config.augment.train, size, mean, std, train=True,
                                           hflip=config.augment.hflip), seed,
                             skip_unreadable=True, channels=in_chans)
    valid_set = ImageDataset(data.images, loss_targets,  # an OOF row is never dropped: errors raise
                             build_augment(config.augment.eval, size, mean, std, train=False), None,
                             channels=in_chans)
    weights = balanced_weights(data.targets[train_rows]) if cfg.sampler == "balanced" else None
    rank, world = runtime.rank, runtime.world_size
    train_sampler = EpochSampler(train_rows, shuffle=True, seed=seed, weights=weights, rank=rank, world_size=world)
    valid_sampler = EpochSampler(valid_rows, shuffle=False, rank=rank, world_size=world)
    drop_last = len(train_sampler) > cfg.batch_size
    train_loader = build_loader(train_set, train_sampler, cfg.batch_size, cfg.num_workers, runtime.device,
                                drop_last, collate_fn=collate_skipping_unreadable)
    valid_loader = build_loader(valid_set, valid_sampler, cfg.batch_size, cfg.num_workers, runtime.device)
    return train_sampler, train_loader, valid_loader


def _scheduler(config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    if config.train.sched == "none":
        return None
    # Selection scores are higher-is-better (losses are negated), so a plateau is always "max".
    kwargs = scheduler_kwargs(_timm_args(config), decreasing_metric=False)
    scheduler, _ = create_scheduler_v2(optimizer, **kwargs, updates_per_epoch=steps_per_epoch)
    return scheduler


def _criterion(config: Config, data: CompetitionData, train_targets: np.ndarray) -> nn.Module:
    cfg = config.train
    multi_label = data.task != "multiclass"
    soft = cfg.mixup > 0 or cfg.cutmix > 0
    kind = {"auto": None, "focal": "poly"}.get(cfg.loss, cfg.loss)
    options = {"poly_epsilon": 0.0, "poly_gamma": 2.0} if cfg.loss == "focal" else {}
    if cfg.class_weights:
        weight = inverse_frequency_weights(train_targets, num_outputs(data.task, data.classes), multi_label)
        if not multi_label:  # timm's factory weights only BCE/ASL; torch's CE takes weights, soft targets too
            return nn.CrossEntropyLoss(weight=weight, label_smoothing=0.0 if soft else cfg.label_smoothing)
        options["pos_weight"] = weight
    return create_classification_loss(kind, multi_label=multi_label, smoothing=cfg.label_smoothing,
                                      soft_targets=soft and not multi_label, **options)


def inverse_frequency_weights(targets: np.ndarray, n_outputs: int, multi_label: bool) -> torch.Tensor:
    """Per class: rows / (classes x rows of the class) for CE; negatives / positives for BCE's pos_weight."""
    if multi_label:
        positives = targets.sum(axis=0)
        return torch.tensor((len(targets) - positives) / np.maximum(positives, 1), dtype=torch.float32)
    counts = np.bincount(targets, minlength=n_outputs)
    return torch.tensor(len(targets) / (n_outputs * np.maximum(counts, 1)), dtype=torch.float32)


def _mixup(config: Config, data: CompetitionData) -> Mixup | None:
    cfg = config.train
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                 label_smoothing=cfg.label_smoothing, num_classes=num_outputs(data.task, data.classes),
                 multi_label=data.task != "multiclass")


def _wrap(model: nn.Module, config: Config, runtime: Runtime):
    """The model the forward pass runs: DDP across ranks, then torch.compile when asked."""
    wrapped, ddp_model = model, None
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        wrapped = ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=config.model.freeze is not None)
    if config.train.compile:
        wrapped = torch.compile(wrapped)
    return wrapped, ddp_model


def check_fold_settings(config: Config, data: CompetitionData) -> None:
    """Settings that only the data can refute (the config validators catch the rest at load)."""
    if config.train.sampler == "balanced" and data.task == "multilabel":
        raise KagglecvError("train.sampler=balanced needs one label per row; the task is multilabel")
    if config.train.class_weights and data.task == "multiclass" and config.train.loss not in ("auto", "ce"):
        raise KagglecvError(f"train.class_weights works with loss ce for multiclass, got {config.train.loss!r}")
