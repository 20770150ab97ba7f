"""The linear-attention op's exponential input gate with its stabilizer (mLSTM, arXiv:2405.04517):
an explicit unstabilized formula, then every form against `reference` at awkward shapes."""

from __future__ import annotations

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops.linear_attention import linear_attention

B, H = 2, 3


def inputs(length: int, key_dim: int = 5, value_dim: int = 4, dtype=torch.float64):
    return (torch.randn(B, H, length, key_dim, dtype=dtype), torch.randn(B, H, length, key_dim, dtype=dtype),
            torch.randn(B, H, length, value_dim, dtype=dtype))


def gates(kind: str, length: int, strength: float):
    """(log_decay, log_input_gate): the input gate spans ±strength, so exp of it may be huge or tiny."""
    log_input = strength * (2 * torch.rand(B, H, length, dtype=torch.float64) - 1)
    if kind == "none":
        return None, log_input
    if kind == "head":
        return -strength * torch.rand(H, dtype=torch.float64), log_input
    return torch.nn.functional.logsigmoid(strength * torch.randn(B, H, length, dtype=torch.float64)), log_input


def explicit(q, k, v, log_decay, log_input, state, m0, normalize):
    """Unstabilized: C_t = a_t C_{t-1} + i_t k vᵀ, n_t likewise, h_t = C_tᵀq / max(|n_tᵀq|, 1) (or n_tᵀq + eps)."""
    q = q * q.shape[-1] ** -0.5
    length = q.shape[2]
    g = torch.zeros(B, H, length, dtype=q.dtype) if log_decay is None else log_decay.expand(B, H, length) \
        if log_decay.ndim == 3 else log_decay.view(1, H, 1).expand(B, H, length)
    C = torch.zeros(B, H, q.shape[-1], v.shape[-1] + 1, dtype=q.dtype)
    if state is not None:
        C = state * m0.exp()[..., None, None]
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    out = []
    for t in range(length):
        C = g[:, :, t, None, None].exp() * C + log_input[:, :, t, None, None].exp() * k[:, :, t, :, None] * \
            v1[:, :, t, None, :]
        o = (q[:, :, t, :, None] * C).sum(-2)
        den = o[..., -1:]
        out.append(o[..., :-1] / (den.abs().clamp_min(1.0) if normalize == "max" else den + 1e-6))
    return torch.stack(out, dim=2)


