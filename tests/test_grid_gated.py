"""HorNet gⁿConv at every order: shapes, widths, impl equality."""

from __future__ import annotations

import pytest
import torch

import tokenmix


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_gnconv_orders(order):
    torch.manual_seed(order)
    mixer = tokenmix.create("hornet_gnconv", 16, order=order, impl="reference").double()
    assert mixer.widths[-1] == 16 and mixer.widths[0] == 16 // 2 ** (order - 1)
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64)
    fast = tokenmix.create("hornet_gnconv", 16, order=order, impl="fft").double()
    fast.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(fast(x), mixer(x), rtol=1e-9, atol=1e-12)


def test_gnconv_is_of_order_n_in_the_input():
    # y(t x) = t^(n+1) y(x) up to biases: with biases zero the output is homogeneous of degree n + 1
    mixer = tokenmix.create("hornet_gnconv", 8, order=3).double()
    for module in mixer.modules():
        for name, p in module.named_parameters(recurse=False):
            if "bias" in name:
                torch.nn.init.zeros_(p)
    x = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(mixer(2 * x), 2 ** 4 * mixer(x))


def test_gnconv_rejects_bad_orders():
    with pytest.raises(tokenmix.MixerInputError, match="order"):
        tokenmix.create("hornet_gnconv", 16, order=6)
    with pytest.raises(tokenmix.MixerInputError, match="divisible"):
        tokenmix.create("hornet_gnconv", 12, order=4)
