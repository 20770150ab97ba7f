"""Deformable mixers start as plain convolutions: zero offsets, modulation 0.5 (DCNv2) or 0 (DCNv4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tokenmix


@pytest.mark.parametrize("impl", ["reference", "grid_sample"])
def test_dcnv2_at_initialization_is_half_a_convolution(impl):
    mixer = tokenmix.create("dcnv2", 4, impl=impl).double()
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    expected = 0.5 * F.conv2d(x, mixer.weight.view(4, 4, 3, 3), padding=1) + mixer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(mixer(x), expected)


def test_dcnv4_aggregation_weights_are_not_normalized():
    mixer = tokenmix.create("dcnv4", 8, group_channels=4).double()
    with torch.no_grad():
        mixer.offset.bias.view(2, 9, 3)[:, :, 2] = 1.0  # m = 1 on every tap: a 3×3 box sum per channel
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    v = mixer.input_projection(x)
    box = F.conv2d(v, torch.ones(8, 1, 3, 3, dtype=torch.float64), padding=1, groups=8)
    torch.testing.assert_close(mixer(x), mixer.output_projection(box))