@pytest.mark.parametrize("normalize", ["max", "sum"])
@pytest.mark.parametrize("with_state", [False, True])
def test_reference_equals_the_unstabilized_recurrence(normalize, with_state):
    length = 13
    q, k, v = inputs(length)
    log_decay, log_input = gates("token", length, 3.0)
    state = m0 = None
    if with_state:
        state, m0 = torch.randn(B, H, 5, 5, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    o = linear_attention(q, k, v, log_decay, log_input_gate=log_input, normalize=normalize, impl="reference",
                         initial_state=None if state is None else (state, m0))
    m0 = torch.zeros(B, H, dtype=torch.float64) if m0 is None else m0
    torch.testing.assert_close(o, explicit(q, k, v, log_decay, log_input, state, m0, normalize),
                               rtol=1e-10, atol=1e-10)


def test_stabilizer_is_the_papers_recurrence():
    length = 9
    q, k, v = inputs(length)
    log_decay, log_input = gates("token", length, 5.0)
    _, (_, m) = linear_attention(q, k, v, log_decay, log_input_gate=log_input, normalize="max",
                                 impl="reference", return_state=True)
    expected = torch.zeros(B, H, dtype=torch.float64)
    for t in range(length):
        expected = torch.maximum(log_decay[:, :, t] + expected, log_input[:, :, t])
    torch.testing.assert_close(m, expected, rtol=1e-12, atol=1e-12)


CASES = [(kind, strength) for kind in ("none", "head", "token") for strength in (0.5, 30.0)]


@pytest.mark.parametrize("kind,strength", CASES)
@pytest.mark.parametrize("length,chunk_size", [(1, 8), (7, 8), (37, 8), (32, 16)])
@pytest.mark.parametrize("with_state", [False, True])
def test_forms_equal_reference(kind, strength, length, chunk_size, with_state):
    q, k, v = inputs(length, key_dim=6, value_dim=3)
    log_decay, log_input = gates(kind, length, strength)
    state = None
    if with_state:
        state = (torch.randn(B, H, 6, 4, dtype=torch.float64), strength * torch.randn(B, H, dtype=torch.float64))
    expected, (expected_state, expected_m) = linear_attention(
        q, k, v, log_decay, log_input_gate=log_input, normalize="max", impl="reference", initial_state=state,
        return_state=True)
    assert torch.isfinite(expected).all()
    for impl in ("recurrent", "chunk"):
        o, (final, m) = linear_attention(q, k, v, log_decay, log_input_gate=log_input, normalize="max", impl=impl,
                                         initial_state=state, return_state=True, chunk_size=chunk_size)
        torch.testing.assert_close(o, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(final, expected_state, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(m, expected_m, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("normalize", ["max", "sum"])
def test_gradients_equal_reference(normalize):
    length = 29
    q, k, v = (t.requires_grad_() for t in inputs(length))
    log_decay, log_input = (t.requires_grad_() for t in gates("token", length, 4.0))
    state = torch.randn(B, H, 5, 5, dtype=torch.float64, requires_grad=True)
    m0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    leaves = (q, k, v, log_decay, log_input, state, m0)
    grads = {}
    for impl in ("reference", "recurrent", "chunk"):
        o, (final, m) = linear_attention(q, k, v, log_decay, log_input_gate=log_input, normalize=normalize,
                                         impl=impl, initial_state=(state, m0), return_state=True, chunk_size=8)
        loss = o.sin().sum() + (final * m.exp()[..., None, None]).cos().sum()
        grads[impl] = torch.autograd.grad(loss, leaves)
    for impl in ("recurrent", "chunk"):
        for got, want in zip(grads[impl], grads["reference"]):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_gradcheck_chunk():
    q, k, v = (t.requires_grad_() for t in inputs(5, key_dim=2, value_dim=2))
    log_decay, log_input = (t.requires_grad_() for t in gates("token", 5, 2.0))

    def run(q, k, v, log_decay, log_input):
        return linear_attention(q, k, v, log_decay, log_input_gate=log_input, normalize="max", impl="chunk",
                                chunk_size=2)

    assert torch.autograd.gradcheck(run, (q, k, v, log_decay, log_input), eps=1e-6, atol=1e-6)


def test_huge_input_gates_are_stable_in_float32():
    # exp(200) overflows float32; the stabilized state never takes it
    length = 70
    q, k, v = inputs(length, dtype=torch.float32)
    q, k = q.abs() + 0.1, k.abs() + 0.1  # a denominator far from 0, so float32 is well-conditioned
    log_input = torch.full((B, H, length), 200.0)
    log_input[:, :, ::3] = -200.0
    log_decay = torch.full((B, H, length), -0.01)
    exact = linear_attention(q.double(), k.double(), v.double(), log_decay.double(),
                             log_input_gate=log_input.double(), normalize="max", impl="reference")
    for impl in ("recurrent", "chunk"):
        o, (state, m) = linear_attention(q, k, v, log_decay, log_input_gate=log_input, normalize="max",
                                         impl=impl, chunk_size=16, return_state=True)
        assert torch.isfinite(o).all() and torch.isfinite(state).all() and torch.isfinite(m).all()
        torch.testing.assert_close(o.double(), exact, rtol=1e-4, atol=1e-4)


def test_state_continues_across_calls():
    q, k, v = inputs(30)
    log_decay, log_input = gates("token", 30, 3.0)
    options = dict(normalize="max", impl="chunk", chunk_size=8)
    full = linear_attention(q, k, v, log_decay, log_input_gate=log_input, **options)
    for cut in (1, 8, 13, 29):
        first, state = linear_attention(q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], log_decay[:, :, :cut],
                                        log_input_gate=log_input[:, :, :cut], return_state=True, **options)
        second = linear_attention(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], log_decay[:, :, cut:],
                                  log_input_gate=log_input[:, :, cut:], initial_state=state, **options)
        torch.testing.assert_close(torch.cat([first, second], dim=2), full, rtol=1e-10, atol=1e-10)


def test_max_normalizer_without_input_gate():
    q, k, v = inputs(11)
    log_decay = gates("token", 11, 1.0)[0]
    numerator = linear_attention(q, k, v, log_decay, impl="reference")
    denominator = linear_attention(q, k, torch.ones_like(v[..., :1]), log_decay, impl="reference")
    for impl in ("reference", "recurrent", "chunk"):
        o = linear_attention(q, k, v, log_decay, normalize="max", impl=impl, chunk_size=4)
        torch.testing.assert_close(o, numerator / denominator.abs().clamp_min(1.0), rtol=1e-10, atol=1e-10)


def test_bad_arguments_raise():
    q, k, v = inputs(5)
    log_input = torch.zeros(B, H, 5, dtype=torch.float64)
    with pytest.raises(MixerInputError, match="normalizer"):
        linear_attention(q, k, v, log_input_gate=log_input)
    with pytest.raises(MixerInputError, match="normalize"):
        linear_attention(q, k, v, normalize="mean")
    with pytest.raises(MixerInputError, match="log_input_gate"):
        linear_attention(q, k, v, log_input_gate=log_input[:, :, :2], normalize="max")
    with pytest.raises(MixerInputError, match="scalar decay"):
        linear_attention(q, k, v, torch.zeros(B, H, 5, 5), log_input_gate=log_input, normalize="max")
    with pytest.raises(MixerInputError, match="scan"):
        linear_attention(q, k, v, log_input_gate=log_input, normalize="max", impl="scan")
    with pytest.raises(MixerInputError, match="pair"):
        linear_attention(q, k, v, log_input_gate=log_input, normalize="max", initial_state=torch.zeros(B, H, 5, 5))
    with pytest.raises(MixerInputError, match="stabilizer"):
        linear_attention(q, k, v, log_input_gate=log_input, normalize="max",
                         initial_state=(torch.zeros(B, H, 5, 5), torch.zeros(B)))


def test_bfloat16_accumulates_in_float32_over_a_long_sequence():
    # L = 4096, strong forget gates and input gates up to exp(±30): bf16 inputs, float32 state, bounded error
    length = 4096
    q, k, v = (t[:1, :1] for t in inputs(length))
    q, k = q.abs() + 0.1, k.abs() + 0.1
    log_decay = torch.nn.functional.logsigmoid(4.0 * torch.randn(1, 1, length, dtype=torch.float64))
    log_input = 30.0 * (2 * torch.rand(1, 1, length, dtype=torch.float64) - 1)
    half = [t.bfloat16() for t in (q, k, v, log_decay, log_input)]
    o, (state, m) = linear_attention(*half[:4], log_input_gate=half[4], normalize="max", impl="chunk",
                                     return_state=True)
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32 and torch.isfinite(o).all()
    # gates rounded to bf16 move exp(log i) by up to 2^-8 · 30 ≈ 12%, so compare with the rounded gates' result
    rounded = linear_attention(q, k, v, half[3].double(), log_input_gate=half[4].double(), normalize="max",
                               impl="chunk")
    assert (o.double() - rounded).abs().max() <= 0.02 * rounded.abs().max()
