"""Neural-operator grid mixers: resolution invariance and the factorized layer's structure."""

from __future__ import annotations

import math

import pytest
import torch

import tokenmix
from tokenmix.ops.spectral import spectral_conv

OPERATORS = ["fno", "ffno", "galerkin_attention", "fourier_attention"]


def smooth(channels: int, sizes: tuple[int, ...]) -> torch.Tensor:
    """A band-limited periodic function on [0, 1)^d sampled on `sizes`, different in every channel."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n for n in sizes], indexing="ij")
    fields = []
    for c in range(channels):
        phase = sum(((a + c) % 3) * x for a, x in enumerate(axes))
        fields.append(torch.sin(2 * math.pi * (phase + sum(axes))) + 0.5 * torch.cos(2 * math.pi * (c % 3) * axes[0]))
    return torch.stack(fields)[None]


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_resolution_invariance(name, spatial_dims):
    assert tokenmix.spec(name).resolution_invariant
    torch.manual_seed(1)
    options = {"num_heads": 1} if "attention" in name else {}  # LayerNorm over 2 features would be a sign function
    mixer = tokenmix.create(name, 8, spatial_dims=spatial_dims, **options).double()
    coarse_sizes = (32,) * spatial_dims
    fine_sizes = (64,) * spatial_dims
    coarse = mixer(smooth(8, coarse_sizes))
    fine = mixer(smooth(8, fine_sizes))
    subsampled = fine[(..., *[slice(None, None, 2)] * spatial_dims)]
    assert torch.isfinite(fine).all()
    # Spectral layers are exact on band-limited input; attention's 1/n sums are quadratures of smooth periodic
    # integrands (LayerNorm makes them smooth, not band-limited), which converge fast but not exactly.
    exact = "attention" not in name
    torch.testing.assert_close(subsampled, coarse, rtol=1e-9 if exact else 0,
                               atol=(1e-10 if exact else 1e-2) * coarse.abs().max().item())


def test_ffno_spectral_part_is_a_sum_of_one_dimensional_convolutions():
    layer = tokenmix.create("ffno", 4, spatial_dims=2, modes=3).double()
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    rows = spectral_conv(x.permute(0, 3, 1, 2).reshape(12, 4, 7), layer.spectral_weights[0])
    rows = rows.reshape(2, 6, 4, 7).permute(0, 2, 3, 1)
    cols = spectral_conv(x.permute(0, 2, 1, 3).reshape(14, 4, 6), layer.spectral_weights[1])
    cols = cols.reshape(2, 7, 4, 6).permute(0, 2, 1, 3)
    expected = sum(layer._along_axis(x, a, w, "fft") for a, w in enumerate(layer.spectral_weights))
    torch.testing.assert_close(rows + cols, expected, rtol=1e-12, atol=1e-12)


def test_fno_three_dimensional_and_mode_options():
    layer = tokenmix.create("fno", 4, spatial_dims=3, modes=(2, 3, 2), impl="reference").double()
    fast = tokenmix.create("fno", 4, spatial_dims=3, modes=(2, 3, 2), impl="fft").double()
    fast.load_state_dict(layer.state_dict())
    x = torch.randn(1, 4, 5, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(fast(x), layer(x), rtol=1e-10, atol=1e-12)
    with pytest.raises(tokenmix.MixerInputError):
        tokenmix.create("fno", 4, spatial_dims=2, modes=(2, 3, 2))
    with pytest.raises(tokenmix.MixerInputError):
        tokenmix.create("galerkin_attention", 6, num_heads=4)
