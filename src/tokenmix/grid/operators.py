"""Neural-operator layers as grid mixers: the FNO Fourier layer, the factorized F-FNO layer, and Galerkin /
Fourier-type attention. Each is a discretization of an integral operator, so the same weights act on the same
function at any grid resolution (`resolution_invariant=True`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.mixer import GridMixer
from tokenmix.ops.spectral import spectral_conv, weight_shape
from tokenmix.registry import register

DEFAULT_MODES = {1: 16, 2: 12, 3: 8}  # the FNO paper's choices for Burgers (1D), Darcy (2D), Navier–Stokes (3D)


def _modes(owner: str, modes: int | tuple[int, ...] | None, spatial_dims: int) -> tuple[int, ...]:
    if modes is None:
        modes = DEFAULT_MODES[spatial_dims]
    if isinstance(modes, int) and not isinstance(modes, bool):
        modes = (modes,) * spatial_dims
    modes = tuple(modes)
    if len(modes) != spatial_dims or any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in modes):
        raise MixerInputError(f"{owner}: modes must be a positive integer or {spatial_dims} of them, got {modes!r}")
    return modes


def _spectral_weight(in_channels: int, out_channels: int, modes: tuple[int, ...]) -> nn.Parameter:
    # Uniform in [0, 1/(in·out)) for real and imaginary parts, the scale of the FNO authors' released models.
    scale = 1.0 / (in_channels * out_channels)
    return nn.Parameter(scale * torch.rand(*weight_shape(in_channels, out_channels, modes)))


def _pointwise(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """A 1×1 convolution `W x + b` over the channels of `(B, C, *spatial)`."""
    y = torch.einsum("oi,bi...->bo...", weight, x)
    return y + bias.view(-1, *([1] * (x.ndim - 2)))


@register(
    name="fno",
    family="neural-operator",
    layout="grid",
    paper="Fourier Neural Operator for Parametric Partial Differential Equations",
    arxiv="2010.08895",
    impls=("reference", "fft"),
    causal="never",
    state="none",
    time_complexity="N log N d + k_max d^2",
    memory_complexity="N d + k_max d^2",
    spatial_dims=(1, 2, 3),
    resolution_invariant=True,
    summary="FNO Fourier layer W v + F⁻¹(R · F v) on the lowest modes (the activation is the backbone's).",
)
class FourierLayer(GridMixer):
    """y = W x + b + F⁻¹(R · (F x)|_{|k| < modes}): the linear part of the FNO layer v' = σ(W v + K v), paper eq. (2)
    and (4). `modes` per axis (see `tokenmix.ops.spectral`; modes beyond a grid are clamped)."""

    def __init__(self, dim: int, *, modes: int | tuple[int, ...] | None = None, spatial_dims: int = 2,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.modes = _modes(self.spec.name, modes, self.spatial_dims)
        self.spectral_weight = _spectral_weight(dim, dim, self.modes)
        skip = nn.Conv1d(dim, dim, 1)  # PyTorch's default 1×1 convolution initialization
        self.skip_weight = nn.Parameter(skip.weight.detach()[:, :, 0].clone())
        self.skip_bias = nn.Parameter(skip.bias.detach().clone())

    def _mix(self, x: Tensor) -> Tensor:
        impl = "fft" if self.impl == "auto" else self.impl
        return spectral_conv(x, self.spectral_weight, impl=impl) + _pointwise(x, self.skip_weight, self.skip_bias)


@register(
    name="ffno",
    family="neural-operator",
    layout="grid",
    paper="Factorized Fourier Neural Operators",
    arxiv="2111.13802",
    impls=("reference", "fft"),
    causal="never",
    state="none",
    time_complexity="N log N d + d k_max d^2",
    memory_complexity="N d",
    spatial_dims=(1, 2, 3),
    resolution_invariant=True,
    summary="F-FNO layer z + σ(W₂ σ(W₁ K z + b₁) + b₂), K a sum of 1D spectral convolutions, one per axis.",
)
class FactorizedFourierLayer(GridMixer):
    """F-FNO operator layer (paper eq. 6-7): K(z) = Σ_a IFFT_a(R_a · FFT_a(z)), each axis transformed on its own
    (its own 1D truncated spectral weights), then L(z) = z + σ(W₂ σ(W₁ K(z) + b₁) + b₂), σ = GELU and the hidden
    width `expansion · dim`. The residual is inside the layer, as in the paper."""

    def __init__(self, dim: int, *, modes: int | tuple[int, ...] | None = None, expansion: int = 2,
                 spatial_dims: int = 2, impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.modes = _modes(self.spec.name, modes, self.spatial_dims)
        hidden = dim * self._positive_int("expansion", expansion)
        self.spectral_weights = nn.ParameterList([_spectral_weight(dim, dim, (m,)) for m in self.modes])
        first, second = nn.Conv1d(dim, hidden, 1), nn.Conv1d(hidden, dim, 1)
        self.w1 = nn.Parameter(first.weight.detach()[:, :, 0].clone())
        self.b1 = nn.Parameter(first.bias.detach().clone())
        self.w2 = nn.Parameter(second.weight.detach()[:, :, 0].clone())
        self.b2 = nn.Parameter(second.bias.detach().clone())

    def _mix(self, x: Tensor) -> Tensor:
        impl = "fft" if self.impl == "auto" else self.impl
        k = sum(self._along_axis(x, axis, weight, impl) for axis, weight in enumerate(self.spectral_weights))
        return x + F.gelu(_pointwise(F.gelu(_pointwise(k, self.w1, self.b1)), self.w2, self.b2))

    @staticmethod
    def _along_axis(x: Tensor, axis: int, weight: Tensor, impl: str) -> Tensor:
        """The 1D spectral convolution along spatial `axis`, the other axes treated as batch."""
        moved = x.movedim(2 + axis, -1)                        # (B, C, *others, n)
        others = moved.shape[2:-1]
        flat = moved.movedim(1, -2).reshape(-1, x.shape[1], moved.shape[-1])  # (B·others, C, n)
        y = spectral_conv(flat, weight, impl=impl)
        y = y.reshape(x.shape[0], *others, y.shape[1], y.shape[-1]).movedim(-2, 1)
        return y.movedim(-1, 2 + axis)


class _OperatorAttention(GridMixer):
    """Softmax-free attention over the grid points with LayerNorm on two of q, k, v (Cao 2021, eq. 2.4 / 2.6):

        Fourier type:   z = (LN(Q) LN(K)ᵀ) V / n
        Galerkin type:  z = Q (LN(K)ᵀ LN(V)) / n

    per head, n the number of grid points (the 1/n makes the products quadratures of integrals over the domain).
    `reference` forms the n×n matrix, `linear` computes `Q (Kᵀ V)` first: O(n d²) for both types."""

    normalized: tuple[str, str]

    def __init__(self, dim: int, *, num_heads: int = 4, spatial_dims: int = 2, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.num_heads = self._positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise self._fail(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norms = nn.ModuleDict({name: nn.LayerNorm(self.head_dim) for name in self.normalized})
        self.out = nn.Linear(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        batch, spatial = x.shape[0], x.shape[2:]
        tokens = x.flatten(2).transpose(1, 2)                   # (B, n, D)
        n = tokens.shape[1]
        q, k, v = self.qkv(tokens).view(batch, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        heads = {"q": q, "k": k, "v": v}
        for name, norm in self.norms.items():
            heads[name] = norm(heads[name])
        q, k, v = heads["q"], heads["k"], heads["v"]
        if self.impl == "reference":
            z = (q @ k.transpose(-1, -2)) @ v / n
        else:
            z = q @ (k.transpose(-1, -2) @ v / n)
        z = z.transpose(1, 2).reshape(batch, n, self.dim)
        return self.out(z).transpose(1, 2).reshape(batch, self.dim, *spatial)


_ATTENTION = dict(
    family="neural-operator",
    layout="grid",
    paper="Choose a Transformer: Fourier or Galerkin",
    arxiv="2105.14995",
    impls=("reference", "linear"),
    causal="never",
    state="none",
    time_complexity="N d^2",
    memory_complexity="N d",
    spatial_dims=(1, 2, 3),
    resolution_invariant=True,
)


@register(name="galerkin_attention", summary="Galerkin-type attention Q (LN(K)ᵀ LN(V)) / n over grid points.",
          **_ATTENTION)
class GalerkinAttention(_OperatorAttention):
    __doc__ = _OperatorAttention.__doc__
    normalized = ("k", "v")


@register(name="fourier_attention", summary="Fourier-type attention (LN(Q) LN(K)ᵀ) V / n over grid points.",
          **_ATTENTION)
class FourierAttention(_OperatorAttention):
    __doc__ = _OperatorAttention.__doc__
    normalized = ("q", "k")
