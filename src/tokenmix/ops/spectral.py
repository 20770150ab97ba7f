"""Truncated-mode spectral convolution: the Fourier integral operator of FNO, in 1, 2 or 3 spatial dimensions.

"Fourier Neural Operator for Parametric Partial Differential Equations", Li et al. 2020, arXiv:2010.08895, eq. (4):

    (K v)(x) = F⁻¹( R · (F v) )(x),   R_k ∈ C^{d_in × d_out} for the retained modes k, zero elsewhere.

On a grid of sizes `(n_1, ..., n_d)` with `N = Π n_a` points and `X_k = Σ_x v(x) e^{-2πi k·x/n}` (the unscaled DFT):

    Y_k[o] = Σ_i X_k[i] R_k[i, o]                                for every retained k
    y(x)   = (1/N) Σ_{k retained, k_d ≥ 0} c_{k_d} Re(Y_k e^{2πi k·x/n})

with `c = 1` on the `k_d = 0` plane (and on `k_d = n_d/2` for even `n_d`), `c = 2` elsewhere: the output is the real
function whose spectrum is Y on the half space `k_d ≥ 0` and its Hermitian mirror on the other half, which is what
`irfftn` computes. The 1/N scaling makes the operator a quadrature of the integral, so the same weights act on the
same function at any resolution.

Retained modes (the paper's `|k_a| ≤ k_max`, symmetric): with `modes = (m_1, ..., m_d)`, the non-last axes keep the
`2 m_a - 1` frequencies `-(m_a - 1) .. m_a - 1` (both signs) and the last axis the `m_d` frequencies `0 .. m_d - 1`
of its real FFT. The weight `(d_in, d_out, 2 m_1 - 1, ..., 2 m_{d-1} - 1, m_d, 2)` holds real and imaginary parts
(a real tensor, so casting the module to another real dtype keeps both), frequencies of a non-last axis centred:
index `m_a - 1 + k_a` holds frequency `k_a`.

Modes beyond the grid are *clamped*, not rejected: on a grid of `n` points a non-last axis keeps `|k| ≤ (n - 1) // 2`
(never the even-size Nyquist frequency, whose sign is ambiguous) and the last axis `k ≤ n // 2`; the weights of the
dropped frequencies are unused (zero gradient). A function sampled on a coarse grid has no content above its Nyquist
frequency, so clamping is what resolution invariance asks for (FNO is routinely evaluated below its training grid).

Output on another grid (`out_sizes`, U-NO's operators between domains of different resolution, arXiv:2204.11127):
y(x) above is a function of x, so it can be evaluated on any grid; with `out_sizes` it is evaluated at the points
x = j / n'_a of that grid (still with the input's 1/N quadrature), the modes clamped to what both grids resolve
unambiguously: |k_a| ≤ (min(n_a, n'_a) − 1) // 2 on every axis, the last included (an even grid's Nyquist term is
real on that grid and complex on the other, so it is dropped when the grids differ). `out_sizes == sizes` is the plain
convolution above.

Forms (`impl`): `reference` applies dense DFT matrices (O(N · modes) memory, the equation above); `fft` uses
`torch.fft.rfftn` / `irfftn`. Inputs in bf16/fp16 are computed in float32 and returned in their own dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops._checks import check_impl, compute_dtype

IMPLS = ("reference", "fft")


def weight_shape(in_channels: int, out_channels: int, modes: tuple[int, ...]) -> tuple[int, ...]:
    """The real weight shape for `modes` per spatial axis (the last axis is the real-FFT one)."""
    return (in_channels, out_channels, *[2 * m - 1 for m in modes[:-1]], modes[-1], 2)


def retained_modes(weight_modes: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The modes actually used on a grid of `sizes`: each axis clamped to what the grid resolves."""
    *leading, last = sizes
    limits = [(n - 1) // 2 + 1 for n in leading] + [last // 2 + 1]
    return tuple(min(m, limit) for m, limit in zip(weight_modes, limits))


def modes_of(weight: Tensor) -> tuple[int, ...]:
    """The modes per axis a weight of `weight_shape(...)` holds."""
    *leading, last = weight.shape[2:-1]
    return (*[(size + 1) // 2 for size in leading], last)


def spectral_conv(x: Tensor, weight: Tensor, *, impl: str = "auto",
                  out_sizes: tuple[int, ...] | None = None) -> Tensor:
    """Truncated-mode spectral convolution of `x: (B, C_in, *spatial)` with `weight` (see `weight_shape`);
    returns `(B, C_out, *out_sizes)` (default: x's grid) in x's dtype. See the module docstring for the operator,
    the mode set and the output grid."""
    op = "spectral_conv"
    check_impl(op, impl, ("auto", *IMPLS))
    _check(op, x, weight)
    dtype = compute_dtype(x, weight)
    out_dtype = x.dtype
    sizes = tuple(x.shape[2:])
    out_sizes = sizes if out_sizes is None else tuple(out_sizes)
    if len(out_sizes) != len(sizes) or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in out_sizes):
        raise MixerInputError(f"{op}: out_sizes must be {len(sizes)} positive integers, got {out_sizes!r}")
    if out_sizes == sizes:
        modes = retained_modes(modes_of(weight), sizes)
    else:
        modes = tuple(min(m, (min(a, b) - 1) // 2 + 1) for m, a, b in zip(modes_of(weight), sizes, out_sizes))
    weight = _centre_crop(weight.to(dtype), modes_of(weight), modes)
    complex_weight = torch.view_as_complex(weight.contiguous())
    x = x.to(dtype)
    if impl == "reference":
        y = _reference(x, complex_weight, modes, out_sizes)
    else:
        y = _fft(x, complex_weight, modes, out_sizes)
    return y.to(out_dtype)


def _check(op: str, x: Tensor, weight: Tensor) -> None:
    if not x.is_floating_point() or not weight.is_floating_point():
        raise MixerInputError(f"{op}: x and weight must be real floating point, got {x.dtype} and {weight.dtype}")
    spatial = x.ndim - 2
    if spatial not in (1, 2, 3):
        raise MixerInputError(f"{op}: x must be (batch, channels, *spatial) with 1-3 spatial dims, got {tuple(x.shape)}")
    if weight.ndim != spatial + 3 or weight.shape[-1] != 2 or weight.shape[0] != x.shape[1]:
        raise MixerInputError(f"{op}: weight must be (in={x.shape[1]}, out, *modes, 2) with {spatial} mode axes, "
                              f"got {tuple(weight.shape)}")
    if any(size % 2 == 0 for size in weight.shape[2:-2]):
        raise MixerInputError(f"{op}: the non-last mode axes of weight must have odd sizes 2m-1, got {tuple(weight.shape)}")


def _centre_crop(weight: Tensor, stored: tuple[int, ...], used: tuple[int, ...]) -> Tensor:
    """The weights of the `used` modes out of the `stored` ones (non-last axes centred, last axis from 0)."""
    index: list[slice] = [slice(None), slice(None)]
    for m_stored, m_used in zip(stored[:-1], used[:-1]):
        index.append(slice(m_stored - m_used, m_stored + m_used - 1))
    index += [slice(0, used[-1]), slice(None)]
    return weight[tuple(index)]


def _frequencies(modes: tuple[int, ...]) -> list[list[int]]:
    """The retained frequencies per axis, in the weight's order."""
    return [list(range(-(m - 1), m)) for m in modes[:-1]] + [list(range(modes[-1]))]


def _reference(x: Tensor, weight: Tensor, modes: tuple[int, ...], out_sizes: tuple[int, ...]) -> Tensor:
    sizes = x.shape[2:]
    cdtype = weight.dtype
    letters = "xyz"[:len(sizes)]  # spatial positions
    freq = "uvw"[:len(sizes)]     # frequencies
    forward, inverse = [], []
    for n, n_out, ks in zip(sizes, out_sizes, _frequencies(modes)):
        k = torch.tensor(ks, dtype=x.dtype, device=x.device)[:, None]
        angle = 2 * math.pi * k * torch.arange(n, dtype=x.dtype, device=x.device)[None, :] / n
        forward.append(torch.polar(torch.ones_like(angle), -angle).to(cdtype))   # (k, x): e^{-2πi k x / n}
        angle = 2 * math.pi * k * torch.arange(n_out, dtype=x.dtype, device=x.device)[None, :] / n_out
        inverse.append(torch.polar(torch.ones_like(angle), angle).to(cdtype))    # (k, x'): e^{+2πi k x' / n'}
    # X_k = Σ_x v(x) e^{-2πi k·x/n}
    terms = [f"bi{letters}"] + [f"{K}{a}" for K, a in zip(freq, letters)]
    spectrum = torch.einsum(",".join(terms) + f"->bi{freq}", x.to(cdtype), *forward)
    # Y_k = X_k R_k
    spectrum = torch.einsum(f"bi{freq},io{freq}->bo{freq}", spectrum, weight)
    # y(x) = (1/N) Σ_k c_{k_d} Re(Y_k e^{2πi k·x/n})
    last = out_sizes[-1]
    c = torch.full((modes[-1],), 2.0, dtype=x.dtype, device=x.device)
    c[0] = 1.0
    if last % 2 == 0 and modes[-1] == last // 2 + 1:
        c[-1] = 1.0
    spectrum = spectrum * c
    terms = [f"bo{freq}"] + [f"{K}{a}" for K, a in zip(freq, letters)]
    y = torch.einsum(",".join(terms) + f"->bo{letters}", spectrum, *inverse)
    return y.real / math.prod(sizes)


def _fft(x: Tensor, weight: Tensor, modes: tuple[int, ...], out_sizes: tuple[int, ...]) -> Tensor:
    sizes = tuple(x.shape[2:])
    dims = tuple(range(2, x.ndim))
    spectrum = torch.fft.rfftn(x, dim=dims)
    # Gather the retained modes in the weight's (centred) order: negative frequencies sit at the end of each axis.
    low = spectrum[(..., *[slice(None)] * (len(sizes) - 1), slice(0, modes[-1]))]
    for axis, m in enumerate(modes[:-1]):
        dim = 2 + axis
        low = torch.cat([low.narrow(dim, low.shape[dim] - (m - 1), m - 1), low.narrow(dim, 0, m)], dim=dim)
    letters = "uvw"[:len(sizes)]
    mixed = torch.einsum(f"bi{letters},io{letters}->bo{letters}", low, weight)
    # Scatter back: non-negative frequencies to the front of each axis, negative ones to the back.
    out = mixed.new_zeros(x.shape[0], weight.shape[1], *out_sizes[:-1], out_sizes[-1] // 2 + 1)
    out_index: list[list[slice]] = [[slice(0, modes[-1])]]
    source_index: list[list[slice]] = [[slice(None)]]
    for axis in reversed(range(len(sizes) - 1)):
        m, n = modes[axis], out_sizes[axis]
        out_index = [[o, *rest] for o in (slice(0, m), slice(n - (m - 1), n)) for rest in out_index]
        source_index = [[s, *rest] for s in (slice(m - 1, 2 * m - 1), slice(0, m - 1)) for rest in source_index]
    for o, s in zip(out_index, source_index):
        out[(slice(None), slice(None), *o)] = mixed[(slice(None), slice(None), *s)]
    y = torch.fft.irfftn(out, s=out_sizes, dim=dims)
    return y if out_sizes == sizes else y * (math.prod(out_sizes) / math.prod(sizes))  # irfftn divides by N_out


# --- Full-spectrum transforms and global filters (GFNet, AFNO, AFF, SPANet, FNet-2D) ------------------------------
#
# The same DFT as above, without truncation: `real_fft` is X_k = s Σ_x v(x) e^{-2πi k·x/n} for every k of the real
# FFT's half space (non-last axes k_a = 0..n_a-1 in FFT order, the last axis k_d = 0..n_d//2), `inverse_real_fft`
# is y(x) = s' Σ_k c_{k_d} Re(Y_k e^{2πi k·x/n}) (c as above, so it equals `irfftn`), with s = 1, s' = 1/N for
# norm="backward" and s = s' = N^{-1/2} for norm="ortho". `global_filter` is F⁻¹(K ⊙ F v): a circular convolution
# with the kernel F⁻¹K, K one complex weight per channel and frequency. `fourier_transform` is the full complex DFT
# over chosen dimensions (FNet). `reference` applies dense DFT matrices, `fft` calls torch.fft.

NORMS = ("backward", "ortho")


def filter_shape(channels: int, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The real shape of a global filter for a grid of `sizes`: one complex weight (real, imaginary) per channel
    and real-FFT frequency."""
    return (channels, *sizes[:-1], sizes[-1] // 2 + 1, 2)


def real_fft(x: Tensor, *, impl: str = "auto", norm: str = "backward") -> Tensor:
    """The real FFT of `x: (B, C, *spatial)` over its spatial dims: complex `(B, C, *spatial[:-1], n_d // 2 + 1)`,
    computed in float32 for half-precision input."""
    _check_transform("real_fft", x, impl, norm)
    x = x.to(compute_dtype(x))
    sizes, dims = tuple(x.shape[2:]), tuple(range(2, x.ndim))
    if impl != "reference":
        return torch.fft.rfftn(x, dim=dims, norm=norm)
    y = x.to(_complex(x.dtype))
    for dim, n in zip(dims, sizes):
        count = n // 2 + 1 if dim == x.ndim - 1 else n
        y = _along(y, _dft_matrix(n, count, -1, x.dtype, x.device), dim)
    return y * _scale(sizes, norm, inverse=False)


def inverse_real_fft(spectrum: Tensor, sizes: tuple[int, ...], *, impl: str = "auto",
                     norm: str = "backward") -> Tensor:
    """The inverse of `real_fft`: the real `(B, C, *sizes)` grid whose half spectrum is `spectrum` (imaginary
    parts that a real signal cannot carry, at k_d = 0 and the last axis' Nyquist, are dropped, as `irfftn` does)."""
    sizes = tuple(sizes)
    if not spectrum.is_complex() or spectrum.ndim != len(sizes) + 2 or \
            tuple(spectrum.shape[2:]) != (*sizes[:-1], sizes[-1] // 2 + 1):
        raise MixerInputError(f"inverse_real_fft: expected a complex half spectrum for sizes {sizes}, got "
                              f"{spectrum.dtype} {tuple(spectrum.shape)}")
    check_impl("inverse_real_fft", impl, ("auto", *IMPLS))
    check_impl("inverse_real_fft", norm, NORMS)
    dims = tuple(range(2, spectrum.ndim))
    if impl != "reference":
        return torch.fft.irfftn(spectrum, s=sizes, dim=dims, norm=norm)
    real = spectrum.real.dtype
    y = spectrum
    for dim, n in zip(dims[:-1], sizes[:-1]):
        y = _along(y, _dft_matrix(n, n, 1, real, spectrum.device).transpose(0, 1), dim)
    last = sizes[-1]
    c = torch.full((last // 2 + 1,), 2.0, dtype=real, device=spectrum.device)
    c[0] = 1.0
    if last % 2 == 0:
        c[-1] = 1.0
    inverse = _dft_matrix(last, last // 2 + 1, 1, real, spectrum.device).transpose(0, 1) * c  # (x, k)
    y = _along(y, inverse, dims[-1]).real
    return y * _scale(sizes, norm, inverse=True)


def fourier_transform(x: Tensor, dims: tuple[int, ...], *, impl: str = "auto") -> Tensor:
    """The full (complex, unnormalized) DFT of a real `x` over `dims`, computed in float32 for half precision."""
    _check_transform("fourier_transform", x, impl, "backward", rank_checked=False)
    x = x.to(compute_dtype(x))
    if impl != "reference":
        return torch.fft.fftn(x, dim=dims)
    y = x.to(_complex(x.dtype))
    for dim in dims:
        n = x.shape[dim]
        y = _along(y, _dft_matrix(n, n, -1, x.dtype, x.device), dim)
    return y


def global_filter(x: Tensor, weight: Tensor, *, impl: str = "auto") -> Tensor:
    """y = F⁻¹(K ⊙ F x): the global filter of GFNet on `x: (B, C, *spatial)`, `weight` of `filter_shape(C, spatial)`
    (a real tensor holding K's real and imaginary parts, or a complex one without the last axis). Equals the
    circular convolution of each channel with F⁻¹K_c. Returns x's dtype."""
    op = "global_filter"
    _check_transform(op, x, impl, "backward")
    sizes = tuple(x.shape[2:])
    expected = filter_shape(x.shape[1], sizes)
    if weight.is_complex():
        weight = torch.view_as_real(weight)
    if tuple(weight.shape) != expected or not weight.is_floating_point():
        raise MixerInputError(f"{op}: weight must have shape {expected} for input {tuple(x.shape)}, "
                              f"got {weight.dtype} {tuple(weight.shape)}")
    dtype = compute_dtype(x, weight)
    kernel = torch.view_as_complex(weight.to(dtype).contiguous())
    y = inverse_real_fft(real_fft(x.to(dtype), impl=impl) * kernel, sizes, impl=impl)
    return y.to(x.dtype)


def _check_transform(op: str, x: Tensor, impl: str, norm: str, rank_checked: bool = True) -> None:
    check_impl(op, impl, ("auto", *IMPLS))
    check_impl(op, norm, NORMS)
    if not x.is_floating_point():
        raise MixerInputError(f"{op}: x must be real floating point, got {x.dtype}")
    if rank_checked and x.ndim - 2 not in (1, 2, 3):
        raise MixerInputError(f"{op}: x must be (batch, channels, *spatial) with 1-3 spatial dims, got {tuple(x.shape)}")


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _dft_matrix(n: int, count: int, sign: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(count, n): e^{sign 2πi k x / n} for k < count, the phase k·x reduced mod n first so it stays exact."""
    k = torch.arange(count, device=device)[:, None]
    position = torch.arange(n, device=device)[None, :]
    angle = (2 * math.pi / n) * ((k * position) % n).to(dtype)
    return torch.polar(torch.ones_like(angle), sign * angle)


def _along(x: Tensor, matrix: Tensor, dim: int) -> Tensor:
    """y[..., k, ...] = Σ_j matrix[k, j] x[..., j, ...] along `dim`."""
    return (x.movedim(dim, -1) @ matrix.transpose(0, 1).to(x.dtype)).movedim(-1, dim)


def _scale(sizes: tuple[int, ...], norm: str, inverse: bool) -> float:
    points = math.prod(sizes)
    if norm == "ortho":
        return points ** -0.5
    return 1.0 / points if inverse else 1.0
