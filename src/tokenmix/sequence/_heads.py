"""Small pieces shared by multi-head sequence mixers: head splitting and per-head normalization."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenmix.errors import MixerInputError


def check_heads(name: str, dim: int, num_heads: int, head_total: int | None = None) -> int:
    """Validate `num_heads` against the width it splits (default `dim`); return the per-head size."""
    total = dim if head_total is None else head_total
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
        raise MixerInputError(f"{name}: num_heads must be a positive integer, got {num_heads!r}")
    if total % num_heads:
        raise MixerInputError(f"{name}: width {total} is not divisible by num_heads={num_heads}")
    return total // num_heads


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, H*K) -> (B, H, L, K)."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, K) -> (B, L, H*K)."""
    return x.transpose(1, 2).flatten(-2)


class HeadNorm(nn.Module):
    """Normalization of each head's output over its channels, with a per-channel gain: RMS (GLA) or
    mean-and-variance (RetNet's GroupNorm with one group per head)."""

    def __init__(self, num_heads: int, head_dim: int, *, centered: bool, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_heads, self.centered, self.eps = num_heads, centered, eps
        self.weight = nn.Parameter(torch.ones(num_heads * head_dim))
        self.bias = nn.Parameter(torch.zeros(num_heads * head_dim)) if centered else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, L, K) -> (B, L, H*K), normalized per head."""
        if self.centered:
            x = x - x.mean(-1, keepdim=True)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        x = merge_heads(x) * self.weight
        return x + self.bias if self.bias is not None else x
