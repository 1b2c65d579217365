"""What one fold trains with, built from the config: model, loaders, optimizer, scheduler, loss, mixup, EMA, scaler.

``build_fold_components`` is the only place that turns config keys into training objects; the loop in train.py
only uses them. Optimizer and scheduler arguments go through timm's own ``optimizer_kwargs`` / ``scheduler_kwargs``
(the keys of ``train:`` are named after timm's train.py arguments), so a timm option is one config field away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import create_classification_loss
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from kagglecv.core.config import Config, ModelConfig
from kagglecv.core.errors import KagglecvError
from kagglecv.core.predictions import head_blocks
from kagglecv.core.records import NormalizationRecord
from kagglecv.data.table import CompetitionData, num_outputs, targets_for_loss
from kagglecv.nn.array_batches import ArrayBatches, DeviceNormalize, array_batches_apply
from kagglecv.nn.batch_augment import BatchAugment
from kagglecv.nn.fusion import FeatureScaling
from kagglecv.nn.images import ImageDataset
from kagglecv.nn.losses import HeadsLoss, RegressionLoss, TeacherLoss
from kagglecv.nn.models import (
    check_parameter_budget,
    create_model,
    freeze_for_epoch,
)
from kagglecv.nn.normalization import (
    choose_normalization,
    choose_output_scale,
    pipeline,
)
from kagglecv.nn.runtime import Runtime, autocast_dtype, check_compile, seed_everything
from kagglecv.nn.sampling import (
    EpochSampler,
    balanced_weights,
    build_loader,
    collate_skipping_unreadable,
)
from kagglecv.nn.small_nets import ShiftNorm
from kagglecv.second.identities import (
    check_identities,
    identity_labels,
    known_identity_rows,
)
from kagglecv.training.averaging import Lookahead
from kagglecv.training.teaching import FoldTeaching

WHITENING_IMAGES = 5000  # airbench94 whitens from the first 5,000 training images


@dataclass(frozen=True)
class LoopSettings:
    """What the epoch loop decides with, taken once from the config by :func:`loop_settings`: the trainer reads no
    config key itself."""

    epochs: int
    batch_size: int
    accum_steps: int = 1
    channels_last: bool = False
    clip_grad: float | None = None
    plateau_scheduler: bool = False  # stepped once an epoch on the selection score, not every optimizer step
    patience: int | None = None
    avg_weights: str | None = None
    avg_count: int = 3
    size_at: Callable[[int], int] = lambda epoch: 224           # the training image size of an epoch
    freeze: Callable[[nn.Module, int], list[str]] = lambda model, epoch: []  # freezes for an epoch, names the frozen
    title: str = ""                                             # the curves' title
    recorded_config: str = "{}"                                 # the config as JSON, kept in last.pt for a reader
    top_k_oof: int | None = None                                # identities: the fold's OOF as its top k, not dense


def loop_settings(config: Config) -> LoopSettings:
    """The loop's settings from ``config.train`` and ``config.model``."""
    cfg, model = config.train, config.model
    return LoopSettings(
        epochs=cfg.epochs, batch_size=cfg.batch_size, accum_steps=cfg.accum_steps, channels_last=cfg.channels_last,
        clip_grad=cfg.clip_grad, plateau_scheduler=cfg.sched == "plateau", patience=cfg.patience,
        avg_weights=cfg.avg_weights, avg_count=cfg.avg_count,
        size_at=lambda epoch: cfg.size_at(epoch, model.img_size),
        freeze=lambda network, epoch: freeze_for_epoch(network, model, epoch),
        title=config.experiment, recorded_config=config.model_dump_json(),
        top_k_oof=config.predict.identities.top_k if model.identity is not None else None)


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
    train_loader: DataLoader | ArrayBatches
    valid_loader: DataLoader
    make_train_loader: Callable[[int], DataLoader | ArrayBatches]  # the training loader at another image size (size_schedule)
    train_size: int
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    criterion: nn.Module
    mixup: Mixup | None
    ema: ModelEmaV3 | None
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    normalize: DeviceNormalize
    normalization: NormalizationRecord
    batch_augment: BatchAugment | None = None
    lookahead: Lookahead | None = None
    feature_scaling: FeatureScaling | None = None  # a fusion head's, fitted on the fold's training rows

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_loader)


