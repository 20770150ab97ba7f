"""The decayed linear-attention op: hand-checked small cases, then every form against `reference`."""

from __future__ import annotations

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops.linear_attention import linear_attention

B, H = 2, 3


def inputs(length: int, key_dim: int = 5, value_dim: int = 7, dtype=torch.float64):
    q = torch.randn(B, H, length, key_dim, dtype=dtype)
    k = torch.randn(B, H, length, key_dim, dtype=dtype)
    v = torch.randn(B, H, length, value_dim, dtype=dtype)
    return q, k, v


def decays(kind: str, length: int, key_dim: int, strength: float):
    """Log-decays of every accepted form; `strength` is the typical -log a per token."""
    if kind == "none":
        return None
    if kind == "head":
        return -strength * torch.rand(H, dtype=torch.float64)
    if kind == "token":
        return -strength * torch.rand(B, H, length, dtype=torch.float64)
    return -strength * torch.rand(B, H, length, key_dim, dtype=torch.float64)


def test_hand_checked_scalar_decay():
    # One head, K = V = 1, q = k = 1, v = (1, 2, 3), a = 1/2: S_1 = 1, S_2 = 1/2 + 2, S_3 = 5/4 + 3.
    ones = torch.ones(1, 1, 3, 1, dtype=torch.float64)
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 1, 3, 1)
    expected = torch.tensor([1.0, 2.5, 4.25], dtype=torch.float64).view(1, 1, 3, 1)
    for impl in ("reference", "recurrent", "chunk", "scan"):
        o, state = linear_attention(ones, ones, v, torch.tensor([0.5]).log(), scale=1.0, impl=impl,
                                    return_state=True, chunk_size=2)
        torch.testing.assert_close(o, expected)
        torch.testing.assert_close(state.flatten(), torch.tensor([4.25], dtype=torch.float64))


def test_hand_checked_vector_decay_and_normalizer():
    # K = 2 with decays (1, 0): channel 0 accumulates, channel 1 forgets everything but the current token.
    q = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64).view(1, 1, 2, 2)
    k = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).view(1, 1, 2, 2)
    v = torch.tensor([[1.0], [10.0]], dtype=torch.float64).view(1, 1, 2, 1)
    log_decay = torch.tensor([0.0, -torch.inf]).expand(1, 1, 2, 2).clone().double()
    log_decay[..., 1] = -50.0  # effectively zero, kept finite
    # t=1: S = [[1], [2]] -> o = 3; z = (1, 2) -> q·z = 3.  t=2: S = [[1 + 30], [40]] -> o = 71; z = (4, 4) -> 8.
    for impl in ("reference", "recurrent", "chunk", "scan"):
        o = linear_attention(q, k, v, log_decay, scale=1.0, impl=impl, chunk_size=1)
        torch.testing.assert_close(o.flatten(), torch.tensor([3.0, 71.0], dtype=torch.float64))
        o = linear_attention(q, k, v, log_decay, scale=1.0, impl=impl, normalize=True, eps=0.0)
        torch.testing.assert_close(o.flatten(), torch.tensor([1.0, 71.0 / 8.0], dtype=torch.float64))


DECAY_CASES = [("none", 0.0)] + [(kind, strength) for kind in ("head", "token", "vector") for strength in (0.05, 20.0)]


