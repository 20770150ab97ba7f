"""Pooling as a token mixer: PoolFormer."""

from __future__ import annotations

import itertools

import torch.nn.functional as F
from torch import Tensor

from tokenmix.grid._parts import odd_kernel
from tokenmix.mixer import GridMixer
from tokenmix.registry import register

_AVERAGE_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@register(
    name="poolformer",
    family="pooling",
    layout="grid",
    paper="MetaFormer Is Actually What You Need for Vision",
    arxiv="2111.11418",
    impls=("reference", "direct"),
    causal="never",
    state="none",
    time_complexity="N k^d",
    memory_complexity="N",
    spatial_dims=(1, 2, 3),
    summary="PoolFormer: average pooling minus the input, no parameters.",
)
class Pooling(GridMixer):
    """PoolFormer's token mixer (Yu et al., arXiv 2111.11418), eq. (4):

        T'_{:, i, j} = 1/(K·K) Σ_{p,q=1}^{K} T_{:, i+p-(K+1)/2, j+q-(K+1)/2} − T_{:, i, j}

    a stride-1 K×K average (K = `pool_size`, 3) over the positions inside the image (the count excludes the
    padding, as the paper's code does), minus the input, in 1, 2 or 3 spatial dims. `reference` sums shifted
    windows and counts; `direct` is PyTorch's average pooling."""

    def __init__(self, dim: int, *, pool_size: int = 3, **base) -> None:
        super().__init__(dim, **base)
        self.pool_size = odd_kernel(self, "pool_size", pool_size)

    def _mix(self, x: Tensor) -> Tensor:
        k, r = self.pool_size, self.pool_size // 2
        if self.impl != "reference":
            return _AVERAGE_POOLS[self.spatial_dims](x, k, stride=1, padding=r, count_include_pad=False) - x
        spatial = x.shape[2:]
        padded = F.pad(x, (r,) * (2 * len(spatial)))
        count = F.pad(x.new_ones(1, 1, *spatial), (r,) * (2 * len(spatial)))
        total, inside = 0, 0
        for tap in itertools.product(range(k), repeat=len(spatial)):
            window = (..., *(slice(p, p + n) for p, n in zip(tap, spatial)))
            total = total + padded[window]
            inside = inside + count[window]
        return total / inside - x
