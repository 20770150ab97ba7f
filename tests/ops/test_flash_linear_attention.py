"""Dispatch of `impl="auto"` to flash-linear-attention (`tokenmix.ops.flash_linear_attention`).

On CPU a stand-in `fla` package is put in `sys.modules`: each of its four functions takes fla's layout and
conventions as fla documents them (`(B, T, H, K)`, log-space `g`, `scale` on the scores, `[N, H, K, V]` float32
states, `output_final_state`), converts back to ours, recomputes with our `reference` and records what it was given.
With the device check patched to say "CUDA", `auto` must reach it with the right arguments and give the reference's
answer (values and gradients); unsupported calls must not reach it. The last test compares the real fla with our
reference on a GPU and is skipped where CUDA or fla is missing.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from tokenmix.ops import flash_linear_attention as flash
from tokenmix.ops.delta_rule import delta_rule
from tokenmix.ops.linear_attention import linear_attention

B, T, H, K, V = 2, 7, 3, 5, 4  # all different, so a layout mix-up changes a shape


def _ours(t):
    return None if t is None else t.transpose(1, 2).contiguous()


def _fake_fla(calls: list) -> dict[str, types.ModuleType]:
    """A stand-in `fla` whose kernels follow fla's documented signatures and compute with our reference."""

    def record(name, q, k, v, g, beta, scale, initial_state, output_final_state):
        calls.append({"name": name, "q": tuple(q.shape), "k": tuple(k.shape), "v": tuple(v.shape),
                      "g": None if g is None else (tuple(g.shape), g.dtype), "dtype": q.dtype,
                      "beta": None if beta is None else tuple(beta.shape), "scale": scale,
                      "initial_state": None if initial_state is None else (tuple(initial_state.shape),
                                                                           initial_state.dtype),
                      "output_final_state": output_final_state})
        assert initial_state is None or initial_state.dtype == torch.float32  # fla keeps states in float32

    def finish(o, state, q, output_final_state):
        return o.transpose(1, 2).to(q.dtype), (state if output_final_state else None)

    def chunk_simple_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None):
        record("chunk_simple_gla", q, k, v, g, None, scale, initial_state, output_final_state)
        assert g is None or g.shape == q.shape[:3]
        scale = k.shape[-1] ** -0.5 if scale is None else scale
        o, state = linear_attention(_ours(q), _ours(k), _ours(v), _ours(g), scale=scale, initial_state=initial_state,
                                    return_state=True, impl="reference")
        return finish(o, state, q, output_final_state)

    def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None):
        record("chunk_gla", q, k, v, g, None, scale, initial_state, output_final_state)
        assert q.shape == k.shape == g.shape, "q, k, g must have the same shape."
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        o, state = linear_attention(_ours(q), _ours(k), _ours(v), _ours(g), scale=scale, initial_state=initial_state,
                                    return_state=True, impl="reference")
        return finish(o, state, q, output_final_state)

    def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                         use_qk_l2norm_in_kernel=False, cu_seqlens=None):
        record("chunk_delta_rule", q, k, v, None, beta, scale, initial_state, output_final_state)
        assert q.dtype != torch.float32, "ChunkDeltaRuleFunction does not support float32."
        assert beta.shape == q.shape[:3] and not use_qk_l2norm_in_kernel
        scale = k.shape[-1] ** -0.5 if scale is None else scale
        o, state = delta_rule(_ours(q), _ours(k), _ours(v), _ours(beta), scale=scale, initial_state=initial_state,
                              return_state=True, impl="reference")
        return finish(o, state, q, output_final_state)

    def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                               use_qk_l2norm_in_kernel=False, cu_seqlens=None):
        record("chunk_gated_delta_rule", q, k, v, g, beta, scale, initial_state, output_final_state)
        assert g.shape == beta.shape == q.shape[:3] and not use_qk_l2norm_in_kernel
        scale = k.shape[-1] ** -0.5 if scale is None else scale
        o, state = delta_rule(_ours(q), _ours(k), _ours(v), _ours(beta), _ours(g), scale=scale,
                              initial_state=initial_state, return_state=True, impl="reference")
        return finish(o, state, q, output_final_state)

    names = ("fla", "fla.ops", "fla.ops.gla", "fla.ops.simple_gla", "fla.ops.delta_rule", "fla.ops.gated_delta_rule")
    modules = {name: types.ModuleType(name) for name in names}
    modules["fla.ops.gla"].chunk_gla = chunk_gla
    modules["fla.ops.simple_gla"].chunk_simple_gla = chunk_simple_gla
    modules["fla.ops.delta_rule"].chunk_delta_rule = chunk_delta_rule
    modules["fla.ops.gated_delta_rule"].chunk_gated_delta_rule = chunk_gated_delta_rule
    return modules


@pytest.fixture
def calls(monkeypatch):
    """Install the stand-in fla and pretend every tensor is on CUDA; yields the list of recorded kernel calls."""
    recorded: list = []
    for name, module in _fake_fla(recorded).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(flash, "device_supported", lambda t: True)
    flash.kernels.cache_clear()
    yield recorded
    flash.kernels.cache_clear()