def build_fold_components(config: Config, data: CompetitionData, fold_of: np.ndarray, fold: int,
                          runtime: Runtime, teaching: FoldTeaching | None = None) -> FoldComponents:
    """The fold's training objects, seeded by ``train.seed + fold`` so a fold is the same wherever it runs.

    ``teaching``: what the fold learns from a teacher (pseudo-labelled images, distillation targets); it replaces
    the training images, targets and rows, and the loss becomes :class:`~kagglecv.nn.losses.TeacherLoss`.
    """
    cfg = config.train
    check_fold_settings(config, data)
    seed_everything(cfg.seed + fold)
    device = runtime.device
    own_rows, valid_rows = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    if config.model.identity is not None:  # an unseen identity's rows (new_whale) are no identity to learn
        labels, new_label = identity_labels(data, config.predict.identities)
        own_rows = known_identity_rows(labels, new_label, own_rows)
    scaling = _feature_scaling(config, data, own_rows)
    model = create_model(config.model, num_outputs(data.task, data.classes),
                         features_width=scaling.width if scaling else None)
    if scaling is not None:
        model.use_table(scaling.transform(data.features))
    check_parameter_budget(model, config.model)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_targets = targets_for_loss(data)
    training = teaching or FoldTeaching(data.images, loss_targets, own_rows)
    augment = config.augment
    normalization = choose_normalization(augment.normalize, model, augment.mean, augment.std, config.model.in_chans,
                                         training.images, training.train_rows)
    if data.task == "regression":
        output = choose_output_scale(regression_loss(config), data.targets[own_rows], config.data.y_range)
        normalization = normalization.model_copy(update={"output": output})
    if hasattr(model, "init_whitening") and not isinstance(config.model.pretrained, Path):
        model.init_whitening(_whitening_images(config, training, normalization, cfg.seed + fold).to(device))
    sampler, make_train_loader = _training_loader(config, data, normalization, training, fold, runtime)
    train_size = cfg.size_at(0, config.model.img_size)
    train_loader = make_train_loader(train_size)
    valid_loader = _valid_loader(config, data, normalization, loss_targets, valid_rows, runtime)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(_timm_args(config)),
                                    param_group_fn=_norm_scaled_groups(cfg.weight_decay, cfg.norm_lr_scale)
                                    or _head_groups(cfg.weight_decay, config.model))
    updates_per_epoch = max(1, math.ceil(len(train_loader) / cfg.accum_steps))
    scheduler = _scheduler(config, optimizer, steps_per_epoch=updates_per_epoch)
    criterion = _criterion(config, data, loss_targets[own_rows], teaching is not None, normalization).to(device)
    mixup = _mixup(config, data, training.targets.shape[1] if teaching is not None else None)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
    lookahead = Lookahead(ema, cfg.lookahead_every, cfg.ema_decay, updates_per_epoch * cfg.epochs) \
        if ema is not None and cfg.lookahead_every else None
    amp_dtype = autocast_dtype(cfg.amp, device)
    check_compile(cfg.compile, device)
    # timm.utils.NativeScaler would also run the backward and the clipping, but it cannot skip DDP's all-reduce on
    # accumulation micro-steps (no_sync); the bare GradScaler keeps that in the loop, in three lines.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    train_model, ddp_model = _wrap(model, config, runtime)
    return FoldComponents(model, train_model, ddp_model, training.train_rows, valid_rows, loss_targets, sampler,
                          train_loader, valid_loader, make_train_loader, train_size, optimizer, scheduler, criterion,
                          mixup, ema, scaler, amp_dtype, _device_normalize(normalization, device), normalization,
                          _batch_augment(config, fold), lookahead, scaling)


def _feature_scaling(config: Config, data: CompetitionData, own_rows: np.ndarray) -> FeatureScaling | None:
    """A fusion head's feature scaling, fitted on the fold's training rows only."""
    if config.model.features_head is None:
        return None
    if data.features is None:
        raise KagglecvError(f"{data.source}: model.features_head needs data.features' columns, and the table was "
                            "read without them")
    return FeatureScaling.fit(data.features, own_rows)


def _device_normalize(normalization: NormalizationRecord, device: torch.device) -> DeviceNormalize:
    return DeviceNormalize(normalization.mean, normalization.std, device, normalization.max_pixel_value)


