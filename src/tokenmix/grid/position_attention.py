"""Global attention with a learned dependence on relative position: LeViT's attention bias and ConViT's gated
positional self-attention (GPSA). Both sit on `tokenmix.ops.attention.softmax_attention` (the bias option)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._attention_parts import (ATTENTION_IMPLS, HeadedGridMixer, merge_heads, pointwise,
                                            relative_offsets, split_heads)
from tokenmix.ops.attention import softmax_attention
from tokenmix.registry import register


@register(
    name="levit_attention",
    family="global_attention",
    layout="grid",
    paper="LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference",
    arxiv="2104.01136",
    impls=ATTENTION_IMPLS,
    causal="never",
    state="none",
    time_complexity="N^2 D",
    memory_complexity="N^2",
    spatial_dims=(2,),
    summary="LeViT attention: a learned per-head bias indexed by (|Δx|, |Δy|) added to the scores.",
)
class LeViTAttention(HeadedGridMixer):
    """LeViT attention with attention bias (Graham et al., arXiv 2104.01136), "Attention bias":

        A^h_{(x,y),(x',y')} = Q_{(x,y),:} · K_{(x',y'),:} / √d + B^h_{|x−x'|, |y−y'|}
        y = W_O Hardswish(softmax(A) V)

    B^h is a learned table per head, zero at initialization; LeViT applies Hardswish to the attention output
    before the projection. Resolution: the table holds offsets 0 .. `resolution` − 1 on each axis (the paper
    sizes it to the stage's resolution), so any grid up to `resolution` × `resolution` is accepted, a smaller
    grid using the table's first entries (the same offset has the same bias); a larger grid is rejected with
    an error, since its longer offsets have no learned bias. Memory is N² in both impls: the bias is a dense
    N × N tensor."""

    def __init__(self, dim: int, *, num_heads: int = 4, resolution: int = 16, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.resolution = self._positive_int("resolution", resolution)
        self.qkv = pointwise(dim, 3 * dim)
        self.out = pointwise(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros(num_heads, resolution, resolution))

    def position_bias(self, height: int, width: int) -> Tensor:
        """(heads, N, N): B^h_{|Δrow|, |Δcolumn|}."""
        if height > self.resolution or width > self.resolution:
            raise self._fail(f"grid {height}×{width} exceeds resolution {self.resolution}: the attention bias has "
                             f"no entries for offsets ≥ {self.resolution}; build it with resolution ≥ "
                             f"{max(height, width)}")
        offsets = relative_offsets(height, width, self.bias_table.device).abs()
        return self.bias_table[:, offsets[..., 0], offsets[..., 1]]

    def _mix(self, x: Tensor) -> Tensor:
        bias = self.position_bias(*x.shape[2:])
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=1))
        o = softmax_attention(q, k, v, causal=False, bias=bias[None], impl=self.attention_impl)
        return self.out(F.hardswish(merge_heads(o, x.shape[2:])))


@register(
    name="convit_gpsa",
    family="global_attention",
    layout="grid",
    paper="ConViT: Improving Vision Transformers with Soft Convolutional Inductive Biases",
    arxiv="2103.10697",
    impls=ATTENTION_IMPLS,
    causal="never",
    state="none",
    time_complexity="N^2 D",
    memory_complexity="N^2",
    spatial_dims=(2,),
    summary="ConViT GPSA: a learned gate mixes content attention with a positional attention initialized local.",
)
class GatedPositionalSelfAttention(HeadedGridMixer):
    """Gated positional self-attention of ConViT (d'Ascoli et al., arXiv 2103.10697):

        A^h_ij = (1 − σ(λ_h)) softmax_j(Q^h_i K^hᵀ_j / √d) + σ(λ_h) softmax_j(v_pos^hᵀ r_ij)
        y = W_O [A^1 V^1, ..., A^H V^H]

    r_ij = (δ_x, δ_y, δ_x² + δ_y²) with δ = position of j minus position of i, so the mixer accepts any grid
    size. Locality initialization: head h gets a centre Δ_h on a ⌈√H⌉ × ⌈√H⌉ grid of offsets around
    0 and v_pos^h = α (2Δ_h,x, 2Δ_h,y, −1) (α = `locality_strength`), so its positional score is
    −α ‖δ − Δ_h‖² + const: a soft convolution; gates λ_h start at 1. Each row of A sums to 1 (a convex mix of
    two softmaxes). `reference` builds A; `sdpa` runs the two attentions as fused kernels and mixes their
    outputs, which is the same by linearity (the positional one as attention with zero queries and the
    positional scores as bias)."""

    def __init__(self, dim: int, *, num_heads: int = 4, locality_strength: float = 1.0, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.query_key = pointwise(dim, 2 * dim, bias=False)
        self.value = pointwise(dim, dim, bias=False)
        self.out = pointwise(dim, dim)
        self.position = nn.Linear(3, num_heads)  # v_pos for every head
        self.gate = nn.Parameter(torch.ones(num_heads))
        self.locality_strength = float(locality_strength)
        self._local_init()

    @torch.no_grad()
    def _local_init(self) -> None:
        kernel = math.ceil(math.sqrt(self.num_heads))
        for h in range(self.num_heads):
            dy, dx = (h // kernel) % kernel - kernel // 2, h % kernel - kernel // 2
            self.position.weight[h] = self.locality_strength * torch.tensor([2.0 * dx, 2.0 * dy, -1.0])
        self.position.bias.zero_()

    def positional_scores(self, height: int, width: int, dtype: torch.dtype) -> Tensor:
        """(heads, N, N): v_pos^hᵀ r_ij."""
        delta = relative_offsets(height, width, self.gate.device).to(dtype)  # (N, N, [Δrow, Δcolumn])
        r = torch.stack([delta[..., 1], delta[..., 0], delta.square().sum(-1)], dim=-1)
        return self.position(r.to(self.position.weight.dtype)).permute(2, 0, 1)

    def _mix(self, x: Tensor) -> Tensor:
        spatial = x.shape[2:]
        q, k = (split_heads(t, self.num_heads) for t in self.query_key(x).chunk(2, dim=1))
        v = split_heads(self.value(x), self.num_heads)
        scores = self.positional_scores(*spatial, x.dtype)
        g = torch.sigmoid(self.gate).view(-1, 1, 1)
        if self.attention_impl == "reference":
            content = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
            attention = (1 - g) * content + g * torch.softmax(scores, dim=-1)
            o = attention @ v
        else:
            content = softmax_attention(q, k, v, causal=False, impl="sdpa")
            zeros = q.new_zeros(*q.shape[:3], 1)
            positional = softmax_attention(zeros, zeros, v, causal=False, bias=scores[None], impl="sdpa")
            o = (1 - g) * content + g * positional
        return self.out(merge_heads(o, spatial))
