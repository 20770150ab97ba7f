"""Deformable convolutions: DCNv2 (modulated, dense kernel) and DCNv4 (grouped sampling, no softmax), both over
`tokenmix.ops.deformable.deformable_sample`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenmix.grid._parts import odd_kernel
from tokenmix.mixer import GridMixer
from tokenmix.ops.deformable import deformable_sample
from tokenmix.registry import register

_IMPLS = ("reference", "grid_sample")


@register(
    name="dcnv2",
    family="deformable",
    layout="grid",
    paper="Deformable ConvNets v2: More Deformable, Better Results",
    arxiv="1811.11168",
    impls=_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D^2 k^2",
    memory_complexity="N D k^2",
    spatial_dims=(2,),
    summary="DCNv2: a k×k convolution read at learned offsets (bilinear) and weighted by learned modulation.",
)
class ModulatedDeformableConvolution(GridMixer):
    """Modulated deformable convolution (Zhu et al., arXiv 1811.11168), eq. (3):

        y(p) = Σ_{k=1}^{K} w_k · x(p + p_k + Δp_k) · Δm_k

    over the K = `kernel_size`² taps p_k of a regular grid; Δp_k (fractional, bilinear sampling, zero outside)
    and Δm_k ∈ [0, 1] (a sigmoid) are predicted from x by a k×k convolution with 3K outputs per offset group
    (`offset_groups` groups of channels share offsets). w is a dense D → D kernel with a bias."""

    def __init__(self, dim: int, *, kernel_size: int = 3, offset_groups: int = 1, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.offset_groups = self._positive_int("offset_groups", offset_groups)
        if dim % offset_groups:
            raise self._fail(f"dim {dim} must be divisible by offset_groups {offset_groups}")
        taps = kernel_size ** 2
        self.offset = nn.Conv2d(dim, 3 * offset_groups * taps, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.offset.weight)  # start as a plain convolution (Δp = 0, Δm = 0.5), as the paper
        nn.init.zeros_(self.offset.bias)
        self.weight = nn.Parameter(torch.empty(dim, dim, taps))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _mix(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        g, taps = self.offset_groups, self.kernel_size ** 2
        prediction = self.offset(x).view(b, g, taps, 3, h, w)
        offset, mask = prediction[:, :, :, :2], torch.sigmoid(prediction[:, :, :, 2])
        samples = deformable_sample(x, offset, mask, kernel_size=(self.kernel_size,) * 2,
                                    impl="reference" if self.impl == "reference" else "grid_sample")
        return torch.einsum("oik,bikhw->bohw", self.weight, samples) + self.bias.view(1, -1, 1, 1)


@register(
    name="dcnv4",
    family="deformable",
    layout="grid",
    paper="Efficient Deformable ConvNets: Rethinking Dynamic and Sparse Operator for Vision Applications",
    arxiv="2401.06197",
    impls=_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (D^2 + D k^2)",
    memory_complexity="N D k^2",
    spatial_dims=(2,),
    summary="DCNv4: per-group deformable sampling with unnormalized aggregation weights, between two projections.",
)
class DeformableConvolutionV4(GridMixer):
    """DCNv4 (Xiong et al., arXiv 2401.06197), eq. (2)-(3):

        y(p_0) = W_out Σ_{g=1}^{G} Σ_{k=1}^{K} m_{gk} · x'_g(p_0 + p_k + Δp_{gk}),     x' = W_in x

    G = dim / `group_channels` groups; the offsets Δp_{gk} and aggregation weights m_{gk} come from a linear layer
    (1×1 conv) on x. Unlike DCNv3, m is not softmax-normalized over the K taps (the change DCNv4 makes).
    The paper's memory-access-optimized kernel is a CUDA implementation of the same sum."""

    def __init__(self, dim: int, *, kernel_size: int = 3, group_channels: int = 4, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.group_channels = self._positive_int("group_channels", group_channels)
        if dim % group_channels:
            raise self._fail(f"dim {dim} must be divisible by group_channels {group_channels}")
        self.groups = dim // group_channels
        self.input_projection = nn.Conv2d(dim, dim, 1)
        self.offset = nn.Conv2d(dim, 3 * self.groups * kernel_size ** 2, 1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.output_projection = nn.Conv2d(dim, dim, 1)

    def _mix(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        g, taps = self.groups, self.kernel_size ** 2
        prediction = self.offset(x).view(b, g, taps, 3, h, w)
        offset, weights = prediction[:, :, :, :2], prediction[:, :, :, 2]
        samples = deformable_sample(self.input_projection(x), offset, weights, kernel_size=(self.kernel_size,) * 2,
                                    impl="reference" if self.impl == "reference" else "grid_sample")
        return self.output_projection(samples.sum(2))
