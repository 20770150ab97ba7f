"""Spectral grid mixers whose Fourier weights are an MLP of the spectrum: AFNO (a block-diagonal complex MLP on
every Fourier mode, with soft-thresholding) and Adaptive Frequency Filters (the same kind of MLP predicting an
input-adaptive mask). Transforms from `tokenmix.ops.spectral` (norm "ortho", as both papers).

Resolution: the MLPs are shared by all frequencies, so both accept any grid size. Neither is shift-equivariant:
a shift turns X_k into X_k e^{-iθ_k}, and the MLP (ReLU on real and imaginary parts, biases) does not commute
with that phase.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid.spectral import SPECTRAL_IMPLS, fft_impl
from tokenmix.mixer import GridMixer
from tokenmix.ops.spectral import inverse_real_fft, real_fft
from tokenmix.registry import register


def complex_relu(z: Tensor) -> Tensor:
    """ReLU on the real and the imaginary part."""
    return torch.complex(F.relu(z.real), F.relu(z.imag))


def block_linear(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """A block-diagonal complex linear map over the channels of `z: (B, C, *freq)`: `weight (n, c_in, c_out, 2)`
    (n blocks, real and imaginary parts), `bias (n, c_out, 2)`; returns `(B, n · c_out, *freq)`."""
    blocks = weight.shape[0]
    w, b = torch.view_as_complex(weight.contiguous()), torch.view_as_complex(bias.contiguous())
    grouped = z.reshape(z.shape[0], blocks, -1, *z.shape[2:])                  # (B, n, c_in, *freq)
    y = torch.einsum("bni...,nio->bno...", grouped, w) + b.view(*b.shape, *([1] * (z.ndim - 2)))
    return y.flatten(1, 2)


class _FourierBlockMLP(GridMixer):
    """The shared part: options, the block-diagonal complex MLP W₂ σ(W₁ z + b₁) + b₂ (σ = ReLU on real and
    imaginary parts, hidden width `hidden_factor` × the block size), init N(0, 0.02²) as AFNO."""

    def __init__(self, dim: int, *, num_blocks: int = 8, hidden_factor: int = 1, impl: str = "auto",
                 causal: bool | None = None, spatial_dims: int | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.num_blocks = self._positive_int("num_blocks", num_blocks)
        self.hidden_factor = self._positive_int("hidden_factor", hidden_factor)
        if dim % num_blocks:
            raise self._fail(f"dim {dim} must be divisible by num_blocks {num_blocks}")
        block, hidden = dim // num_blocks, dim // num_blocks * hidden_factor
        self.w1 = nn.Parameter(0.02 * torch.randn(num_blocks, block, hidden, 2))
        self.b1 = nn.Parameter(0.02 * torch.randn(num_blocks, hidden, 2))
        self.w2 = nn.Parameter(0.02 * torch.randn(num_blocks, hidden, block, 2))
        self.b2 = nn.Parameter(0.02 * torch.randn(num_blocks, block, 2))

    def mode_mlp(self, z: Tensor) -> Tensor:
        dtype = z.real.dtype
        params = [p.to(dtype) for p in (self.w1, self.b1, self.w2, self.b2)]
        return block_linear(complex_relu(block_linear(z, params[0], params[1])), params[2], params[3])


def kept_modes(sizes: tuple[int, ...], fraction: float, device: torch.device | None = None) -> Tensor:
    """Boolean `(*sizes[:-1], n_d // 2 + 1)`: the real-FFT modes with |k_a| ≤ fraction · (n_a // 2) on every axis
    (k_a the signed frequency); fraction 1 keeps all of them."""
    keep = torch.ones((), dtype=torch.bool, device=device)
    for axis, n in enumerate(sizes):
        if axis == len(sizes) - 1:
            k = torch.arange(n // 2 + 1, device=device)
        else:
            k = torch.arange(n, device=device)
            k = torch.minimum(k, n - k)
        keep = keep[..., None] & (k <= fraction * (n // 2))
    return keep


@register(
    name="afno",
    family="spectral",
    layout="grid",
    paper="Adaptive Fourier Neural Operators: Efficient Token Mixers for Transformers",
    arxiv="2111.13587",
    impls=SPECTRAL_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (D log N + D² k⁻¹)",
    memory_complexity="N D",
    spatial_dims=(1, 2, 3),
    summary="AFNO: a block-diagonal complex MLP on every Fourier mode, soft-thresholded, transformed back, plus x.",
)
class AdaptiveFourierNeuralOperator(_FourierBlockMLP):
    """AFNO token mixer (Guibas et al., arXiv 2111.13587), eq. (7):

        z_k = [DFT(X)]_k,   z̃_k = S_λ(W₂ σ(W₁ z_k + b₁) + b₂),   y = IDFT(z̃) + X

    W₁, W₂ block-diagonal complex matrices (k = `num_blocks` blocks, hidden width `hidden_factor` × block), shared
    by all modes; σ = ReLU and S_λ(u) = sign(u) max(|u| - λ, 0) applied to real and imaginary parts,
    λ = `sparsity_threshold`. Hard thresholding: only the modes with |k_a| ≤ `keep_fraction` · (n_a // 2) on
    every axis go through the MLP, the others are set to zero (1 keeps all). The DFT is the orthonormal real FFT.
    Any grid size is accepted (the MLP acts per mode)."""

    def __init__(self, dim: int, *, num_blocks: int = 8, hidden_factor: int = 1, sparsity_threshold: float = 0.01,
                 keep_fraction: float = 1.0, impl: str = "auto", causal: bool | None = None,
                 spatial_dims: int | None = None) -> None:
        super().__init__(dim, num_blocks=num_blocks, hidden_factor=hidden_factor, impl=impl, causal=causal,
                         spatial_dims=spatial_dims)
        if isinstance(sparsity_threshold, bool) or not isinstance(sparsity_threshold, (int, float)) \
                or sparsity_threshold < 0:
            raise self._fail(f"sparsity_threshold must be a number ≥ 0, got {sparsity_threshold!r}")
        if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) \
                or not 0 < keep_fraction <= 1:
            raise self._fail(f"keep_fraction must be in (0, 1], got {keep_fraction!r}")
        self.sparsity_threshold = float(sparsity_threshold)
        self.keep_fraction = float(keep_fraction)

    def _mix(self, x: Tensor) -> Tensor:
        impl, sizes = fft_impl(self), tuple(x.shape[2:])
        z = real_fft(x, impl=impl, norm="ortho")
        mixed = self.mode_mlp(z)
        lam = self.sparsity_threshold
        mixed = torch.complex(F.softshrink(mixed.real, lam), F.softshrink(mixed.imag, lam))
        if self.keep_fraction < 1:
            mixed = mixed * kept_modes(sizes, self.keep_fraction, x.device)
        return inverse_real_fft(mixed, sizes, impl=impl, norm="ortho").to(x.dtype) + x


@register(
    name="aff",
    family="spectral",
    layout="grid",
    paper="Adaptive Frequency Filters As Efficient Global Token Mixers",
    arxiv="2307.14008",
    impls=SPECTRAL_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (D log N + D² k⁻¹)",
    memory_complexity="N D",
    spatial_dims=(1, 2, 3),
    summary="AFF: an input-adaptive frequency mask predicted from the spectrum by a group 1×1 conv MLP, multiplied "
            "onto it.",
)
class AdaptiveFrequencyFilter(_FourierBlockMLP):
    """AFF token mixer (Huang et al., arXiv 2307.14008), eq. (3)-(4):

        X_F = F(X),   M = W₂ σ(W₁ X_F + b₁) + b₂,   Y = F⁻¹(M ⊙ X_F)

    the mask M is predicted from the spectrum itself by a group-linear (grouped 1×1 convolution) network with
    `num_blocks` groups and a ReLU σ on real and imaginary parts: a dynamic global circular convolution whose
    kernel depends on the input. b₂ starts at 1 (M ≈ 1, the filter passes everything at initialization).
    Any grid size is accepted."""

    def __init__(self, dim: int, *, num_blocks: int = 8, hidden_factor: int = 1, impl: str = "auto",
                 causal: bool | None = None, spatial_dims: int | None = None) -> None:
        super().__init__(dim, num_blocks=num_blocks, hidden_factor=hidden_factor, impl=impl, causal=causal,
                         spatial_dims=spatial_dims)
        with torch.no_grad():
            self.b2[..., 0] += 1.0

    def _mix(self, x: Tensor) -> Tensor:
        impl, sizes = fft_impl(self), tuple(x.shape[2:])
        z = real_fft(x, impl=impl, norm="ortho")
        return inverse_real_fft(self.mode_mlp(z) * z, sizes, impl=impl, norm="ortho").to(x.dtype)
