"""Local attention grid mixers: Swin (shifted) window attention and neighborhood attention (NAT).

Both have a `reference` that is global attention over all H·W positions with a mask (who may attend to whom) and
a learned relative position bias, written once with `tokenmix.ops.attention.softmax_attention`; the fast forms
compute only the allowed pairs (windows through SDPA; neighbourhoods by gathering the k×k keys) and are tested
equal to it. Both accept any grid size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._attention_parts import HeadedGridMixer, merge_heads, pointwise, relative_offsets, split_heads
from tokenmix.grid._parts import odd_kernel
from tokenmix.ops._checks import compute_dtype
from tokenmix.ops.attention import softmax_attention
from tokenmix.registry import register


def _relative_bias_table(num_heads: int, span: int) -> nn.Parameter:
    table = nn.Parameter(torch.empty(num_heads, 2 * span - 1, 2 * span - 1))
    nn.init.trunc_normal_(table, std=0.02)
    return table


def _masked_bias(table: Tensor, allowed: Tensor, offsets: Tensor, span: int) -> Tensor:
    """(heads, N, N): table[Δrow + span − 1, Δcolumn + span − 1] where allowed, −inf elsewhere."""
    index = (offsets + span - 1).clamp(0, 2 * span - 2)
    bias = table[:, index[..., 0], index[..., 1]]
    return bias.masked_fill(~allowed, float("-inf"))


@register(
    name="swin_attention",
    family="local_attention",
    layout="grid",
    paper="Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    arxiv="2103.14030",
    impls=("reference", "sdpa"),
    causal="never",
    state="none",
    time_complexity="N M^2 D",
    memory_complexity="N^2 (reference), N M^2 (sdpa)",
    spatial_dims=(2,),
    summary="Swin: multi-head attention inside M×M windows (optionally shifted), with relative position bias.",
)
class SwinWindowAttention(HeadedGridMixer):
    """(Shifted) window multi-head self-attention of Swin (Liu et al., arXiv 2103.14030), eq. (4) and section 3.2:

        Attention(Q, K, V) = SoftMax(Q Kᵀ / √d + B) V     within each M×M window (M = `window_size`)

    B is a learned bias B̂[Δrow, Δcolumn] per head over offsets in [−M+1, M−1]². With `shift_size` s > 0 the
    windows are displaced by s (the paper's cyclic shift toward the top-left, with the wrapped-around parts masked
    so that no query attends across the image border); alternate s = 0 and s = M/2 in consecutive blocks.
    Equivalently: position p (per axis) belongs to window ⌊(p − s) / M⌋, and two positions attend iff they share
    the window on both axes — the `reference` form, a masked global attention.

    Sizes that are not multiples of M: the `sdpa` form pads the grid at the bottom and right to a multiple of M
    and masks the padded keys (they do not change any real output), then crops; windows never need M ≤ H, W."""

    def __init__(self, dim: int, *, num_heads: int = 4, window_size: int = 7, shift_size: int = 0,
                 **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.window_size = self._positive_int("window_size", window_size)
        if isinstance(shift_size, bool) or not isinstance(shift_size, int) or not 0 <= shift_size < window_size:
            raise self._fail(f"shift_size must be an integer in [0, window_size={window_size}), got {shift_size!r}")
        self.shift_size = shift_size
        self.qkv = pointwise(dim, 3 * dim)
        self.out = pointwise(dim, dim)
        self.bias_table = _relative_bias_table(num_heads, window_size)

    def _window_of(self, positions: Tensor) -> Tensor:
        return torch.div(positions - self.shift_size, self.window_size, rounding_mode="floor")

    def _mix(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        if self.attention_impl == "reference":
            o = self._reference(q, k, v)
        else:
            o = self._windows(q, k, v)
        return self.out(o)

    def _reference(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        spatial = q.shape[2:]
        rows, cols = (self._window_of(torch.arange(n, device=q.device)) for n in spatial)
        windows = rows[:, None] * (cols.max() + 2) + cols[None, :]  # one id per (row window, column window)
        windows = windows.flatten()
        allowed = windows[:, None] == windows[None, :]
        bias = _masked_bias(self.bias_table, allowed, relative_offsets(*spatial, q.device), self.window_size)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        o = softmax_attention(q, k, v, causal=False, bias=bias[None], impl="reference")
        return merge_heads(o, spatial)

    def _windows(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, c, height, width = q.shape
        m, s, heads = self.window_size, self.shift_size, self.num_heads
        padded_h, padded_w = height + (-height % m), width + (-width % m)

        def partition(t: Tensor) -> Tensor:  # (B, C, H, W) -> (B·windows, heads, M², d)
            t = F.pad(t, (0, padded_w - width, 0, padded_h - height)).roll((-s, -s), dims=(2, 3))
            t = t.view(b, heads, c // heads, padded_h // m, m, padded_w // m, m)
            return t.permute(0, 3, 5, 1, 4, 6, 2).reshape(-1, heads, m * m, c // heads)

        # per window: the original (unrolled) row / column of each of its M² positions
        def original(n: int, padded: int) -> Tensor:
            return (torch.arange(padded, device=q.device) + s) % padded

        rows = original(height, padded_h).view(-1, 1, m, 1).expand(-1, padded_w // m, m, m)
        cols = original(width, padded_w).view(1, -1, 1, m).expand(padded_h // m, -1, m, m)
        rows, cols = rows.reshape(-1, m * m), cols.reshape(-1, m * m)  # (windows, M²)
        region = self._window_of(rows) * (padded_w + 2) + self._window_of(cols)
        real = (rows < height) & (cols < width)
        allowed = (region[:, :, None] == region[:, None, :]) & (real[:, None, :] | ~real[:, :, None])
        offsets = torch.stack([rows[:, None, :] - rows[:, :, None], cols[:, None, :] - cols[:, :, None]], dim=-1)
        bias = _masked_bias(self.bias_table, allowed, offsets, m).transpose(0, 1)  # (windows, heads, M², M²)
        o = softmax_attention(partition(q), partition(k), partition(v), causal=False,
                              bias=bias.repeat(b, 1, 1, 1), impl="sdpa")
        o = o.view(b, padded_h // m, padded_w // m, heads, m, m, c // heads).permute(0, 3, 6, 1, 4, 2, 5)
        o = o.reshape(b, c, padded_h, padded_w).roll((s, s), dims=(2, 3))
        return o[:, :, :height, :width]


def _neighbourhood_starts(n: int, kernel: int, device: torch.device) -> Tensor:
    """First key of each query's window along one axis: the window is centred, then clamped inside [0, n)."""
    return (torch.arange(n, device=device) - kernel // 2).clamp(0, n - kernel)


@register(
    name="neighborhood_attention",
    family="local_attention",
    layout="grid",
    paper="Neighborhood Attention Transformer",
    arxiv="2204.07143",
    impls=("reference", "gather"),
    causal="never",
    state="none",
    time_complexity="N k^2 D",
    memory_complexity="N^2 (reference), N k^2 (gather)",
    spatial_dims=(2,),
    summary="NAT: each query attends to its k×k neighbourhood, clamped at the borders, with relative bias.",
)
class NeighborhoodAttention(HeadedGridMixer):
    """Neighborhood attention (Hassani et al., arXiv 2204.07143):

        A_i^k = [Q_i K_{ρ_1(i)}ᵀ + B(i, ρ_1(i)), ..., Q_i K_{ρ_k(i)}ᵀ + B(i, ρ_k(i))] / √d
        NA_k(i) = softmax(A_i^k) V_i^k

    ρ_j(i) are the k×k nearest neighbours of i (k = `kernel_size`, odd): a window centred on i, moved inward at
    the borders so that every query sees exactly k×k keys (a corner query's window is the corner k×k block).
    B is a learned relative position bias per head indexed by the key's offset from the query. An axis shorter
    than k is covered whole (the window is clamped to the axis). `reference` is masked global attention;
    `gather` computes only the k² scores per query by gathering each neighbour's key and value (no unfold of a
    k²-times larger tensor, no N² matrix)."""

    def __init__(self, dim: int, *, num_heads: int = 4, kernel_size: int = 7, **base) -> None:
        super().__init__(dim, num_heads=num_heads, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.qkv = pointwise(dim, 3 * dim)
        self.out = pointwise(dim, dim)
        self.bias_table = _relative_bias_table(num_heads, kernel_size)

    def _mix(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=1)
        o = self._reference(q, k, v) if self.impl == "reference" else self._gather(q, k, v)
        return self.out(o)

    def _reference(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        spatial = q.shape[2:]
        inside = []
        for n in spatial:
            kernel = min(self.kernel_size, n)
            start = _neighbourhood_starts(n, kernel, q.device)[:, None]
            key = torch.arange(n, device=q.device)[None, :]
            inside.append((key >= start) & (key < start + kernel))  # (query, key) along this axis
        allowed = (inside[0][:, None, :, None] & inside[1][None, :, None, :]).reshape(q.shape[2] * q.shape[3], -1)
        bias = _masked_bias(self.bias_table, allowed, relative_offsets(*spatial, q.device), self.kernel_size)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        o = softmax_attention(q, k, v, causal=False, bias=bias[None], impl="reference")
        return merge_heads(o, spatial)

    def _gather(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, c, height, width = q.shape
        heads, d = self.num_heads, self.head_dim
        dtype, dtype_in = compute_dtype(q, k, v), q.dtype
        q, k, v = (t.to(dtype).view(b, heads, d, height, width) for t in (q, k, v))
        kernel_h, kernel_w = min(self.kernel_size, height), min(self.kernel_size, width)
        start_h = _neighbourhood_starts(height, kernel_h, q.device)
        start_w = _neighbourhood_starts(width, kernel_w, q.device)
        span = self.kernel_size - 1
        query_h, query_w = torch.arange(height, device=q.device), torch.arange(width, device=q.device)
        scores, neighbours = [], []
        for a in range(kernel_h):
            rows = start_h + a                                                    # (H,): key row of each query row
            for bb in range(kernel_w):
                cols = start_w + bb
                key = k[:, :, :, rows][..., cols]                                 # (B, heads, d, H, W)
                bias = self.bias_table[:, (rows - query_h + span)[:, None], (cols - query_w + span)[None, :]]
                scores.append((q * key).sum(2) * d ** -0.5 + bias.to(dtype))      # (B, heads, H, W)
                neighbours.append((rows, cols))
        weights = torch.softmax(torch.stack(scores, dim=-1), dim=-1)
        o = sum(weights[..., j].unsqueeze(2) * v[:, :, :, rows][..., cols] for j, (rows, cols) in enumerate(neighbours))
        return o.reshape(b, c, height, width).to(dtype_in)
