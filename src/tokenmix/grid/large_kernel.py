"""Large-kernel grid mixers: RepLKNet's re-parameterized large depthwise kernel and VAN's large-kernel attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._parts import CONV_IMPLS, depthwise_weight, odd_kernel
from tokenmix.mixer import GridMixer
from tokenmix.ops.conv import conv, dilate_kernel
from tokenmix.registry import register

@register(
    name="replknet",
    family="large_kernel",
    layout="grid",
    paper="Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs",
    arxiv="2203.06717",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N K^2 (direct), N log N (fft)",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="RepLKNet: a 31×31 depthwise kernel plus a parallel 5×5 one, folded into one kernel by reparameterize().",
)
class RepLKConvolution(GridMixer):
    """RepLKNet's large-kernel depthwise convolution with a small parallel kernel (Ding et al., arXiv 2203.06717):

        y = (W_K ∗ x + b_K) + (W_k ∗ x + b_k)        (depthwise, K = `kernel_size`, k = `small_kernel_size`)

    `reparameterize()` performs the paper's structural re-parameterization: the small kernel, zero-padded to K×K
    and centred, is added to the large one (and the biases summed), so inference runs one depthwise K×K conv
    with the same outputs. The paper follows each branch with BatchNorm, which in eval mode is a per-channel
    affine map and folds into W and b the same way; here the branches carry biases and the backbone owns the
    normalization (batch statistics would couple the samples of a batch)."""

    def __init__(self, dim: int, *, kernel_size: int = 31, small_kernel_size: int = 5, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.small_kernel_size = odd_kernel(self, "small_kernel_size", small_kernel_size)
        if self.small_kernel_size > self.kernel_size:
            raise self._fail(f"small_kernel_size {small_kernel_size} must not exceed kernel_size {kernel_size}")
        self.weight = depthwise_weight(dim, kernel_size)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.small_weight: nn.Parameter | None = depthwise_weight(dim, small_kernel_size)
        self.small_bias: nn.Parameter | None = nn.Parameter(torch.zeros(dim))

    @property
    def reparameterized(self) -> bool:
        return self.small_weight is None

    def _mix(self, x: Tensor) -> Tensor:
        y = conv(x, self.weight, self.bias, groups=self.dim, impl=self.impl)
        if self.small_weight is not None:
            y = y + conv(x, self.small_weight, self.small_bias, groups=self.dim, impl=self.impl)
        return y

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the small branch into the large kernel (in place; a second call does nothing)."""
        if self.small_weight is None:
            return
        margin = (self.kernel_size - self.small_kernel_size) // 2
        self.weight.add_(F.pad(self.small_weight, (margin,) * 4))
        self.bias.add_(self.small_bias)
        self.small_weight = None
        self.small_bias = None


@register(
    name="van_lka",
    family="large_kernel",
    layout="grid",
    paper="Visual Attention Network",
    arxiv="2202.09741",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (25 + 49 + D)",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="VAN large-kernel attention: 5×5 DW → 7×7 DW dilation 3 → 1×1, multiplied onto the input.",
)
class LargeKernelAttention(GridMixer):
    """Large-kernel attention of VAN (Guo et al., arXiv 2202.09741), eq. (1)-(2):

        Attention = Conv_1×1(DW-D-Conv(DW-Conv(F))),    Output = Attention ⊗ F

    DW-Conv is a 5×5 depthwise conv, DW-D-Conv a 7×7 depthwise conv with dilation 3 (together a 21×21
    receptive field), ⊗ the elementwise product. `impl` selects the algorithm of the depthwise convolutions."""

    def __init__(self, dim: int, **base) -> None:
        super().__init__(dim, **base)
        self.local_weight = depthwise_weight(dim, 5)
        self.local_bias = nn.Parameter(torch.zeros(dim))
        self.dilated_weight = depthwise_weight(dim, 7)
        self.dilated_bias = nn.Parameter(torch.zeros(dim))
        self.pointwise = nn.Conv2d(dim, dim, 1)

    def _mix(self, x: Tensor) -> Tensor:
        a = conv(x, self.local_weight, self.local_bias, groups=self.dim, impl=self.impl)
        a = conv(a, self.dilated_weight, self.dilated_bias, groups=self.dim, dilation=3, impl=self.impl)
        return self.pointwise(a) * x


