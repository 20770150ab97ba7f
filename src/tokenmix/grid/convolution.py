"""Convolutional grid mixers."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.mixer import GridMixer
from tokenmix.ops.conv import conv
from tokenmix.registry import register


@register(
    name="depthwise_conv",
    family="convolution",
    layout="grid",
    paper="A ConvNet for the 2020s",
    arxiv="2201.03545",
    impls=("reference", "direct", "fft"),
    causal="never",
    state="none",
    time_complexity="N k^d",
    memory_complexity="N",
    spatial_dims=(1, 2, 3),
    summary="ConvNeXt's depthwise k×k convolution (zero padding, same size), in 1, 2 or 3 spatial dims.",
)
class DepthwiseConvolution(GridMixer):
    """y_c = w_c ∗ x_c + b_c per channel, an odd kernel of `kernel_size` along each of `spatial_dims` axes.

    `impl` selects the algorithm of `tokenmix.ops.conv.conv`: `reference` (sum over taps), `direct` (PyTorch
    conv), `fft` (large kernels); `auto` picks by kernel size."""

    def __init__(self, dim: int, *, kernel_size: int = 7, spatial_dims: int = 2, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 == 0:
            raise MixerInputError(f"{self.spec.name}: kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(dim, 1, *([kernel_size] * spatial_dims)))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def _mix(self, x: Tensor) -> Tensor:
        return conv(x, self.weight, self.bias, groups=self.dim, impl=self.impl)
