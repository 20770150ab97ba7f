"""The fast paths of the long-conv mixers' plumbing equal their plain forms: the channels-first input projection
(no transposed copy) and the short convolution's in-place fused taps and bias (forward and backward, float64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokenmix.sequence._short_conv import ShortConv
from tokenmix.sequence.long_convolution import channels_first_linear


def test_channels_first_linear_is_the_transposed_linear():
    torch.manual_seed(0)
    for bias in (True, False):
        linear = torch.nn.Linear(5, 7, bias=bias).double()
        x = torch.randn(3, 11, 5, dtype=torch.float64, requires_grad=True)
        got, want = channels_first_linear(linear, x), linear(x).transpose(1, 2)
        assert got.is_contiguous() and got.shape == (3, 7, 11)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        weights = torch.randn_like(want)
        inputs = (x, *linear.parameters())
        for g, w in zip(torch.autograd.grad((got * weights).sum(), inputs),
                        torch.autograd.grad((want * weights).sum(), inputs)):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_short_conv_equals_the_padded_depthwise_conv1d_with_and_without_a_cache():
    torch.manual_seed(1)
    conv = ShortConv(4, 3, bias=True).double()
    u = torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
    want = F.conv1d(F.pad(u, (2, 0)), conv.weight, conv.bias, groups=4)   # nn.Conv1d's layout, causal pad
    got, _ = conv(u, channels_first=True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(want)
    inputs = (u, conv.weight, conv.bias)
    for g, w in zip(torch.autograd.grad((got * weights).sum(), inputs),
                    torch.autograd.grad((want * weights).sum(), inputs)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    head, cache = conv(u[..., :1], conv.init_cache(2, u.device, u.dtype), channels_first=True)
    tail, _ = conv(u[..., 1:], cache, channels_first=True)
    torch.testing.assert_close(torch.cat([head, tail], -1), want, rtol=1e-12, atol=1e-12)
