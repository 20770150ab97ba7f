"""Softmax attention: `reference` (materialized scores, masked) and `sdpa` (PyTorch's fused kernels).

    o_i = Σ_j softmax_j(scale · q_i · k_j + b_ij + m_ij) v_j,   m_ij = -inf where j > i + (L_k - L_q) when causal

`bias` (optional) is the additive b_ij, broadcastable to `(B, H, L_q, L_k)`: a learned position bias (Swin, LeViT,
NAT) or a mask (entries -inf). Every query must keep at least one finite score.

"Attention Is All You Need", Vaswani et al. 2017, arXiv:1706.03762.

Queries are the *last* `L_q` positions of the `L_k` keys (bottom-right alignment), which is what a KV cache needs:
a prefilled cache of `L_k - L_q` tokens followed by `L_q` new ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops._checks import check_head_tensors, check_impl, compute_dtype

IMPLS = ("reference", "sdpa")


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = True, scale: float | None = None,
                      bias: Tensor | None = None, impl: str = "auto") -> Tensor:
    """Softmax attention over `(B, H, L, K)` queries/keys and `(B, H, L_k, V)` values; returns `(B, H, L_q, V)`."""
    check_impl("softmax_attention", impl, ("auto", *IMPLS))
    check_head_tensors("softmax_attention", q=q, k=k, v=v)
    if q.shape[-1] != k.shape[-1] or k.shape[2] != v.shape[2]:
        raise MixerInputError(f"softmax_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                              "do not agree (q and k share the last dim, k and v the length)")
    if causal and q.shape[2] > k.shape[2]:
        raise MixerInputError(f"softmax_attention: causal attention needs at least as many keys ({k.shape[2]}) "
                              f"as queries ({q.shape[2]})")
    if bias is not None:
        _check_bias(bias, q, k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if impl in ("auto", "sdpa"):
        return _sdpa(q, k, v, causal, scale, bias)
    return _reference(q, k, v, causal, scale, bias)


def _check_bias(bias: Tensor, q: Tensor, k: Tensor) -> None:
    target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    if not bias.is_floating_point() or bias.ndim > 4 or any(
            b not in (1, t) for b, t in zip(bias.shape[::-1], target[::-1])):
        raise MixerInputError(f"softmax_attention: bias must be a floating tensor broadcastable to {target}, "
                              f"got {bias.dtype} {tuple(bias.shape)}")


def causal_mask(query_length: int, key_length: int, device: torch.device) -> Tensor:
    """Boolean `(L_q, L_k)` mask, True where query i may see key j (bottom-right aligned)."""
    return torch.ones(query_length, key_length, dtype=torch.bool, device=device).tril(key_length - query_length)


def _reference(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, bias: Tensor | None = None) -> Tensor:
    dtype = compute_dtype(q, k, v)
    scores = torch.einsum("bhik,bhjk->bhij", q.to(dtype), k.to(dtype)) * scale
    if bias is not None:
        scores = scores + bias.to(dtype)
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2], q.device), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.einsum("bhij,bhjv->bhiv", weights, v.to(dtype)).to(q.dtype)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, bias: Tensor | None = None) -> Tensor:
    query_length, key_length = q.shape[2], k.shape[2]
    # PyTorch's fused kernels need a unit stride on the head dimension. Heads split from a channels-first grid
    # are (B, H, N, d) views with stride N there, and SDPA then takes its math path: the (N, N) scores in memory
    # and ~8x the time at N = 4096 on CPU (measured 2026-11-22). The O(N d) copy is cheap beside either.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if bias is not None:
        bias = bias.to(q.dtype)
        if causal:
            bias = bias.masked_fill(~causal_mask(query_length, key_length, q.device), float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    if not causal or query_length == 1:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if query_length == key_length:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    # SDPA's is_causal aligns top-left; a continued prompt needs bottom-right, so pass the mask explicitly.
    mask = causal_mask(query_length, key_length, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
