"""The long-convolution op: a hand-checked case, every form against the Toeplitz reference (forward and backward,
float64, causal and circular, odd lengths and length 1), continuation from a history, and the padding rule."""

from __future__ import annotations

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops.fftconv import _fft, fast_size, fft_conv

FORMS = ("reference", "direct", "fft", "auto")


def test_hand_checked_case():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 10.0, 100.0]], dtype=torch.float64)
    causal = torch.tensor([[1.0, 12.0, 123.0, 234.0]], dtype=torch.float64)
    # circular: y_0 = 1 + 10·4 + 100·3, y_1 = 2 + 10·1 + 100·4
    circular = torch.tensor([[341.0, 412.0, 123.0, 234.0]], dtype=torch.float64)
    for impl in FORMS:
        torch.testing.assert_close(fft_conv(x, k, impl=impl), causal)
        torch.testing.assert_close(fft_conv(x, k, causal=False, impl=impl), circular)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length,taps", [(1, 1), (7, 7), (13, 5), (37, 37), (20, 3), (9, 1)])
def test_forms_equal_reference_forward_and_backward(causal, length, taps):
    x = torch.randn(2, 3, length, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, taps, dtype=torch.float64, requires_grad=True)
    outputs = {impl: fft_conv(x, k, causal=causal, impl=impl) for impl in FORMS}
    weights = torch.randn_like(outputs["reference"])
    want = torch.autograd.grad((outputs["reference"] * weights).sum(), (x, k))
    for impl in FORMS[1:]:
        torch.testing.assert_close(outputs[impl], outputs["reference"], rtol=1e-10, atol=1e-12)
        got = torch.autograd.grad((outputs[impl] * weights).sum(), (x, k))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_kernel_longer_than_input_is_truncated_when_causal():
    x, k = torch.randn(1, 2, 5, dtype=torch.float64), torch.randn(2, 11, dtype=torch.float64)
    for impl in FORMS:
        torch.testing.assert_close(fft_conv(x, k, impl=impl), fft_conv(x, k[:, :5], impl="reference"))


def test_kernel_broadcasts_over_heads_and_per_batch():
    x = torch.randn(2, 3, 4, 11, dtype=torch.float64)
    for k in (torch.randn(4, 11, dtype=torch.float64), torch.randn(2, 1, 4, 6, dtype=torch.float64),
              torch.randn(11, dtype=torch.float64)):
        want = fft_conv(x, k, impl="reference")
        for impl in ("direct", "fft"):
            torch.testing.assert_close(fft_conv(x, k, impl=impl), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("past,new", [(1, 1), (20, 1), (20, 3), (6, 17)])
def test_history_continues_the_causal_convolution(past, new):
    x = torch.randn(2, 3, past + new, dtype=torch.float64)
    k = torch.randn(3, past + new, dtype=torch.float64)
    whole = fft_conv(x, k, impl="reference")
    for impl in FORMS:
        tail = fft_conv(x[..., past:], k, history=x[..., :past], impl=impl)
        torch.testing.assert_close(tail, whole[..., past:], rtol=1e-10, atol=1e-12)


def test_a_short_pad_wraps_the_future_into_the_past():
    # A transform of only L points is circular: the last inputs leak into the first outputs. The causal form
    # pads to L + K - 1 points, so the first output sees x_0 alone.
    length = 16
    x, k = torch.randn(1, 1, length, dtype=torch.float64), torch.randn(1, length, dtype=torch.float64)
    causal = fft_conv(x, k, impl="fft")
    torch.testing.assert_close(causal[..., 0], k[..., 0] * x[..., 0])
    wrapped = _fft(x, torch.fft.rfft(k, n=length), length)
    torch.testing.assert_close(wrapped, fft_conv(x, k, causal=False, impl="reference"))
    assert not torch.allclose(wrapped[..., 0], causal[..., 0])
    changed = x.clone()
    changed[..., -1] += 1.0  # the future changes the first output of the short transform, not the causal one
    assert not torch.allclose(_fft(changed, torch.fft.rfft(k, n=length), length)[..., 0], wrapped[..., 0])
    torch.testing.assert_close(fft_conv(changed, k, impl="fft")[..., 0], causal[..., 0])
    assert fast_size(2 * length - 1) >= 2 * length - 1


def test_fast_size_is_smooth_and_minimal():
    def smooth(n):
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1
    for n in range(1, 300):
        m = fast_size(n)
        assert m >= n and smooth(m) and not any(smooth(j) for j in range(n, m))


@pytest.mark.parametrize("impl", ["direct", "fft"])
def test_bfloat16_is_computed_in_float32(impl):
    x, k = torch.randn(1, 4, 64), torch.randn(4, 64) / 8
    y = fft_conv(x.bfloat16(), k.bfloat16(), impl=impl)
    assert y.dtype == torch.bfloat16
    want = fft_conv(x.bfloat16().double(), k.bfloat16().double(), impl="reference")
    # computed in float32, only the final rounding to bf16 remains: at most half a bf16 step, 2^-9 relative
    torch.testing.assert_close(y.double(), want, rtol=2 ** -8, atol=2 ** -8 * want.abs().max().item())


def test_bad_arguments_raise():
    x, k = torch.randn(1, 2, 5), torch.randn(2, 3)
    with pytest.raises(MixerInputError, match="impl"):
        fft_conv(x, k, impl="cufft")
    with pytest.raises(MixerInputError, match="floating"):
        fft_conv(x.long(), k)
    with pytest.raises(MixerInputError, match="broadcast"):
        fft_conv(x, torch.randn(3, 3))
    with pytest.raises(MixerInputError, match="circular"):
        fft_conv(x, torch.randn(2, 6), causal=False)
    with pytest.raises(MixerInputError, match="length"):
        fft_conv(x[..., :0], k)
    with pytest.raises(MixerInputError, match="history"):
        fft_conv(x, k, history=torch.randn(1, 3, 2))
