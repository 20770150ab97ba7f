"""SimPool attention pooling: the paper's formula on a hand case, the power-mean variant, the backbone option."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.models.simpool import SimPool
from tokenmix.models.vision import VisionModel


def _identity_pool(gamma=None) -> SimPool:
    pool = SimPool(2, gamma=gamma).double()
    with torch.no_grad():
        pool.query.weight.copy_(torch.eye(2))
        pool.key.weight.copy_(torch.eye(2))
    return pool


def _hand_case():
    # three positions (2, 0), (0, 2), (3, 1): each has variance 1 over its 2 channels, so LayerNorm maps them to
    # ±(1, -1)/√(1 + ε) with ε = 1e-6: x̂ = n(1, -1), n(-1, 1), n(1, -1)
    features = torch.tensor([[2.0, 0.0, 3.0], [0.0, 2.0, 1.0]], dtype=torch.float64).view(1, 2, 1, 3)
    n = 1 / math.sqrt(1 + 1e-6)
    # u = mean x̂ = (n/3)(1, -1); scores u·x̂_i/√2 = ±(2n²/3)/√2
    s = (2 * n * n / 3) / math.sqrt(2)
    total = 2 * math.exp(s) + math.exp(-s)
    a = [math.exp(s) / total, math.exp(-s) / total, math.exp(s) / total]
    return features, n, a


def test_simpool_is_attention_weighted_average_of_normalized_features():
    features, n, a = _hand_case()
    pool = _identity_pool()
    torch.testing.assert_close(pool.attention(features), torch.tensor([[a]], dtype=torch.float64))
    weight = a[0] - a[1] + a[2]
    torch.testing.assert_close(pool(features), torch.tensor([[n * weight, -n * weight]], dtype=torch.float64))


def test_simpool_power_mean_with_gamma_two():
    features, n, a = _hand_case()
    pool = _identity_pool(gamma=2.0)
    eps = 1e-6
    # values minus their minimum (-n) plus ε: (2n + ε, ε) at positions 0 and 2, (ε, 2n + ε) at position 1
    high, low = 2 * n + eps, eps
    first = math.sqrt((a[0] + a[2]) * high ** 2 + a[1] * low ** 2)
    second = math.sqrt((a[0] + a[2]) * low ** 2 + a[1] * high ** 2)
    torch.testing.assert_close(pool(features), torch.tensor([[first, second]], dtype=torch.float64))


def test_simpool_with_zero_keys_is_the_average_of_normalized_features():
    pool = SimPool(8, num_heads=2).double()
    with torch.no_grad():
        pool.key.weight.zero_()
    features = torch.randn(3, 8, 4, 5, dtype=torch.float64)
    a = pool.attention(features)
    torch.testing.assert_close(a, torch.full((3, 2, 20), 1 / 20, dtype=torch.float64))
    torch.testing.assert_close(pool(features), pool.norm(features.flatten(2).transpose(1, 2)).mean(1))


def test_backbone_pooling_option():
    average = VisionModel("poolformer", num_classes=3, depths=(1,), dims=(8,), patch_size=2)
    assert average.simpool is None and not any("simpool" in key for key in average.state_dict())
    model = VisionModel("poolformer", num_classes=3, depths=(1,), dims=(8,), patch_size=2, pooling="simpool")
    images = torch.randn(2, 3, 8, 8)
    logits = model(images)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert model.simpool.query.weight.grad is not None and model.simpool.key.weight.grad is not None
    features = model.forward_features(images)
    torch.testing.assert_close(model.forward_head(features, pre_logits=True),
                               model.head_norm(model.simpool(features)))
    with pytest.raises(MixerInputError, match="pooling"):
        VisionModel("poolformer", depths=(1,), dims=(8,), pooling="max")
