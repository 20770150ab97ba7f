"""Convolutional grid mixers: depthwise (ConvNeXt), Inception depthwise (InceptionNeXt), partial (FasterNet),
ConvMixer. All convolve through `tokenmix.ops.conv`, so each offers its `reference`, `direct` and `fft` forms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.grid._parts import CONV_IMPLS, depthwise_weight, odd_kernel
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

    def __init__(self, dim: int, *, kernel_size: int = 7, dilation: int = 1, spatial_dims: int = 2,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.dilation = self._positive_int("dilation", dilation)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 == 0:
            raise MixerInputError(f"{self.spec.name}: kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(dim, 1, *([kernel_size] * spatial_dims)))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def _mix(self, x: Tensor) -> Tensor:
        return conv(x, self.weight, self.bias, groups=self.dim, dilation=self.dilation, impl=self.impl)


@register(
    name="dense_conv",
    family="convolution",
    layout="grid",
    paper="Very Deep Convolutional Networks for Large-Scale Image Recognition",
    arxiv="1409.1556",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D^2 k^d",
    memory_complexity="N",
    spatial_dims=(1, 2, 3),
    summary="A dense (full) k×k convolution D → D, zero padding, same size (VGG's 3×3), in 1, 2 or 3 dims.",
)
class DenseConvolution(GridMixer):
    """y_o = Σ_c W_{o,c} ∗ x_c + b_o: every output channel reads every input channel over a `kernel_size` window
    (`dilation` spaces the taps), the plain convolution stacked by VGG (arXiv 1409.1556)."""

    def __init__(self, dim: int, *, kernel_size: int = 3, dilation: int = 1, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.dilation = self._positive_int("dilation", dilation)
        self.weight = nn.Parameter(torch.empty(dim, dim, *([kernel_size] * self.spatial_dims)))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _mix(self, x: Tensor) -> Tensor:
        return conv(x, self.weight, self.bias, dilation=self.dilation, impl=self.impl)


@register(
    name="separable_conv",
    family="convolution",
    layout="grid",
    paper="Xception: Deep Learning with Depthwise Separable Convolutions",
    arxiv="1610.02357",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (D k^2 + D^2)",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="Depthwise separable convolution: a depthwise k×k conv, then a pointwise 1×1 conv.",
)
class SeparableConvolution(GridMixer):
    """Depthwise separable convolution (Chollet, arXiv 1610.02357): y = W_pw · (W_dw ∗ x), a per-channel
    `kernel_size`² conv followed by a 1×1 conv across channels, without a nonlinearity in between (the paper
    finds none works best)."""

    def __init__(self, dim: int, *, kernel_size: int = 3, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.depthwise_weight = depthwise_weight(dim, kernel_size)
        self.depthwise_bias = nn.Parameter(torch.zeros(dim))
        self.pointwise = nn.Conv2d(dim, dim, 1)

    def _mix(self, x: Tensor) -> Tensor:
        return self.pointwise(conv(x, self.depthwise_weight, self.depthwise_bias, groups=self.dim, impl=self.impl))


@register(
    name="inverted_residual",
    family="convolution",
    layout="grid",
    paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    arxiv="1801.04381",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D^2 t",
    memory_complexity="N D t",
    spatial_dims=(2,),
    summary="MobileNetV2 bottleneck: 1×1 expand (t=6) → ReLU6 → DW 3×3 → ReLU6 → linear 1×1 projection.",
)
class InvertedResidual(GridMixer):
    """The inverted-residual bottleneck of MobileNetV2 (Sandler et al., arXiv 1801.04381), Table 1:

        y = W_project · ReLU6(W_dw ∗ ReLU6(W_expand · x))      (1×1: D → tD, depthwise k×k, 1×1: tD → D linear)

    t = `expansion` (6). The shortcut x + y and BatchNorm are the backbone's (a MetaFormer block adds x)."""

    def __init__(self, dim: int, *, expansion: int = 6, kernel_size: int = 3, **base) -> None:
        super().__init__(dim, **base)
        self.expansion = self._positive_int("expansion", expansion)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        hidden = dim * expansion
        self.expand = nn.Conv2d(dim, hidden, 1)
        self.depthwise_weight = depthwise_weight(hidden, kernel_size)
        self.depthwise_bias = nn.Parameter(torch.zeros(hidden))
        self.project = nn.Conv2d(hidden, dim, 1)

    def _mix(self, x: Tensor) -> Tensor:
        h = F.relu6(self.expand(x))
        h = F.relu6(conv(h, self.depthwise_weight, self.depthwise_bias, groups=h.shape[1], impl=self.impl))
        return self.project(h)


