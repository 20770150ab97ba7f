"""Kernels built from learnable points: DCLS (weights at learnable fractional positions, bilinear) and SMPConv
(self-moving points with learnable radii). Each builds a dense depthwise kernel, then convolves through
`tokenmix.ops.conv` (so `fft` serves the large kernels)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenmix.grid._parts import CONV_IMPLS, odd_kernel
from tokenmix.mixer import GridMixer
from tokenmix.ops.conv import conv
from tokenmix.registry import register


@register(
    name="dcls",
    family="continuous_kernel",
    layout="grid",
    paper="Dilated Convolution with Learnable Spacings",
    arxiv="2112.03740",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N L^2 (direct), N log N (fft)",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="DCLS: a depthwise kernel of m weights at learnable fractional positions, interpolated onto an L×L grid.",
)
class LearnableSpacingConvolution(GridMixer):
    """Dilated convolution with learnable spacings (Hassani Khalfaoui et al., arXiv 2112.03740), eq. (4)-(6):

        K_c = Σ_{i=1}^{m} w_{c,i} · Λ(· − p_{c,i}),      y_c = K_c ∗ x_c + b_c      (depthwise)

    each of the m = `kernel_count`² weights of channel c sits at a learnable position p_{c,i} (fractional,
    clamped into the L×L grid, L = `dilated_kernel_size`) and is spread onto its four neighbouring grid cells by
    bilinear interpolation Λ, so the positions receive gradients. Positions start on the regular grid of a
    dilated convolution of size `kernel_count` spanning L."""

    def __init__(self, dim: int, *, kernel_count: int = 3, dilated_kernel_size: int = 13, **base) -> None:
        super().__init__(dim, **base)
        self.kernel_count = self._positive_int("kernel_count", kernel_count)
        self.dilated_kernel_size = odd_kernel(self, "dilated_kernel_size", dilated_kernel_size)
        if dilated_kernel_size < 3:
            raise self._fail(f"dilated_kernel_size must be at least 3, got {dilated_kernel_size}")
        m = kernel_count ** 2
        self.weight = nn.Parameter(torch.empty(dim, m))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.bias = nn.Parameter(torch.zeros(dim))
        half = (dilated_kernel_size - 1) / 2
        line = torch.linspace(-half, half, kernel_count) if kernel_count > 1 else torch.zeros(1)
        grid = torch.stack(torch.meshgrid(line, line, indexing="ij"), dim=-1).reshape(m, 2)
        self.positions = nn.Parameter(grid.expand(dim, m, 2).clone())  # (dy, dx) from the kernel's centre

    def kernel(self) -> Tensor:
        """The dense depthwise kernel (D, 1, L, L) the weights and positions make."""
        size = self.dilated_kernel_size
        cells = (self.positions + (size - 1) / 2).clamp(0, size - 1)     # grid coordinates in [0, L-1]
        corner = cells.detach().floor().clamp(max=size - 2)              # top-left neighbour; frac in [0, 1]
        frac = cells - corner
        kernel = self.weight.new_zeros(self.dim, size * size)
        for ay in (0, 1):
            for ax in (0, 1):
                share = (frac[..., 0] if ay else 1 - frac[..., 0]) * (frac[..., 1] if ax else 1 - frac[..., 1])
                index = ((corner[..., 0] + ay) * size + corner[..., 1] + ax).long()
                kernel = kernel.scatter_add(1, index, self.weight * share)
        return kernel.view(self.dim, 1, size, size)

    def _mix(self, x: Tensor) -> Tensor:
        return conv(x, self.kernel().to(x.dtype), self.bias, groups=self.dim, impl=self.impl)


@register(
    name="smpconv",
    family="continuous_kernel",
    layout="grid",
    paper="SMPConv: Self-moving Point Representations for Continuous Convolution",
    arxiv="2304.02330",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N L^2 (direct), N log N (fft)",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="SMPConv: a depthwise kernel interpolated from learnable points with positions, radii and weights.",
)
class SelfMovingPointConvolution(GridMixer):
    """Self-moving point convolution (Kim & Park, arXiv 2304.02330), eq. (2)-(3):

        K_c(q) = Σ_{i=1}^{n} w_{c,i} · max(0, 1 − ‖q − p_i‖ / r_i),      y_c = K_c ∗ x_c + b_c   (depthwise)

    n = `num_points` points with positions p_i ∈ [-1, 1]² and radii r_i shared by the channels, weights w_{c,i}
    per channel; the kernel is this continuous function sampled at the L×L grid q of [-1, 1]²
    (L = `kernel_size`). Positions and radii move by gradient descent."""

    def __init__(self, dim: int, *, kernel_size: int = 31, num_points: int = 64, radius: float = 0.2,
                 **base) -> None:
        super().__init__(dim, **base)
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.num_points = self._positive_int("num_points", num_points)
        if not isinstance(radius, (int, float)) or isinstance(radius, bool) or radius <= 0:
            raise self._fail(f"radius must be a positive number, got {radius!r}")
        generator = torch.Generator().manual_seed(0)
        self.positions = nn.Parameter(torch.rand(num_points, 2, generator=generator) * 2 - 1)
        self.radii = nn.Parameter(torch.full((num_points,), float(radius)))
        self.weight = nn.Parameter(torch.empty(dim, num_points))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.bias = nn.Parameter(torch.zeros(dim))

    def kernel(self) -> Tensor:
        """The dense depthwise kernel (D, 1, L, L) the points make."""
        size = self.kernel_size
        line = torch.linspace(-1, 1, size, device=self.weight.device, dtype=self.weight.dtype) if size > 1 \
            else self.weight.new_zeros(1)
        grid = torch.stack(torch.meshgrid(line, line, indexing="ij"), dim=-1).reshape(-1, 2)  # (L², 2)
        distance = (grid[:, None, :] - self.positions[None]).square().sum(-1).clamp_min(1e-12).sqrt()
        influence = torch.relu(1 - distance / self.radii.abs().clamp_min(1e-6))          # (L², n)
        return (self.weight @ influence.T).view(self.dim, 1, size, size)

    def _mix(self, x: Tensor) -> Tensor:
        return conv(x, self.kernel().to(x.dtype), self.bias, groups=self.dim, impl=self.impl)


class _Sine(nn.Module):
    def __init__(self, omega: float) -> None:
        super().__init__()
        self.omega = omega

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.omega * x)


@register(
    name="ccnn",
    family="continuous_kernel",
    layout="grid",
    paper="Towards a General Purpose CNN for Long Range Dependencies in ND",
    arxiv="2206.03398",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N log N (fft)",
    memory_complexity="N",
    spatial_dims=(1, 2, 3),
    summary="CCNN: a global depthwise kernel generated by a sine MLP over relative positions, then a 1×1 conv.",
)
class ContinuousKernelConvolution(GridMixer):
    """Separable continuous-kernel convolution of CCNN (Knigge, Romero et al., arXiv 2206.03398), section 3:

        K_c(Δ) = MLP_ψ(Δ)_c,    z_c = Σ_Δ K_c(Δ) x_c(p + Δ) + b_c,    y = W_pw z          (depthwise, then 1×1)

    Δ runs over every relative position the input allows (a (2n-1)-point kernel per axis of size n: global),
    each coordinate scaled to [-1, 1], so the same weights serve any resolution and 1, 2 or 3 dimensions. MLP_ψ
    is a SIREN (sin(ω₀ ·) after each hidden linear layer, ω₀ = `omega_0`, `kernel_hidden` wide). The paper's
    learnable Gaussian mask (FlexConv) and its MAGNet variant of the kernel network are left out."""

    def __init__(self, dim: int, *, kernel_hidden: int = 32, omega_0: float = 10.0, **base) -> None:
        super().__init__(dim, **base)
        hidden = self._positive_int("kernel_hidden", kernel_hidden)
        if not isinstance(omega_0, (int, float)) or isinstance(omega_0, bool) or omega_0 <= 0:
            raise self._fail(f"omega_0 must be a positive number, got {omega_0!r}")
        self.kernel_net = nn.Sequential(nn.Linear(self.spatial_dims, hidden), _Sine(float(omega_0)),
                                        nn.Linear(hidden, hidden), _Sine(float(omega_0)), nn.Linear(hidden, dim))
        with torch.no_grad():  # SIREN initialization of the hidden layers, small output kernels
            for layer in (self.kernel_net[0], self.kernel_net[2]):
                bound = 1 / layer.in_features if layer is self.kernel_net[0] else (6 / hidden) ** 0.5 / omega_0
                layer.weight.uniform_(-bound, bound)
            self.kernel_net[4].weight.mul_(0.1)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.pointwise = nn.Linear(dim, dim)

    def kernel(self, spatial: tuple[int, ...]) -> Tensor:
        """The depthwise kernel (D, 1, 2n_1-1, ...) for an input of size `spatial`."""
        lines = [torch.arange(1 - n, n, device=self.bias.device, dtype=self.bias.dtype) / max(n - 1, 1)
                 for n in spatial]
        coordinates = torch.stack(torch.meshgrid(*lines, indexing="ij"), dim=-1)    # (2n-1, ..., d)
        values = self.kernel_net(coordinates)                                       # (2n-1, ..., D)
        return values.movedim(-1, 0).unsqueeze(1)

    def _mix(self, x: Tensor) -> Tensor:
        z = conv(x, self.kernel(tuple(x.shape[2:])).to(x.dtype), self.bias, groups=self.dim, impl=self.impl)
        return self.pointwise(z.movedim(1, -1)).movedim(-1, 1)
