"""The `blocked` form of the linear-attention op (the selective scan's form) against `reference` / `recurrent`.

Float64 throughout: forward, returned state, gradients of every input (q, k, v, the log-decay or its factors, the
initial state) through both the output and the returned state; ragged last blocks, length 1, blocks longer than
the sequence; state passing at every split point; shared q/k heads; both ways of forming a block's states (the
token loop used on CPU and the doubling scan used on GPU)."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops import linear_attention_scan as module
from tokenmix.ops.linear_attention import linear_attention

B, SHARED, REPEAT, K, V = 2, 2, 3, 5, 2
H = SHARED * REPEAT


@pytest.fixture(params=["loop", "doubling"])
def inside_block(request, monkeypatch):
    """Run the block's states by the CPU token loop or by the doubling scan (the GPU choice), both on CPU."""
    monkeypatch.setattr(module, "BLOCK_PARALLEL_DEVICES", ("cpu",) if request.param == "doubling" else ())
    return request.param


def leaves(length: int, decay: str, strength: float = 1.0, shared: int = H, value_dim: int = V, seed: int = 0):
    """q, k with `shared` heads, v with H, a log-decay of the kind `decay` and an initial state, all requiring grad."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    q, k, v = randn(B, shared, length, K), randn(B, shared, length, K), randn(B, H, length, value_dim)
    decays = {"none": (), "head": (-strength * rand(H),), "token": (-strength * rand(B, H, length),),
              "vector": (-strength * rand(B, H, length, K),), "factored": (strength * rand(B, H, length), -rand(H, K))}
    state = randn(B, H, K, value_dim)
    return [t.requires_grad_() for t in (q, k, v, *decays[decay], state)]


def call(tensors, decay: str, impl: str, block_size: int = 4, **options):
    q, k, v, *decay_tensors, state = tensors
    log_decay = (None, *decay_tensors)[-1] if len(decay_tensors) < 2 else tuple(decay_tensors)
    return linear_attention(q, k, v, log_decay, initial_state=state, return_state=True, impl=impl,
                            chunk_size=block_size, **options)


def outputs_and_gradients(tensors, decay: str, impl: str, block_size: int = 4, **options):
    o, state = call(tensors, decay, impl, block_size, **options)
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(o.shape, generator=g, dtype=o.dtype)
    state_weights = torch.randn(state.shape, generator=g, dtype=state.dtype)
    gradients = torch.autograd.grad((o * weights).sum() + (state * state_weights).sum(), tensors)
    return [o, state, *gradients]


def assert_all_close(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_hand_checked_scalar_decay(inside_block):
    # One head, K = V = 1, q = k = 1, v = (1, 2, 3), a = 1/2, blocks of 2: S = 1, 1/2 + 2, 5/4 + 3.
    ones = torch.ones(1, 1, 3, 1, dtype=torch.float64)
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 1, 3, 1)
    o, state = linear_attention(ones, ones, v, torch.tensor([0.5]).log(), scale=1.0, impl="blocked",
                                return_state=True, chunk_size=2)
    torch.testing.assert_close(o.flatten(), torch.tensor([1.0, 2.5, 4.25], dtype=torch.float64))
    torch.testing.assert_close(state.flatten(), torch.tensor([4.25], dtype=torch.float64))


@pytest.mark.parametrize("decay,strength", [("none", 0.0), ("head", 0.5), ("token", 0.5), ("vector", 0.05),
                                            ("vector", 20.0), ("factored", 0.5), ("factored", 30.0)])
@pytest.mark.parametrize("length,block_size", [(1, 4), (7, 4), (16, 4), (13, 5), (9, 1), (6, 64)])
def test_equals_reference_forward_state_and_gradients(inside_block, decay, strength, length, block_size):
    tensors = leaves(length, decay, strength)
    expected = outputs_and_gradients(tensors, decay, "reference")
    assert_all_close(outputs_and_gradients(tensors, decay, "blocked", block_size), expected)


@pytest.mark.parametrize("shared", [1, SHARED])
@pytest.mark.parametrize("decay", ["vector", "factored", "token"])
def test_shared_query_and_key_heads(inside_block, shared, decay):
    # q and k with fewer heads than v: each serves H / shared consecutive v heads (Mamba's B_t, C_t; SS2D's groups)
    tensors = leaves(11, decay, shared=shared)
    expected = outputs_and_gradients(tensors, decay, "reference")
    assert_all_close(outputs_and_gradients(tensors, decay, "blocked", 3), expected)
    # ... which is the op on q, k repeated per head
    q, k, *rest = [t.detach() for t in tensors]
    repeated = [t.repeat_interleave(H // shared, dim=1) for t in (q, k)]
    torch.testing.assert_close(call([*repeated, *rest], decay, "recurrent")[0],
                               call([q, k, *rest], decay, "blocked", 3)[0], rtol=1e-10, atol=1e-10)


def test_long_sequence_equals_the_recurrent_loop(inside_block):
    # many blocks, a ragged last one, Mamba's single value per head
    tensors = leaves(203, "factored", 0.3, shared=1, value_dim=1)
    expected = outputs_and_gradients(tensors, "factored", "recurrent")
    assert_all_close(outputs_and_gradients(tensors, "factored", "blocked", 16), expected)


def test_state_passing_at_every_split_point(inside_block):
    length = 13
    q, k, v, step, rate, state = [t.detach() for t in leaves(length, "factored", shared=1)]
    whole, whole_state = linear_attention(q, k, v, (step, rate), initial_state=state, return_state=True,
                                          impl="blocked", chunk_size=4)
    for split in range(1, length):
        first, middle = linear_attention(q[:, :, :split], k[:, :, :split], v[:, :, :split],
                                         (step[:, :, :split], rate), initial_state=state, return_state=True,
                                         impl="blocked", chunk_size=4)
        second, last = linear_attention(q[:, :, split:], k[:, :, split:], v[:, :, split:],
                                        (step[:, :, split:], rate), initial_state=middle, return_state=True,
                                        impl="blocked", chunk_size=4)
        torch.testing.assert_close(torch.cat([first, second], dim=2), whole, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(last, whole_state, rtol=1e-10, atol=1e-10)


def test_normalizer(inside_block):
    tensors = leaves(10, "vector", 0.2)
    tensors[-1] = torch.randn(B, H, K, V + 1, dtype=torch.float64, requires_grad=True)   # the state has z
    expected = outputs_and_gradients(tensors, "vector", "reference", normalize=True)
    assert_all_close(outputs_and_gradients(tensors, "vector", "blocked", 3, normalize=True), expected)


def test_gradcheck(inside_block):
    tensors = leaves(5, "factored", 0.5, shared=1)
    q, k, v, step, rate, state = tensors

    def f(q, k, v, step, rate, state):
        return call([q, k, v, step, rate, state], "factored", "blocked", 2)

    assert torch.autograd.gradcheck(f, tuple(tensors), eps=1e-6, atol=1e-8)


def test_strong_decay_is_stable_in_float32():
    tensors = leaves(100, "factored", 80.0, shared=1)
    expected = call(tensors, "factored", "recurrent")[0]
    single = [t.detach().float().requires_grad_() for t in tensors]
    o, state = call(single, "factored", "blocked", 16)
    (o.sum() + state.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in single)
    # float32 rounding of O(1) values summed over a few tokens (the decay forgets the rest)
    torch.testing.assert_close(o.double(), expected, rtol=1e-4, atol=1e-5)


def test_saves_only_block_boundary_states_for_backward():
    length, block_size = 64, 16
    q, k, v, step, rate, state = leaves(length, "factored", shared=1, value_dim=1)
    o = linear_attention(q, k, v, (step, rate), initial_state=state, impl="blocked", chunk_size=block_size)
    node = o.grad_fn
    while type(node).__name__ != "BlockedScanBackward":
        node = node.next_functions[0][0]
    saved = [t for t in node.saved_tensors if t is not None]
    inputs = sum(t.numel() for t in (q, k, v, step, rate))
    boundaries = math.ceil(length / block_size) * B * H * K
    assert sum(t.numel() for t in saved) == inputs + boundaries      # nothing of size L·H·K
    assert B * H * length * K > boundaries * 4


def test_bad_inputs_raise():
    q, k, v, step, rate, state = [t.detach() for t in leaves(6, "factored", shared=1)]
    with pytest.raises(MixerInputError, match="factored"):
        linear_attention(q, k, v, (step, rate[:, :2]), impl="blocked")
    with pytest.raises(MixerInputError, match="pair"):
        linear_attention(q, k, v, (step,), impl="blocked")
    with pytest.raises(MixerInputError, match="divides"):
        linear_attention(q.expand(-1, 4, -1, -1), k.expand(-1, 4, -1, -1), v, impl="blocked")
    with pytest.raises(MixerInputError, match="log_input_gate"):
        linear_attention(q, k, v[:, :1], normalize="max", log_input_gate=torch.zeros(B, 1, 6, dtype=q.dtype),
                         impl="blocked")


def test_auto_takes_blocked_for_a_factored_decay():
    tensors = leaves(9, "factored", shared=1)
    q, k, v, step, rate, state = tensors
    o = linear_attention(q, k, v, (step, rate), initial_state=state)
    node = o.grad_fn
    while node is not None and type(node).__name__ != "BlockedScanBackward":
        node = node.next_functions[0][0] if node.next_functions else None
    assert node is not None
    torch.testing.assert_close(o, call(tensors, "factored", "reference")[0], rtol=1e-10, atol=1e-10)

