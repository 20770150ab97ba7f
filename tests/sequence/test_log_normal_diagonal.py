"""LLN+Diag (arXiv:2311.13541): the block-diagonal softmax part on a hand case, its fast form against its masked
reference (also mid-block with a cache), the layer as the average of its two parts, and streaming split anywhere."""

from __future__ import annotations

import math

import pytest
import torch

import tokenmix
from tokenmix.sequence._heads import merge_heads, split_heads
from tokenmix.sequence.log_normal_attention import block_diagonal_attention


def _hand_case():
    # one batch element, one head, K = 1 (scale 1/√1 = 1): scores q_i·k_j = k_j since every q_i = 1
    q = torch.ones(1, 1, 3, 1, dtype=torch.float64)
    k = torch.tensor([0.0, math.log(3.0), 0.0], dtype=torch.float64).view(1, 1, 3, 1)
    v = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64).view(1, 1, 3, 1)
    return q, k, v


@pytest.mark.parametrize("impl", ["reference", "auto"])
def test_block_diagonal_on_a_hand_case(impl):
    q, k, v = _hand_case()
    # blocks of 2: {0, 1}, {2}. Causal: o_0 = v_0 = 1; o_1 = softmax(0, ln 3) = (1/4, 3/4) → 1/4 + 3/4·2 = 7/4;
    # o_2 = v_2 = 5 (alone in its block, it does not see tokens 0 and 1).
    o = block_diagonal_attention(q, k, v, 2, causal=True, impl=impl)
    torch.testing.assert_close(o.flatten(), torch.tensor([1.0, 1.75, 5.0], dtype=torch.float64))
    # non-causal: token 0 sees token 1 too
    o = block_diagonal_attention(q, k, v, 2, causal=False, impl=impl)
    torch.testing.assert_close(o.flatten(), torch.tensor([1.75, 1.75, 5.0], dtype=torch.float64))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length,block_size", [(1, 4), (7, 3), (12, 4), (13, 5), (5, 8), (9, 1)])
