"""The delta-rule op: hand-checked cases, then every form against `reference` at awkward shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmix import MixerInputError
from tokenmix.ops.delta_rule import delta_rule

B, H = 2, 3


def inputs(length: int, key_dim: int = 5, value_dim: int = 7, dtype=torch.float64, beta_max: float = 1.0):
    q = torch.randn(B, H, length, key_dim, dtype=dtype)
    k = F.normalize(torch.randn(B, H, length, key_dim, dtype=dtype), dim=-1)
    v = torch.randn(B, H, length, value_dim, dtype=dtype)
    beta = beta_max * torch.rand(B, H, length, dtype=dtype)
    return q, k, v, beta


def decays(kind: str, length: int, strength: float):
    if kind == "none":
        return None
    if kind == "head":
        return -strength * torch.rand(H, dtype=torch.float64)
    return -strength * torch.rand(B, H, length, dtype=torch.float64)


def test_beta_one_overwrites_the_value_of_a_key():
    # Orthonormal keys e_0, e_1, then e_0 again with β = 1: the memory of e_0 is replaced, e_1 kept.
    e = torch.eye(2, dtype=torch.float64)
    k = torch.stack([e[0], e[1], e[0]]).view(1, 1, 3, 2)
    v = torch.tensor([[1.0], [2.0], [5.0]], dtype=torch.float64).view(1, 1, 3, 1)
    q = torch.ones(1, 1, 3, 2, dtype=torch.float64)
    beta = torch.ones(1, 1, 3, dtype=torch.float64)
    for impl in ("reference", "recurrent", "chunk"):
        o, state = delta_rule(q, k, v, beta, scale=1.0, impl=impl, return_state=True, chunk_size=2)
        torch.testing.assert_close(o.flatten(), torch.tensor([1.0, 3.0, 7.0], dtype=torch.float64))
        torch.testing.assert_close(state.flatten(), torch.tensor([5.0, 2.0], dtype=torch.float64))


def test_scalar_case_by_hand():
    # K = V = 1, k = q = 1: S_t = a (1 - β) S_{t-1} + β v_t.  a = 1/2, β = 1/2, v = (2, 4), S_0 = 8:
    # S_1 = 0.25 * 8 + 1 = 3, S_2 = 0.25 * 3 + 2 = 2.75.
    ones = torch.ones(1, 1, 2, 1, dtype=torch.float64)
    v = torch.tensor([2.0, 4.0], dtype=torch.float64).view(1, 1, 2, 1)
    beta = torch.full((1, 1, 2), 0.5, dtype=torch.float64)
    state = torch.full((1, 1, 1, 1), 8.0, dtype=torch.float64)
    for impl in ("reference", "recurrent", "chunk"):
        o = delta_rule(ones, ones, v, beta, torch.tensor([0.5]).log(), scale=1.0, impl=impl, initial_state=state)
        torch.testing.assert_close(o.flatten(), torch.tensor([3.0, 2.75], dtype=torch.float64))


def test_reference_equals_explicit_product_of_transition_matrices():
    length, key_dim = 6, 3
    q, k, v, beta = inputs(length, key_dim=key_dim)
    g = decays("token", length, 0.5)
    state = torch.randn(B, H, key_dim, 7, dtype=torch.float64)
    eye = torch.eye(key_dim, dtype=torch.float64)
    transitions = g.exp()[..., None, None] * (eye - beta[..., None, None] * k.unsqueeze(-1) * k.unsqueeze(-2))
    expected, s = [], state
    for t in range(length):
        s = transitions[:, :, t] @ s + beta[:, :, t, None, None] * k[:, :, t, :, None] * v[:, :, t, None, :]
        expected.append((q[:, :, t, None, :] * key_dim ** -0.5 @ s).squeeze(-2))
    o, final = delta_rule(q, k, v, beta, g, impl="reference", initial_state=state, return_state=True)
    torch.testing.assert_close(o, torch.stack(expected, dim=2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, s, rtol=1e-12, atol=1e-12)


DECAY_CASES = [("none", 0.0), ("head", 0.05), ("head", 20.0), ("token", 0.05), ("token", 20.0)]


@pytest.mark.parametrize("kind,strength", DECAY_CASES)
@pytest.mark.parametrize("length,chunk_size", [(1, 16), (7, 16), (37, 16), (32, 8)])
@pytest.mark.parametrize("with_state", [False, True])
def test_forms_equal_reference(kind, strength, length, chunk_size, with_state):
    key_dim = 6
    q, k, v, beta = inputs(length, key_dim=key_dim)
    g = decays(kind, length, strength)
    state = torch.randn(B, H, key_dim, 7, dtype=torch.float64) if with_state else None
    expected, expected_state = delta_rule(q, k, v, beta, g, impl="reference", initial_state=state,
                                          return_state=True)
    for impl in ("recurrent", "chunk"):
        o, final = delta_rule(q, k, v, beta, g, impl=impl, initial_state=state, return_state=True,
                              chunk_size=chunk_size)
        torch.testing.assert_close(o, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(final, expected_state, rtol=1e-10, atol=1e-10)


def test_negative_eigenvalues_beta_up_to_two():
    # β ∈ [0, 2] (DeltaProduct's option): I - β k kᵀ has eigenvalue 1 - β ∈ [-1, 1].
    q, k, v, beta = inputs(29, beta_max=2.0)
    expected = delta_rule(q, k, v, beta, impl="reference")
    for impl in ("recurrent", "chunk"):
        torch.testing.assert_close(delta_rule(q, k, v, beta, impl=impl, chunk_size=8), expected,
                                   rtol=1e-10, atol=1e-10)


def test_gradients_equal_reference():
    length, key_dim = 19, 4
    q, k, v, beta = inputs(length, key_dim=key_dim, value_dim=3)
    g = decays("token", length, 1.0)
    state = torch.randn(B, H, key_dim, 3, dtype=torch.float64)
    leaves = tuple(t.requires_grad_() for t in (q, k, v, beta, g, state))
    grads = {}
    for impl in ("reference", "recurrent", "chunk"):
        o, final = delta_rule(q, k, v, beta, g, impl=impl, initial_state=state, return_state=True, chunk_size=8)
        grads[impl] = torch.autograd.grad(o.sin().sum() + final.cos().sum(), leaves)
    for impl in ("recurrent", "chunk"):
        for name, got, want in zip("q k v beta log_decay state".split(), grads[impl], grads["reference"]):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=f"{impl}: gradient of {name}")


def test_gradcheck_chunk():
    q, k, v, beta = inputs(5, key_dim=3, value_dim=2)
    g = decays("token", 5, 0.5)
    leaves = tuple(t[:1, :1].clone().requires_grad_() for t in (q, k, v, beta, g))
    assert torch.autograd.gradcheck(lambda *a: delta_rule(*a, impl="chunk", chunk_size=2), leaves)


@pytest.mark.parametrize("split", [1, 5, 8, 13, 24, 36])
def test_state_continues_across_any_split(split):
    length = 37
    q, k, v, beta = inputs(length)
    g = decays("token", length, 0.3)
    full = delta_rule(q, k, v, beta, g, impl="chunk", chunk_size=8)
    parts = [t[:, :, :split] for t in (q, k, v, beta, g)]
    rest = [t[:, :, split:] for t in (q, k, v, beta, g)]
    first, state = delta_rule(*parts, impl="chunk", chunk_size=8, return_state=True)
    second = delta_rule(*rest, impl="chunk", chunk_size=8, initial_state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=2), full, rtol=1e-10, atol=1e-10)


def test_strong_decay_is_stable_in_float32():
    # log a = -30 per token: the state keeps only the current token, S_t = β_t k_t v_tᵀ.
    length, key_dim = 96, 8
    q, k, v, beta = inputs(length, key_dim=key_dim, dtype=torch.float32)
    g = torch.full((B, H, length), -30.0)
    o = delta_rule(q, k, v, beta, g, impl="chunk", chunk_size=32)
    assert torch.isfinite(o).all()
    expected = (q * k).sum(-1, keepdim=True) * beta.unsqueeze(-1) * v * key_dim ** -0.5
    torch.testing.assert_close(o, expected, rtol=1e-5, atol=1e-5)


def test_float32_chunk_close_to_float64():
    q, k, v, beta = inputs(200, key_dim=16, value_dim=16)
    g = decays("token", 200, 0.1)
    exact = delta_rule(q, k, v, beta, g, impl="recurrent")
    o = delta_rule(*(t.float() for t in (q, k, v, beta, g)), impl="chunk", chunk_size=64)
    torch.testing.assert_close(o.double(), exact, rtol=1e-5, atol=1e-5)


def test_half_precision_accumulates_in_float32():
    q, k, v, beta = inputs(40)
    g = decays("token", 40, 0.5)
    exact = delta_rule(q, k, v, beta, g, impl="reference")
    o, state = delta_rule(*(t.bfloat16() for t in (q, k, v, beta, g)), impl="chunk", chunk_size=16,
                          return_state=True)
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32
    assert (o.double() - exact).abs().max() <= 0.03 * exact.abs().max()


def test_bad_arguments_raise():
    q, k, v, beta = inputs(5)
    with pytest.raises(MixerInputError, match="impl"):
        delta_rule(q, k, v, beta, impl="fast")
    with pytest.raises(MixerInputError, match="beta"):
        delta_rule(q, k, v, beta[..., :-1])
    with pytest.raises(MixerInputError, match="log_decay"):
        delta_rule(q, k, v, beta, torch.zeros(B, H, 5, 5))
    with pytest.raises(MixerInputError, match="initial_state"):
        delta_rule(q, k, v, beta, initial_state=torch.zeros(1))
    with pytest.raises(MixerInputError, match="chunk_size"):
        delta_rule(q, k, v, beta, chunk_size=0)
    with pytest.raises(MixerInputError, match="floating"):
        delta_rule(q.long(), k, v, beta)
