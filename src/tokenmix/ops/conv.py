"""Dense, grouped and depthwise convolution over 1, 2 or 3 spatial dimensions, 'same' size, zero padding.

Layout as `torch.nn.functional.conv2d`: `x: (B, C_in, *spatial)`, `weight: (C_out, C_in / groups, *kernel)`,
`bias: (C_out,)`. Output channel o of group g = o // (C_out / groups) reads the input channels of that group:

    y[b, o, i] = bias[o] + Σ_c Σ_p  weight[o, c, p] · x[b, g·C_in/G + c, i + d·p - left]     (x = 0 outside)

with p running over the kernel taps, d the dilation and `left = d·(k - 1) // 2` per axis (PyTorch's
padding="same": an even kernel pads one more on the right). Depthwise is `groups = C_in`.

Forms (`impl`):
* `reference`: the sum over kernel taps above, one shifted window of the zero-padded input per tap;
* `direct`: `F.conv{1,2,3}d` on the padded input (cuDNN / oneDNN);
* `fft`: the linear convolution by real FFTs of size ≥ n + d·(k - 1) per axis (no wrap-around), cropped to
  the 'same' window; cost independent of the kernel size, so it wins for large kernels;
* `auto`: the form measured faster on this machine for this very problem, timed on its first call and kept in
  the cache folder (`tokenmix.ops.conv_autotune`); with that off (`TOKENMIX_CONV_AUTOTUNE=0`), `fft` where a cost
  model fitted to measured times says it is faster (`prefers_fft`: large kernels, the more so at high
  resolution), else `direct`.

Inputs in bf16/fp16 are computed in float32 and returned in their own dtype.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops import conv_autotune
from tokenmix.ops._checks import check_impl, compute_dtype
from tokenmix.ops.fftconv import fast_size

IMPLS = ("reference", "direct", "fft")
# `auto` compares a cost model: direct ∝ N·K (N output points, K kernel taps, dilated spans), FFT ∝ P·log2 P
# (P the padded transform size, Π (n_i + k_i - 1)); it takes the FFT when N·K > FFT_COST_RATIO · P·log2 P. The
# crossover kernel falls with resolution (≈31 at 32-64 px, ≈25 at 128 px, ≈21 at 256 px), which one ratio follows
# where a fixed kernel threshold would be off by 2x at one end or the other. The ratio is the value that minimizes
# the worst time of the picked form over the faster form's in `python -m tokenmix.bench.conv_crossover --repeats 5`
# (depthwise, 32 channels, float32, 1 thread, 2-core CPU, quiet: 2026-11-22): 26.7 gives a worst 1.18× (at 32 px,
# k = 31: 1.34 against 1.14 ms, where single timings scatter by ~15%), the earlier 30 gave 1.52× (32 px, k = 41).
# The crossover moves with the machine (on a 2-core AMD EPYC this ratio's worst pick was 1.78×), so `auto` measures
# by default and the cost model is what it falls back to with autotuning off.
FFT_COST_RATIO = 26.7

_CONVOLUTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, groups: int = 1, dilation: int = 1,
         impl: str = "auto") -> Tensor:
    """'Same'-size zero-padded convolution (cross-correlation, as PyTorch) of `x: (B, C_in, *spatial)` with
    `weight: (C_out, C_in // groups, *kernel)`; returns `(B, C_out, *spatial)` in x's dtype."""
    op = "conv"
    check_impl(op, impl, ("auto", *IMPLS))
    _check_inputs(op, x, weight, bias, groups, dilation)
    dtype = compute_dtype(x, weight) if bias is None else compute_dtype(x, weight, bias)
    out_dtype = x.dtype
    x, weight = x.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    if impl == "auto":
        impl = _auto(x, weight, groups, dilation)
    if impl == "reference":
        y = _reference(x, weight, groups, dilation)
    elif impl == "direct":
        y = _direct(x, weight, groups, dilation)
    else:
        y = _fft(x, weight, groups, dilation)
    if bias is not None:
        y = y + bias.view(-1, *([1] * (x.ndim - 2)))
    return y.to(out_dtype)


def _auto(x: Tensor, weight: Tensor, groups: int, dilation: int) -> str:
    if conv_autotune.enabled():
        forms = {"direct": lambda: _direct(x, weight, groups, dilation),
                 "fft": lambda: _fft(x, weight, groups, dilation)}
        measured = conv_autotune.choose(conv_autotune.problem_key(x, weight, groups, dilation), forms, x.device)
        if measured is not None:
            return measured
    return "fft" if prefers_fft(x.shape[2:], weight.shape[2:], dilation) else "direct"


def _direct(x: Tensor, weight: Tensor, groups: int, dilation: int) -> Tensor:
    return _CONVOLUTIONS[x.ndim - 2](_pad_same(x, weight.shape[2:], dilation), weight, None,
                                     dilation=dilation, groups=groups)


def prefers_fft(spatial, kernel, dilation: int = 1) -> bool:
    """The `auto` rule: whether the FFT form is expected to be faster (see FFT_COST_RATIO)."""
    spans = [(k - 1) * dilation + 1 for k in kernel]
    points, taps, padded = math.prod(spatial), math.prod(spans), math.prod(n + k - 1 for n, k in zip(spatial, spans))
    return points * taps > FFT_COST_RATIO * padded * math.log2(max(padded, 2))


conv2d = conv  # the 2D case is the common one; the same function serves 1D and 3D


