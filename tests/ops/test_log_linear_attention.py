"""The log-linear attention op: the Fenwick levels by their definition, the reference against explicit buckets,
then `recurrent` against `reference` at awkward shapes, split points and level caps."""

from __future__ import annotations

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops.linear_attention import linear_attention
from tokenmix.ops.log_linear_attention import fenwick_level, log_linear_attention

B, H = 2, 2


def inputs(length: int, num_levels: int, key_dim: int = 3, value_dim: int = 2, strength: float = 1.0):
    q, k = (torch.randn(B, H, length, key_dim, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, length, value_dim, dtype=torch.float64)
    lam = torch.rand(B, H, length, num_levels, dtype=torch.float64)
    g = -strength * torch.rand(B, H, length, dtype=torch.float64)
    return q, k, v, lam, g


def fenwick_buckets(t: int) -> list[list[int]]:
    """Fenwick partition of [0, t]: the token itself, then [u - lowbit(u), u) for u = t, t - lowbit(t), ..."""
    buckets, u = [[t]], t
    while u > 0:
        low = u & -u
        buckets.append(list(range(u - low, u)))
        u -= low
    return buckets


def test_levels_are_the_fenwick_partition():
    for t in range(40):
        for bucket in fenwick_buckets(t):
            levels = {int(fenwick_level(torch.tensor(t), torch.tensor(s), 10)) for s in bucket}
            assert len(levels) == 1                                     # one level per bucket
            (level,) = levels
            assert len(bucket) == (1 if level == 0 else 2 ** (level - 1))


def test_levels_on_hand_cases():
    """Log-Linear Attention (arXiv:2506.04761) Sec. 3.1: query t = 6 (110b) sees itself (level 0), the bucket
    {4, 5} (level 2, size 2) and {0..3} (level 3, size 4); level 1 is empty since bit 0 of 6 is 0. t = 13 (1101b):
    {13} 0, {12} 1, {8..11} 3, {0..7} 4, level 2 empty."""
    def levels(t):
        return [int(fenwick_level(torch.tensor(t), torch.tensor(s), 10)) for s in range(t + 1)]
    assert levels(6) == [3, 3, 3, 3, 2, 2, 0]
    assert levels(13) == [4] * 8 + [3] * 4 + [1, 0]
    assert int(fenwick_level(torch.tensor(13), torch.tensor(0), 3)) == 2    # capped at num_levels - 1


def test_reference_equals_explicit_buckets():
    length, num_levels = 13, 5
    q, k, v, lam, g = inputs(length, num_levels)
    o = log_linear_attention(q, k, v, lam, g, impl="reference", scale=1.0)
    c = g.cumsum(2)
    for t in range(length):
        expected = 0
        for bucket in fenwick_buckets(t):
            level = int(fenwick_level(torch.tensor(t), torch.tensor(bucket[0]), num_levels))
            for s in bucket:
                weight = lam[:, :, t, level] * (c[:, :, t] - c[:, :, s]).exp() * (q[:, :, t] * k[:, :, s]).sum(-1)
                expected = expected + weight[..., None] * v[:, :, s]
        torch.testing.assert_close(o[:, :, t], expected, rtol=1e-12, atol=1e-12)


def test_one_level_is_decayed_linear_attention():
    q, k, v, lam, g = inputs(21, 1)
    for impl in ("reference", "recurrent", "chunk"):
        o = log_linear_attention(q, k, v, torch.ones_like(lam), g, impl=impl, chunk_size=4)
        torch.testing.assert_close(o, linear_attention(q, k, v, g, impl="reference"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length,num_levels", [(1, 4), (7, 4), (37, 2), (37, 7), (64, 8)])
@pytest.mark.parametrize("strength", [0.05, 20.0])
@pytest.mark.parametrize("start", [0, 5, 16])
@pytest.mark.parametrize("with_state", [False, True])
def test_forms_equal_reference(length, num_levels, strength, start, with_state):
    q, k, v, lam, g = inputs(length, num_levels, strength=strength)
    state = torch.randn(B, H, num_levels, 3, 2, dtype=torch.float64) if with_state else None
    expected, expected_state = log_linear_attention(q, k, v, lam, g, impl="reference", start=start,
                                                    initial_state=state, return_state=True)
    for impl, chunk_size in (("recurrent", 64), ("chunk", 8), ("chunk", 6), ("chunk", 1), ("chunk", 32)):
        o, final = log_linear_attention(q, k, v, lam, g, impl=impl, start=start, initial_state=state,
                                        return_state=True, chunk_size=chunk_size)
        torch.testing.assert_close(o, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(final, expected_state, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["reference", "recurrent", "chunk"])
def test_splitting_anywhere_continues_exactly(impl):
    length, num_levels = 30, 4                                          # 30 > 2^3: the top level is shared
    q, k, v, lam, g = inputs(length, num_levels)
    full = log_linear_attention(q, k, v, lam, g, impl="reference")
    for cut in (1, 2, 7, 8, 9, 16, 29):
        first, state = log_linear_attention(q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], lam[:, :, :cut],
                                            g[:, :, :cut], impl=impl, return_state=True, chunk_size=4)
        second = log_linear_attention(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], lam[:, :, cut:], g[:, :, cut:],
                                      impl=impl, start=cut, initial_state=state, chunk_size=4)
        torch.testing.assert_close(torch.cat([first, second], dim=2), full, rtol=1e-10, atol=1e-10)


def test_gradients_equal_reference():
    q, k, v, lam, g = (t.requires_grad_() for t in inputs(19, 4, strength=2.0))
    state = torch.randn(B, H, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    leaves = (q, k, v, lam, g, state)
    grads = {}
    for impl in ("reference", "recurrent", "chunk"):
        o, final = log_linear_attention(q, k, v, lam, g, impl=impl, start=3, initial_state=state, return_state=True,
                                        chunk_size=4)
        grads[impl] = torch.autograd.grad(o.sin().sum() + final.cos().sum(), leaves)
    for impl in ("recurrent", "chunk"):
        for got, want in zip(grads[impl], grads["reference"]):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_bad_arguments_raise():
    q, k, v, lam, g = inputs(5, 3)
    with pytest.raises(MixerInputError, match="impl"):
        log_linear_attention(q, k, v, lam, g, impl="chunky")
    with pytest.raises(MixerInputError, match="log_decay"):
        log_linear_attention(q, k, v, lam, g[..., :2])
    with pytest.raises(MixerInputError, match="start"):
        log_linear_attention(q, k, v, lam, g, start=-1)
    with pytest.raises(MixerInputError, match="initial_state"):
        log_linear_attention(q, k, v, lam, g, initial_state=torch.zeros(1))
    with pytest.raises(MixerInputError, match="chunk_size"):
        log_linear_attention(q, k, v, lam, g, chunk_size=0)
    with pytest.raises(MixerInputError, match="agree"):
        log_linear_attention(q, k, v, lam[:, :, :2], g)
