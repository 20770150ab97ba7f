"""Dynamic-kernel grid mixers: involution (a kernel per position), CondConv and dynamic convolution (a kernel per
example, mixed from experts)."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._parts import odd_kernel
from tokenmix.mixer import GridMixer
from tokenmix.ops.conv import conv
from tokenmix.registry import register


@register(
    name="involution",
    family="dynamic",
    layout="grid",
    paper="Involution: Inverting the Inherence of Convolution for Visual Recognition",
    arxiv="2103.06255",
    impls=("reference", "unfold"),
    causal="never",
    state="none",
    time_complexity="N K^2 D",
    memory_complexity="N K^2 D",
    spatial_dims=(2,),
    summary="Involution: a K×K kernel generated at each position from its own features, shared over channel groups.",
)
class Involution(GridMixer):
    """Involution (Li et al., arXiv 2103.06255), eq. (4) and (6):

        H_{i,j} = φ(X_{i,j}) = W_1 σ(W_0 X_{i,j})                      (C → C/r → K·K·G, per position)
        Y_{i,j,k} = Σ_{(u,v) ∈ Δ_K} H_{i,j, u+⌊K/2⌋, v+⌊K/2⌋, ⌈kG/C⌉} X_{i+u, j+v, k}

    G = C / `group_channels` groups of consecutive channels share a kernel; X is zero outside the image; σ is
    ReLU (the paper's BN + ReLU, without batch statistics). `reference` sums over taps; `unfold` gathers all
    K² neighbours at once (im2col) and contracts them with the kernels."""

    def __init__(self, dim: int, *, kernel_size: int = 7, group_channels: int = 16, reduction: int = 4,
                 **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.group_channels = self._positive_int("group_channels", group_channels)
        self.reduction = self._positive_int("reduction", reduction)
        if dim % group_channels:
            raise self._fail(f"dim {dim} must be divisible by group_channels {group_channels}")
        self.groups = dim // group_channels
        self.reduce = nn.Conv2d(dim, max(1, dim // reduction), 1)
        self.span = nn.Conv2d(max(1, dim // reduction), kernel_size ** 2 * self.groups, 1)

    def kernels(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, G, K², H, W): the kernel at every position."""
        b, _, h, w = x.shape
        return self.span(F.relu(self.reduce(x))).view(b, self.groups, self.kernel_size ** 2, h, w)

    def _mix(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k, g = self.kernel_size, self.groups
        kernels = self.kernels(x)
        if self.impl == "reference":
            padded = F.pad(x, (k // 2,) * 4).view(b, g, c // g, h + k - 1, w + k - 1)
            y = x.new_zeros(b, g, c // g, h, w)
            for tap, (u, v) in enumerate(itertools.product(range(k), range(k))):
                y = y + kernels[:, :, tap:tap + 1] * padded[..., u:u + h, v:v + w]
            return y.view(b, c, h, w)
        neighbours = F.unfold(x, k, padding=k // 2).view(b, g, c // g, k * k, h, w)
        return (neighbours * kernels[:, :, None]).sum(3).view(b, c, h, w)


@register(
    name="condconv",
    family="dynamic",
    layout="grid",
    paper="CondConv: Conditionally Parameterized Convolutions for Efficient Inference",
    arxiv="1904.04971",
    impls=("reference", "batched"),
    causal="never",
    state="none",
    time_complexity="N D^2 k^2 / groups",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="CondConv: per-example kernel Σ_i α_i(x) W_i, α = sigmoid routing from the pooled input.",
)
class ConditionalConvolution(GridMixer):
    """Conditionally parameterized convolution (Yang et al., arXiv 1904.04971), eq. (1)-(2):

        y = (α_1 · W_1 + ... + α_n · W_n) ∗ x,     α = r(x) = Sigmoid(GlobalAveragePool(x) R)

    n = `num_experts` kernels (k×k, `groups`, with biases combined the same way) are mixed per example before a
    single convolution. The paper's activation after the conv is left to the backbone. `reference` convolves
    each example with its own kernel; `batched` folds the batch into the groups of one convolution."""

    def __init__(self, dim: int, *, kernel_size: int = 3, num_experts: int = 4, groups: int = 1, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.num_experts = self._positive_int("num_experts", num_experts)
        self.groups = self._positive_int("groups", groups)
        if dim % groups:
            raise self._fail(f"dim {dim} must be divisible by groups {groups}")
        self.routing = nn.Linear(dim, num_experts)
        self.weight = nn.Parameter(torch.empty(num_experts, dim, dim // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(num_experts, dim))
        for expert in self.weight:
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))

    def routing_weights(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, n): the expert weights α of each example."""
        return torch.sigmoid(self.routing(x.flatten(2).mean(-1)))

    def _mix(self, x: Tensor) -> Tensor:
        alpha = self.routing_weights(x)
        weight = torch.einsum("be,eoi...->boi...", alpha, self.weight)  # (B, C, C/groups, k, k)
        bias = alpha @ self.bias                                          # (B, C)
        if self.impl == "reference":
            return torch.cat([conv(x[i:i + 1], weight[i], bias[i], groups=self.groups, impl="reference")
                              for i in range(x.shape[0])])
        b, c, h, w = x.shape
        y = conv(x.reshape(1, b * c, h, w), weight.flatten(0, 1), bias.flatten(), groups=b * self.groups,
                 impl="direct")
        return y.view(b, c, h, w)


@register(
    name="dynamic_conv2d",
    family="dynamic",
    layout="grid",
    paper="Dynamic Convolution: Attention over Convolution Kernels",
    arxiv="1912.03458",
    impls=("reference", "batched"),
    causal="never",
    state="none",
    time_complexity="N D^2 k^2 / groups",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="Dynamic convolution: per-example kernel Σ_k π_k(x) W_k, π a softmax (temperature τ) over K kernels.",
)
class DynamicConvolution(ConditionalConvolution):
    """Dynamic convolution (Chen et al., arXiv 1912.03458), eq. (1)-(3):

        y = (Σ_k π_k(x) W_k) ∗ x + Σ_k π_k(x) b_k,     0 ≤ π_k ≤ 1, Σ_k π_k = 1
        π(x) = softmax(FC(ReLU(FC(GAP(x)))) / τ)

    with K = `num_experts` kernels, the squeeze FC of width C/4 and temperature τ = `temperature` (the paper
    anneals it from 30 to 1 during training; set `mixer.temperature`). Same algorithms as CondConv."""

    def __init__(self, dim: int, *, kernel_size: int = 3, num_experts: int = 4, groups: int = 1,
                 temperature: float = 30.0, **base) -> None:
        super().__init__(dim, kernel_size=kernel_size, num_experts=num_experts, groups=groups, **base)
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature <= 0:
            raise self._fail(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        hidden = max(1, dim // 4)
        self.routing = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_experts))

    def routing_weights(self, x: Tensor) -> Tensor:
        return torch.softmax(self.routing(x.flatten(2).mean(-1)) / self.temperature, dim=-1)