def _whitening_images(config: Config, training: FoldTeaching, normalization: NormalizationRecord,
                      seed: int) -> torch.Tensor:
    """Up to :data:`WHITENING_IMAGES` training images of the fold, as the network sees them without augmentation:
    what a whitening first layer (``init_whitening``, e.g. airbench_cifar's) is computed from."""
    rows = np.random.default_rng(seed).permutation(training.train_rows)[:WHITENING_IMAGES]
    size, channels = config.model.img_size, config.model.in_chans
    dataset = ImageDataset(training.images, None, pipeline("none", size, normalization, training.images, train=False),
                           None, channels=channels)
    return torch.stack([dataset[int(row)][0] for row in rows])


def _batch_augment(config: Config, fold: int) -> BatchAugment | None:
    augment = config.augment
    return BatchAugment.from_config(augment.batch, augment.hflip, augment.translate, augment.cutout,
                                    seed=config.train.seed * 1000 + fold, rotate=augment.rotate,
                                    alternate_flip=augment.alternate_flip)


def _timm_args(config: Config) -> SimpleNamespace:
    """The train section as timm's train.py argument namespace (plus model.layer_decay, which timm keeps there)."""
    return SimpleNamespace(**config.train.model_dump(), layer_decay=config.model.layer_decay,
                           sched_on_updates=config.train.sched != "plateau")


def _training_loader(config: Config, data: CompetitionData, normalization: NormalizationRecord,
                     training: FoldTeaching, fold: int,
                     runtime: Runtime) -> tuple[EpochSampler, Callable[[int], DataLoader | ArrayBatches]]:
    """The training sampler, and the training loader at a given image size (a new one per size: workers keep a
    copy of the dataset)."""
    cfg, in_chans = config.train, config.model.in_chans
    seed = cfg.seed + fold
    weights = balanced_weights(_class_of_rows(training, data)) if cfg.sampler == "balanced" else None
    sampler = EpochSampler(training.train_rows, shuffle=True, seed=seed, weights=weights, rank=runtime.rank,
                           world_size=runtime.world_size)

    def loader_at(size: int) -> DataLoader | ArrayBatches:
        drop_last = len(sampler) > cfg.batch_size
        if array_batches_apply(training.images, config.augment.train, size, in_chans, normalization):
            return ArrayBatches(training.images, training.targets, sampler, cfg.batch_size, drop_last,
                                pin_memory=runtime.device.type == "cuda")
        augment = pipeline(config.augment.train, size, normalization, training.images, train=True,
                           hflip=config.augment.hflip)
        dataset = ImageDataset(training.images, training.targets, augment, seed, skip_unreadable=True,
                               channels=in_chans)
        return build_loader(dataset, sampler, cfg.batch_size, cfg.num_workers, runtime.device,
                            drop_last=drop_last, collate_fn=collate_skipping_unreadable)

    return sampler, loader_at


def _class_of_rows(training: FoldTeaching, data: CompetitionData) -> np.ndarray:
    """The class of each training row, for class-balanced sampling (a dense target's top class)."""
    targets = training.targets[training.train_rows]
    if targets.ndim == 1:
        return targets
    return targets.argmax(axis=1) if data.task == "multiclass" else (targets[:, 0] >= 0.5).astype(np.int64)


def _valid_loader(config: Config, data: CompetitionData, normalization: NormalizationRecord,
                  loss_targets: np.ndarray, valid_rows: np.ndarray, runtime: Runtime) -> DataLoader:
    valid_set = ImageDataset(data.images, loss_targets,  # an OOF row is never dropped: errors raise
                             pipeline(config.augment.eval, config.model.img_size, normalization, data.images,
                                      train=False), None, channels=config.model.in_chans)
    valid_sampler = EpochSampler(valid_rows, shuffle=False, rank=runtime.rank, world_size=runtime.world_size)
    return build_loader(valid_set, valid_sampler, config.train.batch_size, config.train.num_workers, runtime.device)


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, ShiftNorm)


