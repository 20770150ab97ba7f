"""Spectral grid mixers with fixed (input-independent) frequency responses: GFNet's global filter, FNet-2D and
SPANet's spectral pooling aggregation. All of them go through `tokenmix.ops.spectral` (principle 3); the mixers
whose Fourier weights are an MLP of the spectrum (AFNO, AFF) are in `grid/spectral_mlp.py`.

Resolution: `fnet2d` and `spam` accept any grid size (their frequency responses are defined at every size);
`gfnet` learns its filter at `resolution` and interpolates it to other sizes (see its docstring).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._parts import positive_pair
from tokenmix.mixer import GridMixer
from tokenmix.ops.spectral import filter_shape, fourier_transform, global_filter
from tokenmix.registry import register

SPECTRAL_IMPLS = ("reference", "fft")  # tokenmix.ops.spectral: dense DFT matrices, torch.fft


def fft_impl(mixer: GridMixer) -> str:
    """The op's algorithm for a mixer's `impl` ("auto" is torch.fft)."""
    return "fft" if mixer.impl == "auto" else mixer.impl


def resize_filter(weight: Tensor, resolution: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """A global filter `(C, h, w // 2 + 1, 2)` of an h×w grid (`resolution`) brought to an H×W grid (`size`),
    `(C, H, W // 2 + 1, 2)`, by bilinear interpolation over normalized frequency: the new filter at signed frequency (f₁, f₂) is the old one
    at (f₁ h / H, f₂ w / W), linearly interpolated between its neighbouring frequencies (periodic along the first
    axis, whose negative frequencies wrap; clamped at the last axis' highest frequency). Frequency 0 stays
    frequency 0 and positive and negative frequencies are not mixed; at the same size it is the identity."""
    (h, w), (height, width) = resolution, size
    if (h, w) == (height, width):
        return weight
    signed = (torch.arange(height, device=weight.device) + height // 2) % height - height // 2
    rows = _linear_resample(weight, 1, signed * (h / height), h, periodic=True)
    columns = torch.arange(width // 2 + 1, device=weight.device) * (w / width)
    return _linear_resample(rows, 2, columns, w // 2 + 1, periodic=False)


def _linear_resample(t: Tensor, dim: int, coords: Tensor, count: int, periodic: bool) -> Tensor:
    """`t` sampled along `dim` at fractional indices `coords` by linear interpolation."""
    low = coords.floor()
    frac = (coords - low).to(t.dtype).view(-1, *([1] * (t.ndim - dim - 1)))
    low = low.long()
    high = low + 1
    if periodic:
        low, high = low % count, high % count
    else:
        low, high = low.clamp(0, count - 1), high.clamp(0, count - 1)
    return t.index_select(dim, low) * (1 - frac) + t.index_select(dim, high) * frac


@register(
    name="gfnet",
    family="spectral",
    layout="grid",
    paper="Global Filter Networks for Image Classification",
    arxiv="2107.00645",
    impls=SPECTRAL_IMPLS,
    causal="never",
    state="none",
    time_complexity="N log N D",
    memory_complexity="N D",
    spatial_dims=(2,),
    summary="GFNet global filter F⁻¹(K ⊙ F x): a learned per-channel circular convolution as large as the grid.",
)
class GlobalFilter(GridMixer):
    """Global filter layer (Rao et al., arXiv 2107.00645), eq. (5)-(6):

        X = F[x],   X̃ = K ⊙ X,   x ← F⁻¹[X̃]

    F the 2D real FFT over the spatial dims, K ∈ C^{D × H × (W/2+1)} learned (init N(0, 0.02²) for real and
    imaginary parts, as the paper). The layer is a circular convolution of each channel with F⁻¹K.
    Resolution: K is learned at `resolution` = (H, W); on another grid size it is interpolated (`resize_filter`:
    bilinear over normalized frequency), as GFNet does when it changes resolution for fine-tuning, so every size is
    accepted; at `resolution` the stored K is used as is."""

    def __init__(self, dim: int, *, resolution: int | tuple[int, int] = 14, impl: str = "auto",
                 causal: bool | None = None, spatial_dims: int | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.resolution = positive_pair(self, "resolution", resolution)
        self.weight = nn.Parameter(0.02 * torch.randn(*filter_shape(dim, self.resolution)))

    def filter_for(self, size: tuple[int, int]) -> Tensor:
        """The filter used on an H×W grid."""
        return resize_filter(self.weight, self.resolution, size)

    def _mix(self, x: Tensor) -> Tensor:
        return global_filter(x, self.filter_for(tuple(x.shape[2:])), impl=fft_impl(self))


@register(
    name="fnet2d",
    family="spectral",
    layout="grid",
    paper="FNet: Mixing Tokens with Fourier Transforms",
    arxiv="2105.03824",
    impls=SPECTRAL_IMPLS,
    causal="never",
    state="none",
    time_complexity="N log N D",
    memory_complexity="N D",
    spatial_dims=(1, 2, 3),
    summary="FNet on a grid: the real part of the DFT over the spatial dims and the channels; no parameters.",
)
class FourierTransform2D(GridMixer):
    """FNet's mixing sublayer (Lee-Thorp et al., arXiv 2105.03824, eq. 3) with the sequence axis replaced by the
    grid: y = Re(F_spatial(F_hidden(x))), the unnormalized DFT over every spatial axis and the channel axis (the
    sequence `fnet` is the 1D case). Not shift-equivariant: a shift multiplies the spectrum by a phase, which the
    real part does not commute with. Accepts any grid size; outputs grow as √(N·D) (see `fnet`)."""

    def _mix(self, x: Tensor) -> Tensor:
        dims = tuple(range(1, x.ndim))
        return fourier_transform(x, dims, impl=fft_impl(self)).real.to(x.dtype)


def spectral_pooling_mask(size: tuple[int, int], radius: float, balance: float,
                          device: torch.device | None = None) -> Tensor:
    """SPANet's spectral pooling filter on the real-FFT half spectrum of an H×W grid, `(H, W // 2 + 1)`:

        M(k) = λ for |k| < r (low pass),   1 - λ for |k| > r (high pass),   1/3 on |k| = r

    |k| the Euclidean norm of the signed frequency (k₁, k₂) (the distance to the centre of the `fftshift`ed
    spectrum), λ = `balance`, r = `radius`. The value on the cutoff circle is the official implementation's.
    M is real and even in k, so F⁻¹(M ⊙ F x) is real."""
    height, width = size
    k1 = (torch.arange(height, device=device) + height // 2) % height - height // 2   # FFT order, signed
    k2 = torch.arange(width // 2 + 1, device=device)
    squared = (k1[:, None] ** 2 + k2[None, :] ** 2).double()
    low = torch.full(squared.shape, float(balance), dtype=torch.float64, device=device)
    mask = torch.where(squared < radius ** 2, low, 1.0 - low)
    return torch.where(squared == radius ** 2, torch.full_like(mask, 1.0 / 3.0), mask)


@register(
    name="spam",
    family="spectral",
    layout="grid",
    paper="SPANet: Frequency-balancing Token Mixer using Spectral Pooling Aggregation Modulation",
    arxiv="2308.11568",
    impls=SPECTRAL_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (D^2 + D log N)",
    memory_complexity="N D",
    spatial_dims=(2,),
    summary="SPANet SPAM: channel groups through low/high-pass balancing masks, aggregated and multiplied back.",
)
class SpectralPoolingAggregationModulation(GridMixer):
    """SPAM token mixer of SPANet (Yun et al., arXiv 2308.11568):

        u = DW_{k×1}(DW_{1×k}(W_in x))                          (1×1 projection, separable depthwise k×k)
        u_1, ..., u_m = split(u)                                (channel groups, one per balance λ_i)
        SPF_i(u_i) = F⁻¹(M_{r, λ_i} ⊙ F u_i)                    (spectral pooling: low/high-pass balance λ_i)
        y = W_out (u ⊙ Σ_i P_i SPF_i(u_i))                      (aggregation by 1×1 convs P_i, modulation)

    M_{r,λ} from `spectral_pooling_mask`: λ on the frequencies inside radius r, 1 - λ outside. The balances λ_i
    (`balances`, paper 0.7, 0.8, 0.9) and r (`radius`, paper 2 in the early stages) are fixed hyperparameters
    as in the paper; the learned balancing is in P_i. The masks are defined at every grid size, so any size is
    accepted. SPF is a real even global filter (shift-equivariant on the torus); the zero-padded depthwise
    convolution makes the whole mixer shift-equivariant only away from the borders."""

    def __init__(self, dim: int, *, kernel_size: int = 7, radius: float = 2.0,
                 balances: tuple[float, ...] = (0.7, 0.8, 0.9), impl: str = "auto", causal: bool | None = None,
                 spatial_dims: int | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.kernel_size = self._positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise self._fail(f"kernel_size must be odd, got {kernel_size}")
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or radius <= 0:
            raise self._fail(f"radius must be a positive number, got {radius!r}")
        self.balances = tuple(float(b) for b in balances)
        if not self.balances or len(self.balances) > dim or any(not 0.0 <= b <= 1.0 for b in self.balances):
            raise self._fail(f"balances must be 1..{dim} numbers in [0, 1], got {balances!r}")
        self.radius = float(radius)
        self.group_sizes = [len(c) for c in torch.arange(dim).chunk(len(self.balances))]
        if len(self.group_sizes) != len(self.balances):
            raise self._fail(f"dim {dim} cannot be split into {len(self.balances)} channel groups")
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.conv_row = nn.Conv2d(dim, dim, (1, kernel_size), padding=(0, kernel_size // 2), groups=dim)
        self.conv_column = nn.Conv2d(dim, dim, (kernel_size, 1), padding=(kernel_size // 2, 0), groups=dim)
        self.aggregate = nn.ModuleList(nn.Conv2d(size, dim, 1) for size in self.group_sizes)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def spectral_pooling(self, u: Tensor, balance: float) -> Tensor:
        """SPF: the balanced low/high-pass global filter on every channel of `u`."""
        dtype = torch.float64 if u.dtype == torch.float64 else torch.float32  # half precision filters in float32
        mask = spectral_pooling_mask(tuple(u.shape[2:]), self.radius, balance, u.device).to(dtype)
        weight = torch.stack([mask, torch.zeros_like(mask)], dim=-1).expand(u.shape[1], *mask.shape, 2)
        return global_filter(u, weight, impl=fft_impl(self))

    def _mix(self, x: Tensor) -> Tensor:
        u = self.conv_column(self.conv_row(self.proj_in(x)))
        groups = u.split(self.group_sizes, dim=1)
        context = sum(p(self.spectral_pooling(g, b)) for p, g, b in zip(self.aggregate, groups, self.balances))
        return self.proj_out(u * context)
