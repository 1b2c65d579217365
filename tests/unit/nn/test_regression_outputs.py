"""A regression model's outputs: the values they become (numpy, and the ONNX graph's formula) and the loss it
trains with."""

import numpy as np
import pytest
import torch

from kagglecv.core.predictions import combine_views, values_from_outputs
from kagglecv.core.records import NormalizationRecord, OutputScale
from kagglecv.nn.export import ProbabilitiesOfViews
from kagglecv.nn.losses import RegressionLoss

RNG = np.random.default_rng(0)
TRUTH = RNG.uniform(1, 60, (200, 2))
GUESS = np.clip(TRUTH + RNG.normal(0, 5, (200, 2)), 0, None)


def test_outputs_become_values_as_the_scale_says_in_numpy_and_in_the_onnx_graph():
    outputs = RNG.normal(0, 2, (50, 2))
    for kind in ("standard", "range"):
        scale = OutputScale(kind=kind, center=[10.0, -3.0], scale=[4.0, 0.5])
        unit = outputs if kind == "standard" else 1 / (1 + np.exp(-outputs))
        np.testing.assert_allclose(values_from_outputs(outputs, scale), [10.0, -3.0] + np.array([4.0, 0.5]) * unit)
        module = ProbabilitiesOfViews(torch.nn.Identity(), ["none"], "regression", "logit",
                                      NormalizationRecord(mean=[0.0], std=[1.0], max_pixel_value=1.0, output=scale))
        graph = module.probabilities(torch.tensor(outputs, dtype=torch.float32)).numpy()
        np.testing.assert_allclose(graph, values_from_outputs(outputs, scale), rtol=1e-5)
    views = [GUESS, GUESS + 2]
    np.testing.assert_allclose(combine_views(views, "regression", "logit"), GUESS + 1)  # values average as values


def test_the_regression_loss_is_the_loss_of_the_normalised_target():
    outputs, targets = torch.randn(64, 2), torch.tensor(TRUTH[:64], dtype=torch.float32)
    center, scale = [30.0, 28.0], [12.0, 10.0]
    unit = (targets - torch.tensor(center)) / torch.tensor(scale)
    assert RegressionLoss("mse", center, scale)(outputs, targets) == pytest.approx(
        torch.mean((outputs - unit) ** 2).item(), rel=1e-6)
    assert RegressionLoss("l1", center, scale)(outputs, targets) == pytest.approx(
        torch.mean((outputs - unit).abs()).item(), rel=1e-6)
    low, width = [0.0, 0.0], [100.0, 100.0]
    scaled = targets / 100
    expected = -(scaled * torch.log(torch.sigmoid(outputs)) + (1 - scaled) * torch.log(1 - torch.sigmoid(outputs)))
    assert RegressionLoss("bce_scaled", low, width)(outputs, targets) == pytest.approx(expected.mean().item(), rel=1e-5)


def test_the_heads_loss_is_each_heads_cross_entropy_weighted():
    from kagglecv.nn.losses import HeadsLoss

    logits, targets = torch.randn(32, 8), torch.stack([torch.randint(0, 5, (32,)), torch.randint(0, 3, (32,))], 1)
    first = torch.nn.functional.cross_entropy(logits[:, :5], targets[:, 0])
    second = torch.nn.functional.cross_entropy(logits[:, 5:], targets[:, 1])
    loss = HeadsLoss([slice(0, 5), slice(5, 8)], [3.0, 1.0])(logits, targets.float())
    assert loss.item() == pytest.approx(((3 * first + second) / 4).item(), rel=1e-6)
