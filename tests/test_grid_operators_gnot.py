"""GNOT's normalized attention against its equation, and its resolution invariance."""

from __future__ import annotations

import math

import pytest
import torch

import tokenmix


def smooth(channels: int, sizes: tuple[int, ...]) -> torch.Tensor:
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n for n in sizes], indexing="ij")
    fields = [torch.sin(2 * math.pi * (sum(((a + c) % 3) * x for a, x in enumerate(axes)) + sum(axes)))
              + 0.5 * torch.cos(2 * math.pi * (c % 3) * axes[0]) for c in range(channels)]
    return torch.stack(fields)[None]


@pytest.mark.parametrize("impl", ["reference", "linear"])
def test_equals_the_weighted_average_of_the_paper(impl):
    torch.manual_seed(0)
    layer = tokenmix.create("gnot_attention", 4, num_heads=2, spatial_dims=1, impl=impl).double()
    x = torch.randn(2, 4, 7, dtype=torch.float64)
    tokens = x.transpose(1, 2)
    q, k, v = layer.qkv(tokens).split(4, dim=-1)
    expected = torch.empty(2, 7, 4, dtype=torch.float64)
    for b in range(2):
        for h in range(2):
            heads = slice(2 * h, 2 * h + 2)
            for t in range(7):
                q_t = q[b, t, heads].softmax(-1)
                weights = torch.stack([q_t @ k[b, s, heads].softmax(-1) for s in range(7)])
                expected[b, t, heads] = (weights[:, None] * v[b, :, heads]).sum(0) / weights.sum()
    torch.testing.assert_close(layer(x), layer.out(expected).transpose(1, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_resolution_invariance(spatial_dims):
    assert tokenmix.spec("gnot_attention").resolution_invariant
    torch.manual_seed(1)
    layer = tokenmix.create("gnot_attention", 4, num_heads=2, spatial_dims=spatial_dims).double()
    coarse = layer(smooth(4, (32,) * spatial_dims))
    fine = layer(smooth(4, (64,) * spatial_dims))
    subsampled = fine[(..., *[slice(None, None, 2)] * spatial_dims)]
    # Both sums over the points are rectangle rules of smooth periodic integrands (softmax of band-limited
    # projections: analytic), which converge faster than any power; 32 and 64 points differ by 6e-11 (1D) and 6e-13 (2D) of the output's scale. A
    # missing normalizer scales the output with the number of points (off by O(1)).
    torch.testing.assert_close(subsampled, coarse, rtol=0, atol=1e-8 * coarse.abs().max().item())
