"""Convolutional and pooling grid mixers: branch structure, untouched channels, pooling in 1-3 dims."""

from __future__ import annotations

import pytest
import torch

import tokenmix


def test_inception_next_keeps_the_identity_channels_and_band_kernels_are_one_dimensional():
    mixer = tokenmix.create("inception_next", 32).double()
    assert mixer.branch_channels == 4
    x = torch.randn(2, 32, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(mixer(x)[:, 12:], x[:, 12:])
    assert mixer.width_weight.shape[-2:] == (1, 11) and mixer.height_weight.shape[-2:] == (11, 1)


def test_fasternet_pconv_convolves_only_a_quarter_of_the_channels():
    mixer = tokenmix.create("fasternet_pconv", 16).double()
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64)
    y = mixer(x)
    torch.testing.assert_close(y[:, 4:], x[:, 4:])
    assert not torch.allclose(y[:, :4], x[:, :4])


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 7, 9), (2, 3, 3, 4, 5), (1, 3, 1, 1)])
def test_poolformer_reference_equals_pooling_and_kills_constants(shape):
    spatial_dims = len(shape) - 2
    x = torch.randn(*shape, dtype=torch.float64)
    reference = tokenmix.create("poolformer", 3, spatial_dims=spatial_dims, impl="reference")
    direct = tokenmix.create("poolformer", 3, spatial_dims=spatial_dims, impl="direct")
    torch.testing.assert_close(direct(x), reference(x))
    constant = torch.full(shape, 2.5, dtype=torch.float64)
    torch.testing.assert_close(reference(constant), torch.zeros_like(constant))


@pytest.mark.parametrize("spatial_dims,shape", [(1, (2, 4, 9)), (2, (2, 4, 7, 9)), (3, (1, 4, 3, 4, 5))])
def test_dense_and_dilated_depthwise_match_pytorch(spatial_dims, shape):
    convolve = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[spatial_dims]
    x = torch.randn(*shape, dtype=torch.float64)
    dense = tokenmix.create("dense_conv", 4, spatial_dims=spatial_dims, impl="fft").double()
    expected = convolve(x, dense.weight, dense.bias, padding="same")
    torch.testing.assert_close(dense(x), expected)
    dilated = tokenmix.create("depthwise_conv", 4, kernel_size=3, dilation=2, spatial_dims=spatial_dims,
                              impl="fft").double()
    expected = convolve(x, dilated.weight, dilated.bias, padding="same", dilation=2, groups=4)
    torch.testing.assert_close(dilated(x), expected)
