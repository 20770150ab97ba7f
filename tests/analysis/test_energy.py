"""First-layer energy profile: Parseval, eigenvector filters, whitening, and the exact linear-GD profile."""

import pytest
import torch

from tokenmix.analysis.energy import (
    energy_profile, extract_patches, linear_prediction, patch_eigenbasis, profile_correlation, whitening_filters)


def _patches(seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(20, 1, 10, 10, generator=generator, dtype=torch.float64).cumsum(-1).cumsum(-2)  # smooth
    return extract_patches(images, 3)


def test_patches_and_eigenbasis():
    patches = _patches()
    assert patches.shape == (20 * 8 * 8, 9)
    torch.testing.assert_close(patches.mean(0), torch.zeros(9, dtype=torch.float64), rtol=0, atol=1e-10)
    values, basis = patch_eigenbasis(patches)
    assert torch.all(values[:-1] >= values[1:])
    torch.testing.assert_close(basis.T @ basis, torch.eye(9, dtype=torch.float64), rtol=0, atol=1e-10)


def test_profile_of_eigenvector_filters_and_parseval():
    values, basis = patch_eigenbasis(_patches())
    filters = basis[:, [0, 3]].T.reshape(2, 1, 3, 3) * torch.tensor([2.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1)
    profile = energy_profile(filters, basis)
    expected = torch.zeros(9, dtype=torch.float64)
    expected[0], expected[3] = 4.0, 1.0
    torch.testing.assert_close(profile, expected, rtol=0, atol=1e-12)
    random = torch.randn(5, 1, 3, 3, dtype=torch.float64)
    assert float(energy_profile(random, basis).sum()) == pytest.approx(float((random ** 2).sum()), rel=1e-12)


def test_whitening_filters_have_profile_one_over_lambda_the_infinite_time_limit():
    values, basis = patch_eigenbasis(_patches())
    profile = energy_profile(whitening_filters(values, basis), basis)
    torch.testing.assert_close(profile, 1 / values, rtol=1e-9, atol=0)
    torch.testing.assert_close(linear_prediction(values, float("inf"), 0.1), profile / profile.sum())
    torch.testing.assert_close(linear_prediction(values, 1e7, 1 / float(values[0])), profile / profile.sum(),
                               rtol=1e-6, atol=0)
    early = linear_prediction(values, 1, 1e-6)   # (η t λ)² / λ ∝ λ: the data's own spectrum
    torch.testing.assert_close(early, values / values.sum(), rtol=1e-5, atol=0)


def test_gradient_descent_on_a_linear_layer_follows_the_formula():
    patches = _patches(1)
    values, basis = patch_eigenbasis(patches)
    targets = torch.randn(patches.shape[0], 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    covariance = patches.T @ patches / patches.shape[0]
    cross = targets.T @ patches / patches.shape[0]                          # C = E[y pᵀ]
    eta, steps = 0.5 / float(values[0]), 40
    weight = torch.zeros(6, 9, dtype=torch.float64)
    for _ in range(steps):
        weight = weight - eta * (weight @ covariance - cross)               # GD on ½ E‖W p − y‖²
    exact = ((cross @ basis) ** 2).sum(0) * (1 - (1 - eta * values) ** steps) ** 2 / values ** 2
    torch.testing.assert_close(energy_profile(weight, basis), exact, rtol=1e-9, atol=1e-14)
    # averaged over random targets, ‖C u_i‖² ∝ λ_i and the profile follows linear_prediction's shape
    assert profile_correlation(energy_profile(weight, basis), linear_prediction(values, steps, eta)) > 0.9
