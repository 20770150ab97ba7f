"""Feature maps: the kernels they realize, checked against their closed forms."""

from __future__ import annotations

import math

import torch

from tokenmix.ops import feature_maps as fm


def test_taylor_features_realize_the_second_order_expansion_of_exp():
    q, k = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    s = q @ k.T / 2.0  # √d = 2
    torch.testing.assert_close(fm.taylor(q) @ fm.taylor(k).T, 1 + s + s ** 2 / 2)


def test_cosformer_features_realize_cos_reweighting():
    q, k = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    positions, period = torch.arange(6), 10.0
    i, j = positions[:, None].double(), positions[None, :].double()
    expected = (q.relu() @ k.relu().T) * torch.cos(math.pi * (i - j) / (2 * period))
    got = fm.cosformer(q, positions, period) @ fm.cosformer(k, positions, period).T
    torch.testing.assert_close(got, expected)


def test_focused_keeps_the_norm_and_sharpens_the_direction():
    x = torch.tensor([[3.0, 1.0, -2.0]], dtype=torch.float64)
    f = fm.focused(x, power=3.0, eps=0.0)
    torch.testing.assert_close(f.norm(), x.relu().norm())
    assert f[0, 0] / f[0, 1] > 3.0 and f[0, 2] == 0  # ratio grows from 3 to 27


def test_lognormal_is_exponential():
    x = torch.randn(4, dtype=torch.float64)
    torch.testing.assert_close(fm.lognormal(x, 0.5), torch.exp(0.5 * x))
