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