def _check_inputs(op: str, x: Tensor, weight: Tensor, bias: Tensor | None, groups: int, dilation: int) -> None:
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None and not (isinstance(t, Tensor) and t.is_floating_point()):
            raise MixerInputError(f"{op}: {name} must be a floating-point tensor, got "
                                  f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")
    if x.ndim not in (3, 4, 5):
        raise MixerInputError(f"{op}: x must have shape (batch, channels, *spatial) with 1-3 spatial dims, "
                              f"got {tuple(x.shape)}")
    if weight.ndim != x.ndim:
        raise MixerInputError(f"{op}: weight must have shape (out, in/groups, *kernel) with as many kernel dims "
                              f"as x has spatial dims, got weight {tuple(weight.shape)} for x {tuple(x.shape)}")
    for name, value in (("groups", groups), ("dilation", dilation)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise MixerInputError(f"{op}: {name} must be a positive integer, got {value!r}")
    if x.shape[1] % groups or weight.shape[0] % groups or weight.shape[1] * groups != x.shape[1]:
        raise MixerInputError(f"{op}: with groups={groups}, x's {x.shape[1]} channels and weight "
                              f"{tuple(weight.shape)} do not match (weight must be (out, in/groups, *kernel))")
    if any(k == 0 for k in weight.shape[2:]) or any(n == 0 for n in x.shape[2:]):
        raise MixerInputError(f"{op}: empty kernel or input: weight {tuple(weight.shape)}, x {tuple(x.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise MixerInputError(f"{op}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


def _margins(kernel: tuple[int, ...] | torch.Size, dilation: int) -> list[tuple[int, int]]:
    """(left, right) zero padding per axis for 'same' output: d·(k-1) in all, the extra one on the right."""
    margins = []
    for k in kernel:
        total = dilation * (k - 1)
        margins.append((total // 2, total - total // 2))
    return margins


def _pad_same(x: Tensor, kernel, dilation: int) -> Tensor:
    pad: list[int] = []
    for left, right in reversed(_margins(kernel, dilation)):  # F.pad lists the last axis first
        pad += [left, right]
    return F.pad(x, pad)


def _reference(x: Tensor, weight: Tensor, groups: int, dilation: int) -> Tensor:
    """Σ over taps p of weight[:, :, p] applied to the padded input shifted by d·p (the equation)."""
    batch, channels, *spatial = x.shape
    out_channels, in_per_group, *kernel = weight.shape
    padded = _pad_same(x, kernel, dilation).view(batch, groups, in_per_group, *_padded_sizes(spatial, kernel, dilation))
    w = weight.view(groups, out_channels // groups, in_per_group, *kernel)
    y = x.new_zeros(batch, groups, out_channels // groups, *spatial)
    for tap in itertools.product(*(range(k) for k in kernel)):
        window = padded[(..., *(slice(dilation * p, dilation * p + n) for p, n in zip(tap, spatial)))]
        y = y + torch.einsum("goc,bgc...->bgo...", w[(..., *tap)], window)
    return y.reshape(batch, out_channels, *spatial)


def _padded_sizes(spatial, kernel, dilation: int) -> list[int]:
    return [n + dilation * (k - 1) for n, k in zip(spatial, kernel)]


def dilate_kernel(weight: Tensor, dilation: int) -> Tensor:
    """The kernel with d - 1 zeros between taps along every spatial axis: a conv with it equals the dilated conv
    (used by the FFT form and by re-parameterizations that fold dilated branches into one kernel)."""
    if dilation == 1:
        return weight
    out_channels, in_per_group, *kernel = weight.shape
    dilated = weight.new_zeros(out_channels, in_per_group, *[(k - 1) * dilation + 1 for k in kernel])
    dilated[(slice(None), slice(None), *(slice(None, None, dilation) for _ in kernel))] = weight
    return dilated


def _fft(x: Tensor, weight: Tensor, groups: int, dilation: int) -> Tensor:
    """Linear convolution with the flipped kernel by FFT, cropped to the 'same' window."""
    batch, channels, *spatial = x.shape
    weight = dilate_kernel(weight, dilation)
    out_channels, in_per_group, *kernel = weight.shape
    dims = tuple(range(-len(spatial), 0))
    sizes = [fast_size(n + k - 1) for n, k in zip(spatial, kernel)]
    x_hat = torch.fft.rfftn(x, s=sizes, dim=dims)
    w_hat = torch.fft.rfftn(weight.flip(dims), s=sizes, dim=dims)
    freq = x_hat.shape[2:]
    x_hat = x_hat.view(batch, groups, 1, in_per_group, *freq)
    w_hat = w_hat.view(groups, out_channels // groups, in_per_group, *freq)
    if in_per_group == 1:  # depthwise (and channel multipliers): an elementwise product
        y_hat = (x_hat * w_hat).squeeze(3)
    else:
        y_hat = (x_hat * w_hat).sum(3)
    full = torch.fft.irfftn(y_hat.reshape(batch, out_channels, *freq), s=sizes, dim=dims)
    # y[i] = full[i + k - 1 - left]: the flipped kernel's full convolution shifted back to 'same'
    margins = _margins([(k - 1) + 1 for k in kernel], 1)
    crop = tuple(slice(k - 1 - left, k - 1 - left + n) for (left, _), k, n in zip(margins, kernel, spatial))
    return full[(..., *crop)]
