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
