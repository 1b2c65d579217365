"""airbench_cifar: a timm model by its plain name; its first layer whitens the training patches and never trains."""

import pytest
import timm
import torch
import torch.nn.functional as F

from kagglecv.core.config import ModelConfig
from kagglecv.core.errors import ConfigError
from kagglecv.nn.models import create_model, freeze_for_epoch, input_normalization
from kagglecv.nn.small_nets import CIFAR_MEAN, WHITENING_EPS


def correlated_images(count=64, size=16, seed=0):
    """Smooth colour images: neighbouring pixels and channels strongly correlated, as in photographs."""
    noise = torch.randn(count, 3, size + 4, size + 4, generator=torch.Generator().manual_seed(seed))
    smooth = F.avg_pool2d(noise, 5, stride=1)
    return smooth + 0.5 * smooth.mean(dim=1, keepdim=True)


def test_it_is_a_timm_model_with_the_cifar_normalisation_and_a_classifier_timm_can_reset():
    model = timm.create_model("airbench_cifar", num_classes=7)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert input_normalization(model)[0] == CIFAR_MEAN
    model.reset_classifier(0)
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, model.num_features)
    grey = create_model(ModelConfig(name="airbench_cifar", in_chans=1, img_size=28), 10)
    assert grey(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_the_whitening_filters_decorrelate_the_patches_they_were_computed_from():
    model = timm.create_model("airbench_cifar")
    images = correlated_images()
    model.init_whitening(images)
    half = model.whiten_weight[: len(model.whiten_weight) // 2].double()
    responses = F.conv2d(images.double(), half).permute(0, 2, 3, 1).reshape(-1, len(half))
    covariance = responses.T @ responses / len(responses)
    patches = images.double().unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    assert torch.allclose(covariance, torch.diag(eigenvalues / (eigenvalues + WHITENING_EPS)), atol=1e-6)
    assert torch.equal(model.whiten_weight[len(half):], -model.whiten_weight[: len(half)])


def test_the_whitening_layer_is_saved_with_the_weights_but_no_step_or_freezing_rule_changes_it():
    model = timm.create_model("airbench_cifar")
    model.init_whitening(correlated_images())
    before = model.whiten_weight.clone()
    assert "whiten_weight" in model.state_dict()
    assert all(parameter is not model.whiten_weight for parameter in model.parameters())
    freeze_for_epoch(model, ModelConfig(name="airbench_cifar"), 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.1)
    F.cross_entropy(model(correlated_images(8, 32)), torch.arange(8)).backward()
    optimizer.step()
    assert torch.equal(model.whiten_weight, before)
    assert model.whiten_bias.grad is not None


def test_options_it_cannot_honour_are_refused():
    with pytest.raises(ConfigError, match="no published weights"):
        create_model(ModelConfig(name="airbench_cifar", pretrained=True), 10)
    with pytest.raises(ConfigError, match="drop_path_rate"):
        create_model(ModelConfig(name="airbench_cifar", drop_path_rate=0.1), 10)
    with pytest.raises(ConfigError, match="at least 9 px, got 8"):
        create_model(ModelConfig(name="airbench_cifar", img_size=8), 10)
    create_model(ModelConfig(name="airbench_cifar", img_size=9), 10)(torch.zeros(2, 3, 9, 9))
