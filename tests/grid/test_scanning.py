"""Scanning mixers: the scan orders by hand, SS2D against the `mamba` mixer, flip symmetry, ViG's two directions
against an explicit sum, fast == reference."""

from __future__ import annotations

import pytest
import torch

import tokenmix
from tokenmix.grid.scanning import scan_back, scan_order


def test_scan_orders_by_hand():
    x = torch.arange(6.0).view(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    expected = [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]
    for direction, order in enumerate(expected):
        sequence = scan_order(x, direction)
        assert sequence.flatten().tolist() == order
        torch.testing.assert_close(scan_back(sequence, direction, 2, 3), x)


def test_ss2d_with_one_direction_is_mamba_over_a_row():
    # a 1×W image read row-major is the sequence; a 3×3 depthwise conv whose only taps are (left, centre) is
    # mamba's causal conv of size 2; without SS2D's output LayerNorm the blocks are the same
    torch.manual_seed(0)
    ss2d = tokenmix.create("ss2d", 8, directions=1, state_size=4).double()
    mamba = tokenmix.create("mamba", 8, state_size=4, conv_size=2).double()
    ss2d.out_norm = torch.nn.Identity()
    with torch.no_grad():
        for p in ss2d.parameters():
            p.add_(0.1 * torch.randn_like(p))
        mamba.in_proj.weight.copy_(ss2d.in_proj.weight)
        mamba.out_proj.weight.copy_(ss2d.out_proj.weight)
        mamba.x_proj.weight.copy_(ss2d.x_proj_weight[0])
        mamba.dt_proj.weight.copy_(ss2d.dt_proj_weight[0])
        mamba.dt_proj.bias.copy_(ss2d.dt_proj_bias[0])
        mamba.A_log.copy_(ss2d.A_log[0])
        mamba.D.copy_(ss2d.D[0])
        ss2d.conv.weight[:, :, :, 2] = 0.0
        mamba.conv.weight.copy_(ss2d.conv.weight[:, :, 1, :2])
        mamba.conv.bias.copy_(ss2d.conv.bias)
    x = torch.randn(2, 8, 1, 11, dtype=torch.float64)
    expected = mamba(x.flatten(2).transpose(1, 2)).transpose(1, 2).view_as(x)
    for impl in ("reference", "chunk", "scan"):
        ss2d.impl = impl
        torch.testing.assert_close(ss2d(x), expected)


def test_ss2d_flipping_the_image_swaps_each_direction_with_its_reverse():
    torch.manual_seed(1)
    ss2d = tokenmix.create("ss2d", 8, state_size=4).double()
    flipped = tokenmix.create("ss2d", 8, state_size=4).double()
    swap = [2, 3, 0, 1]  # row-major <-> reversed row-major, column-major <-> reversed column-major
    state = ss2d.state_dict()
    for key in ("x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A_log", "D"):
        state[key] = state[key][swap]
    state["conv.weight"] = state["conv.weight"].flip(2, 3)
    flipped.load_state_dict(state)
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(flipped(x.flip(2, 3)), ss2d(x).flip(2, 3))
    # and the directions matter: with the parameters left in place the flipped image gives another output
    assert not torch.allclose(ss2d(x.flip(2, 3)), ss2d(x).flip(2, 3))


def test_vig_flipping_the_image_swaps_the_forward_and_backward_gates():
    torch.manual_seed(2)
    vig = tokenmix.create("vig", 8, num_heads=2).double()
    flipped = tokenmix.create("vig", 8, num_heads=2).double()
    state = vig.state_dict()
    for key in ("decay.1.weight", "decay.1.bias"):
        forward, backward = state[key].chunk(2)
        state[key] = torch.cat([backward, forward])
    state["conv.weight"] = state["conv.weight"].flip(2, 3)
    flipped.load_state_dict(state)
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(flipped(x.flip(2, 3)), vig(x).flip(2, 3))
    assert not torch.allclose(vig(x.flip(2, 3)), vig(x).flip(2, 3))


def test_vig_global_part_is_the_average_of_a_forward_and_a_backward_gated_sum():
    torch.manual_seed(3)
    vig = tokenmix.create("vig", 4, num_heads=1, expand_k=0.5).double()
    with torch.no_grad():
        vig.gate.weight.zero_()
        vig.gate.bias.fill_(60.0)  # G = σ(60) = 1 - 9e-27: only the global part is left
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    local = torch.nn.functional.silu(vig.conv(x)).flatten(2)[0].T                    # (L, D), row-major
    q, k, v = local @ vig.qkv.weight[:2].T, local @ vig.qkv.weight[2:4].T, local @ vig.qkv.weight[4:].T
    gates = torch.nn.functional.logsigmoid(vig.decay(local)) / 16.0
    forward_gate, backward_gate = gates[:, :2], gates[:, 2:]
    scale = 2 ** -0.5
    o = torch.zeros(4, 4, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            if j <= i:   # forward: decays of positions j+1..i
                decay = forward_gate[j + 1:i + 1].sum(0).exp()
            else:        # backward: decays of positions i..j-1
                decay = backward_gate[i:j].sum(0).exp()
            o[i] += 0.5 * scale * (q[i] * decay * k[j]).sum() * v[j]
            if j == i:   # the diagonal term is in both directions
                o[i] += 0.5 * scale * (q[i] * k[i]).sum() * v[i]
    expected = vig.out(vig.global_norm(o[None, None]))[0].T.reshape(1, 4, 2, 2)
    for impl in ("reference", "recurrent", "chunk"):
        vig.impl = impl
        torch.testing.assert_close(vig(x), expected)


@pytest.mark.parametrize("name,options", [("ss2d", {"state_size": 4, "chunk_size": 5}),
                                          ("ss2d", {"state_size": 4, "directions": 2}),
                                          ("vig", {"num_heads": 2, "chunk_size": 5}),
                                          ("vig", {"num_heads": 2, "shared_gates": True})])
def test_fast_equals_reference_forward_and_backward(name, options):
    reference = tokenmix.create(name, 8, impl="reference", **options).double()
    x = torch.randn(2, 8, 3, 7, dtype=torch.float64, requires_grad=True)
    y = reference(x)
    grad, = torch.autograd.grad(y.square().sum(), x)
    for impl in tokenmix.spec(name).impls[1:]:
        fast = tokenmix.create(name, 8, impl=impl, **options).double()
        fast.load_state_dict(reference.state_dict())
        y_fast = fast(x)
        torch.testing.assert_close(y_fast, y)
        grad_fast, = torch.autograd.grad(y_fast.square().sum(), x)
        torch.testing.assert_close(grad_fast, grad)


def test_bad_options_raise():
    with pytest.raises(tokenmix.MixerInputError, match="directions"):
        tokenmix.create("ss2d", 8, directions=3)
    with pytest.raises(tokenmix.MixerInputError, match="num_heads"):
        tokenmix.create("vig", 8, num_heads=3)
