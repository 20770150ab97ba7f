"""The truncated-mode spectral convolution (FNO's Fourier layer op) against its dense-DFT reference and by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops.spectral import retained_modes, spectral_conv, weight_shape

CASES = [  # (sizes, modes): odd and even sizes, modes within, at and beyond the grid
    ((7,), (3,)), ((8,), (5,)), ((1,), (2,)),
    ((5, 6), (3, 4)), ((6, 5), (9, 9)), ((3, 3), (12, 12)), ((5, 6), (1, 1)), ((2, 4), (2, 3)),
    ((4, 5, 6), (2, 3, 4)), ((3, 4, 5), (5, 5, 5)),
]


@pytest.mark.parametrize("sizes,modes", CASES)
def test_fft_equals_reference_forward_and_backward(sizes, modes):
    x = torch.randn(2, 3, *sizes, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*weight_shape(3, 4, modes), dtype=torch.float64, requires_grad=True)
    y_ref, y_fft = spectral_conv(x, w, impl="reference"), spectral_conv(x, w, impl="fft")
    assert y_fft.shape == (2, 4, *sizes)
    torch.testing.assert_close(y_fft, y_ref, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad((y_ref * g).sum(), (x, w))
    grads_fft = torch.autograd.grad((y_fft * g).sum(), (x, w))
    for a, b in zip(grads_fft, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "fft"])
@pytest.mark.parametrize("modes", [(12, 12), (43, 43)])  # 43 clamps to the whole 85-point grid
def test_shift_equivariance_at_odd_size(impl, modes):
    x = torch.randn(1, 2, 85, 85, dtype=torch.float64)
    w = torch.randn(*weight_shape(2, 2, modes), dtype=torch.float64)
    shift = (3, 7)
    y = spectral_conv(x, w, impl=impl)
    y_shifted = spectral_conv(torch.roll(x, shift, dims=(2, 3)), w, impl=impl)
    torch.testing.assert_close(y_shifted, torch.roll(y, shift, dims=(2, 3)), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("impl", ["reference", "fft"])
def test_single_mode_by_hand(impl):
    # One retained mode k with weight R = a + ib maps cos(θ) to Re(R e^{iθ}) = a cos θ - b sin θ.
    a, b = 0.7, -1.3
    n = 9
    t = torch.arange(n, dtype=torch.float64)
    w = torch.zeros(*weight_shape(1, 1, (3,)), dtype=torch.float64)
    w[0, 0, 1] = torch.tensor([a, b], dtype=torch.float64)
    theta = 2 * math.pi * t / n
    y = spectral_conv(torch.cos(theta)[None, None], w, impl=impl)[0, 0]
    torch.testing.assert_close(y, a * torch.cos(theta) - b * torch.sin(theta), rtol=0, atol=1e-12)
    # 2D: frequency (k1, k2) = (-1, 2), stored at centred index m1 - 1 + k1 = 1 of the first axis.
    n1, n2 = 6, 7
    x1, x2 = torch.meshgrid(torch.arange(n1, dtype=torch.float64), torch.arange(n2, dtype=torch.float64),
                            indexing="ij")
    theta = 2 * math.pi * (-x1 / n1 + 2 * x2 / n2)
    w = torch.zeros(*weight_shape(1, 1, (2, 3)), dtype=torch.float64)
    w[0, 0, 0, 2] = torch.tensor([a, b], dtype=torch.float64)
    y = spectral_conv(torch.cos(theta)[None, None], w, impl=impl)[0, 0]
    torch.testing.assert_close(y, a * torch.cos(theta) - b * torch.sin(theta), rtol=0, atol=1e-12)
    # Every other Fourier mode is filtered out, and a constant goes through the k = 0 weight's real part.
    assert spectral_conv(torch.cos(3 * theta)[None, None], w, impl=impl).abs().max() < 1e-12
    w[0, 0, 1, 0] = torch.tensor([2.0, 5.0], dtype=torch.float64)
    y = spectral_conv(torch.ones(1, 1, n1, n2, dtype=torch.float64), w, impl=impl)
    torch.testing.assert_close(y, torch.full_like(y, 2.0), rtol=0, atol=1e-12)


def test_modes_beyond_the_grid_are_clamped():
    # Non-last axes keep |k| <= (n - 1) // 2, the last axis k <= n // 2.
    assert retained_modes((16, 16), (5, 6)) == (3, 4)
    assert retained_modes((16, 16), (6, 5)) == (3, 3)
    assert retained_modes((2, 3), (64, 64)) == (2, 3)
    # Clamped weights get no gradient; the same weights on a large grid use them all.
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    w = torch.randn(*weight_shape(1, 1, (4, 4)), dtype=torch.float64, requires_grad=True)
    (spectral_conv(x, w) * torch.randn(1, 1, 4, 4, dtype=torch.float64)).sum().backward()
    used = w.grad.abs().sum(dim=(0, 1, 4)) > 0
    assert used.sum() == 3 * 3 and used[2:5, :3].all()


def test_resolution_invariance_on_band_limited_input():
    def sample(n):
        s = torch.arange(n, dtype=torch.float64) / n
        return torch.stack([torch.sin(2 * math.pi * s) + 0.3 * torch.cos(6 * math.pi * s),
                            torch.cos(4 * math.pi * s)])[None]
    w = torch.randn(*weight_shape(2, 3, (8,)), dtype=torch.float64)
    coarse, fine = spectral_conv(sample(32), w), spectral_conv(sample(64), w)
    torch.testing.assert_close(fine[..., ::2], coarse, rtol=0, atol=1e-12)


def test_low_precision_computes_in_float32():
    x = torch.randn(2, 3, 8, 9)
    w = torch.randn(*weight_shape(3, 3, (4, 4)))
    y = spectral_conv(x.bfloat16(), w.bfloat16())
    assert y.dtype == torch.bfloat16
    assert (y.float() - spectral_conv(x, w)).abs().max() < 0.05 * spectral_conv(x, w).abs().max()


def test_bad_arguments_raise():
    x = torch.randn(1, 2, 8)
    with pytest.raises(MixerInputError):
        spectral_conv(x, torch.randn(*weight_shape(3, 2, (4,))))  # channel mismatch
    with pytest.raises(MixerInputError):
        spectral_conv(x, torch.randn(2, 2, 4, 2, 2))  # a 2D weight for a 1D input
    with pytest.raises(MixerInputError):
        spectral_conv(x.long(), torch.randn(*weight_shape(2, 2, (4,))))
    with pytest.raises(MixerInputError):
        spectral_conv(x, torch.randn(*weight_shape(2, 2, (4,))), impl="nope")


# --- full-spectrum transforms and the global filter ---------------------------------------------------------------

from tokenmix.ops.spectral import (  # noqa: E402
    filter_shape, fourier_transform, global_filter, inverse_real_fft, real_fft)

GRIDS = [(7,), (8,), (1,), (9, 9), (8, 8), (5, 6), (3, 4, 5)]


def circular_convolution(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[b, c, i] = Σ_j kernel[c, j] x[b, c, (i - j) mod n] over every spatial offset j, by explicit rolls."""
    sizes = x.shape[2:]
    y = torch.zeros_like(x)
    for offset in torch.cartesian_prod(*[torch.arange(n) for n in sizes]).view(-1, len(sizes)).tolist():
        weight = kernel[(slice(None), *offset)].view(1, -1, *([1] * len(sizes)))
        y = y + weight * torch.roll(x, tuple(offset), dims=tuple(range(2, x.ndim)))
    return y


