"""Reusable kernel spectra: `kernel_spectrum` + `fft_conv` equal the plain kernel path (forward and backward),
the long-conv mixers transform their kernels once per forward, and the inference cache is invalidated by an
optimizer step."""

from __future__ import annotations

import pytest
import torch

import tokenmix
from tokenmix import MixerInputError
from tokenmix.ops.fftconv import fft_conv, kernel_spectrum
from tokenmix.sequence.long_convolution import with_skip


def _grads(outputs, weights, inputs):
    return torch.autograd.grad((outputs * weights).sum(), inputs)


@pytest.mark.parametrize("causal,past,length,taps", [(True, 0, 37, 37), (True, 5, 33, 50), (True, 0, 40, 12),
                                                     (False, 0, 37, 37), (False, 0, 35, 9)])
def test_spectrum_equals_plain_kernel_forward_and_backward(causal, past, length, taps):
    torch.manual_seed(0)
    x = torch.randn(2, 3, length, dtype=torch.float64, requires_grad=True)
    history = torch.randn(2, 3, past, dtype=torch.float64) if past else None
    k = torch.randn(3, taps, dtype=torch.float64, requires_grad=True)
    plain = fft_conv(x, k, causal=causal, history=history, impl="reference")
    weights = torch.randn_like(plain)
    want = _grads(plain, weights, (x, k))
    for impl in ("fft", "auto", "direct", "reference"):
        prepared = kernel_spectrum(k, length, causal=causal, past=past)
        got = fft_conv(x, prepared, causal=causal, history=history, impl=impl)
        torch.testing.assert_close(got, plain, rtol=1e-10, atol=1e-12)
        for g, w in zip(_grads(got, weights, (x, k)), want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_one_spectrum_serves_every_slice_and_call():
    torch.manual_seed(1)
    k = torch.randn(2, 4, 40, dtype=torch.float64, requires_grad=True)     # two orders of four channels
    xs = [torch.randn(3, 4, 40, dtype=torch.float64) for _ in range(2)]
    prepared = kernel_spectrum(k, 40)
    got = sum(fft_conv(x, prepared[n], impl="fft") for n, x in enumerate(xs))
    plain = sum(fft_conv(x, k[n], impl="reference") for n, x in enumerate(xs))
    torch.testing.assert_close(got, plain, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(plain)
    torch.testing.assert_close(_grads(got, weights, (k,))[0], _grads(plain, weights, (k,))[0],
                               rtol=1e-10, atol=1e-12)
    assert prepared[0].spectrum.shape == (4, prepared.size // 2 + 1)


def test_a_spectrum_for_another_length_is_refused():
    k = torch.randn(2, 16)
    short = kernel_spectrum(k, 8)                      # 8 + 8 - 1 = 15 points suffice for 8 positions only
    with pytest.raises(MixerInputError, match="wrap the future"):
        fft_conv(torch.randn(1, 2, 16), short, impl="fft")
    with pytest.raises(MixerInputError, match="circular"):
        fft_conv(torch.randn(1, 2, 16), kernel_spectrum(k, 16), causal=False)
    with pytest.raises(MixerInputError, match="16 points"):
        fft_conv(torch.randn(1, 2, 12), kernel_spectrum(k[:, :8], 16, causal=False), causal=False)
    with pytest.raises(MixerInputError):
        kernel_spectrum(k, 0)
    with pytest.raises(MixerInputError):
        kernel_spectrum(k, 8)[..., 0]


class _CountingRfft:
    def __init__(self, monkeypatch):
        self.calls, self._rfft = 0, torch.fft.rfft
        monkeypatch.setattr(torch.fft, "rfft", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._rfft(*args, **kwargs)


def _hyena_by_plain_kernels(hyena, x):
    """Hyena's forward with one `fft_conv` per order on the raw kernel (the path before spectra)."""
    u = hyena.in_proj(x).transpose(1, 2).contiguous()
    u, _ = hyena.short(u, None, channels_first=True, impl="direct")
    v, *gates = u.split(hyena.dim, dim=1)
    h = hyena.filters(x.shape[1])
    z = v
    for n, gate in enumerate(gates):
        z = gate * fft_conv(z, with_skip(h[n], hyena.skip[n]), impl="fft")
    return hyena.out(z.transpose(1, 2))


def test_hyena_equals_the_plain_path_and_transforms_its_kernels_once(monkeypatch):
    torch.manual_seed(2)
    hyena = tokenmix.create("hyena", 6, order=3, kernel_length=48, filter_width=8).double()
    x = torch.randn(2, 48, 6, dtype=torch.float64)
    plain = _hyena_by_plain_kernels(hyena, x)
    weights = torch.randn_like(plain)
    want = _grads(plain, weights, list(hyena.parameters()))
    counter = _CountingRfft(monkeypatch)
    got = hyena(x)
    assert counter.calls == hyena.order + 1         # one per order's input, one for all N·D kernels
    torch.testing.assert_close(got, plain, rtol=1e-10, atol=1e-12)
    for g, w in zip(_grads(got, weights, list(hyena.parameters())), want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_inference_cache_skips_the_kernel_and_is_invalidated_by_an_optimizer_step(monkeypatch):
    torch.manual_seed(3)
    hyena = tokenmix.create("hyena", 4, kernel_length=40, filter_width=8)
    x = torch.randn(1, 40, 4)
    counter = _CountingRfft(monkeypatch)
    with torch.no_grad():
        first = hyena(x)
        assert counter.calls == hyena.order + 1
        again = hyena(x)
        assert counter.calls == 2 * hyena.order + 1   # kept: inputs only
        hyena(x[:, :36])                                # another length: transformed anew
        assert counter.calls == 3 * hyena.order + 2
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    optimizer = torch.optim.SGD(hyena.parameters(), lr=0.1)
    hyena(x).square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        after = hyena(x)
        hyena.cache_kernel_spectra = False
        fresh = hyena(x)
    assert (after - first).abs().max() > 1e-4
    torch.testing.assert_close(after, fresh, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sgconv", "ckconv", "flexconv"])
def test_kernel_mixers_transform_their_kernel_once(monkeypatch, name):
    torch.manual_seed(4)
    mixer = tokenmix.create(name, 4, kernel_length=64)
    x = torch.randn(2, 64, 4)
    counter = _CountingRfft(monkeypatch)
    mixer(x)
    assert counter.calls == 2                          # the input's and the kernel's


def test_multi_head_hyena_transforms_its_kernels_once_for_all_groups(monkeypatch):
    torch.manual_seed(5)
    mixer = tokenmix.create("multi_head_hyena", 8, num_heads=4, kernel_length=40, impl="fft")
    mixer.GROUP_CHANNELS = 4                           # one head (d² = 4 channels) per group: four groups
    x = torch.randn(1, 40, 8)
    counter = _CountingRfft(monkeypatch)
    y = mixer(x)
    assert counter.calls == 4 + 1                      # one per group's outer products, one for the kernels
    reference = tokenmix.create("multi_head_hyena", 8, num_heads=4, kernel_length=40, impl="reference")
    reference.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(y, reference(x), rtol=1e-4, atol=1e-5)  # float32: FFT vs direct rounding