@pytest.mark.parametrize("kind,strength", DECAY_CASES)
@pytest.mark.parametrize("length,chunk_size", [(1, 16), (7, 16), (37, 16), (50, 32), (64, 16)])
@pytest.mark.parametrize("with_state", [False, True])
def test_forms_equal_reference(kind, strength, length, chunk_size, with_state):
    key_dim = 6
    q, k, v = inputs(length, key_dim=key_dim)
    g = decays(kind, length, key_dim, strength)
    state = torch.randn(B, H, key_dim, 7, dtype=torch.float64) if with_state else None
    expected, expected_state = linear_attention(q, k, v, g, impl="reference", initial_state=state,
                                                return_state=True)
    for impl in ("recurrent", "chunk", "scan"):
        o, final = linear_attention(q, k, v, g, impl=impl, initial_state=state, return_state=True,
                                    chunk_size=chunk_size)
        torch.testing.assert_close(o, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(final, expected_state, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["head", "vector"])
def test_chunk_gradients_equal_reference(kind):
    length, key_dim = 41, 5
    q, k, v = (t.requires_grad_() for t in inputs(length, key_dim=key_dim))
    g = decays(kind, length, key_dim, 2.0).requires_grad_()
    state = torch.randn(B, H, key_dim, 7, dtype=torch.float64, requires_grad=True)
    leaves = (q, k, v, g, state)
    grads = {}
    for impl in ("reference", "recurrent", "chunk", "scan"):
        o, final = linear_attention(q, k, v, g, impl=impl, initial_state=state, return_state=True,
                                    chunk_size=32, normalize=False)
        grads[impl] = torch.autograd.grad((o.sin().sum() + final.cos().sum()), leaves)
    for impl in ("recurrent", "chunk", "scan"):
        for got, want in zip(grads[impl], grads["reference"]):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_strong_decay_is_stable_in_float32():
    # log a = -30 per token: exp(+30 * chunk) would overflow a naive chunked form; ours takes no positive exponent.
    length, key_dim = 128, 8
    q, k, v = inputs(length, key_dim=key_dim, dtype=torch.float32)
    g = torch.full((B, H, length, key_dim), -30.0)
    o = linear_attention(q, k, v, g, impl="chunk", chunk_size=64)
    assert torch.isfinite(o).all()
    # with a ≈ 0 the state holds only the current token: o_t = (q_t · k_t) v_t * scale
    expected = (q * k).sum(-1, keepdim=True) * v * key_dim ** -0.5
    torch.testing.assert_close(o, expected, rtol=1e-5, atol=1e-5)


def _spy_sub_chunks(monkeypatch) -> list[int]:
    """Record how many chunks take the exact sub-chunk form of a vector decay."""
    from tokenmix.ops import linear_attention as module

    rows: list[int] = []
    exact = module._intra_vector_sub_chunks

    def spy(q, k, b):
        rows.append(q.shape[0])
        return exact(q, k, b)

    monkeypatch.setattr(module, "_intra_vector_sub_chunks", spy)
    return rows


def test_vector_decay_chunks_past_the_factored_span_take_the_exact_form(monkeypatch):
    # chunks 1 and 3 of batch 0 decay by 50 per token (span 800 > FACTORED_SPAN[float64] = 600), the rest by ≤ 0.1:
    # the two forms meet in one call, forward and backward equal the reference
    rows = _spy_sub_chunks(monkeypatch)
    length, key_dim, chunk = 64, 5, 16
    q, k, v = (t.requires_grad_() for t in inputs(length, key_dim=key_dim))
    g = -0.1 * torch.rand(B, H, length, key_dim, dtype=torch.float64)
    g[0, :, 16:32] = -50.0
    g[0, 1, 48:] = -50.0
    g.requires_grad_()
    state = torch.randn(B, H, key_dim, 7, dtype=torch.float64, requires_grad=True)
    results = {}
    for impl in ("reference", "chunk"):
        o, final = linear_attention(q, k, v, g, impl=impl, initial_state=state, return_state=True, chunk_size=chunk)
        results[impl] = (o, final, *torch.autograd.grad(o.sin().sum() + final.cos().sum(), (q, k, v, g, state)))
    for got, want in zip(results["chunk"], results["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    assert rows == [H + 1]  # chunk 1 of each head of batch 0, and chunk 3 of head 1


def test_factored_vector_decay_keeps_float32_precision_near_its_span_limit(monkeypatch):
    # every chunk spans ~55 nats (just under FACTORED_SPAN[float32] = 60): exp(-b_j) reaches e^55 ≈ 8e23, yet each
    # product q_i k_j exp(b_i - b_j) is formed from normal floats, so float32 stays within its rounding of float64
    rows = _spy_sub_chunks(monkeypatch)
    length, key_dim, chunk = 128, 8, 64
    q, k, v = inputs(length, key_dim=key_dim)
    g = -(55.0 / chunk) * (0.9 + 0.2 * torch.rand(B, H, length, key_dim, dtype=torch.float64)).clamp(max=1.0)
    weights = torch.randn(B, H, length, 7, dtype=torch.float64)

    def output_and_gradients(dtype, impl):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v, g)]
        o = linear_attention(*leaves, impl=impl, chunk_size=chunk)
        return [o, *torch.autograd.grad((o * weights.to(dtype)).sum(), leaves)]

    expected = output_and_gradients(torch.float64, "reference")
    got = output_and_gradients(torch.float32, "chunk")
    assert rows == []
    # float32 rounding (6e-8) of sums of ~64 terms: 1e-5 of the largest entry is ~100 roundings (measured 1.4e-6
    # for the log-decay's gradient, a sum over the chunk of products of e^{±55}-scaled factors)
    for got_t, expected_t in zip(got, expected):
        expected_t = expected_t.detach()
        torch.testing.assert_close(got_t.detach().double(), expected_t, rtol=0, atol=1e-5 * float(expected_t.abs().max()))


def test_normalizer_matches_explicit_ratio():
    q, k, v = (t.abs() + 0.1 for t in inputs(23))
    g = decays("token", 23, 5, 0.5)
    for impl in ("reference", "recurrent", "chunk", "scan"):
        o = linear_attention(q, k, v, g, impl=impl, normalize=True, eps=0.0, chunk_size=8)
        numerator = linear_attention(q, k, v, g, impl="reference")
        denominator = linear_attention(q, k, torch.ones_like(v[..., :1]), g, impl="reference")
        torch.testing.assert_close(o, numerator / denominator, rtol=1e-10, atol=1e-10)


def test_non_causal_is_the_global_sum():
    q, k, v = inputs(11)
    expected = (q @ k.transpose(-1, -2) * 5 ** -0.5) @ v
    for impl in ("reference", "recurrent", "chunk", "scan"):
        torch.testing.assert_close(linear_attention(q, k, v, causal=False, impl=impl), expected)


def test_state_continues_across_calls():
    q, k, v = inputs(30)
    g = decays("vector", 30, 5, 1.0)
    full = linear_attention(q, k, v, g, impl="chunk", chunk_size=8)
    first, state = linear_attention(q[:, :, :13], k[:, :, :13], v[:, :, :13], g[:, :, :13], return_state=True)
    second = linear_attention(q[:, :, 13:], k[:, :, 13:], v[:, :, 13:], g[:, :, 13:], initial_state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=2), full, rtol=1e-10, atol=1e-10)


