"""Softmax attention with an additive bias / mask: a hand-checked case, sdpa == reference (with gradients of the
bias), and the causal mask combined with a bias."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops.attention import softmax_attention


def test_bias_hand_checked():
    # q·k = 0 for both keys; biases 0 and log 3 give weights 1/4, 3/4; a -inf bias removes a key.
    q = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    k = torch.randn(1, 1, 3, 2, dtype=torch.float64)
    v = torch.tensor([4.0, 8.0, 100.0], dtype=torch.float64).view(1, 1, 3, 1)
    bias = torch.tensor([0.0, math.log(3.0), float("-inf")], dtype=torch.float64).view(1, 1, 1, 3)
    for impl in ("reference", "sdpa"):
        o = softmax_attention(q, k, v, causal=False, bias=bias, impl=impl)
        torch.testing.assert_close(o.flatten(), torch.tensor([7.0], dtype=torch.float64))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias_shape", [(2, 3, 5, 7), (1, 3, 5, 7), (5, 7), (2, 1, 1, 7)])
def test_sdpa_equals_reference_with_bias(causal, bias_shape):
    q = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 7, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 7, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(*bias_shape, dtype=torch.float64)
    if bias_shape == (5, 7):
        bias[1, 0] = float("-inf")  # a masked key
    bias.requires_grad_()
    outputs = {impl: softmax_attention(q, k, v, causal=causal, bias=bias, impl=impl) for impl in ("reference", "sdpa")}
    torch.testing.assert_close(outputs["sdpa"], outputs["reference"], rtol=1e-10, atol=1e-12)
    grads = {impl: torch.autograd.grad(o.sin().sum(), (q, k, v, bias)) for impl, o in outputs.items()}
    for got, want in zip(grads["sdpa"], grads["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_bias_of_wrong_shape_raises():
    q = k = v = torch.randn(1, 2, 4, 3)
    with pytest.raises(MixerInputError, match="bias"):
        softmax_attention(q, k, v, causal=False, bias=torch.randn(3, 4))
    with pytest.raises(MixerInputError, match="bias"):
        softmax_attention(q, k, v, causal=False, bias=torch.ones(4, 4, dtype=torch.bool))
