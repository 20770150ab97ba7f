"""Axial attention: multi-head self-attention along the rows, then along the columns."""

from __future__ import annotations

import torch
from torch import Tensor

from tokenmix.grid._attention_parts import ATTENTION_IMPLS, HeadedGridMixer, merge_heads, pointwise, split_heads
from tokenmix.ops.attention import softmax_attention
from tokenmix.registry import register


@register(
    name="axial_attention",
    family="local_attention",
    layout="grid",
    paper="Axial Attention in Multidimensional Transformers",
    arxiv="1912.12180",
    impls=ATTENTION_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (H + W) D",
    memory_complexity="N^2 (reference), N (sdpa)",
    spatial_dims=(2,),
    summary="Axial attention: multi-head self-attention within each row, then within each column.",
)
class AxialAttention(HeadedGridMixer):
    """Axial attention (Ho et al., arXiv 1912.12180): a row layer then a column layer,

        z_{r,c} = Σ_{c'} softmax_{c'}(q_{r,c} · k_{r,c'} / √d) v_{r,c'}      (each row; q, k, v, W_O of its own)
        y_{r,c} = Σ_{r'} softmax_{r'}(q'_{r,c} · k'_{r',c} / √d) v'_{r',c}    (each column, on z)

    each a multi-head attention with its own projections, so a position reaches the whole image in the two steps
    at O(N (H + W)) cost. No positional term: positions come from the backbone. `reference` is a masked global
    attention per layer (pairs in other rows / columns masked); `sdpa` folds the rows (columns) into the batch."""

    def __init__(self, dim: int, *, num_heads: int = 4, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.row_qkv = pointwise(dim, 3 * dim)
        self.row_out = pointwise(dim, dim)
        self.column_qkv = pointwise(dim, 3 * dim)
        self.column_out = pointwise(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        z = self.row_out(self._along(self.row_qkv(x), axis=3))
        return self.column_out(self._along(self.column_qkv(z), axis=2))

    def _along(self, qkv: Tensor, axis: int) -> Tensor:
        """Attention within lines along `axis` (3: rows, 2: columns) of a (B, 3C, H, W) projection."""
        spatial = qkv.shape[2:]
        if self.attention_impl == "reference":
            lines = torch.arange(spatial[0], device=qkv.device)[:, None].expand(spatial) if axis == 3 else \
                torch.arange(spatial[1], device=qkv.device)[None, :].expand(spatial)
            lines = lines.flatten()
            bias = torch.zeros(lines.numel(), lines.numel(), dtype=qkv.dtype, device=qkv.device)
            bias = bias.masked_fill(lines[:, None] != lines[None, :], float("-inf"))
            q, k, v = (split_heads(t, self.num_heads) for t in qkv.chunk(3, dim=1))
            o = softmax_attention(q, k, v, causal=False, bias=bias, impl="reference")
            return merge_heads(o, spatial)
        b, c3, height, width = qkv.shape
        c, heads = c3 // 3, self.num_heads
        lines = qkv.movedim(5 - axis, 1)  # (B, lines, 3C, length) after folding the other axis forward
        lines = lines.reshape(b * lines.shape[1], 3, heads, c // heads, lines.shape[-1]).transpose(-1, -2)
        o = softmax_attention(lines[:, 0], lines[:, 1], lines[:, 2], causal=False, impl="sdpa")
        o = o.transpose(-1, -2).reshape(b, -1, c, o.shape[2])  # (B, lines, C, length)
        return o.movedim(1, 5 - axis)
