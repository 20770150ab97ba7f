"""Long convolution: the family op of every long-convolution mixer (Hyena, H3, SGConv, CKConv, FlexConv, S4D).

Layout: channels before length, as in `torch.nn.functional.conv1d` — `x: (..., D, L)` and a kernel `(..., K)`
whose leading dimensions broadcast against x's (typically `(D, K)`: one filter per channel, shared over the batch).

    causal:    y_t = Σ_{j=0}^{min(t, K-1)} k_j x_{t-j}                 (t = 0..L-1; taps beyond L never reach)
    circular:  y_t = Σ_{j=0}^{K-1}         k_j x_{(t-j) mod L}         (K ≤ L)

`history` (causal only) is the input that came before `x`, `(..., D, P)`: the outputs are then those of the
causal convolution of `[history, x]` at x's positions, so a stream can be continued exactly (the cached-input
step of a long-conv mixer). The kernel must then cover `P + L` taps to see the whole past.

Forms (`impl`):
* `reference`: the Toeplitz (circulant) matrix `T[t, s] = k_{t-s}` applied to x — the equation, O(L²) memory;
* `direct`: the sum over taps, O(L·K) (shifted copies for a few taps, strided windows for more): the fast form for short kernels, and for a
  few new tokens after a long history (only the requested outputs are computed);
* `fft`: real FFTs. Causal convolution zero-pads to `n ≥ (P + L) + K - 1` (≤ 2L - 1 for a kernel as long as the
  input): a shorter transform would wrap the tail of the convolution — the future — into the first outputs.
  The kernel's spectrum is computed once per call and broadcast over the batch; `kernel_spectrum` computes it
  ahead, as a `KernelSpectrum` that `fft_conv` takes in place of the kernel, so one transform serves many calls
  (a mixer's N long convolutions, groups of heads, repeated forwards at one length). Without autograd the rows
  are processed in blocks of about `BLOCK_ELEMENTS` transform points (pad, transform, product, inverse, gate,
  write while the block is in cache), so no `(..., D, n)` intermediate makes a pass through main memory.
* `gate` (any form): `gate ⊙ (k ∗ x)`, Hyena's gated convolution, fused into the blocks above.
* `auto`: `direct` for kernels of at most `DIRECT_MAX_KERNEL` taps or at most `DIRECT_MAX_NEW` new tokens after
  a history, `fft` otherwise.

Inputs in bf16/fp16 are computed in float32 and returned in their own dtype.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops._checks import check_impl, compute_dtype

IMPLS = ("reference", "direct", "fft")
DIRECT_MAX_KERNEL = 32  # below this, the O(L·K) direct convolution beats two FFTs on CPU
DIRECT_MAX_NEW = 4      # a few new tokens after a history: O(new·P) direct taps beat an FFT of P + new
SHIFT_ADD_MAX_TAPS = 16  # the direct form sums shifted copies up to this many taps, else multiplies windows


class KernelSpectrum:
    """A kernel `(..., K)` and its real FFT over `size` points, `(..., size // 2 + 1)` complex: what `fft_conv`
    needs of a kernel, made once by `kernel_spectrum` and accepted by `fft_conv` in place of the kernel.

    The transform is taken on first use (a call that picks the `direct` form never pays for it) and kept, with its
    autograd graph: gradients reach the kernel through every call that used it. `spectrum[index]` selects leading
    (non-tap) dimensions of both — e.g. one order's filters of a Hyena — sharing the parent's single transform."""

    def __init__(self, kernel: Tensor, size: int, causal: bool, *, parent: "KernelSpectrum | None" = None,
                 index=None) -> None:
        self.kernel, self.size, self.causal = kernel, size, causal
        self._parent, self._index, self._spectrum = parent, index, None

    @property
    def taps(self) -> int:
        return self.kernel.shape[-1]

    @property
    def spectrum(self) -> Tensor:
        if self._spectrum is None:
            if self._parent is not None:
                self._spectrum = self._parent.spectrum[self._index]
            else:
                self._spectrum = torch.fft.rfft(self.kernel, n=self.size)
        return self._spectrum

    def __getitem__(self, index) -> "KernelSpectrum":
        if index is Ellipsis or (isinstance(index, tuple) and any(i is Ellipsis for i in index)):
            raise MixerInputError("KernelSpectrum: index leading dimensions explicitly (no ...): the tap axis "
                                  "of the kernel and the frequency axis of the spectrum differ")
        return KernelSpectrum(self.kernel[index], self.size, self.causal, parent=self, index=index)


def kernel_spectrum(kernel: Tensor, length: int, *, causal: bool = True, past: int = 0) -> KernelSpectrum:
    """The kernel prepared for `fft_conv` of inputs of `length` new positions after `past` positions of history:
    causal — truncated to `past + length` taps, transformed over `fast_size(past + length + K - 1)` points;
    circular — transformed over `length` points. Half-precision kernels are kept in float32."""
    op = "kernel_spectrum"
    if not (isinstance(kernel, Tensor) and kernel.is_floating_point()) or kernel.ndim < 1 or kernel.shape[-1] == 0:
        raise MixerInputError(f"{op}: kernel must be a floating-point tensor (..., taps) with at least one tap, "
                              f"got {kernel.dtype if isinstance(kernel, Tensor) else type(kernel).__name__}"
                              f"{tuple(kernel.shape) if isinstance(kernel, Tensor) else ''}")
    for name, value, least in (("length", length, 1), ("past", past, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise MixerInputError(f"{op}: {name} must be an integer ≥ {least}, got {value!r}")
    if not causal and past:
        raise MixerInputError(f"{op}: a history continues a causal convolution; causal=False is circular")
    kernel = kernel.to(compute_dtype(kernel))
    if causal:
        kernel = kernel[..., :past + length]  # taps past the sequence's extent never reach an output
        return KernelSpectrum(kernel, fast_size(past + length + kernel.shape[-1] - 1), True)
    if kernel.shape[-1] > length:
        raise MixerInputError(f"{op}: a circular convolution needs kernel taps ≤ length, got "
                              f"{kernel.shape[-1]} taps for length {length}")
    return KernelSpectrum(kernel, length, False)


def fft_conv(x: Tensor, kernel: Tensor | KernelSpectrum, *, causal: bool = True, history: Tensor | None = None,
             gate: Tensor | None = None, impl: str = "auto") -> Tensor:
    """Convolve `x: (..., D, L)` with `kernel: (..., K)` along the last dimension; returns `(..., D, L)` in
    x's dtype (leading dimensions broadcast). `kernel` may be a `KernelSpectrum` (from `kernel_spectrum`) made
    for this length and history. With `gate` (the output's shape), returns `gate ⊙ (k ∗ x)` — Hyena's and H3's
    gated convolution — multiplied while each block of the convolution is still in cache. See the module
    docstring for the operator and the forms."""
    op = "fft_conv"
    check_impl(op, impl, ("auto", *IMPLS))
    prepared = kernel if isinstance(kernel, KernelSpectrum) else None
    if prepared is not None:
        kernel = prepared.kernel
    _check_inputs(op, x, kernel, history, causal)
    if gate is not None:
        output_shape = torch.broadcast_shapes(x.shape[:-1], kernel.shape[:-1]) + x.shape[-1:]
        if not (isinstance(gate, Tensor) and gate.is_floating_point() and gate.shape == output_shape):
            raise MixerInputError(f"{op}: gate must be a floating-point tensor of the output's shape "
                                  f"{tuple(output_shape)}, got "
                                  f"{tuple(gate.shape) if isinstance(gate, Tensor) else type(gate).__name__}")
    dtype = compute_dtype(x, kernel) if history is None else compute_dtype(x, kernel, history)
    out_dtype = x.dtype
    length = x.shape[-1]
    past = 0 if history is None else history.shape[-1]
    full = x.to(dtype) if history is None else torch.cat([history.to(dtype), x.to(dtype)], dim=-1)
    if prepared is not None:
        _check_spectrum(op, prepared, causal, past + length, length)
        if prepared.kernel.dtype != dtype:  # a float64 input with a float32 spectrum: transform again, exactly
            prepared = KernelSpectrum(prepared.kernel.to(dtype), prepared.size, causal)
    kernel = kernel.to(dtype)
    if causal:
        kernel = kernel[..., :past + length]  # taps past the sequence's extent never reach an output
    if impl == "auto":
        short = kernel.shape[-1] <= DIRECT_MAX_KERNEL or (past > 0 and length <= DIRECT_MAX_NEW)
        impl = "direct" if short else "fft"
    if impl == "reference":
        y = _reference(full, kernel, past, causal)
    elif impl == "direct":
        y = _direct(full, kernel, past, causal)
    else:
        if prepared is None:
            size = fast_size(full.shape[-1] + kernel.shape[-1] - 1) if causal else length
            prepared = KernelSpectrum(kernel, size, causal)
        spectrum = prepared.spectrum
        graph = torch.is_grad_enabled() and (full.requires_grad or spectrum.requires_grad
                                             or (gate is not None and gate.requires_grad))
        if not graph and torch.broadcast_shapes(full.shape[:-1], spectrum.shape[:-1]) == full.shape[:-1]:
            return _fft_blocked(full, spectrum, prepared.size, past, gate, out_dtype)
        y = _fft(full, spectrum, prepared.size)[..., past:past + length]
    if gate is not None:
        y = gate * y if gate.dtype == y.dtype else (gate.to(y.dtype) * y)
    return y.to(out_dtype)


def _check_spectrum(op: str, prepared: KernelSpectrum, causal: bool, total: int, length: int) -> None:
    if prepared.causal != causal:
        raise MixerInputError(f"{op}: the kernel spectrum was made for a {'causal' if prepared.causal else 'circular'}"
                              f" convolution, the call is {'causal' if causal else 'circular'}")
    if causal and prepared.size < total + prepared.taps - 1:
        raise MixerInputError(f"{op}: the kernel spectrum ({prepared.taps} taps over {prepared.size} points) is too "
                              f"short for {total} positions: it would wrap the future into the past; make it with "
                              f"kernel_spectrum(kernel, length, past=...) for this call")
    if not causal and prepared.size != length:
        raise MixerInputError(f"{op}: the circular kernel spectrum has {prepared.size} points, the input "
                              f"{length}")


def _check_inputs(op: str, x: Tensor, kernel: Tensor, history: Tensor | None, causal: bool) -> None:
    for name, t in (("x", x), ("kernel", kernel), ("history", history)):
        if t is not None and not (isinstance(t, Tensor) and t.is_floating_point()):
            raise MixerInputError(f"{op}: {name} must be a floating-point tensor, got "
                                  f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}")
    if x.ndim < 2 or x.shape[-1] == 0:
        raise MixerInputError(f"{op}: x must have shape (..., channels, length) with length ≥ 1, "
                              f"got {tuple(x.shape)}")
    if kernel.ndim < 1 or kernel.shape[-1] == 0:
        raise MixerInputError(f"{op}: kernel must have shape (..., taps) with at least one tap, "
                              f"got {tuple(kernel.shape)}")
    try:
        torch.broadcast_shapes(x.shape[:-1], kernel.shape[:-1])
    except RuntimeError:
        raise MixerInputError(f"{op}: kernel {tuple(kernel.shape)} does not broadcast against x "
                              f"{tuple(x.shape)} (all but the last dimension)") from None
    if not causal:
        if history is not None:
            raise MixerInputError(f"{op}: a history continues a causal convolution; causal=False is circular")
        if kernel.shape[-1] > x.shape[-1]:
            raise MixerInputError(f"{op}: a circular convolution needs kernel taps ≤ length, got "
                                  f"{kernel.shape[-1]} taps for length {x.shape[-1]}")
    if history is not None and history.shape[:-1] != x.shape[:-1]:
        raise MixerInputError(f"{op}: history {tuple(history.shape)} must match x {tuple(x.shape)} "
                              "in all but the last dimension")


@functools.lru_cache(maxsize=256)
def fast_size(n: int) -> int:
    """The smallest 5-smooth integer ≥ n (2^a 3^b 5^c: sizes the FFT libraries transform fastest)."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def _fft(full: Tensor, spectrum: Tensor, size: int) -> Tensor:
    """Convolution modulo `size` (circular over `size` points, x zero-padded to it) with the kernel whose
    `rfft(·, n=size)` is `spectrum` (computed once, broadcast over the batch)."""
    transformed = torch.fft.rfft(full, n=size)
    if (torch.is_grad_enabled() and (full.requires_grad or spectrum.requires_grad)) or \
            torch.broadcast_shapes(transformed.shape, spectrum.shape) != transformed.shape:
        return torch.fft.irfft(transformed * spectrum, n=size)
    return torch.fft.irfft(transformed.mul_(spectrum), n=size)  # no graph: the product in place, one buffer less


BLOCK_ELEMENTS = 1 << 19  # transform points per block of rows: a block's padded input and spectrum stay in cache
BLOCK_MIN_ROWS = 16       # rows transformed together (the FFT vectorizes across rows)


def _fft_blocked(full: Tensor, spectrum: Tensor, size: int, past: int, gate: Tensor | None,
                 out_dtype: torch.dtype) -> Tensor:
    """`_fft` without autograd, over blocks of rows (the largest leading dimension of `full`, split so that a
    block holds about BLOCK_ELEMENTS transform points): each block is padded, transformed, multiplied by its
    slice of the spectrum, transformed back, gated and written into the output while it is in cache, instead of
    a pass over memory per step with (..., D, size) intermediates. The input may be strided (a transposed view:
    the padding copy reads it in place) and the output keeps its layout (`empty_like`)."""
    length = full.shape[-1] - past
    lead = full.shape[:-1]
    out = torch.empty_like(full[..., past:], dtype=out_dtype)
    if not lead:
        dim, rows_per_block = None, 1
    else:
        dim = max(range(len(lead)), key=lambda i: (lead[i], i))
        others = max(1, full[..., 0].numel() // max(lead[dim], 1))
        rows_per_block = max(1, max(BLOCK_MIN_ROWS, BLOCK_ELEMENTS // size) // others)
    spectrum_dim = None if dim is None else dim - len(lead) + spectrum.ndim - 1  # aligned from the right
    sliced_spectrum = spectrum_dim is not None and spectrum_dim >= 0 and spectrum.shape[spectrum_dim] > 1
    total = 1 if dim is None else lead[dim]
    padded = None
    for start in range(0, total, rows_per_block):
        stop = min(start + rows_per_block, total)
        if dim is None:
            block, block_spectrum, target = full, spectrum, out
            block_gate = gate
        else:
            block = full.narrow(dim, start, stop - start)
            block_spectrum = spectrum.narrow(spectrum_dim, start, stop - start) if sliced_spectrum else spectrum
            target = out.narrow(dim, start, stop - start)
            block_gate = None if gate is None else gate.narrow(dim, start, stop - start)
        # The padded input is one buffer reused across blocks, its zero tail written once (torch.fft's `n=`
        # would allocate and zero-fill a padded copy per block; its `out=` forms copy, so they are not used).
        if padded is None or padded.shape[:-1] != block.shape[:-1]:
            padded = block.new_zeros(*block.shape[:-1], size)
        padded[..., :block.shape[-1]].copy_(block)
        y = torch.fft.irfft(torch.fft.rfft(padded).mul_(block_spectrum), n=size)[..., past:past + length]
        if block_gate is None:
            target.copy_(y)
        elif block_gate.dtype == y.dtype == target.dtype:
            torch.mul(y, block_gate, out=target)
        else:
            target.copy_(y * block_gate.to(y.dtype))
    return out


def _reference(full: Tensor, kernel: Tensor, past: int, causal: bool) -> Tensor:
    total, taps = full.shape[-1], kernel.shape[-1]
    t = torch.arange(past, total, device=full.device)[:, None]
    s = torch.arange(total, device=full.device)[None, :]
    lag = t - s if causal else (t - s) % total
    padded = F.pad(kernel, (0, total - taps))
    toeplitz = padded[..., lag.clamp(min=0)] * ((lag >= 0) & (lag < taps))  # T[t, s] = k_{t-s}
    return (toeplitz @ full.unsqueeze(-1)).squeeze(-1)


def _direct(full: Tensor, kernel: Tensor, past: int, causal: bool) -> Tensor:
    taps, length = kernel.shape[-1], full.shape[-1] - past
    if causal and taps <= SHIFT_ADD_MAX_TAPS:
        # Output i (position past + i) reads full[past + i - j] with tap j, for i ≥ j - past (zeros before the
        # start): the first tap's product, then one fused multiply-add per further tap into the outputs it
        # reaches. No padded copy of the input and one pass per tap (in place on y: autograd keeps the taps'
        # operands, never y itself).
        y = kernel[..., :1] * full[..., past:]
        for j in range(1, min(taps, past + length)):
            low = max(0, j - past)
            y[..., low:].addcmul_(kernel[..., j:j + 1], full[..., past + low - j:past + length - j])
        return y
    if causal:  # the L + K - 1 inputs the requested outputs read, zeros before the start
        start = past - (taps - 1)
        segment = F.pad(full[..., max(start, 0):], (max(-start, 0), 0))
    else:
        segment = torch.cat([full[..., full.shape[-1] - (taps - 1):], full], dim=-1) if taps > 1 else full
    # Output i reads segment[i + K - 1 - j] with tap j. Elementwise passes rather than conv1d: exact, no
    # im2col copy, and free of conv1d's per-call threading cost on small inputs (large in float64 on CPU).
    if taps <= SHIFT_ADD_MAX_TAPS:
        y = kernel[..., :1] * segment[..., taps - 1:taps - 1 + length]
        for j in range(1, taps):
            y = y + kernel[..., j:j + 1] * segment[..., taps - 1 - j:taps - 1 - j + length]
        return y
    windows = segment.unfold(-1, taps, 1)                    # (..., L, K), a view
    return (windows * kernel.flip(-1).unsqueeze(-2)).sum(-1)