def test_block_diagonal_fast_equals_masked(causal, length, block_size):
    torch.manual_seed(length * 10 + block_size)
    q, k, v = (torch.randn(2, 3, length, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    expected = block_diagonal_attention(q, k, v, block_size, causal=causal, impl="reference")
    fast = block_diagonal_attention(q, k, v, block_size, causal=causal, impl="auto")
    torch.testing.assert_close(fast, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(expected)
    grads = torch.autograd.grad((expected * weights).sum(), (q, k, v))
    fast_grads = torch.autograd.grad((fast * weights).sum(), (q, k, v))
    for g, g_fast in zip(grads, fast_grads):
        torch.testing.assert_close(g_fast, g, rtol=1e-12, atol=1e-12)


def test_block_diagonal_with_a_cache_continues_the_block():
    """Split a sequence at every point: the cache of C - 1 tokens and the start position reproduce one call,
    in the fast form (uniform offsets) and in the masked form (each batch element at its own offset)."""
    torch.manual_seed(3)
    block, length = 4, 11
    q, k, v = (torch.randn(2, 2, length, 3, dtype=torch.float64) for _ in range(3))
    full = block_diagonal_attention(q, k, v, block, impl="reference")
    keep = block - 1
    for cut in range(length):
        cache_k = torch.nn.functional.pad(k[:, :, :cut], (0, 0, keep, 0))[:, :, -keep:]
        cache_v = torch.nn.functional.pad(v[:, :, :cut], (0, 0, keep, 0))[:, :, -keep:]
        start = torch.full((2,), cut)
        for impl in ("reference", "auto"):
            rest = block_diagonal_attention(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], block, cache_key=cache_k,
                                            cache_value=cache_v, start=start, impl=impl)
            torch.testing.assert_close(rest, full[:, :, cut:], rtol=1e-12, atol=1e-12)


def test_layer_is_the_average_of_lln_and_block_diagonal_softmax():
    torch.manual_seed(0)
    for causal in (True, False):
        diag = tokenmix.create("linear_lognormal_diag", 8, num_heads=2, block_size=3, causal=causal).double()
        plain = tokenmix.create("linear_lognormal", 8, num_heads=2, causal=causal).double()
        plain.load_state_dict(diag.state_dict())
        x = torch.randn(2, 10, 8, dtype=torch.float64)
        q, k, v = (split_heads(t, 2) for t in diag.qkv(x).chunk(3, dim=-1))
        lln = split_heads(torch.nn.functional.linear(plain(x), torch.linalg.inv(plain.out.weight)), 2)
        # the block-diagonal part by hand: softmax over the same block (and the past when causal)
        local = torch.zeros_like(v)
        for t in range(10):
            first = t - t % 3
            last = t + 1 if causal else min(first + 3, 10)
            weights = torch.softmax(q[:, :, t:t + 1] @ k[:, :, first:last].transpose(-1, -2) / math.sqrt(4), dim=-1)
            local[:, :, t] = (weights @ v[:, :, first:last])[:, :, 0]
        torch.testing.assert_close(diag(x), diag.out(merge_heads(0.5 * (lln + local))), rtol=1e-9, atol=1e-10)


def test_default_block_is_the_head_dim_and_the_state_is_bounded():
    mixer = tokenmix.create("linear_lognormal_diag", 32, num_heads=4)
    assert mixer.block_size == 8
    state = mixer.init_state(2)
    assert state["block_key"].shape == (2, 4, 7, 8) and state["block_value"].shape == (2, 4, 7, 8)
    with pytest.raises(tokenmix.MixerInputError, match="block_size"):
        tokenmix.create("linear_lognormal_diag", 32, block_size=0)


@pytest.mark.parametrize("impl", ["reference", "chunk", "recurrent", "auto"])
def test_streaming_split_at_many_points_equals_one_call(impl):
    torch.manual_seed(4)
    mixer = tokenmix.create("linear_lognormal_diag", 12, num_heads=3, block_size=5, chunk_size=4,
                            impl=impl).double()
    x = torch.randn(2, 23, 12, dtype=torch.float64)
    expected = mixer(x)
    for cuts in ([3], [5], [7, 8], [1, 2, 3, 10, 15, 22], list(range(1, 23))):
        state, pieces, edges = mixer.init_state(2), [], [0, *cuts, 23]
        for a, b in zip(edges[:-1], edges[1:]):
            y, state = mixer(x[:, a:b], state, return_state=True)
            pieces.append(y)
        torch.testing.assert_close(torch.cat(pieces, dim=1), expected, rtol=1e-10, atol=1e-10)


def test_streams_at_different_offsets_batched_together():
    """States of two streams at different positions inside their blocks, stacked into one batch, continue as
    each would alone (the masked form of the block-diagonal part)."""
    torch.manual_seed(5)
    mixer = tokenmix.create("linear_lognormal_diag", 8, num_heads=2, block_size=4).double()
    x = torch.randn(2, 15, 8, dtype=torch.float64)
    expected = mixer(x)
    _, first = mixer(x[:1, :6], return_state=True)
    _, second = mixer(x[1:, :5], return_state=True)
    _, second = mixer(x[1:, 5:6], second, return_state=True)
    _, first = mixer(x[:1, 6:7], first, return_state=True)
    # element 0 has seen 7 tokens, element 1 has seen 6: offsets 3 and 2 in blocks of 4
    state = {key: torch.cat([first[key], second[key]]) for key in first}
    assert state["position"].tolist() == [7, 6]
    y0, _ = mixer(torch.stack([x[0, 7:12], x[1, 6:11]]), state, return_state=True)
    torch.testing.assert_close(y0[0], expected[0, 7:12], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y0[1], expected[1, 6:11], rtol=1e-10, atol=1e-10)
