"""bf16 inputs at L = 8192 with strong decays: the chunk forms accumulate in float32, so against the float64 token
loop on the same (bf16-rounded) inputs the only error left is the output's own rounding to bf16.

The bound, elementwise: |o - exact| ≤ 2⁻⁸ |exact| + 1e-4 · max|exact|. 2⁻⁸ is half of bf16's relative spacing
(8 significant bits), what rounding the exact result to bf16 costs by itself; 1e-4 of the output's scale is the
allowance for float32 accumulation over 8192 tokens (the float32 check below measured ≤ 5e-6 of the scale; the
bf16 errors reached 75-93% of the bound, nearly all of it rounding).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmix.ops.delta_rule import delta_rule
from tokenmix.ops.linear_attention import linear_attention

B, H, L, K, V = 1, 2, 8192, 16, 16
HALF_SPACING = 2.0 ** -8
ACCUMULATION = 1e-4


def _random(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def _strong_and_weak_decays(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """A third of the log-decays strong (down to -8 nats per token, so a chunk of 64 spans far past the factored
    form's 60 nats), the rest near 0 (memory over the whole sequence, so the state keeps growing)."""
    u = torch.rand(*shape, generator=generator, dtype=torch.float64)
    return torch.where(u < 1 / 3, -24 * u, -1e-3 * u)


def _case(name: str):
    """(op, positional inputs, keyword inputs) in float64."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = _random(generator, B, H, L, K), _random(generator, B, H, L, K), _random(generator, B, H, L, V)
    if name == "scalar decay":
        return linear_attention, (q, k, v, _strong_and_weak_decays(generator, B, H, L)), {}
    if name == "vector decay":
        return linear_attention, (q, k, v, _strong_and_weak_decays(generator, B, H, L, K)), {}
    if name == "normalized, no decay":
        return linear_attention, (F.elu(q) + 1, F.elu(k) + 1, v, None), {"normalize": True}
    if name == "input gate":  # mLSTM: exponential input gate up to e^15, stabilized
        return linear_attention, (q, k, v, F.logsigmoid(3 * _random(generator, B, H, L))), {
            "normalize": "max", "log_input_gate": 5 * _random(generator, B, H, L)}
    beta = torch.rand(B, H, L, generator=generator, dtype=torch.float64)
    return delta_rule, (q, F.normalize(k, dim=-1), v, beta, _strong_and_weak_decays(generator, B, H, L)), {}


def _cast(values, dtype):
    if isinstance(values, dict):
        return {key: _cast(value, dtype) for key, value in values.items()}
    if isinstance(values, tuple):
        return tuple(_cast(value, dtype) for value in values)
    return values.to(dtype) if isinstance(values, torch.Tensor) else values


CASES = ["scalar decay", "vector decay", "normalized, no decay", "input gate", "delta rule"]


@pytest.mark.parametrize("name", CASES)
def test_bf16_chunk_at_8192_tokens_is_its_output_rounding_away_from_float64(name):
    op, args, kwargs = _case(name)
    half_args, half_kwargs = _cast(args, torch.bfloat16), _cast(kwargs, torch.bfloat16)
    rounded_args, rounded_kwargs = _cast(half_args, torch.float64), _cast(half_kwargs, torch.float64)
    exact = op(*rounded_args, impl="recurrent", **rounded_kwargs)
    o, state = op(*half_args, impl="chunk", return_state=True, **half_kwargs)
    assert o.dtype == torch.bfloat16
    state = state[0] if isinstance(state, tuple) else state
    assert state.dtype == torch.float32 and torch.isfinite(state).all()
    assert torch.isfinite(o).all()
    scale = exact.abs().max()
    error = (o.double() - exact).abs()
    assert (error <= HALF_SPACING * exact.abs() + ACCUMULATION * scale).all(), (
        f"{name}: worst error {(error / (exact.abs() + ACCUMULATION * scale)).max():.2e} of the bound's scale")

    # The same bf16-valued inputs in float32: what accumulation alone costs over 8192 tokens.
    single = op(*_cast(half_args, torch.float32), impl="chunk", **_cast(half_kwargs, torch.float32))
    assert (single.double() - exact).abs().max() <= ACCUMULATION * scale