def _norm_scaled_groups(weight_decay: float, scale: float | None) -> Callable[[nn.Module], list[dict]] | None:
    """timm's ``param_group_fn`` for ``train.norm_lr_scale``: the normalisation layers' parameters at ``lr_scale``
    (which timm's schedulers multiply into each group's lr) with weight decay / scale, everything else at the
    optimizer's lr and weight decay, as airbench94's two groups (KellerJordan/cifar10-airbench, bias_scaler)."""
    if scale is None:
        return None

    def groups(model: nn.Module) -> list[dict]:
        norm_ids = {id(p) for module in model.modules() if isinstance(module, NORM_LAYERS)
                    for p in module.parameters(recurse=False)}
        trained = [p for p in model.parameters() if p.requires_grad]
        return [{"params": [p for p in trained if id(p) not in norm_ids], "weight_decay": weight_decay},
                {"params": [p for p in trained if id(p) in norm_ids], "weight_decay": weight_decay / scale,
                 "lr_scale": scale}]
    return groups


def _head_groups(weight_decay: float, model: ModelConfig) -> Callable[[nn.Module], list[dict]] | None:
    """timm's ``param_group_fn`` for a fusion or identity head: its new layers at ``lr_scale`` (which timm's
    schedulers multiply into the group's lr), the backbone at the optimizer's lr."""
    head = model.features_head or model.identity
    if head is None:
        return None

    def groups(model: nn.Module) -> list[dict]:
        backbone = {id(p) for p in model.backbone.parameters()}
        trained = [p for p in model.parameters() if p.requires_grad]
        return [{"params": [p for p in trained if id(p) in backbone], "weight_decay": weight_decay},
                {"params": [p for p in trained if id(p) not in backbone], "weight_decay": weight_decay,
                 "lr_scale": head.lr_scale}]
    return groups


def _scheduler(config: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """timm's scheduler, already at step 0 so the first batch trains at its scheduled rates times each group's
    ``lr_scale``; with ``sched: none`` the ``lr_scale`` is applied here, once."""
    if config.train.sched == "none":
        for group in optimizer.param_groups:
            group["lr"] *= group.get("lr_scale", 1.0)
        return None
    # Selection scores are higher-is-better (losses are negated), so a plateau is always "max".
    kwargs = scheduler_kwargs(_timm_args(config), decreasing_metric=False)
    scheduler, _ = create_scheduler_v2(optimizer, **kwargs, updates_per_epoch=steps_per_epoch)
    if not kwargs["step_on_epochs"]:
        scheduler.step_update(0)
    return scheduler


def regression_loss(config: Config) -> str:
    """A regression target's loss: ``train.loss``, mse for auto."""
    return "mse" if config.train.loss == "auto" else config.train.loss


def _criterion(config: Config, data: CompetitionData, train_targets: np.ndarray, dense: bool = False,
               normalization: NormalizationRecord | None = None) -> nn.Module:
    """The training loss; ``dense``: targets are ``[hard | teacher]`` float rows (pseudo-labels, distillation)."""
    cfg = config.train
    if data.task == "regression":
        output = normalization.output
        return RegressionLoss(regression_loss(config), output.center, output.scale)
    if data.task == "heads":
        blocks = head_blocks(data.classes)
        weights = cfg.head_weights or {}
        unknown = sorted(set(weights) - {head for head, _ in blocks})
        if unknown:
            raise KagglecvError(f"train.head_weights: {unknown[0]!r} is no head; the heads are "
                                f"{', '.join(head for head, _ in blocks)}")
        return HeadsLoss([block for _, block in blocks], [weights.get(head, 1.0) for head, _ in blocks])
    multi_label = data.task != "multiclass"
    outputs = num_outputs(data.task, data.classes)
    weight = inverse_frequency_weights(train_targets, outputs, multi_label) if cfg.class_weights else None
    if dense:
        distill = config.distill
        return TeacherLoss(outputs, not multi_label, distill.weight if distill else 0.0,
                           distill.temperature if distill else 1.0, weight)
    soft = cfg.mixup > 0 or cfg.cutmix > 0
    kind = {"auto": None, "focal": "poly"}.get(cfg.loss, cfg.loss)
    options = {"poly_epsilon": 0.0, "poly_gamma": 2.0} if cfg.loss == "focal" else {}
    if cfg.class_weights:
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


def _mixup(config: Config, data: CompetitionData, dense_width: int | None = None) -> Mixup | None:
    """timm's Mixup; on dense ``[hard | teacher]`` rows (already smoothed) it mixes every column as it is."""
    cfg = config.train
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    if dense_width is not None:
        return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob, label_smoothing=0.0,
                     num_classes=dense_width, multi_label=True)
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
    if config.model.identity is not None:
        check_identities(*identity_labels(data, config.predict.identities),
                         config.predict.identities.top_k)
