"""The optimizer's groups and the schedule: train.norm_lr_scale (the normalisation layers' parameters at lr x scale
with weight decay / scale, from the first batch, under every kind of schedule) and the triangular schedule."""

import numpy as np
import pytest
import torch
from timm.optim import create_optimizer_v2
from torch import nn

from kagglecv.core.config import Config
from kagglecv.nn.small_nets import ShiftNorm
from kagglecv.training.components import _norm_scaled_groups, _scheduler

SCALE, LR, DECAY = 64.0, 0.5, 1e-3


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), ShiftNorm(4), nn.GELU(),
                         nn.Flatten(), nn.LayerNorm(4 * 6 * 6), nn.Linear(4 * 6 * 6, 2))


def norm_parameters(net: nn.Module) -> set[int]:
    return {id(p) for name, p in net.named_parameters() if name.split(".")[0] in ("1", "2", "5")}


def config_with(**sections) -> Config:
    return Config(experiment="x", data={"train_csv": "t.csv", "image_dir": "i", "target": "y"}, **sections)


def optimizer_for(net: nn.Module, **train) -> tuple[torch.optim.Optimizer, object]:
    config = config_with(train={"opt": "sgd", "lr": LR, "weight_decay": DECAY, "norm_lr_scale": SCALE, **train})
    optimizer = create_optimizer_v2(net, opt="sgd", lr=LR, weight_decay=DECAY, momentum=0.9,
                                    param_group_fn=_norm_scaled_groups(DECAY, SCALE))
    return optimizer, _scheduler(config, optimizer, steps_per_epoch=4)


@pytest.mark.parametrize("train", [
    {"sched": "cosine", "epochs": 3},                                        # no warmup: step 0 must apply the scale
    {"sched": "poly", "decay_rate": 1.0, "warmup_epochs": 1, "warmup_lr": 0.05, "epochs": 3, "min_lr": 0.0},
    {"sched": "none"},
    {"sched": "plateau", "epochs": 3},
])
def test_norm_parameters_train_at_the_scaled_rate_with_the_decay_per_step_of_the_others(train):
    net = small_net()
    optimizer, scheduler = optimizer_for(net, **train)
    groups = optimizer.param_groups
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters()), "every parameter in exactly one group"
    others, norms = groups
    assert {id(p) for p in norms["params"]} == norm_parameters(net), "BatchNorm, ShiftNorm and LayerNorm, nothing else"
    for step in range(12 if scheduler is not None and train["sched"] != "plateau" else 1):
        if step:
            scheduler.step_update(step)
        assert norms["lr"] == pytest.approx(others["lr"] * SCALE, rel=1e-12)
        assert norms["lr"] * norms["weight_decay"] == pytest.approx(others["lr"] * others["weight_decay"], rel=1e-12)
    assert others["weight_decay"] == DECAY


def test_without_the_key_timm_keeps_its_groups():
    assert _norm_scaled_groups(DECAY, None) is None


def test_wsd_with_a_linear_decay_over_the_epochs_after_warmup_is_the_speed_runs_triangle():
    """airbench94's schedule: np.interp(step, [0, warmup, total], [warmup_lr, lr, 0]), every update."""
    net, steps_per_epoch, epochs, warmup = small_net(), 4, 10, 2
    optimizer, scheduler = optimizer_for(net, sched="wsd", epochs=epochs, warmup_epochs=warmup, warmup_lr=0.1 * LR,
                                         decay_epochs=epochs - warmup, lr_decay_fn="linear", min_lr=0.0)
    lrs = []
    for update in range(epochs * steps_per_epoch + 1):
        scheduler.step_update(update)
        lrs.append(optimizer.param_groups[0]["lr"])
    total = epochs * steps_per_epoch
    triangle = np.interp(np.arange(total + 1), [0, warmup * steps_per_epoch, total], [0.1 * LR, LR, 0.0])
    np.testing.assert_allclose(lrs, triangle, rtol=0, atol=1e-12)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(SCALE * lrs[-1], abs=1e-12)


@pytest.mark.parametrize("train", [{"epochs": 10, "warmup_epochs": 2, "decay_epochs": 9},
                                   {"epochs": 2, "warmup_epochs": 2, "decay_epochs": 0.5}])
def test_a_decay_that_cannot_fit_after_warmup_is_refused_at_load_naming_the_keys(train):
    with pytest.raises(ValueError, match=r"decay_epochs .* must fit in the epochs after warmup \(epochs"):
        config_with(train={"sched": "wsd", **train})


def test_norm_lr_scale_beside_layer_decay_is_refused_as_timm_would_drop_the_layer_decay():
    with pytest.raises(ValueError, match=r"norm_lr_scale and model.layer_decay .* norm_lr_scale 64, layer_decay 0.7"):
        config_with(train={"norm_lr_scale": 64}, model={"layer_decay": 0.7})
