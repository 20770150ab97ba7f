"""Kernels from learnable points: DCLS's bilinear placement, SMPConv's cones."""

from __future__ import annotations

import torch

import tokenmix


def test_dcls_at_integer_positions_is_a_dilated_convolution():
    mixer = tokenmix.create("dcls", 4, kernel_count=3, dilated_kernel_size=7).double()
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, mixer.weight.view(4, 1, 3, 3), mixer.bias, padding="same",
                                          dilation=3, groups=4)
    torch.testing.assert_close(mixer(x), expected)


def test_dcls_positions_receive_gradients_and_half_steps_split_weights():
    mixer = tokenmix.create("dcls", 1, kernel_count=1, dilated_kernel_size=3).double()
    with torch.no_grad():
        mixer.weight.fill_(1.0)
        mixer.positions.copy_(torch.tensor([[[0.5, -0.25]]]))
    kernel = mixer.kernel()[0, 0]
    expected = torch.zeros(3, 3, dtype=torch.float64)
    expected[1, 0], expected[1, 1], expected[2, 0], expected[2, 1] = 0.5 * 0.25, 0.5 * 0.75, 0.5 * 0.25, 0.5 * 0.75
    torch.testing.assert_close(kernel, expected)
    mixer(torch.randn(1, 1, 5, 5, dtype=torch.float64)).sum().backward()
    assert mixer.positions.grad.abs().sum() > 0


def test_smpconv_single_point_is_a_cone_and_moves():
    mixer = tokenmix.create("smpconv", 1, kernel_size=5, num_points=1, radius=1.0).double()
    with torch.no_grad():
        mixer.positions.zero_()
        mixer.weight.fill_(2.0)
    kernel = mixer.kernel()[0, 0]
    # grid of [-1, 1] in 5 steps of 0.5: the cone 2·max(0, 1 - ‖q‖)
    line = torch.linspace(-1, 1, 5, dtype=torch.float64)
    norm = (line[:, None] ** 2 + line[None, :] ** 2).sqrt()
    torch.testing.assert_close(kernel, 2 * torch.relu(1 - norm), rtol=0, atol=1e-5)  # ‖·‖ floored at 1e-6
    mixer(torch.randn(1, 1, 6, 7, dtype=torch.float64)).square().sum().backward()
    assert mixer.radii.grad.abs().sum() > 0


def test_ccnn_is_global_in_1d_2d_3d_and_one_kernel_net_serves_every_size():
    for dims, shape in ((1, (1, 4, 11)), (2, (1, 4, 6, 7)), (3, (1, 4, 3, 4, 5))):
        mixer = tokenmix.create("ccnn", 4, spatial_dims=dims).double()
        x = torch.randn(*shape, dtype=torch.float64)
        changed = x.clone()
        changed[(..., *([-1] * dims))] += 1.0
        first = (..., *([0] * dims))
        assert not torch.allclose(mixer(x)[first], mixer(changed)[first])  # the far corner reaches the first point
        assert mixer.kernel(shape[2:]).shape == (4, 1, *[2 * n - 1 for n in shape[2:]])
