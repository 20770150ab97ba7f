"""Global attention grid mixers: every position attends to every position (or to a reduced grid).

ViT multi-head self-attention, the non-local block, PVT spatial-reduction attention, CvT convolutional projections
and CRATE's multi-head subspace self-attention. All share `tokenmix.ops.attention.softmax_attention` (`reference`
materializes the scores, `sdpa` is PyTorch's fused kernel); they accept any grid size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._attention_parts import (ATTENTION_IMPLS, HeadedGridMixer, merge_heads, pointwise,
                                            sincos_positions, split_heads)
from tokenmix.mixer import GridMixer
from tokenmix.ops.attention import softmax_attention
from tokenmix.registry import register


@register(
    name="vit_attention",
    family="global_attention",
    layout="grid",
    paper="An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    arxiv="2010.11929",
    impls=ATTENTION_IMPLS,
    causal="never",
    state="none",
    time_complexity="N^2 D",
    memory_complexity="N^2 (reference), N (sdpa)",
    spatial_dims=(2,),
    summary="ViT multi-head self-attention over all H·W positions, with 2D sine-cosine positions.",
)
class VisionTransformerAttention(HeadedGridMixer):
    """ViT multi-head self-attention (Dosovitskiy et al., arXiv 2010.11929), appendix A:

        [q, k, v] = (x + p) U_qkv,   head_h = softmax(q_h k_hᵀ / √d) v_h,   y = [head_1, ..., head_H] U_msa

    over the N = H·W positions in row-major order. 2D positions: ViT adds a position embedding p to the patch
    tokens; here `position="sincos"` adds a fixed 2D sine-cosine embedding (half the channels encode the column,
    half the row, so dim must be divisible by 4), defined at every grid size, so the mixer takes any
    resolution without interpolating a learned table; `position="none"` leaves positions to the backbone
    (the attention is then equivariant to permutations of the positions)."""

    def __init__(self, dim: int, *, num_heads: int = 4, position: str = "sincos", **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        if position not in ("sincos", "none"):
            raise self._fail(f"position must be 'sincos' or 'none', got {position!r}")
        if position == "sincos" and dim % 4:
            raise self._fail(f"position='sincos' needs dim divisible by 4, got {dim}; use position='none'")
        self.position = position
        self.qkv = pointwise(dim, 3 * dim)
        self.out = pointwise(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        if self.position == "sincos":
            x = x + sincos_positions(self.dim, *x.shape[2:], x.dtype, x.device)
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=1))
        o = softmax_attention(q, k, v, causal=False, impl=self.attention_impl)
        return self.out(merge_heads(o, x.shape[2:]))


@register(
    name="non_local",
    family="global_attention",
    layout="grid",
    paper="Non-local Neural Networks",
    arxiv="1711.07971",
    impls=("reference", "fast"),
    causal="never",
    state="none",
    time_complexity="N^2 D (embedded_gaussian), N D^2 (dot_product, fast)",
    memory_complexity="N^2 (reference), N (fast)",
    spatial_dims=(2,),
    summary="Non-local block: y_i = (1/C(x)) Σ_j f(x_i, x_j) g(x_j), embedded Gaussian or dot product.",
)
class NonLocalBlock(GridMixer):
    """Non-local block (Wang et al., arXiv 1711.07971), eq. (1)-(6):

        y_i = (1 / C(x)) Σ_j f(x_i, x_j) g(x_j),   z_i = W_z y_i (+ x_i)

    θ, φ, g, W_z are 1×1 convolutions (inner width `inner_dim`, default dim/2). `variant`:
    * `embedded_gaussian`: f = exp(θ(x_i)ᵀ φ(x_j)), C = Σ_j f, i.e. y = softmax(θ φᵀ) g (no 1/√d scale);
      fast form: the fused SDPA kernel.
    * `dot_product`: f = θ(x_i)ᵀ φ(x_j), C = N; fast form: the product re-associated, y = θ (φᵀ g) / N,
      linear in N.
    The residual "+ x_i" of eq. (6) is the backbone's (MetaFormer adds the mixer's output to its input), so the
    mixer returns W_z y."""

    def __init__(self, dim: int, *, variant: str = "embedded_gaussian", inner_dim: int | None = None,
                 **base) -> None:
        super().__init__(dim, **base)
        if variant not in ("embedded_gaussian", "dot_product"):
            raise self._fail(f"variant must be 'embedded_gaussian' or 'dot_product', got {variant!r}")
        self.variant = variant
        self.inner_dim = max(1, dim // 2) if inner_dim is None else self._positive_int("inner_dim", inner_dim)
        self.theta = pointwise(dim, self.inner_dim)
        self.phi = pointwise(dim, self.inner_dim)
        self.g = pointwise(dim, self.inner_dim)
        self.w_z = pointwise(self.inner_dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        theta, phi, g = (split_heads(layer(x), 1) for layer in (self.theta, self.phi, self.g))  # (B, 1, N, d)
        n = theta.shape[2]
        fast = self.impl in ("auto", "fast")
        if self.variant == "embedded_gaussian":
            y = softmax_attention(theta, phi, g, causal=False, scale=1.0, impl="sdpa" if fast else "reference")
        elif fast:
            y = theta @ (phi.transpose(-1, -2) @ g) / n
        else:
            y = (theta @ phi.transpose(-1, -2) / n) @ g
        return self.w_z(merge_heads(y, x.shape[2:]))


def _channel_layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    return norm(x.movedim(1, -1)).movedim(-1, 1)


@register(
    name="pvt_attention",
    family="global_attention",
    layout="grid",
    paper="Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without Convolutions",
    arxiv="2102.12122",
    impls=ATTENTION_IMPLS,
    causal="never",
    state="none",
    time_complexity="N^2 D / R^2",
    memory_complexity="N^2 / R^2 (reference), N (sdpa)",
    spatial_dims=(2,),
    summary="PVT spatial-reduction attention: keys and values from the grid reduced R× by a strided conv.",
)
class SpatialReductionAttention(HeadedGridMixer):
    """Spatial-reduction attention of PVT (Wang et al., arXiv 2102.12122), section 3.3:

        SRA(Q, K, V) = Concat(head_1, ..., head_H) W^O,   head_j = Attention(Q W_j^Q, SR(K) W_j^K, SR(V) W_j^V)
        SR(x) = Norm(Reshape(x, R) W^S)

    Reshape(x, R) W^S is a convolution of kernel R and stride R (R = `reduction`), Norm a LayerNorm over the
    channels; the N queries attend to N / R² reduced tokens. A grid whose sides are not multiples of R is
    zero-padded at the bottom and right before the reduction, so every position reaches some key."""

    def __init__(self, dim: int, *, num_heads: int = 4, reduction: int = 2, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.reduction = self._positive_int("reduction", reduction)
        self.query = pointwise(dim, dim)
        self.key_value = pointwise(dim, 2 * dim)
        self.reduce = nn.Conv2d(dim, dim, reduction, stride=reduction) if reduction > 1 else None
        self.norm = nn.LayerNorm(dim) if reduction > 1 else None
        self.out = pointwise(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        q = split_heads(self.query(x), self.num_heads)
        reduced = x
        if self.reduce is not None:
            r = self.reduction
            reduced = F.pad(x, (0, -x.shape[3] % r, 0, -x.shape[2] % r))
            reduced = _channel_layer_norm(self.reduce(reduced), self.norm)
        k, v = (split_heads(t, self.num_heads) for t in self.key_value(reduced).chunk(2, dim=1))
        o = softmax_attention(q, k, v, causal=False, impl=self.attention_impl)
        return self.out(merge_heads(o, x.shape[2:]))


@register(
    name="cvt_attention",
    family="global_attention",
    layout="grid",
    paper="CvT: Introducing Convolutions to Vision Transformers",
    arxiv="2103.15808",
    impls=ATTENTION_IMPLS,
    causal="never",
    state="none",
    time_complexity="N^2 D / s^2",
    memory_complexity="N^2 / s^2 (reference), N (sdpa)",
    spatial_dims=(2,),
    summary="CvT convolutional projection: q, k, v from depthwise 3×3 convs (stride s for k, v), then attention.",
)
class ConvolutionalProjectionAttention(HeadedGridMixer):
    """Convolutional projection attention of CvT (Wu et al., arXiv 2103.15808), "Convolutional Projection":

        x^{q/k/v} = Flatten(BN(DWConv_{3×3}(Reshape2D(x)))),   then multi-head attention of
        q = x^q W^q, k = x^k W^k, v = x^v W^v

    queries use stride 1, keys and values stride `kv_stride` s (the paper's "squeezed" projection, s = 2),
    padding 1, so keys cover ⌈H/s⌉×⌈W/s⌉ positions. BatchNorm is replaced by its inference-time form, a
    per-channel affine map, which folds into each depthwise convolution's weight and bias (so batch elements
    stay independent in training). CvT uses no position embedding: the convolutions supply position."""

    def __init__(self, dim: int, *, num_heads: int = 4, kv_stride: int = 2, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.kv_stride = self._positive_int("kv_stride", kv_stride)
        self.conv_q = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.conv_k = nn.Conv2d(dim, dim, 3, stride=kv_stride, padding=1, groups=dim)
        self.conv_v = nn.Conv2d(dim, dim, 3, stride=kv_stride, padding=1, groups=dim)
        self.proj_q, self.proj_k, self.proj_v = (pointwise(dim, dim) for _ in range(3))
        self.out = pointwise(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        q = split_heads(self.proj_q(self.conv_q(x)), self.num_heads)
        k = split_heads(self.proj_k(self.conv_k(x)), self.num_heads)
        v = split_heads(self.proj_v(self.conv_v(x)), self.num_heads)
        o = softmax_attention(q, k, v, causal=False, impl=self.attention_impl)
        return self.out(merge_heads(o, x.shape[2:]))


@register(
    name="crate_mssa",
    family="global_attention",
    layout="grid",
    paper="White-Box Transformers via Sparse Rate Reduction",
    arxiv="2306.01129",
    impls=ATTENTION_IMPLS,
    causal="never",
    state="none",
    time_complexity="N^2 D",
    memory_complexity="N^2 (reference), N (sdpa)",
    spatial_dims=(2,),
    summary="CRATE MSSA: per-subspace attention with one projection U_k shared by query, key and value.",
)
class MultiHeadSubspaceSelfAttention(HeadedGridMixer):
    """Multi-head subspace self-attention of CRATE (Yu et al., arXiv 2306.01129):

        SSA(Z | U_k) = (U_kᵀ Z) softmax((U_kᵀ Z)ᵀ (U_kᵀ Z))
        MSSA(Z | U) = (p / (N ε²)) [U_1, ..., U_K] [SSA(Z | U_1); ...; SSA(Z | U_K)]

    one projection U_k per head serves as query, key and value (a gradient step on the coding rate of the
    tokens against the subspaces). As in the authors' implementation, the scores are scaled by 1/√d and the
    output map (p / (N ε²)) [U_1, ..., U_K] is a learned W_O; the block's residual Z + MSSA(Z) is the
    backbone's."""

    def __init__(self, dim: int, *, num_heads: int = 4, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.subspaces = pointwise(dim, dim, bias=False)  # [U_1, ..., U_K]ᵀ
        self.out = pointwise(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        w = split_heads(self.subspaces(x), self.num_heads)
        o = softmax_attention(w, w, w, causal=False, impl=self.attention_impl)
        return self.out(merge_heads(o, x.shape[2:]))
