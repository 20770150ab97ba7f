"""Rotary position embedding: rotate channel pairs of q or k by position-dependent angles.

    RoPE(x)_n = x_n · e^{i n θ_j},  θ_j = base^{-2j/K}    (channels j and j + K/2 form the pair)

"RoFormer: Enhanced Transformer with Rotary Position Embedding", Su et al. 2021, arXiv:2104.09864. RetNet's
xPos-style rotation Θ is the same rotation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate `x: (B, H, L, K)` at integer `positions: (L,)` or `(B, L)`; an odd last channel is left as is."""
    half = x.shape[-1] // 2
    if half == 0:
        return x
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    frequencies = base ** (-torch.arange(half, device=x.device, dtype=dtype) / half)
    angles = positions.to(dtype).unsqueeze(-1) * frequencies          # (L, K/2) or (B, L, K/2)
    if angles.ndim == 3:
        angles = angles.unsqueeze(1)                                   # (B, 1, L, K/2)
    cos, sin = angles.cos(), angles.sin()
    first, second, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    rotated = torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1).to(x.dtype)
    return torch.cat([rotated, rest], dim=-1) if rest.shape[-1] else rotated
