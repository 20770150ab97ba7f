"""The FFT form's blocked path (no autograd: rows transformed, multiplied, gated and written block by block) and
the `gate` argument: equal to the Toeplitz reference in float64 for blocks that do not divide the rows, strided
(transposed) inputs, broadcast kernels, histories, circular convolution and half-precision inputs."""

from __future__ import annotations

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops import fftconv
from tokenmix.ops.fftconv import fft_conv, kernel_spectrum
from tokenmix.sequence._layout import channels_first

CASES = [  # (x shape, kernel shape, history taps)
    ((2, 7, 37), (7, 37), 0),
    ((1, 5, 3, 3, 29), (5, 1, 1, 29), 0),    # multi-head outer products: blocks over the heads
    ((1, 9, 1, 1, 16), (9, 1, 1, 16), 0),    # H3 with head size 1: blocks over the largest leading dimension
    ((3, 23), (23,), 0),
    ((2, 7, 19), (7, 24), 5),
]


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(fftconv, "BLOCK_ELEMENTS", 64)   # 1-2 rows per block at these sizes: many blocks
    monkeypatch.setattr(fftconv, "BLOCK_MIN_ROWS", 2)


@pytest.mark.parametrize("x_shape,k_shape,past", CASES)
@pytest.mark.parametrize("gated", [False, True])
def test_blocked_fft_equals_reference(small_blocks, x_shape, k_shape, past, gated):
    x = torch.randn(x_shape, dtype=torch.float64)
    k = torch.randn(k_shape, dtype=torch.float64)
    history = torch.randn(*x_shape[:-1], past, dtype=torch.float64) if past else None
    gate = torch.randn(torch.broadcast_shapes(x_shape[:-1], k_shape[:-1]) + x_shape[-1:], dtype=torch.float64) \
        if gated else None
    want = fft_conv(x, k, history=history, impl="reference")
    if gated:
        want = gate * want
    with torch.no_grad():
        got = fft_conv(x, k, history=history, gate=gate, impl="fft")
        spectrum = kernel_spectrum(k, x_shape[-1], past=past)
        from_spectrum = fft_conv(x, spectrum, history=history, gate=gate, impl="fft")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(from_spectrum, want, rtol=1e-10, atol=1e-12)


def test_blocked_fft_reads_a_transposed_view_and_circular(small_blocks):
    x = torch.randn(2, 31, 6, dtype=torch.float64).transpose(1, 2)      # (B, D, L) view of (B, L, D)
    k = torch.randn(6, 31, dtype=torch.float64)
    for causal in (True, False):
        with torch.no_grad():
            got = fft_conv(x, k, causal=causal, impl="fft")
        torch.testing.assert_close(got, fft_conv(x.contiguous(), k, causal=causal, impl="reference"),
                                   rtol=1e-10, atol=1e-12)


def test_blocked_fft_bfloat16_gate_is_computed_in_float32(small_blocks):
    x, k = torch.randn(2, 5, 40), torch.randn(5, 40)
    gate = torch.randn(2, 5, 40)
    with torch.no_grad():
        got = fft_conv(x.bfloat16(), k, gate=gate.bfloat16(), impl="fft")
    want = gate.bfloat16().float() * fft_conv(x.bfloat16().float(), k, impl="reference")
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)  # bf16 output rounding (8 bits)


def test_gate_gradients_equal_reference():
    x = torch.randn(2, 3, 17, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 17, dtype=torch.float64, requires_grad=True)
    gate = torch.randn(2, 3, 17, dtype=torch.float64, requires_grad=True)
    want = gate * fft_conv(x, k, impl="reference")
    weights = torch.randn_like(want)
    want_grads = torch.autograd.grad((want * weights).sum(), (x, k, gate))
    for impl in ("direct", "fft"):
        got = fft_conv(x, k, gate=gate, impl=impl)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        for g, w in zip(torch.autograd.grad((got * weights).sum(), (x, k, gate)), want_grads):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_gate_of_the_wrong_shape_raises():
    with pytest.raises(MixerInputError, match="gate"):
        fft_conv(torch.randn(2, 3, 8), torch.randn(3, 8), gate=torch.randn(2, 3, 7))


def test_channels_first_is_the_transpose():
    x = torch.randn(3, 11, 5, requires_grad=True)
    y = channels_first(x)
    assert y.is_contiguous() and torch.equal(y, x.transpose(1, 2))
    weights = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    assert torch.equal(grad, weights.transpose(1, 2))
