"""Global attention grid mixers against their papers' equations, written out with explicit matrices."""

from __future__ import annotations

import pytest
import torch

import tokenmix
from tokenmix.grid._attention_parts import sincos_positions

D = 8


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (N, C), positions row-major."""
    return x[0].flatten(1).T


def _linear(conv: torch.nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
    out = t @ conv.weight[:, :, 0, 0].T
    return out if conv.bias is None else out + conv.bias


def _multi_head(q, k, v, heads, scale=None):
    outs = []
    for qh, kh, vh in zip(q.tensor_split(heads, 1), k.tensor_split(heads, 1), v.tensor_split(heads, 1)):
        s = qh.shape[1] ** -0.5 if scale is None else scale
        outs.append(torch.softmax(qh @ kh.T * s, dim=-1) @ vh)
    return torch.cat(outs, dim=1)


def _grid(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return y.T.reshape(1, -1, h, w)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_vit_attention_is_the_multi_head_formula(impl):
    mixer = tokenmix.create("vit_attention", D, num_heads=2, impl=impl).double()
    x = torch.randn(1, D, 3, 5, dtype=torch.float64)
    t = _tokens(x + sincos_positions(D, 3, 5, torch.float64, x.device))
    q, k, v = _linear(mixer.qkv, t).chunk(3, dim=1)
    want = _grid(_linear(mixer.out, _multi_head(q, k, v, 2)), 3, 5)
    torch.testing.assert_close(mixer(x), want)


def test_sincos_positions_hand_checked():
    p = sincos_positions(8, 2, 3, torch.float64, torch.device("cpu"))
    # channels 0-3 encode the column c: [sin(c), sin(c/100), cos(c), cos(c/100)]; 4-7 the row
    torch.testing.assert_close(p[:, 0, 0], torch.tensor([0, 0, 1, 1, 0, 0, 1, 1], dtype=torch.float64))
    column, row = torch.tensor([2.0, 0.02], dtype=torch.float64), torch.tensor([1.0, 0.01], dtype=torch.float64)
    torch.testing.assert_close(p[:4, 1, 2], torch.cat([column.sin(), column.cos()]))
    torch.testing.assert_close(p[4:, 1, 2], torch.cat([row.sin(), row.cos()]))


def test_vit_without_positions_is_permutation_equivariant():
    mixer = tokenmix.create("vit_attention", D, num_heads=2, position="none").double()
    x = torch.randn(1, D, 4, 4, dtype=torch.float64)
    perm = torch.randperm(16)
    permuted = x.flatten(2)[..., perm].view_as(x)
    torch.testing.assert_close(mixer(permuted).flatten(2), mixer(x).flatten(2)[..., perm])


@pytest.mark.parametrize("impl", ["reference", "fast"])
@pytest.mark.parametrize("variant", ["embedded_gaussian", "dot_product"])
def test_non_local_is_eq_1(variant, impl):
    mixer = tokenmix.create("non_local", D, variant=variant, impl=impl).double()
    x = torch.randn(1, D, 4, 3, dtype=torch.float64)
    t = _tokens(x)
    theta, phi, g = _linear(mixer.theta, t), _linear(mixer.phi, t), _linear(mixer.g, t)
    f = torch.exp(theta @ phi.T) if variant == "embedded_gaussian" else theta @ phi.T
    c = f.sum(-1, keepdim=True) if variant == "embedded_gaussian" else torch.full_like(f[:, :1], 12.0)
    want = _grid(_linear(mixer.w_z, (f / c) @ g), 4, 3)
    torch.testing.assert_close(mixer(x), want)


def test_non_local_dot_product_fast_equals_reference_with_gradients():
    reference = tokenmix.create("non_local", D, variant="dot_product", impl="reference").double()
    fast = tokenmix.create("non_local", D, variant="dot_product", impl="fast").double()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, D, 5, 7, dtype=torch.float64, requires_grad=True)
    y, y_fast = reference(x), fast(x)
    torch.testing.assert_close(y_fast, y, rtol=1e-10, atol=1e-12)
    g, g_fast = torch.autograd.grad(y.sin().sum(), x), torch.autograd.grad(y_fast.sin().sum(), x)
    torch.testing.assert_close(g_fast, g, rtol=1e-10, atol=1e-12)


def test_pvt_reduces_keys_with_a_strided_conv_and_layer_norm():
    mixer = tokenmix.create("pvt_attention", D, num_heads=2, reduction=2, impl="reference").double()
    x = torch.randn(1, D, 5, 3, dtype=torch.float64)  # padded to 6×4: 3×2 = 6 reduced tokens
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1))
    reduced = torch.nn.functional.conv2d(padded, mixer.reduce.weight, mixer.reduce.bias, stride=2)
    r = torch.nn.functional.layer_norm(_tokens(reduced), (D,), mixer.norm.weight, mixer.norm.bias)
    q = _linear(mixer.query, _tokens(x))
    k, v = _linear(mixer.key_value, r).chunk(2, dim=1)
    want = _grid(_linear(mixer.out, _multi_head(q, k, v, 2)), 5, 3)
    torch.testing.assert_close(mixer(x), want)


def test_cvt_projections_are_depthwise_convs_then_attention():
    mixer = tokenmix.create("cvt_attention", D, num_heads=2, kv_stride=2, impl="sdpa").double()
    x = torch.randn(1, D, 5, 4, dtype=torch.float64)
    conv = torch.nn.functional.conv2d
    q = _linear(mixer.proj_q, _tokens(conv(x, mixer.conv_q.weight, mixer.conv_q.bias, padding=1, groups=D)))
    k_grid = conv(x, mixer.conv_k.weight, mixer.conv_k.bias, stride=2, padding=1, groups=D)
    assert k_grid.shape[2:] == (3, 2)  # ⌈5/2⌉ × ⌈4/2⌉ keys
    k = _linear(mixer.proj_k, _tokens(k_grid))
    v = _linear(mixer.proj_v, _tokens(conv(x, mixer.conv_v.weight, mixer.conv_v.bias, stride=2, padding=1, groups=D)))
    want = _grid(_linear(mixer.out, _multi_head(q, k, v, 2)), 5, 4)
    torch.testing.assert_close(mixer(x), want)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_crate_one_head_is_the_ssa_formula(impl):
    mixer = tokenmix.create("crate_mssa", D, num_heads=1, impl=impl).double()
    x = torch.randn(1, D, 3, 4, dtype=torch.float64)
    u = mixer.subspaces.weight[:, :, 0, 0].T           # (D, d): U, so Uᵀz = z U
    w = _tokens(x) @ u                                   # (N, d): (Uᵀ Z)ᵀ
    ssa = torch.softmax(w @ w.T / D ** 0.5, dim=-1) @ w   # q = k = v = Uᵀ Z
    torch.testing.assert_close(mixer(x), _grid(_linear(mixer.out, ssa), 3, 4))


def test_bad_options_raise():
    with pytest.raises(tokenmix.MixerInputError, match="divisible by 4"):
        tokenmix.create("vit_attention", 6, num_heads=2)
    with pytest.raises(tokenmix.MixerInputError, match="variant"):
        tokenmix.create("non_local", D, variant="concat")
    with pytest.raises(tokenmix.MixerInputError, match="divisible by num_heads"):
        tokenmix.create("crate_mssa", D, num_heads=3)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_levit_bias_is_indexed_by_absolute_offsets(impl):
    mixer = tokenmix.create("levit_attention", D, num_heads=2, resolution=4, impl=impl).double()
    with torch.no_grad():
        mixer.bias_table.copy_(torch.randn(2, 4, 4))
    bias = mixer.position_bias(3, 4)
    # query (row 2, column 0) = 8, key (row 0, column 3) = 3: |Δrow| = 2, |Δcolumn| = 3
    torch.testing.assert_close(bias[:, 8, 3], mixer.bias_table[:, 2, 3])
    torch.testing.assert_close(bias[:, 3, 8], mixer.bias_table[:, 2, 3])
    x = torch.randn(1, D, 3, 4, dtype=torch.float64)
    q, k, v = _linear(mixer.qkv, _tokens(x)).chunk(3, dim=1)
    heads = []
    for h, (qh, kh, vh) in enumerate(zip(q.tensor_split(2, 1), k.tensor_split(2, 1), v.tensor_split(2, 1))):
        heads.append(torch.softmax(qh @ kh.T / 2.0 + bias[h], dim=-1) @ vh)  # √d = √4
    want = _grid(_linear(mixer.out, torch.nn.functional.hardswish(torch.cat(heads, 1))), 3, 4)
    torch.testing.assert_close(mixer(x), want)


def test_levit_rejects_grids_beyond_its_resolution():
    mixer = tokenmix.create("levit_attention", D, num_heads=2, resolution=4)
    mixer(torch.randn(1, D, 4, 2))
    with pytest.raises(tokenmix.MixerInputError, match="exceeds resolution 4"):
        mixer(torch.randn(1, D, 5, 2))


def test_gpsa_positional_heads_start_as_shifts():
    # gates at σ → 1 and a strong locality: head h attends (almost) only to offset Δ_h, a shifted copy of v_h
    mixer = tokenmix.create("convit_gpsa", D, num_heads=4, locality_strength=30.0, impl="sdpa").double()
    with torch.no_grad():
        mixer.gate.fill_(60.0)
        mixer.value.weight.copy_(torch.eye(D).view(D, D, 1, 1))
        mixer.out.weight.copy_(torch.eye(D).view(D, D, 1, 1))
        mixer.out.bias.zero_()
    x = torch.randn(1, D, 6, 6, dtype=torch.float64)
    y = mixer(x)
    for h, (dy, dx) in enumerate([(-1, -1), (-1, 0), (0, -1), (0, 0)]):
        channels = slice(2 * h, 2 * h + 2)
        shifted = x[:, channels, 1 + dy:5 + dy, 1 + dx:5 + dx]
        torch.testing.assert_close(y[:, channels, 1:5, 1:5], shifted, rtol=0, atol=1e-9)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_gpsa_closed_gate_is_content_attention(impl):
    mixer = tokenmix.create("convit_gpsa", D, num_heads=2, impl=impl).double()
    with torch.no_grad():
        mixer.gate.fill_(-80.0)  # σ(−80) ≈ 2e-35: the positional term vanishes below float64 resolution
    x = torch.randn(1, D, 3, 5, dtype=torch.float64)
    t = _tokens(x)
    q, k = _linear(mixer.query_key, t).chunk(2, dim=1)
    want = _grid(_linear(mixer.out, _multi_head(q, k, _linear(mixer.value, t), 2)), 3, 5)
    torch.testing.assert_close(mixer(x), want)
