"""Spectral norms of convolutions: the FFT value is exact, every other number bounds it from the right side."""

import math

import pytest
import torch
from torch import nn

from tokenmix.analysis.lipschitz import (
    circular_singular_values, conv_operator, dense_kernel, exact_spectral_norm, gram_iteration_bound,
    naive_bounds, network_lipschitz, power_iteration)
from tokenmix.models.vision import VisionModel

TOLERANCE = 1e-9  # float64 throughout; relative slack for the comparisons of two computations of one number


def _kernel(c_out=3, c_in=2, k=3, seed=0):
    return torch.randn(c_out, c_in, k, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_fft_singular_values_equal_those_of_the_dense_circular_matrix():
    weight, n = _kernel(), 5
    apply = conv_operator(weight, n, "circular")
    matrix = torch.func.jacrev(apply)(torch.zeros(2, n, n, dtype=torch.float64)).reshape(3 * n * n, 2 * n * n)
    dense = torch.linalg.svdvals(matrix)
    fft = circular_singular_values(weight, n).flatten().sort(descending=True).values
    torch.testing.assert_close(fft, dense[: fft.numel()], rtol=1e-10, atol=1e-10)


def test_depthwise_one_tap_kernel_has_the_hand_computed_norm():
    # a 1×1 depthwise kernel with channel gains (2, -5) scales each channel: σ₁ = 5
    weight = torch.tensor([[[[2.0]]], [[[-5.0]]]], dtype=torch.float64)
    assert exact_spectral_norm(dense_kernel(weight, groups=2), 4) == pytest.approx(5.0, rel=1e-12)
    # [1, 1] along one axis: frequency response 1 + e^{-iω}, largest magnitude 2 at ω = 0
    assert exact_spectral_norm(torch.ones(1, 1, 1, 2, dtype=torch.float64), (4, 4)) == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_every_bound_is_at_least_the_exact_value(seed):
    weight, n = _kernel(seed=seed, k=3 + 2 * (seed % 2)), 8
    exact = exact_spectral_norm(weight, n)
    for iterations in range(5):
        assert gram_iteration_bound(weight, n, iterations) >= exact * (1 - TOLERANCE)
    for name, bound in naive_bounds(weight).items():
        assert bound >= exact * (1 - TOLERANCE), name
    assert power_iteration(conv_operator(weight, n, "circular"), (2, n, n), 5) <= exact * (1 + TOLERANCE)


def test_gram_iteration_decreases_to_the_exact_value():
    weight, n = _kernel(4, 4, 3, seed=7), 8
    exact = exact_spectral_norm(weight, n)
    bounds = [gram_iteration_bound(weight, n, t) for t in range(24)]
    assert all(b >= a * (1 - TOLERANCE) for a, b in zip(bounds[1:], bounds))   # monotone non-increasing
    assert bounds[0] > 1.2 * exact                                              # the Frobenius norm is loose
    # Once the top block dominates, the bound is exact · m^{1/2^t} (m ≥ 2 frequencies share σ₁, f and -f), so
    # the gap halves in log each step: ~1e-3 after 10 steps, ~1e-6 after 20.
    assert bounds[10] == pytest.approx(exact, rel=3e-3)
    assert bounds[-1] == pytest.approx(exact, rel=1e-6)


def test_power_iteration_converges_to_the_exact_value():
    weight, n = _kernel(3, 3, 3, seed=3), 6
    exact = exact_spectral_norm(weight, n)
    assert power_iteration(conv_operator(weight, n, "circular"), (3, n, n), 500) == pytest.approx(exact, rel=1e-8)


def test_zero_padded_norm_is_bounded_by_the_circular_norm_on_the_grown_grid():
    weight, n = _kernel(seed=2), 6
    zero_padded = power_iteration(conv_operator(weight, n, "zeros"), (2, n, n), 500)
    assert zero_padded <= exact_spectral_norm(weight, n + 2) * (1 + TOLERANCE)


def test_dense_kernel_expands_groups_and_dilation():
    weight = torch.arange(1.0, 5.0).reshape(2, 1, 1, 2)
    dense = dense_kernel(weight, groups=2, dilation=2)
    assert dense.shape == (2, 2, 1, 3)
    assert dense[0, 0, 0].tolist() == [1.0, 0.0, 2.0] and dense[0, 1].abs().sum() == 0
    assert dense[1, 1, 0].tolist() == [3.0, 0.0, 4.0]


def test_network_bounds_of_a_small_backbone():
    torch.manual_seed(0)
    model = VisionModel("depthwise_conv", depths=(1, 1), dims=(4, 8), num_classes=3, mlp_ratio=1.0,
                        mixer_options={"kernel_size": 3}).double()
    layers, products = network_lipschitz(model, torch.randn(1, 3, 8, 8, dtype=torch.float64), power_iterations=30)
    names = [layer.name for layer in layers]
    assert "stem" in names and "stages.0.0.mixer" in names and "head" in names
    stem = layers[names.index("stem")]
    assert stem.kind == "patchify" and stem.exact == pytest.approx(
        float(torch.linalg.matrix_norm(model.stem.weight.detach().double().reshape(4, -1), ord=2)))
    for layer in layers:
        assert layer.power <= layer.exact * (1 + 1e-6) and layer.exact <= layer.gram * (1 + TOLERANCE)
        assert layer.exact <= layer.naive * (1 + TOLERANCE)
    assert products["exact"] == pytest.approx(math.prod(layer.exact for layer in layers))
    assert products["power"] <= products["exact"] <= products["gram"] <= products["naive"] * (1 + TOLERANCE)