def _leaves(*shapes, dtype=torch.bfloat16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=generator).to(dtype).requires_grad_() for s in shapes]


def _assert_same(auto, reference, leaves):
    """Equal outputs (and states), and equal gradients of every leaf."""
    auto, reference = (x if isinstance(x, tuple) else (x,) for x in (auto, reference))
    for a, r in zip(auto, reference):
        assert a.dtype == r.dtype and a.shape == r.shape
        torch.testing.assert_close(a, r, rtol=0, atol=0)  # the stand-in runs the very same reference computation
    weights = [torch.randn_like(r, dtype=torch.float32) for r in reference]
    loss = lambda outputs: sum((o.float() * w).sum() for o, w in zip(outputs, weights))  # noqa: E731
    grads = torch.autograd.grad(loss(auto), leaves, allow_unused=True, retain_graph=True)
    expected = torch.autograd.grad(loss(reference), leaves, allow_unused=True)
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


# --- the delta rule ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay", ["none", "per_head", "per_token"])
@pytest.mark.parametrize("with_state", [False, True])
def test_delta_rule_auto_dispatches_with_fla_layout(calls, decay, with_state):
    q, k, v, beta = _leaves((B, H, T, K), (B, H, T, K), (B, H, T, V), (B, H, T))
    k_unit = F.normalize(k, dim=-1)
    log_decay = {"none": None, "per_head": -torch.rand(H) * 0.3,
                 "per_token": -torch.rand(B, H, T) * 0.3}[decay]
    state = torch.randn(B, H, K, V, requires_grad=True) if with_state else None
    leaves = [q, k, v, beta] + ([state] if with_state else [])
    options = dict(initial_state=state, return_state=with_state)
    auto = delta_rule(q, k_unit, v, beta.sigmoid(), log_decay, **options)
    assert len(calls) == 1
    call = calls[0]
    assert call["name"] == ("chunk_delta_rule" if decay == "none" else "chunk_gated_delta_rule")
    assert call["q"] == call["k"] == (B, T, H, K) and call["v"] == (B, T, H, V) and call["beta"] == (B, T, H)
    assert call["g"] == (None if decay == "none" else ((B, T, H), torch.float32))
    assert call["scale"] == K ** -0.5 and call["dtype"] == torch.bfloat16
    assert call["initial_state"] == (((B, H, K, V), torch.float32) if with_state else None)
    assert call["output_final_state"] == with_state
    reference = delta_rule(q, k_unit, v, beta.sigmoid(), log_decay, impl="reference", **options)
    _assert_same(auto, reference, leaves)


def test_delta_rule_passes_an_explicit_scale(calls):
    q, k, v, beta = _leaves((B, H, T, K), (B, H, T, K), (B, H, T, V), (B, H, T), dtype=torch.float16)
    auto = delta_rule(q, F.normalize(k, dim=-1), v, beta.sigmoid(), scale=0.25)
    assert calls[0]["scale"] == 0.25 and calls[0]["dtype"] == torch.float16
    _assert_same(auto, delta_rule(q, F.normalize(k, dim=-1), v, beta.sigmoid(), scale=0.25, impl="reference"),
                 [q, k, v, beta])


# --- decayed linear attention ------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay,kernel", [("none", "chunk_simple_gla"), ("scalar", "chunk_simple_gla"),
                                          ("per_head", "chunk_simple_gla"), ("per_token", "chunk_simple_gla"),
                                          ("vector", "chunk_gla")])
@pytest.mark.parametrize("with_state", [False, True])
def test_linear_attention_auto_dispatches_with_fla_layout(calls, decay, kernel, with_state):
    q, k, v = _leaves((B, H, T, K), (B, H, T, K), (B, H, T, V), seed=1)
    log_decay = {"none": None, "scalar": -0.1, "per_head": -torch.rand(H) * 0.3,
                 "per_token": -torch.rand(B, H, T) * 0.3, "vector": -torch.rand(B, H, T, K) * 0.3}[decay]
    state = torch.randn(B, H, K, V, requires_grad=True) if with_state else None
    leaves = [q, k, v] + ([state] if with_state else [])
    options = dict(initial_state=state, return_state=with_state)
    auto = linear_attention(q, k, v, log_decay, **options)
    assert [c["name"] for c in calls] == [kernel]
    call = calls[0]
    assert call["q"] == call["k"] == (B, T, H, K) and call["v"] == (B, T, H, V)
    expected_gate = {"none": None, "vector": ((B, T, H, K), torch.float32)}.get(decay, ((B, T, H), torch.float32))
    assert call["g"] == expected_gate
    assert call["scale"] == K ** -0.5
    assert call["initial_state"] == (((B, H, K, V), torch.float32) if with_state else None)
    assert call["output_final_state"] == with_state
    _assert_same(auto, linear_attention(q, k, v, log_decay, impl="reference", **options), leaves)


