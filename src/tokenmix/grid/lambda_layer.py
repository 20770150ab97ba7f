"""Attention without the N × N map: the lambda layer (context summarized into linear functions) and Kronecker
attention (keys and values are the H + W row and column summaries of the grid)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._attention_parts import (ATTENTION_IMPLS, HeadedGridMixer, merge_heads, pointwise,
                                            relative_offsets, split_heads)
from tokenmix.grid._parts import odd_kernel
from tokenmix.ops.attention import softmax_attention
from tokenmix.registry import register


@register(
    name="lambda_layer",
    family="lambda",
    layout="grid",
    paper="LambdaNetworks: Modeling Long-Range Interactions Without Attention",
    arxiv="2102.08602",
    impls=("reference", "conv"),
    causal="never",
    state="none",
    time_complexity="N k (D + m^2 D / h)",
    memory_complexity="N^2 k (reference), N k D / h (conv)",
    spatial_dims=(2,),
    summary="Lambda layer: content lambda softmax(K)ᵀV plus local position lambdas (an m×m lambda conv).",
)
class LambdaLayer(HeadedGridMixer):
    """Lambda layer with a local positional context (Bello, arXiv 2102.08602):

        K̄ = softmax over positions of K,   λ^c = K̄ᵀ V,   λ^p_n = E_nᵀ V,   y_n = (λ^c + λ^p_n)ᵀ q_n

    Q = X W_Q (|h| = `num_heads` query heads of `key_dim` k, the multi-query form), K = X W_K (k channels,
    intra-depth u = 1), V = X W_V (v = dim / |h| channels); the heads share K, V and the lambdas and their
    outputs are concatenated. E_nm ∈ R^k is a learned relative position embedding, nonzero only for m in the
    `context_size` × `context_size` window around n (zero-padded at the borders), so the layer accepts any grid
    size; with `context_size` ≥ 2·max(H, W) − 1 every position is in every context, which is the paper's global
    form with relative position embeddings E_nm = R[pos(m) − pos(n)]. `reference` builds E as an N × N × k tensor; `conv` computes the position lambdas as the paper's
    "lambda convolution", a 2D convolution of each value channel with k kernels of m × m. The batch norms the
    paper applies to queries and values are left to the backbone (they would couple the batch elements)."""

    def __init__(self, dim: int, *, num_heads: int = 4, key_dim: int = 16, context_size: int = 7, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.key_dim = self._positive_int("key_dim", key_dim)
        self.context_size = odd_kernel(self, "context_size", context_size)
        self.query = pointwise(dim, key_dim * num_heads, bias=False)
        self.key = pointwise(dim, key_dim, bias=False)
        self.value = pointwise(dim, self.head_dim, bias=False)
        self.position_embedding = nn.Parameter(torch.randn(key_dim, context_size, context_size) * key_dim ** -0.5)

    def _mix(self, x: Tensor) -> Tensor:
        b, _, height, width = x.shape
        n, k, v_dim = height * width, self.key_dim, self.head_dim
        q = self.query(x).view(b, self.num_heads, k, n)
        keys = torch.softmax(self.key(x).view(b, k, n), dim=-1)
        v = self.value(x).view(b, v_dim, n)
        content = torch.einsum("bkn,bvn->bkv", keys, v)                        # λ^c: (B, k, v)
        y = torch.einsum("bhkn,bkv->bhvn", q, content)
        if self.impl == "reference":
            e = self._dense_embeddings(height, width).to(x.dtype)                # E: (N, N, k)
            position = torch.einsum("nmk,bvm->bnkv", e, v)                       # λ^p_n: (B, N, k, v)
            y = y + torch.einsum("bhkn,bnkv->bhvn", q, position)
        else:
            r = self.context_size // 2
            position = F.conv2d(v.reshape(b * v_dim, 1, height, width), self.position_embedding[:, None].to(x.dtype),
                                padding=r).view(b, v_dim, k, n)                  # λ^p: (B, v, k, N)
            y = y + torch.einsum("bhkn,bvkn->bhvn", q, position)
        return y.reshape(b, self.num_heads * v_dim, height, width)

    def _dense_embeddings(self, height: int, width: int) -> Tensor:
        """E_nm = embedding[:, Δrow + r, Δcolumn + r] for |Δ| ≤ r (r = m // 2), zero outside the context."""
        r = self.context_size // 2
        offsets = relative_offsets(height, width, self.position_embedding.device)
        inside = (offsets.abs() <= r).all(-1)
        index = (offsets + r).clamp(0, 2 * r)
        e = self.position_embedding[:, index[..., 0], index[..., 1]].permute(1, 2, 0)
        return e * inside[..., None]


@register(
    name="kronecker_attention",
    family="global_attention",
    layout="grid",
    paper="Kronecker Attention Networks",
    arxiv="2007.08442",
    impls=ATTENTION_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (H + W) D (full queries), (H + W)^2 D (summary queries)",
    memory_complexity="N (H + W)",
    spatial_dims=(2,),
    summary="Kronecker attention: keys and values are the H row means and W column means of the grid.",
)
class KroneckerAttention(HeadedGridMixer):
    """Kronecker attention operators (Gao, Wang & Ji, arXiv 2007.08442): with the grid modelled as
    matrix-variate normal, keys and values are its row and column summaries instead of all H·W positions,

        X̄_row = (1/W) Σ_c X_{:, c} (H tokens),   X̄_col = (1/H) Σ_r X_{r, :} (W tokens),   S = [X̄_row; X̄_col]
        KAO_KV:  y = Attention(X W_Q, S W_K, S W_V)                       (queries: all N positions)
        KAO_QKV: o = Attention(S W_Q, S W_K, S W_V),  y_{r,c} = o_r + o_{H+c}   (queries summarized too)

    `queries` picks `full` (KAO_KV, cost N (H + W)) or `summary` (KAO_QKV, cost (H + W)², the output broadcast
    back to the grid as an outer sum of the row and column outputs). The 1×1 projections W_Q, W_K, W_V, the
    heads and the output projection are those of the other attention mixers here (the summaries are means, so
    projecting before or after averaging is the same). Any grid size."""

    def __init__(self, dim: int, *, num_heads: int = 4, queries: str = "full", **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        if queries not in ("full", "summary"):
            raise self._fail(f"queries must be 'full' or 'summary', got {queries!r}")
        self.queries = queries
        self.qkv = pointwise(dim, 3 * dim)
        self.out = pointwise(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        height, width = x.shape[2:]
        summaries = torch.cat([x.mean(3), x.mean(2)], dim=-1)[..., None]  # (B, C, H + W, 1)
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(summaries).chunk(3, dim=1))
        if self.queries == "full":
            q = split_heads(F.conv2d(x, self.qkv.weight[:self.dim], self.qkv.bias[:self.dim]), self.num_heads)
            o = softmax_attention(q, k, v, causal=False, impl=self.attention_impl)
            return self.out(merge_heads(o, (height, width)))
        o = merge_heads(softmax_attention(q, k, v, causal=False, impl=self.attention_impl), (height + width, 1))
        return self.out(o[:, :, :height] + o[:, :, height:, 0][:, :, None, :])
