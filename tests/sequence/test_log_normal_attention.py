"""Linear Log-Normal attention (arXiv:2311.13541): the moment-matching formula, the layer against its quadratic
form, and the fast forms against the reference."""

from __future__ import annotations

import math

import torch

import tokenmix
from tokenmix.ops import feature_maps as fm
from tokenmix.sequence._heads import merge_heads, split_heads


def test_moment_matching_on_a_hand_case():
    # σ_q = 1, σ_k = 2: σ_q²σ_k² = 4, σ̃² = (4 + 0.35487039130661086) / (2 · 0.14855178144710912)
    #                                    = 4.35487039130661086 / 0.29710356289421824 = 14.65770...
    alpha, beta = fm.lognormal_moment_matching(torch.tensor(1.0, dtype=torch.float64),
                                               torch.tensor(2.0, dtype=torch.float64))
    tilde = math.sqrt(4.35487039130661086 / 0.29710356289421824)
    assert abs(tilde ** 2 - 14.6577) < 1e-4
    torch.testing.assert_close(alpha, torch.tensor(tilde, dtype=torch.float64))      # α = σ̃ / 1
    torch.testing.assert_close(beta, torch.tensor(tilde / 2.0, dtype=torch.float64))  # β = σ̃ / 2
    # ασ_q = βσ_k: both sides get the same log-variance share
    alpha, beta = fm.lognormal_moment_matching(torch.tensor(0.5), torch.tensor(3.0))
    torch.testing.assert_close(alpha * 0.5, beta * 3.0)


def test_moment_matching_makes_the_log_variance_softmax_like():
    """The point of the formula: log(exp(αq)ᵀexp(βk)) has about the variance σ_q²σ_k² of qᵀk/√d (d = 64),
    over two orders of magnitude of σ_q σ_k, where exp(q)ᵀexp(k) misses it 5-25×. The paper's a, b are a linear
    fit of a curve, so the match is approximate: the ratio measured here is 0.80-1.17, asserted within 25%."""
    generator = torch.Generator().manual_seed(0)
    d = 64
    for sigma_q, sigma_k in [(1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (1.5, 1.5), (2.0, 2.0), (3.0, 3.0), (1.0, 25.0)]:
        q = torch.randn(200, d, generator=generator, dtype=torch.float64) * sigma_q
        k = torch.randn(200, d, generator=generator, dtype=torch.float64) * sigma_k
        target = (sigma_q * sigma_k) ** 2
        alpha, beta = fm.lognormal_moment_matching(sigma_q, sigma_k)
        matched = torch.logsumexp((alpha * q)[:, None, :] + (beta * k)[None, :, :], dim=-1).var(dim=1).mean()
        plain = torch.logsumexp(q[:, None, :] + k[None, :, :], dim=-1).var(dim=1).mean()
        assert 0.75 < matched.item() / target < 1.25, (sigma_q, sigma_k, matched.item(), target)
        assert plain.item() / target < 0.25


def _deviation(x: torch.Tensor) -> torch.Tensor:
    return (x.pow(2).mean() - x.mean().pow(2) + 1e-6).sqrt()


def test_layer_equals_its_quadratic_form():
    torch.manual_seed(0)
    for causal in (True, False):
        mixer = tokenmix.create("linear_lognormal", 8, num_heads=2, causal=causal, impl="chunk",
                                chunk_size=4).double()
        x = torch.randn(2, 7, 8, dtype=torch.float64)
        q, k, v = (split_heads(t, 2) for t in mixer.qkv(x).chunk(3, dim=-1))
        o = torch.zeros_like(v)
        for b in range(2):
            for h in range(2):
                for t in range(7):
                    end = t + 1 if causal else 7
                    # statistics of this element and head: the prefix when causal, the whole sequence otherwise
                    weights = []
                    for s in range(end):
                        seen_q = q[b, h, : (t if causal else 6) + 1]
                        seen_k_at_t = k[b, h, : (t if causal else 6) + 1]
                        alpha, _ = fm.lognormal_moment_matching(_deviation(seen_q), _deviation(seen_k_at_t))
                        seen = slice(0, (s if causal else 6) + 1)
                        _, beta = fm.lognormal_moment_matching(_deviation(q[b, h, seen]), _deviation(k[b, h, seen]))
                        weights.append(torch.exp(alpha * q[b, h, t]) @ torch.exp(beta * k[b, h, s]))
                    weights = torch.stack(weights)
                    o[b, h, t] = weights @ v[b, h, :end] / weights.sum()
        # the op's eps (1e-6) is added to a denominator rescaled by the max shifts, hence the tolerance
        torch.testing.assert_close(mixer(x), mixer.out(merge_heads(o)), rtol=1e-5, atol=1e-7)


def test_fast_forms_equal_reference_and_streaming_carries_the_moments():
    torch.manual_seed(1)
    reference = tokenmix.create("linear_lognormal", 12, num_heads=3, impl="reference").double()
    x = torch.randn(2, 21, 12, dtype=torch.float64)
    expected = reference(x)
    for impl in ("recurrent", "chunk"):
        fast = tokenmix.create("linear_lognormal", 12, num_heads=3, impl=impl, chunk_size=8).double()
        fast.load_state_dict(reference.state_dict())
        torch.testing.assert_close(fast(x), expected, rtol=1e-10, atol=1e-12)
        state = fast.init_state(2)
        pieces = []
        for cut in ((0, 5), (5, 6), (6, 21)):  # split anywhere: the prefix moments continue exactly
            y, state = fast(x[:, cut[0]:cut[1]], state, return_state=True)
            pieces.append(y)
        torch.testing.assert_close(torch.cat(pieces, dim=1), expected, rtol=1e-10, atol=1e-12)
        assert int(state["position"][0]) == 21