# UniRepLKNet's branch choices per large kernel size K: (small kernel sizes k, dilations r), section 3.2
UNIREPLK_BRANCHES = {
    5: ((3, 3), (1, 2)),
    7: ((5, 3, 3), (1, 2, 3)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
}


@register(
    name="unireplknet",
    family="large_kernel",
    layout="grid",
    paper="UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series "
          "and Image Recognition",
    arxiv="2311.15599",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N K^2",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="UniRepLKNet Dilated Reparam Block: a K×K depthwise kernel plus dilated small ones, foldable into one.",
)
class DilatedReparamConvolution(GridMixer):
    """UniRepLKNet's Dilated Reparam Block (Ding et al., arXiv 2311.15599), section 3.2:

        y = (W_K ∗ x + b_K) + Σ_i (W_{k_i} ∗_{r_i} x + b_i)        (all depthwise; ∗_r: dilation r)

    with (k_i, r_i) from the paper for K = `kernel_size` ∈ {5, 7, 9, 11, 13} (K = 13: k = (5, 7, 3, 3, 3),
    r = (1, 2, 3, 4, 5)). A dilated k×k kernel equals a non-dilated ((k-1)r+1)² kernel with zeros between the
    taps, so `reparameterize()` zero-pads each to K×K, adds them to W_K and sums the biases: one depthwise conv
    with the same outputs. BatchNorm (per branch in the paper) is left to the backbone, as in `replknet`."""

    def __init__(self, dim: int, *, kernel_size: int = 13, **base) -> None:
        super().__init__(dim, **base)
        if kernel_size not in UNIREPLK_BRANCHES:
            raise self._fail(f"kernel_size must be one of {sorted(UNIREPLK_BRANCHES)}, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.branch_kernel_sizes, self.branch_dilations = UNIREPLK_BRANCHES[kernel_size]
        self.weight = depthwise_weight(dim, kernel_size)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.branch_weights = nn.ParameterList(depthwise_weight(dim, k) for k in self.branch_kernel_sizes)
        self.branch_biases = nn.Parameter(torch.zeros(len(self.branch_kernel_sizes), dim))

    @property
    def reparameterized(self) -> bool:
        return len(self.branch_weights) == 0

    def _mix(self, x: Tensor) -> Tensor:
        y = conv(x, self.weight, self.bias, groups=self.dim, impl=self.impl)
        for weight, bias, dilation in zip(self.branch_weights, self.branch_biases, self.branch_dilations):
            y = y + conv(x, weight, bias, groups=self.dim, dilation=dilation, impl=self.impl)
        return y

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every dilated branch into the large kernel (in place; a second call does nothing)."""
        if self.reparameterized:
            return
        for weight, bias, dilation in zip(self.branch_weights, self.branch_biases, self.branch_dilations):
            dense = dilate_kernel(weight, dilation)
            margin = (self.kernel_size - dense.shape[-1]) // 2
            self.weight.add_(F.pad(dense, (margin,) * 4))
            self.bias.add_(bias)
        self.branch_weights = nn.ParameterList()
        self.branch_biases = nn.Parameter(self.bias.new_zeros(0, self.dim))


@register(
    name="slak",
    family="large_kernel",
    layout="grid",
    paper="More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity",
    arxiv="2207.03620",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (2 M N + k^2)",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="SLaK decomposed kernel: parallel M×N and N×M depthwise strips plus a small k×k kernel, foldable into one.",
)
class DecomposedLargeKernelConvolution(GridMixer):
    """SLaK's decomposed large kernel (Liu et al., arXiv 2207.03620), section 4.1:

        y = (W_{M×N} ∗ x + b_1) + (W_{N×M} ∗ x + b_2) + (W_{k×k} ∗ x + b_3)      (all depthwise)

    M = `kernel_size` (51), N = `strip_width` (5), k = `small_kernel_size` (5). `reparameterize()` zero-pads the
    three kernels to M×M and sums them (one depthwise conv, same outputs), as RepLKNet. The paper's dynamic
    sparsity during training and its BatchNorms are not part of the operator here."""

    def __init__(self, dim: int, *, kernel_size: int = 51, strip_width: int = 5, small_kernel_size: int = 5,
                 **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.strip_width = odd_kernel(self, "strip_width", strip_width)
        self.small_kernel_size = odd_kernel(self, "small_kernel_size", small_kernel_size)
        if max(strip_width, small_kernel_size) > kernel_size:
            raise self._fail(f"strip_width and small_kernel_size must not exceed kernel_size {kernel_size}")
        self.weights = nn.ParameterList([depthwise_weight(dim, (kernel_size, strip_width)),
                                         depthwise_weight(dim, (strip_width, kernel_size)),
                                         depthwise_weight(dim, small_kernel_size)])
        self.biases = nn.Parameter(torch.zeros(3, dim))

    @property
    def reparameterized(self) -> bool:
        return len(self.weights) == 1

    def _mix(self, x: Tensor) -> Tensor:
        y = 0
        for weight, bias in zip(self.weights, self.biases):
            y = y + conv(x, weight, bias, groups=self.dim, impl=self.impl)
        return y

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the strips and the small kernel into one M×M kernel (in place; a second call does nothing)."""
        if self.reparameterized:
            return
        m = self.kernel_size
        kernel = 0
        for weight in self.weights:
            dy, dx = (m - weight.shape[-2]) // 2, (m - weight.shape[-1]) // 2
            kernel = kernel + F.pad(weight, (dx, dx, dy, dy))
        self.weights = nn.ParameterList([nn.Parameter(kernel)])
        self.biases = nn.Parameter(self.biases.sum(0, keepdim=True))

