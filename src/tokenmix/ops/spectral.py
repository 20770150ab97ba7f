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


def spectral_conv(x: Tensor, weight: Tensor, *, impl: str = "auto") -> Tensor:
    """Truncated-mode spectral convolution of `x: (B, C_in, *spatial)` with `weight` (see `weight_shape`);
    returns `(B, C_out, *spatial)` in x's dtype. See the module docstring for the operator and the mode set."""
    op = "spectral_conv"
    check_impl(op, impl, ("auto", *IMPLS))
    _check(op, x, weight)
    dtype = compute_dtype(x, weight)
    out_dtype = x.dtype
    sizes = tuple(x.shape[2:])
    modes = retained_modes(modes_of(weight), sizes)
    weight = _centre_crop(weight.to(dtype), modes_of(weight), modes)
    complex_weight = torch.view_as_complex(weight.contiguous())
    x = x.to(dtype)
    y = _reference(x, complex_weight, modes) if impl == "reference" else _fft(x, complex_weight, modes)
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


def _reference(x: Tensor, weight: Tensor, modes: tuple[int, ...]) -> Tensor:
    sizes = x.shape[2:]
    cdtype = weight.dtype
    letters = "xyz"[:len(sizes)]  # spatial positions
    freq = "uvw"[:len(sizes)]     # frequencies
    forward, inverse = [], []
    for n, ks in zip(sizes, _frequencies(modes)):
        k = torch.tensor(ks, dtype=x.dtype, device=x.device)[:, None]
        position = torch.arange(n, dtype=x.dtype, device=x.device)[None, :]
        angle = 2 * math.pi * k * position / n
        forward.append(torch.polar(torch.ones_like(angle), -angle).to(cdtype))   # (k, x): e^{-2πi k x / n}
        inverse.append(torch.polar(torch.ones_like(angle), angle).to(cdtype))    # (k, x): e^{+2πi k x / n}
    # X_k = Σ_x v(x) e^{-2πi k·x/n}
    terms = [f"bi{letters}"] + [f"{K}{a}" for K, a in zip(freq, letters)]
    spectrum = torch.einsum(",".join(terms) + f"->bi{freq}", x.to(cdtype), *forward)
    # Y_k = X_k R_k
    spectrum = torch.einsum(f"bi{freq},io{freq}->bo{freq}", spectrum, weight)
    # y(x) = (1/N) Σ_k c_{k_d} Re(Y_k e^{2πi k·x/n})
    last = sizes[-1]
    c = torch.full((modes[-1],), 2.0, dtype=x.dtype, device=x.device)
    c[0] = 1.0
    if last % 2 == 0 and modes[-1] == last // 2 + 1:
        c[-1] = 1.0
    spectrum = spectrum * c
    terms = [f"bo{freq}"] + [f"{K}{a}" for K, a in zip(freq, letters)]
    y = torch.einsum(",".join(terms) + f"->bo{letters}", spectrum, *inverse)
    return y.real / math.prod(sizes)


def _fft(x: Tensor, weight: Tensor, modes: tuple[int, ...]) -> Tensor:
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
    out = mixed.new_zeros(x.shape[0], weight.shape[1], *sizes[:-1], sizes[-1] // 2 + 1)
    out_index: list[list[slice]] = [[slice(0, modes[-1])]]
    source_index: list[list[slice]] = [[slice(None)]]
    for axis in reversed(range(len(sizes) - 1)):
        m, n = modes[axis], sizes[axis]
        out_index = [[o, *rest] for o in (slice(0, m), slice(n - (m - 1), n)) for rest in out_index]
        source_index = [[s, *rest] for s in (slice(m - 1, 2 * m - 1), slice(0, m - 1)) for rest in source_index]
    for o, s in zip(out_index, source_index):
        out[(slice(None), slice(None), *o)] = mixed[(slice(None), slice(None), *s)]
    return torch.fft.irfftn(out, s=sizes, dim=dims)