@register(
    name="inception_next",
    family="convolution",
    layout="grid",
    paper="InceptionNeXt: When Inception Meets ConvNeXt",
    arxiv="2303.16900",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D (k_s^2 + 2 k_b) / 8",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="InceptionNeXt: channels split into a 3×3, a 1×11 and an 11×1 depthwise branch and an identity.",
)
class InceptionDepthwiseConvolution(GridMixer):
    """Inception depthwise convolution (Yu et al., arXiv 2303.16900), eq. (7)-(11):

        X_hw, X_w, X_h, X_id = X[:, :g], X[:, g:2g], X[:, 2g:3g], X[:, 3g:]
        X' = Concat(DWConv_{k_s×k_s}(X_hw), DWConv_{1×k_b}(X_w), DWConv_{k_b×1}(X_h), X_id)

    g = ⌊C · `branch_ratio`⌋ channels per convolutional branch (1/8), k_s = `square_kernel_size` (3),
    k_b = `band_kernel_size` (11)."""

    def __init__(self, dim: int, *, square_kernel_size: int = 3, band_kernel_size: int = 11,
                 branch_ratio: float = 0.125, **base) -> None:
        super().__init__(dim, **base)
        square = odd_kernel(self, "square_kernel_size", square_kernel_size)
        band = odd_kernel(self, "band_kernel_size", band_kernel_size)
        if not isinstance(branch_ratio, (int, float)) or isinstance(branch_ratio, bool) or not 0 < branch_ratio <= 1 / 3:
            raise self._fail(f"branch_ratio must be in (0, 1/3], got {branch_ratio!r}")
        self.branch_channels = int(dim * branch_ratio)
        if self.branch_channels == 0:
            raise self._fail(f"dim {dim} × branch_ratio {branch_ratio} leaves no channel per branch")
        g = self.branch_channels
        self.square_weight = depthwise_weight(g, (square, square))
        self.width_weight = depthwise_weight(g, (1, band))
        self.height_weight = depthwise_weight(g, (band, 1))
        self.bias = nn.Parameter(torch.zeros(3, g))

    def _mix(self, x: Tensor) -> Tensor:
        g = self.branch_channels
        hw, w, h, identity = x.split([g, g, g, x.shape[1] - 3 * g], dim=1)
        branches = [conv(part, weight, bias, groups=g, impl=self.impl)
                    for part, weight, bias in zip((hw, w, h), (self.square_weight, self.width_weight,
                                                               self.height_weight), self.bias)]
        return torch.cat([*branches, identity], dim=1)


@register(
    name="fasternet_pconv",
    family="convolution",
    layout="grid",
    paper="Run, Don't Walk: Chasing Higher FLOPS for Faster Neural Networks",
    arxiv="2303.03667",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N k^2 (D r)^2",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="FasterNet partial convolution: a dense k×k conv on the first quarter of the channels, the rest kept.",
)
class PartialConvolution(GridMixer):
    """Partial convolution PConv (Chen et al., arXiv 2303.03667), section 3.1:

        y = Concat(W ∗ x[:, :c_p], x[:, c_p:]),     c_p = ⌊C · `partial_ratio`⌋ (1/4)

    W a dense (regular) `kernel_size`² convolution c_p → c_p, without bias as in the paper; the remaining
    channels pass through untouched (the following pointwise layers mix them)."""

    def __init__(self, dim: int, *, kernel_size: int = 3, partial_ratio: float = 0.25, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        if not isinstance(partial_ratio, (int, float)) or isinstance(partial_ratio, bool) or not 0 < partial_ratio <= 1:
            raise self._fail(f"partial_ratio must be in (0, 1], got {partial_ratio!r}")
        self.partial_channels = int(dim * partial_ratio)
        if self.partial_channels == 0:
            raise self._fail(f"dim {dim} × partial_ratio {partial_ratio} leaves no channel to convolve")
        c = self.partial_channels
        self.weight = nn.Parameter(torch.empty(c, c, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _mix(self, x: Tensor) -> Tensor:
        c = self.partial_channels
        return torch.cat([conv(x[:, :c], self.weight, impl=self.impl), x[:, c:]], dim=1)


@register(
    name="convmixer",
    family="convolution",
    layout="grid",
    paper="Patches Are All You Need?",
    arxiv="2201.09792",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (k^2 D + D^2)",
    memory_complexity="N D",
    spatial_dims=(2,),
    summary="ConvMixer layer: residual depthwise k×k conv → GELU → norm, then pointwise conv → GELU → norm.",
)
class ConvMixerLayer(GridMixer):
    """One ConvMixer layer (Trockman & Kolter, arXiv 2201.09792), eq. (2)-(3):

        z' = BN(σ(ConvDepthwise(z))) + z,      z_out = BN(σ(ConvPointwise(z')))

    σ = GELU, a depthwise `kernel_size`² conv (9 in the paper's ConvMixer-1536/20). BN is taken in its inference
    form, a learned per-channel scale and shift (batch statistics would couple the examples of a batch)."""

    def __init__(self, dim: int, *, kernel_size: int = 9, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.depthwise_weight = depthwise_weight(dim, kernel_size)
        self.depthwise_bias = nn.Parameter(torch.zeros(dim))
        self.pointwise = nn.Conv2d(dim, dim, 1)
        self.norm_scale = nn.Parameter(torch.ones(2, dim, 1, 1))
        self.norm_shift = nn.Parameter(torch.zeros(2, dim, 1, 1))

    def _mix(self, x: Tensor) -> Tensor:
        z = F.gelu(conv(x, self.depthwise_weight, self.depthwise_bias, groups=self.dim, impl=self.impl))
        z = z * self.norm_scale[0] + self.norm_shift[0] + x
        return F.gelu(self.pointwise(z)) * self.norm_scale[1] + self.norm_shift[1]
