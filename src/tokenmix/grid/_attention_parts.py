"""Pieces shared by the attention-like grid mixers: heads, token layout, relative offsets, 2D sine positions.

Grids are channels-first `(B, C, H, W)`; attention ops take `(B, heads, N, head_dim)` with the N = H·W positions
in row-major order (position n = row · W + column).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenmix.mixer import GridMixer

ATTENTION_IMPLS = ("reference", "sdpa")  # the algorithms of tokenmix.ops.attention


class HeadedGridMixer(GridMixer):
    """A 2D grid mixer with `num_heads` heads of `dim // num_heads` channels; `impl` picks the attention op."""

    def __init__(self, dim: int, *, num_heads: int = 4, **base) -> None:
        super().__init__(dim, **base)
        self.num_heads = self._positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise self._fail(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.head_dim = dim // num_heads

    @property
    def attention_impl(self) -> str:
        return "sdpa" if self.impl == "auto" else self.impl


def pointwise(dim: int, out: int, bias: bool = True) -> nn.Conv2d:
    """A per-position linear map of the channels (a 1×1 convolution)."""
    return nn.Conv2d(dim, out, 1, bias=bias)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, heads·d, *spatial) -> (B, heads, N, d), positions row-major."""
    b, c = x.shape[:2]
    return x.reshape(b, num_heads, c // num_heads, -1).transpose(-1, -2)


def merge_heads(o: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """(B, heads, N, d) -> (B, heads·d, *spatial)."""
    b, h, _, d = o.shape
    return o.transpose(-1, -2).reshape(b, h * d, *spatial)


def grid_positions(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """(N, 2) integer (row, column) of each row-major position."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1)


def relative_offsets(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """(N, N, 2): (Δrow, Δcolumn) = position of key j minus position of query i."""
    p = grid_positions(height, width, device)
    return p[None, :, :] - p[:, None, :]


def sincos_positions(dim: int, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Fixed 2D sine-cosine position embedding `(dim, H, W)`: the first half of the channels encodes the column,
    the second half the row, each as [sin(p ω_i), cos(p ω_i)] with ω_i = 10000^(-i / (dim/4)) (the 1D
    embedding of "Attention Is All You Need" per axis). Defined at every size, so it imposes no resolution."""
    quarter = dim // 4
    omega = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float64) / quarter)

    def axis(n: int) -> Tensor:
        angles = torch.arange(n, device=device, dtype=torch.float64)[:, None] * omega
        return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, dim/2)

    columns = axis(width).T[:, None, :].expand(-1, height, -1)
    rows = axis(height).T[:, :, None].expand(-1, -1, width)
    return torch.cat([columns, rows], dim=0).to(dtype)
