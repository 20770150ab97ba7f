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


@register(
    name="local_relation",
    family="dynamic",
    layout="grid",
    paper="Local Relation Networks for Image Recognition",
    arxiv="1904.11491",
    impls=("reference", "unfold"),
    causal="never",
    state="none",
    time_complexity="N K^2 D",
    memory_complexity="N K^2 m",
    spatial_dims=(2,),
    summary="Local relation layer: k×k aggregation weights from query-key appearance and a geometric prior.",
)
class LocalRelation(GridMixer):
    """Local relation layer (Hu et al., arXiv 1904.11491), eq. (2)-(4):

        ω(p, p') = softmax_{p' ∈ Ω_k(p)} ( Φ(q_p, k_{p'}) + G(p' − p) ),     Φ(q, k) = −(q − k)²
        y_p = Σ_{p' ∈ Ω_k(p)} ω(p, p') · x_{p'}

    per aggregation group (m = `num_groups` groups of consecutive channels share ω). q and k are 1×1 convs of x
    with one channel per group; the geometric prior G is a two-layer MLP (hidden width `geometry_hidden`, ReLU)
    of the relative position, one value per group. The neighbourhood Ω_k(p) is the k×k window inside the image
    (positions outside are left out of the softmax). `reference` loops over the window; `unfold` gathers it."""

    def __init__(self, dim: int, *, kernel_size: int = 7, num_groups: int = 8, geometry_hidden: int = 16,
                 **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.num_groups = self._positive_int("num_groups", num_groups)
        self._positive_int("geometry_hidden", geometry_hidden)
        if dim % num_groups:
            raise self._fail(f"dim {dim} must be divisible by num_groups {num_groups}")
        self.query = nn.Conv2d(dim, num_groups, 1)
        self.key = nn.Conv2d(dim, num_groups, 1)
        self.geometry = nn.Sequential(nn.Linear(2, geometry_hidden), nn.ReLU(), nn.Linear(geometry_hidden, num_groups))

    def _mix(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k, m, r = self.kernel_size, self.num_groups, self.kernel_size // 2
        offsets = torch.stack(torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij"), -1)
        prior = self.geometry(offsets.reshape(k * k, 2).to(x.dtype))          # (K², m)
        q, key = self.query(x), self.key(x)                                   # (B, m, H, W)
        inside = F.pad(x.new_ones(1, 1, h, w), (r,) * 4)
        if self.impl == "reference":
            padded_key, padded_x = F.pad(key, (r,) * 4), F.pad(x, (r,) * 4).view(b, m, c // m, h + 2 * r, w + 2 * r)
            taps = list(itertools.product(range(k), range(k)))
            logits = torch.stack([-(q - padded_key[..., u:u + h, v:v + w]).square() + prior[t].view(1, m, 1, 1)
                                  for t, (u, v) in enumerate(taps)], dim=2)   # (B, m, K², H, W)
            valid = torch.stack([inside[..., u:u + h, v:v + w] for u, v in taps], dim=2) > 0
            weights = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=2)
            y = 0
            for t, (u, v) in enumerate(taps):
                y = y + weights[:, :, t:t + 1] * padded_x[..., u:u + h, v:v + w]
            return y.reshape(b, c, h, w)
        keys = F.unfold(key, k, padding=r).view(b, m, k * k, h, w)
        valid = F.unfold(inside[..., r:r + h, r:r + w], k, padding=r).view(1, 1, k * k, h, w) > 0
        logits = -(q[:, :, None] - keys).square() + prior.T.reshape(1, m, k * k, 1, 1)
        weights = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=2)
        neighbours = F.unfold(x, k, padding=r).view(b, m, c // m, k * k, h, w)
        return (neighbours * weights[:, :, None]).sum(3).view(b, c, h, w)


def _per_position_depthwise(x: Tensor, kernels: Tensor, k: int, impl: str) -> Tensor:
    """y_c(p) = Σ_u kernels[c, u, p] · x_c(p + u): x (B, C, H, W), kernels (B or 1, C, K², H, W), zero padding."""
    b, c, h, w = x.shape
    if impl == "reference":
        padded = F.pad(x, (k // 2,) * 4)
        y = 0
        for tap, (u, v) in enumerate(itertools.product(range(k), range(k))):
            y = y + kernels[:, :, tap] * padded[..., u:u + h, v:v + w]
        return y
    return (F.unfold(x, k, padding=k // 2).view(b, c, k * k, h, w) * kernels).sum(2)


@register(
    name="tvconv",
    family="dynamic",
    layout="grid",
    paper="TVConv: Efficient Translation Variant Convolution for Layout-aware Visual Processing",
    arxiv="2203.10489",
    impls=("reference", "unfold"),
    causal="never",
    state="none",
    time_complexity="N K^2 D",
    memory_complexity="N K^2 D",
    spatial_dims=(2,),
    summary="TVConv: depthwise kernels that vary with position, generated from learned input-independent affinity maps.",
)
class TranslationVariantConvolution(GridMixer):
    """Translation-variant convolution (Chen et al., arXiv 2203.10489), section 3:

        W = G(A),    y_c(p) = Σ_{u ∈ Δ_k} W_{c,u}(p) · x_c(p + u)

    A ∈ R^{m×R×R} are learned affinity maps (m = `num_affinity_maps`, R = `resolution`), independent of the
    input; the weight-generating block G (3×3 conv → ReLU → 3×3 conv, `hidden` wide) turns them into a k×k
    depthwise kernel per channel and position. The paper works at one fixed resolution; here A is resized
    bilinearly to the input's H×W first, so the layer runs at any size (and equals the paper's at H = W = R).
    G's training-time over-parameterization is left out."""

    def __init__(self, dim: int, *, kernel_size: int = 3, num_affinity_maps: int = 4, resolution: int = 14,
                 hidden: int = 16, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.num_affinity_maps = self._positive_int("num_affinity_maps", num_affinity_maps)
        self.resolution = self._positive_int("resolution", resolution)
        self.hidden = self._positive_int("hidden", hidden)
        self.affinity = nn.Parameter(torch.randn(1, num_affinity_maps, resolution, resolution))
        self.generator = nn.Sequential(nn.Conv2d(num_affinity_maps, hidden, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(hidden, dim * kernel_size ** 2, 3, padding=1))

    def kernels(self, size: tuple[int, int]) -> Tensor:
        """(1, D, K², H, W): the kernel at every position of an H×W input."""
        affinity = self.affinity
        if tuple(affinity.shape[-2:]) != tuple(size):
            affinity = F.interpolate(affinity, size=size, mode="bilinear", align_corners=False)
        return self.generator(affinity).view(1, self.dim, self.kernel_size ** 2, *size)

    def _mix(self, x: Tensor) -> Tensor:
        return _per_position_depthwise(x, self.kernels(tuple(x.shape[2:])).to(x.dtype), self.kernel_size, self.impl)


@register(
    name="lsnet_ls_conv",
    family="dynamic",
    layout="grid",
    paper="LSNet: See Large, Focus Small",
    arxiv="2503.23135",
    impls=("reference", "unfold"),
    causal="never",
    state="none",
    time_complexity="N (D^2 + D k_L^2 + D k_S^2)",
    memory_complexity="N D k_S^2",
    spatial_dims=(2,),
    summary="LSNet LS convolution: large-kernel depthwise perception generates small dynamic kernels for aggregation.",
)
class LargeSmallConvolution(GridMixer):
    """LS (large-small) convolution of LSNet (Wang et al., arXiv 2503.23135), section 3.2:

        w = P_2(DW_{k_L×k_L}(ReLU(P_1(x))))                  (large-kernel perception, LKP)
        y_c(p) = Σ_{u ∈ Δ_{k_S}} w_{g(c), u}(p) · x_c(p + u)    (small-kernel aggregation, SKA)

    P_1: C → C/2 and P_2: C/2 → G·k_S² are 1×1 convs, DW a depthwise k_L×k_L conv (k_L = `large_kernel_size`, 7);
    the channels form G = C / `group_channels` groups of consecutive channels, each sharing the k_S×k_S kernel
    (k_S = `small_kernel_size`, 3) generated at its position. The paper's BatchNorms are left to the backbone.
    `reference` sums over the small window; `unfold` gathers it."""

    def __init__(self, dim: int, *, large_kernel_size: int = 7, small_kernel_size: int = 3, group_channels: int = 8,
                 **base) -> None:
        super().__init__(dim, **base)
        self.large_kernel_size = odd_kernel(self, "large_kernel_size", large_kernel_size)
        self.small_kernel_size = odd_kernel(self, "small_kernel_size", small_kernel_size)
        self.group_channels = self._positive_int("group_channels", group_channels)
        if dim % group_channels:
            raise self._fail(f"dim {dim} must be divisible by group_channels {group_channels}")
        self.groups = dim // group_channels
        hidden = max(1, dim // 2)
        self.reduce = nn.Conv2d(dim, hidden, 1)
        self.perceive = nn.Conv2d(hidden, hidden, large_kernel_size, padding=large_kernel_size // 2, groups=hidden)
        self.generate = nn.Conv2d(hidden, self.groups * small_kernel_size ** 2, 1)

    def _mix(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k = self.small_kernel_size
        weights = self.generate(self.perceive(F.relu(self.reduce(x)))).view(b, self.groups, 1, k * k, h, w)
        kernels = weights.expand(-1, -1, self.group_channels, -1, -1, -1).reshape(b, c, k * k, h, w)
        return _per_position_depthwise(x, kernels, k, self.impl)
