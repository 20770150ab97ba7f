"""Dynamic kernels: involution with a position-independent kernel is a depthwise conv; routing weights."""

from __future__ import annotations

import pytest
import torch

import tokenmix
from tokenmix.ops.conv import conv


@pytest.mark.parametrize("impl", ["reference", "unfold"])
def test_involution_with_a_constant_kernel_is_a_grouped_depthwise_conv(impl):
    torch.manual_seed(0)
    mixer = tokenmix.create("involution", 8, kernel_size=3, group_channels=4, impl=impl).double()
    kernel = torch.randn(2, 9, dtype=torch.float64)  # one 3×3 kernel per group of 4 channels
    with torch.no_grad():
        mixer.span.weight.zero_()
        mixer.span.bias.copy_(kernel.flatten())
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64)
    weight = kernel.repeat_interleave(4, dim=0).view(8, 1, 3, 3)
    torch.testing.assert_close(mixer(x), conv(x, weight, groups=8, impl="reference"))


def test_dynamic_conv_routing_is_a_distribution_and_condconv_a_sigmoid():
    x = torch.randn(3, 8, 5, 5)
    pi = tokenmix.create("dynamic_conv2d", 8, num_experts=5).routing_weights(x)
    torch.testing.assert_close(pi.sum(-1), torch.ones(3))
    alpha = tokenmix.create("condconv", 8, num_experts=5).routing_weights(x)
    assert alpha.shape == (3, 5) and ((alpha > 0) & (alpha < 1)).all()


def test_condconv_with_equal_experts_is_a_scaled_conv():
    torch.manual_seed(0)
    mixer = tokenmix.create("condconv", 4, num_experts=3, groups=2).double()
    with torch.no_grad():
        mixer.weight.copy_(mixer.weight[:1].expand_as(mixer.weight))
        mixer.bias.zero_()
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    scale = mixer.routing_weights(x).sum(-1)
    for i in range(2):
        expected = scale[i] * conv(x[i:i + 1], mixer.weight[0], groups=2)
        torch.testing.assert_close(mixer(x)[i:i + 1], expected)


@pytest.mark.parametrize("impl", ["reference", "unfold"])
def test_local_relation_without_appearance_or_geometry_is_a_window_average(impl):
    mixer = tokenmix.create("local_relation", 8, kernel_size=3, num_groups=2, impl=impl).double()
    with torch.no_grad():
        for module in (mixer.query, mixer.key):
            module.weight.zero_()
            module.bias.zero_()
        mixer.geometry[-1].weight.zero_()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    expected = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    torch.testing.assert_close(mixer(x), expected)


def test_tvconv_kernels_vary_with_position_not_with_the_input():
    mixer = tokenmix.create("tvconv", 4, resolution=6).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    kernels = mixer.kernels((6, 6))
    assert not torch.allclose(kernels[..., 0, 0], kernels[..., 3, 3])
    # each output is its own position's 3×3 kernel applied to its neighbourhood (zero padding)
    expected = sum(kernels[:, :, t] * torch.nn.functional.pad(x, (1,) * 4)[..., t // 3:t // 3 + 6, t % 3:t % 3 + 6]
                   for t in range(9))
    torch.testing.assert_close(mixer(x), expected)
    assert mixer(torch.randn(1, 4, 5, 9, dtype=torch.float64)).shape == (1, 4, 5, 9)  # any size: A resized


def test_lsnet_groups_share_their_position_kernels():
    mixer = tokenmix.create("lsnet_ls_conv", 8, group_channels=4, impl="unfold").double()
    x = torch.zeros(1, 8, 5, 6, dtype=torch.float64)
    x[:, :, 2, 3] = 1.0  # one impulse per channel: each output reads its group's kernel taps around (2, 3)
    # channels of one group see the same kernels; the output depends on the kernels, which depend on x
    y = mixer(x)
    torch.testing.assert_close(y[:, 0], y[:, 3])
    torch.testing.assert_close(y[:, 4], y[:, 7])
