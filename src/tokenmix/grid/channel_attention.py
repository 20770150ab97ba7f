"""Channel-attention grid mixers: Squeeze-and-Excitation, ECA and CBAM (channel then spatial attention).

These reweight the input by gates computed from global statistics: SE and ECA mix positions only through the
global average pool (every position sees the image mean), CBAM adds a 7×7 spatial gate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._parts import odd_kernel
from tokenmix.mixer import GridMixer
from tokenmix.ops.conv import conv
from tokenmix.registry import register


def _spatial_mean(x: Tensor) -> Tensor:
    """(B, C, *spatial) -> (B, C): the global average pool."""
    return x.flatten(2).mean(-1)


def _broadcast(gate: Tensor, x: Tensor) -> Tensor:
    return gate.view(*gate.shape, *([1] * (x.ndim - 2)))


@register(
    name="squeeze_excitation",
    family="channel_attention",
    layout="grid",
    paper="Squeeze-and-Excitation Networks",
    arxiv="1709.01507",
    impls=("reference",),
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(1, 2, 3),
    summary="SE: channel gates σ(W2 δ(W1 GAP(x))) multiplied onto the input.",
)
class SqueezeExcitation(GridMixer):
    """Squeeze-and-Excitation (Hu et al., arXiv 1709.01507), eq. (2)-(4):

        z = GAP(x),   s = σ(W_2 δ(W_1 z)),   y_c = s_c · x_c

    δ is ReLU, W_1: C → C/r, W_2: C/r → C (with biases), r = `reduction` (hidden width at least 1)."""

    def __init__(self, dim: int, *, reduction: int = 16, **base) -> None:
        super().__init__(dim, **base)
        self.reduction = self._positive_int("reduction", reduction)
        hidden = max(1, dim // reduction)
        self.squeeze = nn.Linear(dim, hidden)
        self.excite = nn.Linear(hidden, dim)

    def _mix(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.excite(F.relu(self.squeeze(_spatial_mean(x)))))
        return _broadcast(s, x) * x


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's adaptive kernel size k = |log2(C)/γ + b/γ|_odd (the nearest odd integer, rounding up from even)."""
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


