"""ops.deformable: grid_sample equals the tap-by-tap bilinear reference; zero offsets give a plain im2col."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmix import MixerInputError
from tokenmix.ops.deformable import deformable_sample


@pytest.mark.parametrize("shape,kernel,groups,dilation", [
    ((2, 4, 7, 9), (3, 3), 2, 1), ((1, 3, 1, 1), (3, 3), 1, 1), ((2, 2, 5, 6), (1, 1), 1, 1),
    ((1, 4, 4, 5), (3, 5), 4, 2),
])
def test_grid_sample_equals_reference_forward_and_backward(shape, kernel, groups, dilation):
    torch.manual_seed(0)
    b, c, h, w = shape
    taps = kernel[0] * kernel[1]
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    offset = (2.5 * torch.randn(b, groups, taps, 2, h, w, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(b, groups, taps, h, w, dtype=torch.float64, requires_grad=True)
    args = dict(kernel_size=kernel, dilation=dilation)
    ref = deformable_sample(x, offset, mask, impl="reference", **args)
    fast = deformable_sample(x, offset, mask, impl="grid_sample", **args)
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-10)
    g = torch.randn_like(ref)
    for a, r in zip(torch.autograd.grad(fast, (x, offset, mask), g), torch.autograd.grad(ref, (x, offset, mask), g)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("impl", ["reference", "grid_sample"])
def test_zero_offsets_read_the_regular_grid(impl):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    offset = torch.zeros(2, 1, 9, 2, 6, 7, dtype=torch.float64)
    samples = deformable_sample(x, offset, kernel_size=(3, 3), impl=impl)
    expected = F.unfold(x, 3, padding=1).view(2, 3, 9, 6, 7)
    torch.testing.assert_close(samples, expected)


def test_bad_shapes():
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(MixerInputError, match="offset"):
        deformable_sample(x, torch.zeros(1, 3, 9, 2, 5, 5), kernel_size=(3, 3))
    with pytest.raises(MixerInputError, match="impl"):
        deformable_sample(x, torch.zeros(1, 1, 9, 2, 5, 5), kernel_size=(3, 3), impl="nope")
