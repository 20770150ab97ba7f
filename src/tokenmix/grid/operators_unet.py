"""U-shaped neural operator (U-NO) as a grid mixer: integral operators that map between grids of different
resolution, composed as a U with skip connections.

"U-NO: U-shaped Neural Operators", Rahman, Ross, Azizzadenesheli 2022, arXiv:2204.11127, eq. (3)-(4): each operator
layer maps a function v_i on domain D_i to v_{i+1} on D_{i+1},

    v_{i+1}(x) = σ( ∫_{D_i} κ_i(x, y) v_i(y) dy + W_i v_i(Π_i(x)) ),   x ∈ D_{i+1},

with the kernel integral a Fourier multiplier (FNO's, evaluated on the new grid: `spectral_conv(..., out_sizes=...)`)
and W_i a pointwise linear map of the input function carried to the new grid (here by Fourier interpolation, exact
for band-limited inputs). The contracting half halves the grid and doubles the channels, the expanding half undoes
it and concatenates the contracting half's output at the same grid (the U's skip connections):

    x (d, n) → G₁ → (2d, n/2) → G₂ → (2d, n/4) → G₃ → (2d, n/2) ⊕ skip → G₄ → (d, n) ⊕ x → pointwise → (d, n)

σ = GELU after each G; the last pointwise map is linear (the backbone applies its activation after the mixer).
Halving a grid of n points gives ⌈n/2⌉; the expanding half returns to the exact sizes of the contracting half.
`impl` selects the spectral op's form (`reference`: dense DFT matrices; `fft`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid.operators import _modes, _pointwise, _spectral_weight
from tokenmix.mixer import GridMixer
from tokenmix.ops.spectral import spectral_conv, weight_shape
from tokenmix.registry import register


def fourier_resample(x: Tensor, out_sizes: tuple[int, ...], *, impl: str = "auto") -> Tensor:
    """x `(B, C, *sizes)` carried to the grid `out_sizes` by Fourier interpolation: the trigonometric interpolant
    through the frequencies both grids resolve unambiguously (|k_a| ≤ (min(n_a, n'_a) − 1) / 2, no Nyquist term),
    sampled at the new points. Written as a spectral convolution with the identity weight on those modes."""
    sizes = x.shape[2:]
    modes = tuple((min(a, b) - 1) // 2 + 1 for a, b in zip(sizes, out_sizes))
    channels = x.shape[1]
    identity = torch.zeros(weight_shape(channels, channels, modes), dtype=x.dtype, device=x.device)
    identity[..., 0] = torch.eye(channels, dtype=x.dtype, device=x.device).view(
        channels, channels, *[1] * len(modes))
    return spectral_conv(x, identity, impl=impl, out_sizes=tuple(out_sizes))


class _OperatorBlock(nn.Module):
    """One U-NO layer G: (C_in, grid) → (C_out, out grid), v ↦ K v + W Π v + b (σ applied by the caller)."""

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, ...]) -> None:
        super().__init__()
        self.spectral_weight = _spectral_weight(in_channels, out_channels, modes)
        skip = nn.Conv1d(in_channels, out_channels, 1)
        self.skip_weight = nn.Parameter(skip.weight.detach()[:, :, 0].clone())
        self.skip_bias = nn.Parameter(skip.bias.detach().clone())

    def forward(self, x: Tensor, out_sizes: tuple[int, ...], impl: str) -> Tensor:
        carried = x if tuple(x.shape[2:]) == out_sizes else fourier_resample(x, out_sizes, impl=impl)
        return (spectral_conv(x, self.spectral_weight, impl=impl, out_sizes=out_sizes)
                + _pointwise(carried, self.skip_weight, self.skip_bias))


@register(
    name="uno",
    family="neural-operator",
    layout="grid",
    paper="U-NO: U-shaped Neural Operators",
    arxiv="2204.11127",
    impls=("reference", "fft"),
    causal="never",
    state="none",
    time_complexity="N log N d + k_max d^2",
    memory_complexity="N d + k_max d^2",
    spatial_dims=(1, 2, 3),
    resolution_invariant=True,
    summary="U-shaped stack of Fourier integral operators between grids n → n/2 → n/4 → n/2 → n with skips.",
)
class UShapedNeuralOperator(GridMixer):
    """The U of the module docstring; `modes` per axis at the full grid (halved on the coarser grids, at least 1),
    `channel_multiplier` the channel growth of the coarse levels (the paper's U-NO doubles them)."""

    def __init__(self, dim: int, *, modes: int | tuple[int, ...] | None = None, channel_multiplier: int = 2,
                 spatial_dims: int = 2, impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.modes = _modes(self.spec.name, modes, self.spatial_dims)
        wide = dim * self._positive_int("channel_multiplier", channel_multiplier)
        half = tuple(max(1, m // 2) for m in self.modes)
        self.down1 = _OperatorBlock(dim, wide, self.modes)       # n → n/2 (its input is the full grid)
        self.down2 = _OperatorBlock(wide, wide, half)            # n/2 → n/4
        self.up1 = _OperatorBlock(wide, wide, half)              # n/4 → n/2
        self.up2 = _OperatorBlock(2 * wide, dim, half)           # n/2 (with the skip) → n
        output = nn.Conv1d(2 * dim, dim, 1)
        self.out_weight = nn.Parameter(output.weight.detach()[:, :, 0].clone())
        self.out_bias = nn.Parameter(output.bias.detach().clone())

    def _mix(self, x: Tensor) -> Tensor:
        impl = "fft" if self.impl == "auto" else self.impl
        full = tuple(x.shape[2:])
        half = tuple((n + 1) // 2 for n in full)
        quarter = tuple((n + 1) // 2 for n in half)
        a = F.gelu(self.down1(x, half, impl))
        b = F.gelu(self.down2(a, quarter, impl))
        c = F.gelu(self.up1(b, half, impl))
        d = F.gelu(self.up2(torch.cat([c, a], dim=1), full, impl))
        return _pointwise(torch.cat([d, x], dim=1), self.out_weight, self.out_bias)