@register(
    name="eca",
    family="channel_attention",
    layout="grid",
    paper="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    arxiv="1910.03151",
    impls=("reference",),
    causal="never",
    state="none",
    time_complexity="N",
    memory_complexity="N",
    spatial_dims=(1, 2, 3),
    summary="ECA: channel gates from a 1D convolution (adaptive size k) over the pooled channel vector.",
)
class EfficientChannelAttention(GridMixer):
    """Efficient Channel Attention (Wang et al., arXiv 1910.03151), eq. (4)-(5), (12):

        y = GAP(x),   ω = σ(C1D_k(y)),   out_c = ω_c · x_c

    C1D_k is a 1D convolution across the channel axis (no bias, zero padding, shared weights), with
    k = ψ(C) = |log2(C)/γ + b/γ|_odd, γ = 2, b = 1, unless `kernel_size` is given."""

    def __init__(self, dim: int, *, kernel_size: int | None = None, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = eca_kernel_size(dim) if kernel_size is None else odd_kernel(self, "kernel_size", kernel_size)
        self.weight = nn.Parameter(torch.empty(1, 1, self.kernel_size))
        nn.init.uniform_(self.weight, -1 / math.sqrt(self.kernel_size), 1 / math.sqrt(self.kernel_size))

    def _mix(self, x: Tensor) -> Tensor:
        y = _spatial_mean(x)[:, None, :]                       # (B, 1, C): channels as a sequence
        omega = torch.sigmoid(conv(y, self.weight, impl="direct"))[:, 0]
        return _broadcast(omega, x) * x


@register(
    name="cbam",
    family="channel_attention",
    layout="grid",
    paper="CBAM: Convolutional Block Attention Module",
    arxiv="1807.06521",
    impls=("reference", "direct", "fft"),
    causal="never",
    state="none",
    time_complexity="N (D + k^2)",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="CBAM: a channel gate from avg- and max-pooled MLP, then a spatial gate from a 7×7 conv.",
)
class ConvolutionalBlockAttention(GridMixer):
    """Convolutional Block Attention Module (Woo et al., arXiv 1807.06521), eq. (1)-(3):

        M_c(F) = σ(MLP(AvgPool(F)) + MLP(MaxPool(F))),          F' = M_c(F) ⊗ F
        M_s(F') = σ(f^{7×7}([AvgPool_c(F'); MaxPool_c(F')])),   F'' = M_s(F') ⊗ F'

    The MLP (shared by both pools) is C → C/r → C with ReLU; the spatial pools run over channels. `impl` selects
    the algorithm of the 7×7 convolution."""

    def __init__(self, dim: int, *, reduction: int = 16, kernel_size: int = 7, **base) -> None:
        super().__init__(dim, **base)
        self.reduction = self._positive_int("reduction", reduction)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        hidden = max(1, dim // reduction)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.spatial_weight = nn.Parameter(torch.empty(1, 2, kernel_size, kernel_size))
        self.spatial_bias = nn.Parameter(torch.zeros(1))
        nn.init.kaiming_uniform_(self.spatial_weight, a=math.sqrt(5))

    def _mix(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        channel_gate = torch.sigmoid(self.mlp(flat.mean(-1)) + self.mlp(flat.amax(-1)))
        x = _broadcast(channel_gate, x) * x
        pooled = torch.stack([x.mean(1), x.amax(1)], dim=1)  # (B, 2, H, W)
        spatial_gate = torch.sigmoid(conv(pooled, self.spatial_weight, self.spatial_bias, impl=self.impl))
        return spatial_gate * x


@register(
    name="gather_excite",
    family="channel_attention",
    layout="grid",
    paper="Gather-Excite: Exploiting Feature Context in Convolutional Neural Networks",
    arxiv="1810.12348",
    impls=("reference",),
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="Gather-Excite: context gathered over an extent (pooling or strided DW convs), excited back by a gate.",
)
class GatherExcite(GridMixer):
    """Gather-Excite (Hu et al., arXiv 1810.12348):

        x̂ = ξ_G(x),      y = ξ_E(x, x̂) = x ⊙ σ(interp(x̂))

    the gate is x̂ brought back to x's grid by nearest-neighbour upsampling (each gathered value onto the
    `extent`×`extent` cell it summarizes; a global x̂ broadcasts). `variant` picks the gather:
    * `theta_minus` (GE-θ⁻, no parameters): average pooling over the whole image (`extent=None`) or over
      `extent`×`extent` cells with stride `extent`;
    * `theta` (GE-θ): log2(`extent`) depthwise 3×3 convolutions of stride 2 (ReLU between; the paper's BN left
      to the backbone), `extent` a power of two ≥ 2;
    * `theta_plus` (GE-θ⁺): GE-θ's gather followed by SE's channel MLP (1×1 convs C → C/16 → C, ReLU) before σ."""

    def __init__(self, dim: int, *, variant: str = "theta_plus", extent: int | None = 8, **base) -> None:
        super().__init__(dim, **base)
        if variant not in ("theta_minus", "theta", "theta_plus"):
            raise self._fail(f"variant must be 'theta_minus', 'theta' or 'theta_plus', got {variant!r}")
        if extent is not None:
            extent = self._positive_int("extent", extent)
        if variant != "theta_minus" and (extent is None or extent < 2 or extent & (extent - 1)):
            raise self._fail(f"variant {variant!r} gathers with stride-2 convolutions: extent must be a power of two "
                             f"≥ 2, got {extent!r}")
        self.variant, self.extent = variant, extent
        self.gather = nn.ModuleList()
        if variant != "theta_minus":
            self.gather.extend(nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim)
                               for _ in range(int(math.log2(extent))))
        hidden = max(1, dim // 16)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, dim, 1)) \
            if variant == "theta_plus" else None

    def _mix(self, x: Tensor) -> Tensor:
        if self.variant == "theta_minus":
            if self.extent is None:
                context = x.mean((2, 3), keepdim=True)
            else:
                context = F.avg_pool2d(x, self.extent, stride=self.extent, ceil_mode=True)
        else:
            context = x
            for i, layer in enumerate(self.gather):
                context = layer(context if i == 0 else F.relu(context))
        if self.mlp is not None:
            context = self.mlp(context)
        if self.extent is not None:  # each gathered value back onto the extent×extent cell it summarizes
            h, w = x.shape[2:]
            context = context.repeat_interleave(self.extent, 2)[:, :, :h].repeat_interleave(self.extent, 3)[..., :w]
        return x * torch.sigmoid(context)


@register(
    name="ulsam",
    family="channel_attention",
    layout="grid",
    paper="ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks",
    arxiv="2006.15102",
    impls=("reference",),
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="ULSAM: one spatial softmax attention map per channel subspace, applied with a residual.",
)
class SubspaceAttention(GridMixer):
    """Ultra-lightweight subspace attention (Saini et al., arXiv 2006.15102), eq. (1)-(3):

        A_n = softmax(PW(maxpool_{3×3, stride 1}(DW_{1×1}(F_n))))        (one map over all H·W positions)
        F̂_n = A_n ⊗ F_n ⊕ F_n,      F̂ = concat(F̂_1, ..., F̂_g)

    the channels split into g = `num_subspaces` groups F_n; DW_{1×1} is a per-channel scale and shift, PW a 1×1
    conv from the group's channels to one map, the softmax runs over the spatial positions, ⊗ broadcasts the map
    over the group's channels."""

    def __init__(self, dim: int, *, num_subspaces: int = 4, **base) -> None:
        super().__init__(dim, **base)
        self.num_subspaces = self._positive_int("num_subspaces", num_subspaces)
        if dim % num_subspaces:
            raise self._fail(f"dim {dim} must be divisible by num_subspaces {num_subspaces}")
        self.depthwise = nn.Conv2d(dim, dim, 1, groups=dim)
        self.pointwise = nn.Conv2d(dim, num_subspaces, 1, groups=num_subspaces)

    def _mix(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        g = self.num_subspaces
        scores = self.pointwise(F.max_pool2d(self.depthwise(x), 3, stride=1, padding=1))  # (B, g, H, W)
        attention = torch.softmax(scores.flatten(2), dim=-1).view(b, g, 1, h, w)
        grouped = x.view(b, g, c // g, h, w)
        # reshape, not view: a channels-last input (the backbone's LayerNorm gives one) makes the product's groups
        # and channels non-mergeable strides
        return (attention * grouped + grouped).reshape(b, c, h, w)


@register(
    name="senetv2",
    family="channel_attention",
    layout="grid",
    paper="SENetV2: Aggregated dense layer for channelwise and global representations",
    arxiv="2311.10807",
    impls=("reference",),
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(1, 2, 3),
    summary="SENetV2 squeeze-aggregated excitation: SE whose squeeze FC is a multi-branch dense layer.",
)
class SqueezeAggregatedExcitation(GridMixer):
    """Squeeze aggregated excitation of SENetV2 (Narayanan, arXiv 2311.10807), section 3:

        z = GAP(x),   s = σ(W_e · concat_{b=1}^{B} δ(W_b z)),   y_c = s_c · x_c

    B = `cardinality` parallel dense branches W_b: C → C/r (δ = ReLU, r = `reduction`), concatenated and
    excited by W_e: B·C/r → C. With B = 1 it is Squeeze-and-Excitation."""

    def __init__(self, dim: int, *, cardinality: int = 4, reduction: int = 16, **base) -> None:
        super().__init__(dim, **base)
        self.cardinality = self._positive_int("cardinality", cardinality)
        self.reduction = self._positive_int("reduction", reduction)
        hidden = max(1, dim // reduction)
        self.branches = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(cardinality))
        self.excite = nn.Linear(cardinality * hidden, dim)

    def _mix(self, x: Tensor) -> Tensor:
        z = _spatial_mean(x)
        s = torch.sigmoid(self.excite(torch.cat([F.relu(branch(z)) for branch in self.branches], dim=-1)))
        return _broadcast(s, x) * x
