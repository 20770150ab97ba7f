"""Linear attention for images: hand-checked small cases of each paper's equation; factored == reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tokenmix
from tokenmix.grid.linear_attention import to_heads

NAMES = ["flatten_grid", "slab", "inline_attention", "rala", "efficientvit_attention", "agent_attention"]


def _identity_projections(mixer, count: int = 3) -> None:
    """q = k = v = x (and more copies), the output 1×1 conv the identity, the depthwise conv zero."""
    dim = mixer.dim
    with torch.no_grad():
        mixer.projections.weight.copy_(torch.eye(dim).repeat(count, 1)[:, :, None, None])
        if mixer.projections.bias is not None:
            mixer.projections.bias.zero_()
        out = mixer.out.weight
        out.zero_()
        out[:, :dim, 0, 0].copy_(torch.eye(dim))
        mixer.out.bias.zero_()
        if mixer.local is not None:
            mixer.local.weight.zero_()
            mixer.local.bias.zero_()


def test_slab_hand_case():
    # a 1×2 image, 2 channels, one head: O_i = Σ_j (r(q_i)·r(k_j)) v_j / Σ_j r(q_i)·r(k_j), r = ReLU
    mixer = tokenmix.create("slab", 2, num_heads=1).double()
    _identity_projections(mixer)
    x = torch.tensor([[1.0, -1.0], [2.0, 3.0]], dtype=torch.float64).view(1, 2, 1, 2)  # pixels (1, 2), (-1, 3)
    # r(x_0) = (1, 2), r(x_1) = (0, 3); scores: row 0 = (5, 6), row 1 = (6, 9)
    expected = torch.tensor([[(5 * 1 + 6 * -1) / 11, (6 * 1 + 9 * -1) / 15],
                             [(5 * 2 + 6 * 3) / 11, (6 * 2 + 9 * 3) / 15]], dtype=torch.float64).view(1, 2, 1, 2)
    for impl in ("reference", "factored"):
        mixer.impl = impl
        torch.testing.assert_close(mixer(x), expected)


def test_inline_weights_sum_to_one_and_are_injective():
    mixer = tokenmix.create("inline_attention", 8, num_heads=2).double()
    q, k = torch.randn(2, 2, 12, 4, dtype=torch.float64), torch.randn(2, 2, 12, 4, dtype=torch.float64)
    weights = mixer.weights(q, k)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 12, dtype=torch.float64))
    # weights may be negative (no positivity needed) and differ for q and 2q: InLine is injective in q, where
    # normalized linear attention with a homogeneous map (ReLU) gives 2q the same weights as q
    assert (weights < 0).any()
    assert not torch.allclose(mixer.weights(2 * q, k), weights)
    features_q, features_k = F.relu(q) + 0.1, F.relu(k) + 0.1  # positive, so no row of zeros

    def normalized_weights(features_q):
        scores = features_q @ features_k.transpose(-1, -2)
        return scores / scores.sum(-1, keepdim=True)

    torch.testing.assert_close(normalized_weights(2 * features_q), normalized_weights(features_q))


def test_inline_local_residual_is_a_predicted_3x3_filter_of_v():
    mixer = tokenmix.create("inline_attention", 4, num_heads=1).double()
    _identity_projections(mixer)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    # the global part alone, from the explicit weights; the rest is the predicted 3×3 depthwise filter of V = x
    q = to_heads(x, 1)
    global_part = (mixer.weights(q, q) @ q).transpose(-1, -2).reshape(1, 4, 3, 3)
    r = mixer.residual(x.mean((2, 3))[..., None]).view(4, 1, 3, 3)
    local = F.conv2d(x, r, padding=1, groups=4)
    torch.testing.assert_close(mixer(x), global_part + local)


def test_flatten_grid_equals_the_sequence_flatten_on_flattened_pixels():
    # the focused attention part (depthwise convs zeroed) is the sequence mixer's, run over the h·w positions
    torch.manual_seed(0)
    grid = tokenmix.create("flatten_grid", 8, num_heads=2).double()
    sequence = tokenmix.create("flatten", 8, num_heads=2, causal=False).double()
    with torch.no_grad():
        grid.scale.copy_(torch.randn(8, 1, 1))
        sequence.scale.copy_(grid.scale.view(8))
        sequence.qkv.weight.copy_(grid.projections.weight[:, :, 0, 0])
        sequence.out.weight.copy_(grid.out.weight[:, :, 0, 0])
        grid.out.bias.zero_()
        for conv in (grid.local, sequence.conv):
            conv.weight.zero_()
            conv.bias.zero_()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    expected = sequence(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape_as(x)
    torch.testing.assert_close(grid(x), expected)


def test_rala_reweights_keys_by_softmax_against_the_mean_query():
    mixer = tokenmix.create("rala", 4, num_heads=1).double()
    x = torch.randn(1, 4, 2, 3, dtype=torch.float64)
    q, k, v, gate = (t.flatten(2)[0].T for t in mixer.projections(x).chunk(4, dim=1))  # (N, D) each
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    n = 6
    alpha = torch.softmax(phi_q.mean(0) @ phi_k.T / 2.0, dim=0)                        # d^{-1/2} = 1/2
    keys = n * alpha[:, None] * phi_k
    scores = phi_q @ keys.T
    attention = (scores @ v) / scores.sum(-1, keepdim=True)                              # (N, D)
    local = mixer.local(v.T.reshape(1, 4, 2, 3))
    expected = mixer.out((attention.T.reshape(1, 4, 2, 3) + local) * gate.T.reshape(1, 4, 2, 3))
    torch.testing.assert_close(mixer(x), expected)


def test_efficientvit_single_scale_is_relu_linear_attention_and_scales_add_heads():
    single = tokenmix.create("efficientvit_attention", 2, num_heads=1, scales=()).double()
    slab = tokenmix.create("slab", 2, num_heads=1).double()
    _identity_projections(single)
    _identity_projections(slab)
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(single(x), slab(x))  # SLA without its conv is EfficientViT's ReLU attention
    multi = tokenmix.create("efficientvit_attention", 8, num_heads=2, scales=(3, 5))
    assert multi.out.in_channels == 3 * 8
    with pytest.raises(tokenmix.MixerInputError, match="odd"):
        tokenmix.create("efficientvit_attention", 8, scales=(4,))


def test_agent_attention_with_one_agent_per_pixel():
    # agent grid = image grid: the pooled queries are the queries, A = Q
    mixer = tokenmix.create("agent_attention", 2, num_heads=1, agent_size=3).double()
    _identity_projections(mixer)
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    q = x.flatten(2)[0].T                                                               # (9, 2)
    scale = 2 ** -0.5
    agent_values = torch.softmax(scale * q @ q.T, dim=-1) @ q
    expected = (torch.softmax(scale * q @ q.T, dim=-1) @ agent_values).T.reshape(1, 2, 3, 3)
    for impl in ("reference", "sdpa"):
        mixer.impl = impl
        torch.testing.assert_close(mixer(x), expected)


@pytest.mark.parametrize("name", NAMES)
def test_fast_equals_reference_at_another_size(name):
    fast_impl = tokenmix.spec(name).impls[1]
    reference = tokenmix.create(name, 8, num_heads=2, impl="reference").double()
    fast = tokenmix.create(name, 8, num_heads=2, impl=fast_impl).double()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, 8, 7, 3, dtype=torch.float64, requires_grad=True)
    y, y_fast = reference(x), fast(x)
    torch.testing.assert_close(y_fast, y)
    grad, = torch.autograd.grad(y.square().sum(), x)
    grad_fast, = torch.autograd.grad(y_fast.square().sum(), x)
    torch.testing.assert_close(grad_fast, grad)
