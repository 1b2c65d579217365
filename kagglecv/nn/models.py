"""timm model creation: the backbone, an optional MLP head, pretrained weights from a local file, freezing."""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from torch import nn

from kagglecv.core.config import ModelConfig, OwnModelName
from kagglecv.core.errors import ConfigError, KagglecvError
from kagglecv.nn import small_nets  # noqa: F401  (registers airbench_cifar with timm)
from kagglecv.nn.arcface import IdentityModel
from kagglecv.nn.fusion import FusionModel
from kagglecv.nn.own_models import build_own_model, last_linear
from kagglecv.nn.weights import load_state_dict


class MLPHeadModel(nn.Module):
    """A timm backbone (classifier removed) followed by an MLP head: Linear-GELU-Dropout blocks, then Linear."""

    def __init__(self, backbone: nn.Module, hidden: list[int], dropout: float, num_classes: int):
        super().__init__()
        self.backbone = backbone
        layers: list[nn.Module] = []
        width = backbone.num_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


FETCHERS = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib3", "urllib")


def _timm_model(name: str, pretrained: bool, outputs: int, kwargs: dict) -> nn.Module:
    """``timm.create_model``; weights that cannot be fetched (offline, a Kaggle notebook without internet) are one
    line saying what kagglecv offers instead, not the hub's own message."""
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=outputs, **kwargs)
    except Exception as exc:  # huggingface_hub, httpx, requests and urllib raise their own kinds when offline
        fetching = isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in FETCHERS
        if not pretrained or isinstance(exc, KagglecvError) or not fetching:
            raise
        raise ConfigError(f"model.pretrained: true: {name}'s pretrained weights could not be fetched "
                          f"({type(exc).__name__}); offline, train from scratch (--set model.pretrained=false) or "
                          "load a weights file (model.pretrained: path/to/weights.safetensors)") from None


def create_model(config: ModelConfig, num_outputs: int, code_file: Path | None = None,
                 features_width: int | None = None) -> nn.Module:
    """The configured model with ``num_outputs`` logits: a timm model, or one from the user's own file.

    ``pretrained: true`` uses timm's own loading (the Hugging Face hub cache). A path loads that file — timm
    weights or a kagglecv checkpoint — keeping every backbone tensor and re-initializing a classifier whose shape
    no longer fits. Nothing else is downloaded. ``code_file`` is a run folder's copy of an own-model file, used
    instead of the file the config names (so a run still predicts after that file is gone). ``features_width``:
    the width of the scaled features a fusion head (``model.features_head``) takes.
    """
    kwargs = {"in_chans": config.in_chans, "drop_rate": config.drop_rate}
    if config.drop_path_rate is not None:
        kwargs["drop_path_rate"] = config.drop_path_rate
    if _needs_img_size(config.name):
        kwargs["img_size"] = config.img_size
    own = OwnModelName.parse(config.name)
    outputs = 0 if config.head or config.features_head or config.identity else num_outputs
    if own is not None:
        model = build_own_model(own, code_file, outputs, **kwargs)
    elif not timm.is_model(config.name):
        raise ConfigError(f"model.name: unknown timm model {config.name!r} (see timm.list_models()), and not an "
                          "own-model file (write it as path/to/nets.py:name)")
    else:
        model = _timm_model(config.name, config.pretrained is True, outputs, kwargs)
    smallest = getattr(model, "min_input_size", None)
    if smallest is not None and config.img_size < smallest:
        raise ConfigError(f"model.img_size: {config.name} takes images of at least {smallest} px, got {config.img_size}")
    if config.small_input:
        adapt_stem_to_small_input(model, config.name)
    if config.head:
        model = MLPHeadModel(model, config.head.hidden, config.head.dropout, num_outputs)
    if config.identity:
        head = config.identity
        try:
            model = IdentityModel(model, num_outputs, head.width, head.subcenters, head.margin, head.scale, head.gem_p)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if config.features_head:
        if not features_width:
            raise KagglecvError("model.features_head: the fold's feature scaling gives the width of the features; "
                                "none was given")
        model = FusionModel(model, features_width, config.features_head.hidden, config.features_head.dropout,
                            num_outputs)
    if isinstance(config.pretrained, Path):
        load_pretrained_file(model, config.pretrained)
    return model


def adapt_stem_to_small_input(model: nn.Module, name: str) -> None:
    """CIFAR-style stem for 28-64 px images: the stem's first convolution at stride 1 and no max-pool, so the last
    stage sees 4x4 instead of 1x1 (He et al. 2016, section 4.2). Tensor shapes are unchanged: pretrained weights
    load as before. Defined for timm's ResNet family (ResNet, ResNet-D/-T deep stems, ResNeXt, SE-ResNet)."""
    if not isinstance(model, timm.models.resnet.ResNet):
        raise ConfigError(f"model.small_input: defined for timm's ResNet family (resnet*, resnext*, seresnet*), "
                          f"not {name!r}; use a larger img_size instead")
    stem = model.conv1
    first = stem if isinstance(stem, nn.Conv2d) else next(m for m in stem.modules() if isinstance(m, nn.Conv2d))
    first.stride = (1, 1)
    model.maxpool = nn.Identity()


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def parameter_counts(model: nn.Module, config: ModelConfig) -> dict[str, int]:
    """Total parameters, and those that train in the first epoch (all but what ``model.freeze`` freezes)."""
    total = count_parameters(model)
    frozen = frozen_parameter_names(model, config) if _frozen_now(config, 0) else set()
    trainable = sum(parameter.numel() for name, parameter in model.named_parameters() if name not in frozen)
    return {"total": total, "trainable": trainable}