def test_half_precision_accumulates_in_float32():
    q, k, v = inputs(40, dtype=torch.float64)
    g = decays("vector", 40, 5, 0.5)
    exact = linear_attention(q, k, v, g, impl="reference")
    o, state = linear_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), g.bfloat16(), impl="chunk",
                                chunk_size=16, return_state=True)
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32
    # inputs rounded to bf16 (relative 2^-9) carry ~1% error through sums of 40 terms
    assert (o.double() - exact).abs().max() <= 0.02 * exact.abs().max()


def test_bad_arguments_raise():
    q, k, v = inputs(5)
    with pytest.raises(MixerInputError, match="impl"):
        linear_attention(q, k, v, impl="fast")
    with pytest.raises(MixerInputError, match="log_decay"):
        linear_attention(q, k, v, torch.zeros(4))
    with pytest.raises(MixerInputError, match="initial_state"):
        linear_attention(q, k, v, initial_state=torch.zeros(1))
    with pytest.raises(MixerInputError, match="chunk_size"):
        linear_attention(q, k, v, chunk_size=0)
    with pytest.raises(MixerInputError, match="floating"):
        linear_attention(q.long(), k, v)
    with pytest.raises(MixerInputError, match="causal=False"):
        linear_attention(q, k, v, torch.zeros(H), causal=False)
