"""Dispatch of the family ops to the flash-linear-attention (`fla`) Triton kernels on CUDA.

flash-linear-attention (Yang, Zhang et al., https://github.com/fla-org/flash-linear-attention) implements the
chunkwise forms of linear attention, GLA and the (gated) delta rule as fused GPU kernels. When a call of
`tokenmix.ops.linear_attention.linear_attention` or `tokenmix.ops.delta_rule.delta_rule` with `impl="auto"` maps
onto one of them, it runs there; everything else keeps the library's own forms. The mapping (our op → fla):

    decayed linear attention, log_decay None, (H,) or (B, H, L)   → fla.ops.simple_gla.chunk_simple_gla (g: B, T, H)
    decayed linear attention, log_decay (B, H, L, K)              → fla.ops.gla.chunk_gla              (g: B, T, H, K)
    delta rule, no decay                                          → fla.ops.delta_rule.chunk_delta_rule
    delta rule, log_decay (H,) or (B, H, L)                       → fla.ops.gated_delta_rule.chunk_gated_delta_rule

Conventions, ours → fla's: our `(B, H, L, K)` tensors are transposed to fla's `(B, T, H, K)` and the output back;
decays are log-decays in both (fla's `g` is "in log space", one per head or per key channel), passed in float32; the
state is `(B, H, K, V)` in both (fla's `[N, H, K, V]`, float32), so `initial_state` / `return_state` map onto
`initial_state` / `output_final_state` unchanged; `scale` is passed through (both default to `K ** -0.5` and both
scale the scores `q·k`, i.e. the queries); keys are used as given in both (fla's `use_qk_l2norm_in_kernel` is left at
its default False: our mixers normalize keys themselves).

A call is dispatched only when all of these hold (`routes_linear_attention`, `routes_delta_rule`):
* the tensors are on CUDA and `fla` imports (its four entry points above);
* the inputs are bf16 or fp16 (`DTYPES`): fla's Triton matmuls take fp32 inputs in TF32, which would break the
  float32 agreement (~1e-5) the library's own forms keep, and its delta-rule kernel rejects fp32;
* the call is causal, with no normalizer column (`normalize`), no exponential input gate (mLSTM), no factored decay
  and no heads shared between q/k and v: fla's chunk kernels have none of these;
* head dims are at most `MAX_HEAD_DIM` and the length is above 2 (a step or two stays on the token loop);
otherwise the op falls back to its own `auto` choice (our `chunk` on CUDA). `impl="chunk"` etc. never dispatch.

`tests/ops/test_flash_linear_attention.py` checks the mapping on CPU against a stand-in `fla` that recomputes with our
reference from fla's layout, and (only where CUDA and fla are both present) fla against our reference on the GPU.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

DTYPES = (torch.bfloat16, torch.float16)
MAX_HEAD_DIM = 256  # fla's chunk kernels tile K and V in blocks of at most 64; beyond 256 they are not tuned/tested
MIN_LENGTH = 3


@functools.lru_cache(maxsize=1)
def kernels() -> dict[str, Any] | None:
    """fla's four chunk entry points, or None when fla does not import (cached; `kernels.cache_clear()` resets)."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        from fla.ops.gla import chunk_gla
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception:  # not installed, or installed without a working triton: keep our own forms
        return None
    return {"chunk_simple_gla": chunk_simple_gla, "chunk_gla": chunk_gla, "chunk_delta_rule": chunk_delta_rule,
            "chunk_gated_delta_rule": chunk_gated_delta_rule}


def device_supported(t: Tensor) -> bool:
    """Whether `t` lives where fla's kernels run (CUDA)."""
    return t.is_cuda


def _common(q: Tensor, k: Tensor, v: Tensor) -> bool:
    return (device_supported(q) and q.dtype in DTYPES and k.dtype == q.dtype and v.dtype == q.dtype
            and q.shape[2] >= MIN_LENGTH and q.shape[-1] <= MAX_HEAD_DIM and v.shape[-1] <= MAX_HEAD_DIM
            and q.shape[1] == v.shape[1] and kernels() is not None)


def routes_linear_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, normalize: bool | str,
                            gated: bool, factored: bool = False) -> bool:
    """Whether a `linear_attention(impl="auto")` call runs on fla (the rule in the module docstring)."""
    return causal and not normalize and not gated and not factored and _common(q, k, v)


def routes_delta_rule(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether a `delta_rule(impl="auto")` call runs on fla (the rule in the module docstring)."""
    return _common(q, k, v)


def _time_major(t: Tensor) -> Tensor:
    """Our `(B, H, L, *)` as fla's `(B, T, H, *)` (and back: the swap is its own inverse)."""
    return t.transpose(1, 2)


def linear_attention(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, *, scale: float,
                     initial_state: Tensor | None, return_state: bool) -> tuple[Tensor, Tensor | None]:
    """Decayed linear attention on fla. `q, k, v: (B, H, L, *)` as given (not yet scaled), `g` our canonical
    log-decay `(B|1, H, L, 1)` (scalar) or `(B, H, L, K)` (vector) or None, `initial_state: (B, H, K, V)` or None.
    Returns `o: (B, H, L, V)` in v's dtype and the float32 final state (None unless `return_state`)."""
    batch, heads, length, _ = v.shape
    found = kernels()
    state = None if initial_state is None else initial_state.float()
    arguments = dict(scale=scale, initial_state=state, output_final_state=return_state)
    if g is not None and g.shape[-1] > 1:
        o, final = found["chunk_gla"](_time_major(q), _time_major(k), _time_major(v), _time_major(g.float()),
                                      **arguments)
    else:
        gate = None if g is None else _time_major(g[..., 0].float().expand(batch, heads, length))
        o, final = found["chunk_simple_gla"](_time_major(q), _time_major(k), _time_major(v), gate, **arguments)
    return _time_major(o).to(v.dtype), None if final is None else final.float()


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None, *, scale: float,
               initial_state: Tensor | None, return_state: bool) -> tuple[Tensor, Tensor | None]:
    """The (gated) delta rule on fla. `q, k, v: (B, H, L, *)` as given, `beta: (B, H, L)`, `g` our canonical
    log-decay `(B|1, H, L)` or None, `initial_state: (B, H, K, V)` or None. Returns `o: (B, H, L, V)` in v's dtype
    and the float32 final state (None unless `return_state`)."""
    found = kernels()
    state = None if initial_state is None else initial_state.float()
    arguments = dict(scale=scale, initial_state=state, output_final_state=return_state)
    beta = _time_major(beta.to(q.dtype))
    if g is None:
        o, final = found["chunk_delta_rule"](_time_major(q), _time_major(k), _time_major(v), beta, **arguments)
    else:
        gate = _time_major(g.float().expand_as(beta.transpose(1, 2)))
        o, final = found["chunk_gated_delta_rule"](_time_major(q), _time_major(k), _time_major(v), gate, beta,
                                                   **arguments)
    return _time_major(o).to(v.dtype), None if final is None else final.float()
