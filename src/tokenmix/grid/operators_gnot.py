"""GNOT's heterogeneous normalized attention over the grid points, as a grid mixer.

"GNOT: A General Neural Operator Transformer for Operator Learning", Hao et al. 2023, arXiv:2302.14376, eq. (4)-(5):
with the softmax taken over the feature dimension of each query and each key separately,

    q̃_t = softmax(q_t),   k̃_s = softmax(k_s),
    z_t = Σ_s (q̃_t · k̃_s) v_s / Σ_s (q̃_t · k̃_s) = q̃_t (Σ_s k̃_s v_sᵀ) / (q̃_t · Σ_s k̃_s),

per head: linear attention whose weights are positive and sum to one over the points, so z_t is a weighted average
of v — a ratio of two quadratures of the same kernel integral, which makes the layer resolution invariant. Computed
by the library's linear-attention op (global, normalized form, unit scale): `reference` forms the N × N weights,
`linear` contracts Σ_s k̃_s v_sᵀ first (O(N d²)). q, k, v are linear maps of the features and the heads are merged by
an output projection.

Here queries, keys and values come from the same grid (self-attention). GNOT's cross-attention over several input
functions (separate key/value MLPs per input function, each sampled on its own points) and its geometric-gating
mixture-of-experts FFN are model parts that need more than the single input of a mixer; they are not included.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenmix.mixer import GridMixer
from tokenmix.ops.linear_attention import linear_attention
from tokenmix.registry import register


@register(
    name="gnot_attention",
    family="neural-operator",
    layout="grid",
    paper="GNOT: A General Neural Operator Transformer for Operator Learning",
    arxiv="2302.14376",
    impls=("reference", "linear"),
    causal="never",
    state="none",
    time_complexity="N d^2",
    memory_complexity="N d",
    spatial_dims=(1, 2, 3),
    resolution_invariant=True,
    summary="Heterogeneous normalized attention: softmax over features of q and k, weights normalized over points.",
)
class NormalizedAttention(GridMixer):
    """z_t = softmax(q_t) (Σ_s softmax(k_s) v_sᵀ) / (softmax(q_t) · Σ_s softmax(k_s)) per head (module docstring)."""

    def __init__(self, dim: int, *, num_heads: int = 4, spatial_dims: int = 2, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.num_heads = self._positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise self._fail(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        batch, spatial = x.shape[0], x.shape[2:]
        tokens = x.flatten(2).transpose(1, 2)                                  # (B, N, D)
        n = tokens.shape[1]
        q, k, v = self.qkv(tokens).view(batch, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = q.softmax(dim=-1), k.softmax(dim=-1)
        # the weights q̃·k̃ are positive, so the normalizer is positive: no epsilon needed
        z = linear_attention(q, k, v, scale=1.0, causal=False, normalize=True, eps=0.0,
                             impl="reference" if self.impl == "reference" else "chunk")
        z = z.transpose(1, 2).reshape(batch, n, self.dim)
        return self.out(z).transpose(1, 2).reshape(batch, self.dim, *spatial)