def check_parameter_budget(model: nn.Module, config: ModelConfig) -> None:
    """``model.max_params``: refuse a model over budget before it trains."""
    total = count_parameters(model)
    if config.max_params is not None and total > config.max_params:
        raise ConfigError(f"model.max_params: {config.name} has {total:,} parameters, over the budget of "
                          f"{config.max_params:,}")


def _needs_img_size(name: str) -> bool:
    """Transformers with fixed position embeddings take the input size at creation."""
    return bool(re.search(r"vit|deit|beit|eva|swin|maxvit|coatnet|mambaout", name))


def input_normalization(model: nn.Module, mean=None, std=None, in_chans: int = 3) -> tuple[tuple, tuple]:
    """``augment.mean`` / ``augment.std`` when set, else the backbone's pretrained normalization (timm's data config);
    for another number of input channels than three, the mean of the three channels' values for each."""
    resolved = timm.data.resolve_data_config({}, model=getattr(model, "backbone", model))
    mean, std = tuple(mean or resolved["mean"]), tuple(std or resolved["std"])
    if in_chans != 3 and len(mean) == 3:
        return (sum(mean) / 3,) * in_chans, (sum(std) / 3,) * in_chans
    return mean, std


def classifier_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of the final classifier (or the whole MLP head)."""
    if isinstance(model, MLPHeadModel):
        return {f"head.{name}" for name, _ in model.head.named_parameters()}
    if hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
    else:  # a plain own nn.Module: its last Linear is the classifier
        classifier = (last_linear(model) or (None, None))[1]
    module_name = next((name for name, module in model.named_modules() if module is classifier), None)
    if module_name is None or not isinstance(classifier, nn.Module):
        return set()
    return {f"{module_name}.{name}" for name, _ in classifier.named_parameters()}


def load_pretrained_file(model: nn.Module, path: Path) -> list[str]:
    """Load weights from a file into ``model``; returns the classifier keys left at their fresh initialization.

    Raises:
        KagglecvError: a backbone tensor is missing from the file or has another shape (naming the key).
    """
    state = load_state_dict(path)
    target = model.state_dict()
    if isinstance(model, MLPHeadModel) and not any(key.startswith("backbone.") for key in state):
        state = {f"backbone.{key}": value for key, value in state.items()}
    classifier = classifier_parameter_names(model)
    head_prefixes = tuple(name.rsplit(".", 1)[0] + "." for name in classifier)
    mismatched = [key for key, value in state.items() if key in target and target[key].shape != value.shape]
    bad = [key for key in mismatched if not key.startswith(head_prefixes)]
    if bad:
        key = bad[0]
        raise KagglecvError(f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, the model "
                            f"{tuple(target[key].shape)}: is model.name the architecture the file was saved from?")
    usable = {key: value for key, value in state.items() if key in target and key not in mismatched}
    missing = [key for key in target if key not in usable and not key.startswith(head_prefixes)]
    if missing:
        raise KagglecvError(f"{path}: {len(missing)} model tensors not in the file, e.g. {missing[0]!r}: "
                            "is model.name the architecture the file was saved from?")
    model.load_state_dict(usable, strict=False)
    return sorted(key for key in target if key not in usable)


def freeze_for_epoch(model: nn.Module, config: ModelConfig, epoch: int) -> list[str]:
    """Set ``requires_grad`` for this epoch; returns the names of frozen modules (their BatchNorm stays in eval)."""
    frozen_params = frozen_parameter_names(model, config) if _frozen_now(config, epoch) else set()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen_params)
    return sorted({name.rsplit(".", 1)[0] for name in frozen_params})


def _frozen_now(config: ModelConfig, epoch: int) -> bool:
    return config.freeze is not None and (config.unfreeze_epoch is None or epoch < config.unfreeze_epoch)


def frozen_parameter_names(model: nn.Module, config: ModelConfig) -> set[str]:
    """Parameters that ``model.freeze`` names: all but the classifier, or the stem and the first N stages."""
    names = [name for name, _ in model.named_parameters()]
    if config.freeze == "backbone":
        return set(names) - classifier_parameter_names(model)
    matcher_owner = model.backbone if isinstance(model, MLPHeadModel) else model
    if not hasattr(matcher_owner, "group_matcher"):
        raise ConfigError(f"model.freeze: {config.freeze!r} counts stages, which {config.name} does not define "
                          "(no group_matcher); use freeze: backbone")
    prefix = "backbone." if isinstance(model, MLPHeadModel) else ""
    groups = timm.models.group_parameters(matcher_owner, matcher_owner.group_matcher(coarse=True))
    ordered = sorted(group for group in groups if group < 1e4)  # timm puts the classifier at MAX_LAYER_ID
    chosen = ordered[: int(config.freeze) + 1]  # the stem is group 0, then one group per stage
    return {prefix + name for group in chosen for name in groups[group]}


def set_frozen_batchnorm_eval(model: nn.Module, frozen_modules: list[str]) -> None:
    """Keep BatchNorm running statistics of frozen modules fixed (called after ``model.train()``)."""
    if not frozen_modules:
        return
    prefixes = tuple(name + "." for name in frozen_modules) + tuple(frozen_modules)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and name.startswith(prefixes):
            module.eval()