# --- what stays on our own forms ---------------------------------------------------------------------------------
def test_unsupported_linear_attention_calls_fall_back(calls):
    q, k, v = _leaves((B, H, T, K), (B, H, T, K), (B, H, T, V))
    decay = -torch.rand(B, H, T) * 0.3
    linear_attention(q.float(), k.float(), v.float(), decay)                          # fp32: TF32 in fla
    linear_attention(q, k, v, decay, impl="chunk")                                    # an explicit form
    linear_attention(q, k, v, decay, normalize=True)                                  # normalizer column
    linear_attention(q, k, v, decay, normalize="max", log_input_gate=torch.zeros(B, H, T))   # mLSTM input gate
    linear_attention(q, k, v, causal=False)                                           # global form
    linear_attention(q[:, :, :2], k[:, :, :2], v[:, :, :2], decay[:, :, :2])          # L ≤ 2: the token loop
    wide = torch.randn(1, 1, T, flash.MAX_HEAD_DIM + 1, dtype=torch.bfloat16)
    linear_attention(wide, wide, wide)                                                # head dim beyond fla's
    assert calls == []


def test_unsupported_delta_rule_calls_fall_back(calls):
    q, k, v, beta = _leaves((B, H, T, K), (B, H, T, K), (B, H, T, V), (B, H, T))
    delta_rule(q.float(), k.float(), v.float(), beta.float())                         # fp32
    delta_rule(q, k, v, beta, impl="chunk")
    delta_rule(q[:, :, :1], k[:, :, :1], v[:, :, :1], beta[:, :, :1])
    assert calls == []


def test_no_dispatch_off_cuda_or_without_fla(monkeypatch):
    q, k, v, beta = _leaves((B, H, T, K), (B, H, T, K), (B, H, T, V), (B, H, T))
    recorded: list = []
    for name, module in _fake_fla(recorded).items():
        monkeypatch.setitem(sys.modules, name, module)
    flash.kernels.cache_clear()
    try:
        linear_attention(q, k, v)                              # fla present, but the tensors are on the CPU
        delta_rule(q, k, v, beta)
        assert recorded == [] and flash.kernels() is not None
        monkeypatch.setattr(flash, "device_supported", lambda t: True)
        monkeypatch.setitem(sys.modules, "fla", None)          # fla not importable: `import fla...` fails
        for name in ("fla.ops", "fla.ops.gla", "fla.ops.simple_gla", "fla.ops.delta_rule", "fla.ops.gated_delta_rule"):
            monkeypatch.setitem(sys.modules, name, None)
        flash.kernels.cache_clear()
        assert flash.kernels() is None
        expected = linear_attention(q, k, v, impl="chunk")
        torch.testing.assert_close(linear_attention(q, k, v), expected, rtol=0, atol=0)
        assert recorded == []
    finally:
        flash.kernels.cache_clear()


# --- the real thing, where there is a GPU and fla ----------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("fla") is None,
                    reason="needs CUDA and flash-linear-attention")
@pytest.mark.parametrize("case", ["linear", "scalar_decay", "vector_decay", "delta", "gated_delta"])
def test_fla_equals_our_reference_on_the_gpu(case):
    flash.kernels.cache_clear()
    assert flash.kernels() is not None
    generator = torch.Generator(device="cuda").manual_seed(0)
    batch, heads, length, head_dim = 2, 4, 300, 64  # a ragged last chunk for fla's 64-token chunks

    def rand(*shape):
        return torch.randn(*shape, generator=generator, device="cuda")

    q, k, v = (rand(batch, heads, length, head_dim) for _ in range(3))
    state = rand(batch, heads, head_dim, head_dim)
    if case in ("delta", "gated_delta"):
        k = F.normalize(k, dim=-1)
        beta = torch.rand(batch, heads, length, generator=generator, device="cuda")
        decay = -0.1 * torch.rand(batch, heads, length, generator=generator, device="cuda") if case == "gated_delta" \
            else None

        def run(*tensors, impl):
            return delta_rule(*tensors[:3], tensors[3], decay, initial_state=tensors[4], return_state=True, impl=impl)
        tensors = [q, k, v, beta, state]
    else:
        decay = {"linear": None, "scalar_decay": -0.1 * torch.rand(batch, heads, length, device="cuda"),
                 "vector_decay": -0.1 * torch.rand(batch, heads, length, head_dim, device="cuda")}[case]
        q, k = q * 0.3, k * 0.3  # undecayed linear attention sums 300 products: keep the output O(1)

        def run(*tensors, impl):
            return linear_attention(*tensors[:3], decay, initial_state=tensors[3], return_state=True, impl=impl)
        tensors = [q, k, v, state]
    exact = run(*[t.double() for t in tensors], impl="reference")
    low = [t.bfloat16() if t is not state else t for t in tensors]
    assert flash.routes_delta_rule(*low[:3]) if "delta" in case else flash.routes_linear_attention(
        *low[:3], causal=True, normalize=False, gated=False)
    fast = run(*low, impl="auto")
    # bf16 inputs carry 8 bits of mantissa; the kernels accumulate in fp32. Within 2% of the output's scale, as the
    # conformance suite's bf16 bound (5%) with margin; a wrong mapping (layout, scale, gate) is off by O(100%).
    for got, want in zip(fast, exact):
        assert torch.isfinite(got).all()
        assert (got.double() - want).abs().max() <= 0.02 * want.abs().max()
