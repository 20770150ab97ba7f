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
