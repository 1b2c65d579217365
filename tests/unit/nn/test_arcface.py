"""The identity head's pieces against their formulas in numpy: sub-center ArcFace logits (margin on the target's
angle only, the best sub-center per class), GeM pooling between average (p = 1) and max pooling."""

import numpy as np
import pytest
import torch

from kagglecv.nn.arcface import GeM, IdentityNeck, SubCenterArcFace


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_sub_center_arcface_logits_equal_the_formula():
    torch.manual_seed(0)
    head = SubCenterArcFace(width=8, classes=5, subcenters=2, margin=0.3, scale=30.0)
    embeddings = torch.randn(6, 8)
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    weight = head.weight.detach().numpy().reshape(5, 2, 8)
    cosine = np.einsum("nd,ckd->nck", unit(embeddings.numpy()), unit(weight)).max(axis=2)
    expected = 30.0 * cosine
    rows = np.arange(6)
    expected[rows, targets.numpy()] = 30.0 * np.cos(np.arccos(cosine[rows, targets.numpy()]) + 0.3)
    np.testing.assert_allclose(head(embeddings, targets).detach().numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(head(embeddings).detach().numpy(), 30.0 * cosine, atol=1e-4)
    assert (head(embeddings, targets) <= head(embeddings) + 1e-5).all()  # the margin only lowers the target's logit


def test_gem_is_average_pooling_at_p_1_and_near_max_pooling_at_large_p():
    features = torch.rand(3, 4, 5, 5) + 0.1
    np.testing.assert_allclose(GeM(p=1.0)(features).detach().numpy(), features.mean(dim=(2, 3)).numpy(), rtol=1e-5)
    pooled, largest = GeM(p=60.0)(features).detach().numpy(), features.amax(dim=(2, 3)).numpy()
    assert (pooled <= largest + 1e-6).all() and (pooled >= largest * 25 ** (-1 / 60) - 1e-6).all()  # max x N^(-1/p)


def test_the_neck_gives_embeddings_of_its_width_and_a_bad_margin_is_refused():
    assert IdentityNeck(channels=16, width=12)(torch.rand(4, 16, 3, 3)).shape == (4, 12)
    with pytest.raises(ValueError, match="margin"):
        SubCenterArcFace(8, 5, margin=2.0)


def test_the_identity_model_widens_only_the_target_in_training_and_embeds_what_its_head_scores():
    """``model.identity``: in training the batch's targets reach the head (forward_batch), the target's logit falls
    to s cos(theta + m) and the others stay; in evaluation the logits are s cos(theta) of the same embedding the
    neighbours search, and the optimizer's head group trains at lr_scale."""
    from kagglecv.core.config import ModelConfig
    from kagglecv.nn.embeddings import EmbeddingAndCosines, PreLogits
    from kagglecv.nn.fusion import forward_batch
    from kagglecv.nn.models import create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(name="test_resnet", img_size=32, identity={"width": 16, "margin": 0.4}), 7)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 6])
    model.eval()
    plain = forward_batch(model, images, torch.arange(4), targets)  # evaluation: no margin even with targets
    model.training = True  # the margin's switch; every layer below stays in evaluation (the same BatchNorm)
    widened = forward_batch(model, images, torch.arange(4), targets).detach()
    hit = torch.nn.functional.one_hot(targets, 7).bool()
    cosine = plain / 30.0
    expected = 30.0 * torch.cos(torch.acos(cosine.clamp(-1 + 1e-7, 1 - 1e-7)) + 0.4)
    torch.testing.assert_close(widened[hit], expected[hit], atol=1e-4, rtol=0)
    torch.testing.assert_close(widened[~hit], plain[~hit].detach(), atol=1e-5, rtol=0)
    model.eval()
    joined = EmbeddingAndCosines(model)(images).detach()
    torch.testing.assert_close(joined[:, :16], PreLogits(model)(images).detach())
    torch.testing.assert_close(joined[:, 16:] * 30.0, model(images).detach(), atol=1e-4, rtol=0)


def test_identity_settings_that_cannot_train_it_are_refused_at_load():
    from pydantic import ValidationError

    from kagglecv.core.config import Config

    base = {"experiment": "x", "data": {"train_csv": "t.csv", "target": "Id"}, "model": {"identity": {}}}
    Config.model_validate(base)
    for change, message in [({"train": {"mixup": 0.2}}, "train.mixup"),
                            ({"data": {"train_csv": "t.csv", "target": "Id", "task": "regression"}}, "multiclass"),
                            ({"model": {"identity": {}, "head": {"hidden": [8]}}}, "model.head and model.identity"),
                            ({"train": {"loss": "focal"}}, "train.loss"),
                            ({"predict": {"tta": ["none", "hflip"]}}, "predict.tta")]:
        with pytest.raises(ValidationError, match=message):
            Config.model_validate(base | change)
