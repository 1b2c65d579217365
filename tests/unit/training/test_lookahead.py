"""train.lookahead_every: the EMA as airbench94's Lookahead, step for step equal to its LookaheadState."""

import pytest
import torch
from pydantic import ValidationError
from timm.utils import ModelEmaV3
from torch import nn

from kagglecv.core.config import Config
from kagglecv.training.averaging import Lookahead

EVERY, DECAY, TOTAL = 5, 0.95, 23  # 23 steps: the last one is not a multiple of 5


def net_and_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return net, torch.randn(TOTAL, 16, 3, 8, 8), torch.randint(0, 3, (TOTAL, 16))


def sgd_step(net, optimizer, images, labels):
    loss = nn.functional.cross_entropy(net(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def reference_run() -> dict[str, torch.Tensor]:
    """airbench94.py's loop: LookaheadState.update every 5 steps at 0.95^5 * (step / total)^3, decay 1 at the end."""
    net, images, labels = net_and_data()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.85, nesterov=True)
    alpha = DECAY ** EVERY * (torch.arange(TOTAL + 1) / TOTAL) ** 3
    slow = {key: value.clone() for key, value in net.state_dict().items()}

    def update(decay):
        with torch.no_grad():
            for ema_value, value in zip(slow.values(), net.state_dict().values()):
                if value.dtype in (torch.half, torch.float):
                    ema_value.lerp_(value, 1 - decay)
                    value.copy_(ema_value)

    for step in range(1, TOTAL + 1):
        sgd_step(net, optimizer, images[step - 1], labels[step - 1])
        if step % EVERY == 0:
            update(alpha[step].item())
        if step >= TOTAL:
            update(1.0)
    return net.state_dict()


def test_the_lookahead_equals_airbench94s_step_for_step_and_ends_on_the_ema():
    net, images, labels = net_and_data()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.85, nesterov=True)
    lookahead = Lookahead(ModelEmaV3(net, decay=DECAY, use_warmup=True), EVERY, DECAY, TOTAL)
    for step in range(1, TOTAL + 1):
        sgd_step(net, optimizer, images[step - 1], labels[step - 1])
        before = {key: value.clone() for key, value in net.state_dict().items()}
        lookahead.update(net, step)
        changed = any(not torch.equal(before[key], value) for key, value in net.state_dict().items())
        assert changed == (step % EVERY == 0 or step == TOTAL), f"step {step}: the model restarts only on its steps"
    expected = reference_run()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6, msg=key)
    for key, value in lookahead.ema.module.state_dict().items():
        if value.is_floating_point():
            assert torch.equal(value, net.state_dict()[key]), f"{key}: the run ends on the EMA"


def test_the_pull_grows_with_progress_as_a_cube():
    lookahead = Lookahead(None, EVERY, DECAY, 100)
    assert lookahead.decay(0) == 0.0
    assert lookahead.decay(50) == pytest.approx(DECAY ** EVERY / 8, rel=1e-12)
    assert lookahead.decay(100) == pytest.approx(DECAY ** EVERY, rel=1e-12)


def test_a_lookahead_without_an_ema_is_refused_at_load():
    with pytest.raises(ValidationError, match="lookahead_every: 5 .*train.ema: true"):
        Config(experiment="x", data={"train_csv": "t.csv", "image_dir": "i", "target": "y"},
               train={"lookahead_every": 5})
