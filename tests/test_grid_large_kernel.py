"""RepLKNet's re-parameterization gives the multi-branch outputs."""

from __future__ import annotations

import pytest
import torch

import tokenmix


@pytest.mark.parametrize("impl", ["reference", "direct", "fft"])
def test_replknet_reparameterize_keeps_outputs(impl):
    torch.manual_seed(0)
    mixer = tokenmix.create("replknet", 4, kernel_size=7, small_kernel_size=3, impl=impl).double().eval()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    before = mixer(x)
    mixer.reparameterize()
    assert mixer.reparameterized and len(list(mixer.parameters())) == 2
    torch.testing.assert_close(mixer(x), before, rtol=1e-10, atol=1e-12)
    mixer.reparameterize()  # idempotent
    torch.testing.assert_close(mixer(x), before, rtol=1e-10, atol=1e-12)


def test_replknet_rejects_small_kernel_larger_than_large():
    with pytest.raises(tokenmix.MixerInputError, match="replknet"):
        tokenmix.create("replknet", 4, kernel_size=5, small_kernel_size=7)
    with pytest.raises(tokenmix.MixerInputError, match="odd"):
        tokenmix.create("replknet", 4, kernel_size=6)


@pytest.mark.parametrize("kernel_size", [5, 7, 13])
def test_unireplknet_reparameterize_keeps_outputs(kernel_size):
    torch.manual_seed(kernel_size)
    mixer = tokenmix.create("unireplknet", 4, kernel_size=kernel_size, impl="direct").double().eval()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    before = mixer(x)
    mixer.reparameterize()
    assert mixer.reparameterized and sum(p.numel() for p in mixer.parameters()) == 4 * kernel_size ** 2 + 4
    torch.testing.assert_close(mixer(x), before, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["direct", "fft"])
def test_slak_reparameterize_keeps_outputs(impl):
    torch.manual_seed(1)
    mixer = tokenmix.create("slak", 4, kernel_size=11, strip_width=3, small_kernel_size=5, impl=impl).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    before = mixer(x)
    mixer.reparameterize()
    assert mixer.reparameterized and mixer.weights[0].shape == (4, 1, 11, 11)
    torch.testing.assert_close(mixer(x), before, rtol=1e-10, atol=1e-12)