@pytest.mark.parametrize("sizes", GRIDS)
def test_global_filter_is_a_circular_convolution_with_the_inverse_fft_kernel(sizes):
    x = torch.randn(2, 3, *sizes, dtype=torch.float64)
    w = torch.randn(*filter_shape(3, sizes), dtype=torch.float64)
    kernel = torch.fft.irfftn(torch.view_as_complex(w), s=sizes, dim=tuple(range(1, len(sizes) + 1)))
    expected = circular_convolution(x, kernel)
    for impl in ("reference", "fft"):
        torch.testing.assert_close(global_filter(x, w, impl=impl), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sizes", GRIDS)
@pytest.mark.parametrize("norm", ["backward", "ortho"])
def test_transforms_fft_equal_reference_forward_and_backward(sizes, norm):
    x = torch.randn(2, 3, *sizes, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*filter_shape(3, sizes), dtype=torch.float64, requires_grad=True)
    outputs = {}
    for impl in ("reference", "fft"):
        spectrum = real_fft(x, impl=impl, norm=norm)
        back = inverse_real_fft(spectrum * spectrum.abs(), sizes, impl=impl, norm=norm)  # a nonlinear use
        full = fourier_transform(x, tuple(range(1, x.ndim)), impl=impl)
        outputs[impl] = (torch.view_as_real(spectrum), back, torch.view_as_real(full), global_filter(x, w, impl=impl))
    for a, b in zip(outputs["fft"], outputs["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)
        g = torch.randn_like(a)
        grads_fft = torch.autograd.grad((a * g).sum(), (x, w), allow_unused=True, retain_graph=True)
        grads_ref = torch.autograd.grad((b * g).sum(), (x, w), allow_unused=True, retain_graph=True)
        for ga, gb in zip(grads_fft, grads_ref):
            assert (ga is None) == (gb is None)
            if ga is not None:
                torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-11)


def test_real_fft_by_hand_and_round_trip():
    # A cosine of frequency 2 on 8 points: X_2 = 8/2 = 4 (unnormalized), 4/√8 with norm="ortho".
    x = torch.cos(2 * math.pi * 2 * torch.arange(8, dtype=torch.float64) / 8)[None, None]
    for impl in ("reference", "fft"):
        spectrum = real_fft(x, impl=impl)
        expected = torch.zeros(5, dtype=torch.complex128)
        expected[2] = 4
        torch.testing.assert_close(spectrum[0, 0], expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(real_fft(x, impl=impl, norm="ortho")[0, 0], expected / math.sqrt(8), rtol=0,
                                   atol=1e-12)
        for norm in ("backward", "ortho"):
            y = torch.randn(2, 3, 9, 8, dtype=torch.float64)
            back = inverse_real_fft(real_fft(y, impl=impl, norm=norm), (9, 8), impl=impl, norm=norm)
            torch.testing.assert_close(back, y, rtol=0, atol=1e-12)


def test_global_filter_bad_arguments_raise():
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(MixerInputError):
        global_filter(x, torch.randn(*filter_shape(2, (8, 7))))      # filter for another grid
    with pytest.raises(MixerInputError):
        global_filter(x, torch.randn(*filter_shape(3, (8, 8))))      # channel mismatch
    with pytest.raises(MixerInputError):
        global_filter(x.long(), torch.randn(*filter_shape(2, (8, 8))))
    with pytest.raises(MixerInputError):
        real_fft(x, norm="forward")
    with pytest.raises(MixerInputError):
        inverse_real_fft(real_fft(x), (8, 10))
