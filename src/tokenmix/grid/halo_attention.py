"""HaloNet blocked local self-attention: each b×b block of queries attends to the block grown by a halo of h pixels.

The `reference` is masked global attention (the allowed pairs and the relative-position logits written for all
N × N pairs); `sdpa` cuts the grid into blocks and their haloed neighbourhoods and runs the fused kernel per block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._attention_parts import HeadedGridMixer, merge_heads, pointwise, relative_offsets, split_heads
from tokenmix.ops.attention import softmax_attention
from tokenmix.registry import register


@register(
    name="halo_attention",
    family="local_attention",
    layout="grid",
    paper="Scaling Local Self-Attention for Parameter Efficient Visual Backbones",
    arxiv="2103.12731",
    impls=("reference", "sdpa"),
    causal="never",
    state="none",
    time_complexity="N (b+2h)^2 D",
    memory_complexity="N^2 (reference), N (b+2h)^2 (sdpa)",
    spatial_dims=(2,),
    summary="HaloNet: b×b query blocks attend to their block plus a halo of h pixels, relative-position logits.",
)
class HaloAttention(HeadedGridMixer):
    """Blocked local self-attention with halos (Vaswani et al., arXiv 2103.12731), with the relative position
    logits of stand-alone self-attention (Ramachandran et al., arXiv 1906.05909):

        y_i = Σ_{j ∈ N(i)} softmax_j((q_iᵀ k_j + q_iᵀ r_{j−i}) / √d) v_j

    N(i): the b×b block of i (b = `block_size`) grown by h = `halo_size` pixels on every side, so a query sees
    (b + 2h)² positions; r_{Δrow,Δcol} = [r^row_{Δrow}; r^col_{Δcol}] (each d/2 channels, shared by the heads,
    head_dim must be even). At the borders the halo reaches outside the image: those keys are masked (the paper
    pads with zeros; masking makes the output independent of the padding). A grid whose sides are not multiples
    of b is padded at the bottom and right to whole blocks in the `sdpa` form, and the padded queries are
    cropped."""

    def __init__(self, dim: int, *, num_heads: int = 4, block_size: int = 4, halo_size: int = 1, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.block_size = self._positive_int("block_size", block_size)
        if isinstance(halo_size, bool) or not isinstance(halo_size, int) or halo_size < 0:
            raise self._fail(f"halo_size must be a non-negative integer, got {halo_size!r}")
        if self.head_dim % 2:
            raise self._fail(f"head_dim = dim / num_heads must be even (half row, half column embedding), "
                             f"got {self.head_dim}")
        self.halo_size = halo_size
        self.span = block_size + halo_size  # offsets lie in [−span + 1, span − 1]
        self.qkv = pointwise(dim, 3 * dim)
        self.out = pointwise(dim, dim)
        self.row_embedding = nn.Parameter(torch.randn(2 * self.span - 1, self.head_dim // 2) * self.head_dim ** -0.5)
        self.column_embedding = nn.Parameter(torch.randn(2 * self.span - 1, self.head_dim // 2)
                                             * self.head_dim ** -0.5)

    def _position_logits(self, q: Tensor, row_offsets: Tensor, column_offsets: Tensor) -> Tensor:
        """q_iᵀ r_{j−i} for queries q (..., Q, d) and integer offsets (Q, K) per axis: (..., Q, K)."""
        half = self.head_dim // 2
        rows = q[..., :half] @ self.row_embedding.to(q.dtype).T        # (..., Q, 2·span − 1)
        columns = q[..., half:] @ self.column_embedding.to(q.dtype).T
        index = lambda offsets: (offsets + self.span - 1).clamp(0, 2 * self.span - 2).expand(*q.shape[:-2], -1, -1)
        return rows.gather(-1, index(row_offsets)) + columns.gather(-1, index(column_offsets))

    def _mix(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        o = self._reference(q, k, v) if self.attention_impl == "reference" else self._blocks(q, k, v)
        return self.out(o)

    def _reference(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        spatial = q.shape[2:]
        b, h = self.block_size, self.halo_size
        allowed = []
        for n in spatial:
            position = torch.arange(n, device=q.device)
            start = position // b * b
            allowed.append((position[None, :] >= start[:, None] - h) & (position[None, :] < start[:, None] + b + h))
        allowed = (allowed[0][:, None, :, None] & allowed[1][None, :, None, :]).reshape(q.shape[2] * q.shape[3], -1)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        offsets = relative_offsets(*spatial, q.device)
        logits = self._position_logits(q, offsets[..., 0], offsets[..., 1]) * self.head_dim ** -0.5
        o = softmax_attention(q, k, v, causal=False, bias=logits.masked_fill(~allowed, float("-inf")),
                              impl="reference")
        return merge_heads(o, spatial)

    def _blocks(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        batch, c, height, width = q.shape
        b, h, heads, d = self.block_size, self.halo_size, self.num_heads, self.head_dim
        extra_h, extra_w = -height % b, -width % b
        blocks_h, blocks_w = (height + extra_h) // b, (width + extra_w) // b
        window = b + 2 * h

        q = F.pad(q, (0, extra_w, 0, extra_h)).view(batch, heads, d, blocks_h, b, blocks_w, b)
        q = q.permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, heads, b * b, d)

        def neighbourhoods(t: Tensor) -> Tensor:  # (B, C, H, W) -> (B·blocks, heads, window², d)
            t = F.pad(t, (h, h + extra_w, h, h + extra_h)).unfold(2, window, b).unfold(3, window, b)
            t = t.reshape(batch, heads, d, blocks_h, blocks_w, window * window)
            return t.permute(0, 3, 4, 1, 5, 2).reshape(-1, heads, window * window, d)

        # keys outside the image: rows / columns of each block's neighbourhood
        rows = torch.arange(blocks_h, device=q.device)[:, None] * b - h + torch.arange(window, device=q.device)
        cols = torch.arange(blocks_w, device=q.device)[:, None] * b - h + torch.arange(window, device=q.device)
        outside = ((rows < 0) | (rows >= height))[:, None, :, None] | ((cols < 0) | (cols >= width))[None, :, None, :]
        outside = outside.reshape(1, blocks_h * blocks_w, 1, 1, window * window).expand(batch, -1, -1, -1, -1)

        local = torch.arange(b, device=q.device)
        halo = torch.arange(window, device=q.device) - h
        row_offsets = (halo[None, None, :, None] - local[:, None, None, None]).expand(b, b, window, window)
        col_offsets = (halo[None, None, None, :] - local[None, :, None, None]).expand(b, b, window, window)
        logits = self._position_logits(q, row_offsets.reshape(b * b, -1), col_offsets.reshape(b * b, -1))
        logits = logits * d ** -0.5
        logits = logits.view(batch, blocks_h * blocks_w, heads, b * b, -1).masked_fill(outside, float("-inf"))
        o = softmax_attention(q, neighbourhoods(k), neighbourhoods(v), causal=False,
                              bias=logits.flatten(0, 1), impl="sdpa")
        o = o.view(batch, blocks_h, blocks_w, heads, b, b, d).permute(0, 3, 6, 1, 4, 2, 5)
        return o.reshape(batch, c, blocks_h * b, blocks_w * b)[:, :, :height, :width]
