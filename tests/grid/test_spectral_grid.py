"""Spectral grid mixers (GFNet, AFNO, AFF, FNet-2D, SPANet): each against its equation by hand, resolution
policies, and shift equivariance on the torus where the operator is a convolution."""

from __future__ import annotations

import math

import pytest
import torch

import tokenmix
from tokenmix.grid.spectral import resize_filter, spectral_pooling_mask
from tokenmix.grid.spectral_mlp import kept_modes
from tokenmix.ops.spectral import filter_shape

SIZES = [(9, 9), (8, 8)]  # odd and even: the even one has Nyquist frequencies


def roll(x: torch.Tensor, shift=(2, 5)) -> torch.Tensor:
    return torch.roll(x, shift, dims=(2, 3))


def circular_convolution(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[b, c, i, j] = Σ_{a,b'} kernel[c, a, b'] x[b, c, i - a, j - b'] (indices mod the grid), by explicit rolls."""
    y = torch.zeros_like(x)
    for a in range(x.shape[2]):
        for b in range(x.shape[3]):
            y = y + kernel[None, :, a, b, None, None] * roll(x, (a, b))
    return y


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("impl", ["reference", "fft"])
def test_gfnet_is_the_circular_convolution_with_the_filters_inverse_fft(size, impl):
    mixer = tokenmix.create("gfnet", 3, resolution=size, impl=impl).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    kernel = torch.fft.irfft2(torch.view_as_complex(mixer.weight.detach()), s=size)  # (C, H, W)
    torch.testing.assert_close(mixer(x), circular_convolution(x, kernel), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mixer(roll(x)), roll(mixer(x)), rtol=1e-10, atol=1e-12)


def test_gfnet_other_sizes_use_the_interpolated_filter():
    mixer = tokenmix.create("gfnet", 3, resolution=(8, 8)).double()
    assert mixer.filter_for((8, 8)) is mixer.weight
    for size in [(9, 9), (5, 6), (16, 12)]:
        x = torch.randn(1, 3, *size, dtype=torch.float64)
        k = mixer.filter_for(size)
        assert k.shape == filter_shape(3, size)
        kernel = torch.fft.irfft2(torch.view_as_complex(k.detach()), s=size)
        torch.testing.assert_close(mixer(x), circular_convolution(x, kernel), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(mixer(roll(x)), roll(mixer(x)), rtol=1e-10, atol=1e-12)
    # Resampling over normalized frequency: an all-pass filter stays all-pass, frequency 0 stays frequency 0, and a
    # filter linear in the frequencies (f₁ on the first axis, both signs; f₂ on the last) is resampled exactly.
    flat = torch.zeros(*filter_shape(2, (8, 8)), dtype=torch.float64)
    flat[..., 0] = 1.0
    expected = torch.zeros(*filter_shape(2, (13, 10)), dtype=torch.float64)
    expected[..., 0] = 1.0
    torch.testing.assert_close(resize_filter(flat, (8, 8), (13, 10)), expected)
    f1 = lambda n: ((torch.arange(n) + n // 2) % n - n // 2).double()  # noqa: E731  signed, FFT order
    linear = torch.zeros(*filter_shape(1, (9, 8)), dtype=torch.float64)
    linear[..., 0] = f1(9)[:, None] / 9 + torch.arange(5.0, dtype=torch.float64) / 8   # in cycles per sample
    resized = resize_filter(linear, (9, 8), (17, 12))
    inside = f1(17).abs() <= 7     # rows ±8 map to ±4.2, beyond the 9-point grid's ±4: they wrap (periodic)
    torch.testing.assert_close(resized[0, inside, :, 0],
                               (f1(17)[:, None] / 17 + torch.arange(7.0, dtype=torch.float64) / 12)[inside])
    assert resized[..., 1].abs().max() == 0


def identity_mlp(mixer) -> None:
    """W₁ = [I, -I], W₂ = [I; -I] in every block, biases 0: ReLU(z) - ReLU(-z) = z on real and imaginary parts."""
    block = mixer.w1.shape[1]
    eye = torch.eye(block, dtype=mixer.w1.dtype)
    with torch.no_grad():
        for p in mixer.parameters():
            p.zero_()
        mixer.w1[..., 0] = torch.cat([eye, -eye], dim=1)
        mixer.w2[..., 0] = torch.cat([eye, -eye], dim=0)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("impl", ["reference", "fft"])
def test_afno_with_identity_mlp_and_no_threshold_is_the_identity(size, impl):
    mixer = tokenmix.create("afno", 8, num_blocks=2, hidden_factor=2, sparsity_threshold=0.0, impl=impl).double()
    identity_mlp(mixer)
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(mixer(x) - x, x, rtol=0, atol=1e-12)  # the spectral branch; y = branch + x
    # With that MLP the layer is linear, hence shift-equivariant; soft-thresholding by λ shrinks every coefficient.
    torch.testing.assert_close(mixer(roll(x)), roll(mixer(x)), rtol=0, atol=1e-12)
    mixer.sparsity_threshold = 1e6
    torch.testing.assert_close(mixer(x), x, rtol=0, atol=1e-12)


def test_afno_soft_thresholding_and_hard_truncation_by_hand():
    mixer = tokenmix.create("afno", 2, num_blocks=1, hidden_factor=2, sparsity_threshold=0.5).double()
    identity_mlp(mixer)
    # A single Fourier mode: cos of frequency (1, 2) on 8×8 has ortho coefficient 8/2 = 4 at ±(1, 2), real.
    i, j = torch.meshgrid(torch.arange(8.0, dtype=torch.float64), torch.arange(8.0, dtype=torch.float64),
                          indexing="ij")
    wave = torch.cos(2 * math.pi * (i + 2 * j) / 8)
    x = torch.stack([wave, 3 * wave])[None]
    branch = mixer(x) - x
    torch.testing.assert_close(branch, torch.stack([wave * 3.5 / 4, wave * 11.5 / 4])[None], rtol=0, atol=1e-12)
    # keep_fraction 0.25 keeps |k_a| ≤ 1 on 8 points: the (1, 2) mode is dropped, a (1, 1) mode kept.
    assert kept_modes((8, 8), 0.25)[1, 2].item() is False and kept_modes((8, 8), 0.25)[7, 1].item() is True
    mixer.keep_fraction = 0.25
    torch.testing.assert_close(mixer(x), x, rtol=0, atol=1e-12)
    low = torch.cos(2 * math.pi * (i + j) / 8)[None, None].expand(1, 2, 8, 8)
    torch.testing.assert_close(mixer(low) - low, low * 3.5 / 4, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", SIZES)
def test_aff_constant_mask_is_a_global_filter_and_the_mask_adapts(size):
    mixer = tokenmix.create("aff", 4, num_blocks=2).double()
    x = torch.randn(2, 4, *size, dtype=torch.float64)
    with torch.no_grad():
        for p in (mixer.w1, mixer.b1, mixer.w2):
            p.zero_()
        mixer.b2.zero_()
        mixer.b2[..., 0] = 1.0
    torch.testing.assert_close(mixer(x), x, rtol=0, atol=1e-12)  # M = 1 passes everything (the initial state)
    with torch.no_grad():
        mixer.b2.copy_(torch.randn_like(mixer.b2))
    c = torch.view_as_complex(mixer.b2.detach()).reshape(4)  # M = b₂: one complex gain per channel
    expected = torch.fft.irfft2(torch.fft.rfft2(x) * c[None, :, None, None], s=size)
    torch.testing.assert_close(mixer(x), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mixer(roll(x)), roll(mixer(x)), rtol=1e-10, atol=1e-12)
    # A general mask depends on the input's spectrum: no longer linear, and not shift-equivariant.
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn_like(p))
    assert not torch.allclose(mixer(2 * x), 2 * mixer(x))
    assert not torch.allclose(mixer(roll(x)), roll(mixer(x)))


def test_fnet2d_by_hand():
    mixer = tokenmix.create("fnet2d", 3, impl="reference")
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    d, h, w = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (3, 4, 5)], indexing="ij")
    phase = (d / 3)[:, :, :, None, None, None] * d + (h / 4)[:, :, :, None, None, None] * h \
        + (w / 5)[:, :, :, None, None, None] * w                      # (out d, h, w, in c, i, j): Σ k·x / n
    y = (torch.cos(2 * math.pi * phase.double()) * x[0]).sum(dim=(3, 4, 5))
    torch.testing.assert_close(mixer(x)[0], y, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(mixer(roll(x)), roll(mixer(x)))         # Re() does not commute with the shift phase


def test_spectral_pooling_mask_by_hand():
    m = spectral_pooling_mask((8, 8), radius=2, balance=0.7)
    assert m.shape == (8, 5)
    assert m[0, 0] == 0.7 and m[1, 1] == 0.7 and m[7, 1] == 0.7             # |k|² = 0, 2, 2 < 4: low pass
    assert m[2, 0] == 1 / 3 and m[0, 2] == 1 / 3 and m[6, 0] == 1 / 3      # on the circle |k| = 2
    assert m[2, 1] == pytest.approx(0.3) and m[4, 4] == pytest.approx(0.3)  # |k|² = 5, 32: high pass


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("impl", ["reference", "fft"])
def test_spectral_pooling_filter_balances_low_and_high_pass(size, impl):
    mixer = tokenmix.create("spam", 6, radius=2.5, impl=impl).double()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    low, high = mixer.spectral_pooling(x, 1.0), mixer.spectral_pooling(x, 0.0)
    torch.testing.assert_close(low + high, x, rtol=0, atol=1e-12)          # no frequency on the circle r = 2.5
    torch.testing.assert_close(mixer.spectral_pooling(x, 0.7), 0.7 * low + 0.3 * high, rtol=0, atol=1e-12)
    torch.testing.assert_close(low.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=0, atol=1e-12)  # DC passes
    torch.testing.assert_close(mixer.spectral_pooling(roll(x), 0.8), roll(mixer.spectral_pooling(x, 0.8)),
                               rtol=0, atol=1e-12)


def test_spam_matches_its_equation():
    mixer = tokenmix.create("spam", 6, kernel_size=3, balances=(0.7, 0.9)).double()
    x = torch.randn(1, 6, 7, 8, dtype=torch.float64)
    u = torch.nn.functional.conv2d(mixer.proj_in(x), mixer.conv_row.weight, mixer.conv_row.bias, padding=(0, 1),
                                   groups=6)
    u = torch.nn.functional.conv2d(u, mixer.conv_column.weight, mixer.conv_column.bias, padding=(1, 0), groups=6)
    context = 0
    for index, balance in enumerate((0.7, 0.9)):
        part = u[:, 3 * index:3 * index + 3]
        mask = spectral_pooling_mask((7, 8), 2.0, balance).to(torch.complex128)
        pooled = torch.fft.irfft2(torch.fft.rfft2(part) * mask, s=(7, 8))
        context = context + mixer.aggregate[index](pooled)
    torch.testing.assert_close(mixer(x), mixer.proj_out(u * context), rtol=1e-10, atol=1e-12)


def test_bad_options_raise():
    for name, options in [("gfnet", {"resolution": (8, 8, 8)}), ("gfnet", {"resolution": 0}), ("gfnet", {"resolution": 8.5}),
                          ("afno", {"num_blocks": 3}), ("afno", {"keep_fraction": 0.0}),
                          ("afno", {"sparsity_threshold": -1.0}), ("aff", {"num_blocks": 5}),
                          ("spam", {"kernel_size": 4}), ("spam", {"balances": (1.5,)}), ("spam", {"radius": 0})]:
        with pytest.raises(tokenmix.MixerInputError, match=name):
            tokenmix.create(name, 8, **options)


def test_fnet2d_on_one_spatial_axis_is_the_sequence_fnet():
    grid, sequence = tokenmix.create("fnet2d", 6, spatial_dims=1), tokenmix.create("fnet", 6)
    x = torch.randn(2, 6, 11, dtype=torch.float64)
    torch.testing.assert_close(grid(x), sequence(x.transpose(1, 2)).transpose(1, 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gfnet", "afno", "aff", "fnet2d", "spam"])
def test_in_the_vision_backbone(name):
    from tokenmix.models.vision import VisionModel
    torch.manual_seed(0)
    options = [{"resolution": 8}, {"resolution": 4}] if name == "gfnet" else None  # 16×16 images, patch 2
    model = VisionModel(name, num_classes=3, depths=(1, 1), dims=(8, 16), patch_size=2, mixer_options=options)
    logits = model(torch.randn(2, 3, 16, 16))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert torch.isfinite(logits).all()
    assert all(p.grad is not None for p in model.parameters())
