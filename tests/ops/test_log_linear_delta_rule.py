"""Log-Linear Gated DeltaNet's op (arXiv:2506.04761, Sec. 3.3): the hierarchical mask over the gated delta rule's
attention matrix, checked against explicit transition products, then `recurrent` and `chunk` against `reference`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmix import MixerInputError
from tokenmix.ops.delta_rule import delta_rule
from tokenmix.ops.log_linear_attention import fenwick_level, log_linear_delta_rule

B, H = 2, 2


def inputs(length: int, num_levels: int, key_dim: int = 3, value_dim: int = 2):
    q = torch.randn(B, H, length, key_dim, dtype=torch.float64)
    k = F.normalize(torch.randn(B, H, length, key_dim, dtype=torch.float64), dim=-1)
    v = torch.randn(B, H, length, value_dim, dtype=torch.float64)
    beta = torch.rand(B, H, length, dtype=torch.float64)
    lam = torch.rand(B, H, length, num_levels, dtype=torch.float64)
    g = -torch.rand(B, H, length, dtype=torch.float64)
    return q, k, v, beta, lam, g


def test_reference_is_the_masked_gated_delta_attention_matrix():
    """o_t = Σ_{s≤t} λ_t^(ℓ(t,s)) β_s q_tᵀ A_t ⋯ A_{s+1} k_s v_s with A_r = a_r (I - β_r k_r k_rᵀ), products
    formed explicitly here."""
    length, num_levels, key_dim = 9, 4, 3
    q, k, v, beta, lam, g = inputs(length, num_levels, key_dim)
    o = log_linear_delta_rule(q, k, v, beta, lam, g, impl="reference", scale=1.0)
    eye = torch.eye(key_dim, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            transition = [g[b, h, r].exp() * (eye - beta[b, h, r] * torch.outer(k[b, h, r], k[b, h, r]))
                          for r in range(length)]
            for t in range(length):
                expected = torch.zeros(v.shape[-1], dtype=torch.float64)
                for s in range(t + 1):
                    phi = eye
                    for r in range(s + 1, t + 1):
                        phi = transition[r] @ phi
                    level = int(fenwick_level(torch.tensor(t), torch.tensor(s), num_levels))
                    weight = lam[b, h, t, level] * beta[b, h, s] * (q[b, h, t] @ phi @ k[b, h, s])
                    expected = expected + weight * v[b, h, s]
                torch.testing.assert_close(o[b, h, t], expected, rtol=1e-12, atol=1e-12)


def test_equal_level_weights_give_gated_deltanet():
    q, k, v, beta, lam, g = inputs(19, 5)
    expected = delta_rule(q, k, v, beta, g, impl="recurrent")
    for impl in ("reference", "recurrent", "chunk"):
        o = log_linear_delta_rule(q, k, v, beta, torch.ones_like(lam), g, impl=impl, chunk_size=4)
        torch.testing.assert_close(o, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length,num_levels,start",
                         [(1, 3, 0), (7, 3, 0), (13, 5, 5), (20, 2, 8), (33, 6, 3), (37, 4, 0), (40, 7, 16)])
def test_recurrent_equals_reference_with_initial_state(length, num_levels, start):
    q, k, v, beta, lam, g = inputs(length, num_levels)
    initial = torch.randn(B, H, num_levels, 3, 2, dtype=torch.float64)
    o_ref, s_ref = log_linear_delta_rule(q, k, v, beta, lam, g, impl="reference", start=start,
                                         initial_state=initial, return_state=True)
    o_rec, s_rec = log_linear_delta_rule(q, k, v, beta, lam, g, impl="recurrent", start=start,
                                         initial_state=initial, return_state=True)
    torch.testing.assert_close(o_rec, o_ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(s_rec, s_ref, rtol=1e-11, atol=1e-12)
    for chunk_size in (4, 8, 6):  # 6 runs as chunks of 4, the largest power of two ≤ 6
        o_chunk, s_chunk = log_linear_delta_rule(q, k, v, beta, lam, g, impl="chunk", start=start,
                                                 initial_state=initial, return_state=True, chunk_size=chunk_size)
        torch.testing.assert_close(o_chunk, o_ref, rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(s_chunk, s_ref, rtol=1e-11, atol=1e-12)


def test_splitting_anywhere_continues_exactly():
    length, num_levels = 23, 5
    q, k, v, beta, lam, g = inputs(length, num_levels)
    whole = log_linear_delta_rule(q, k, v, beta, lam, g, impl="reference")
    for cuts in ([0, 1, 23], [0, 4, 11, 23], [0, 8, 16, 23], [0, 22, 23], [0, 3, 9, 10, 23], [0, 5, 13, 23]):
        state, pieces = None, []
        for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
            impl = ("chunk", "recurrent", "reference")[i % 3]
            part = (t[:, :, lo:hi] for t in (q, k, v, beta, lam, g))
            o, state = log_linear_delta_rule(*part, impl=impl, start=lo, initial_state=state, return_state=True,
                                             chunk_size=4)
            pieces.append(o)
        torch.testing.assert_close(torch.cat(pieces, dim=2), whole, rtol=1e-11, atol=1e-12)


def test_gradients_agree():
    q, k, v, beta, lam, g = (t.requires_grad_() for t in inputs(11, 4))
    weights = torch.randn(B, H, 11, 2, dtype=torch.float64)
    grads = []
    for impl in ("reference", "recurrent", "chunk"):
        o = log_linear_delta_rule(q, k, v, beta, lam, g, impl=impl, chunk_size=4)
        grads.append(torch.autograd.grad((o * weights).sum(), (q, k, v, beta, lam, g)))
    for fast in grads[1:]:
        for a, b in zip(grads[0], fast):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_bad_inputs():
    q, k, v, beta, lam, g = inputs(5, 3)
    with pytest.raises(MixerInputError, match="beta"):
        log_linear_delta_rule(q, k, v, beta[..., :4], lam, g)
    with pytest.raises(MixerInputError, match="impl"):
        log_linear_delta_rule(q, k, v, beta, lam, g, impl="scan")
    with pytest.raises(MixerInputError, match="chunk_size"):
        log_linear_delta_rule(q, k, v, beta, lam, g, chunk_size=0)
    with pytest.raises(MixerInputError, match="initial_state"):
        log_linear_delta_rule(q, k, v, beta, lam, g, initial_state=torch.zeros(B, H, 2, 3, 2))
