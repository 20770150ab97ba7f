"""Deformable sampling: the family op of deformable convolutions (DCNv2, DCNv3/v4).

`x: (B, C, H, W)` split into G groups of C/G channels; for each output position p, kernel tap k (K = k_h·k_w taps
of a regular grid p_k, spaced by `dilation`, centred) and group g, the input is read at a fractional position
and weighted by a modulation scalar:

    s[b, c, k, p] = m[b, g, k, p] · x_c(p + p_k + Δp[b, g, k, p])          (g = c // (C/G))

x(q) at a fractional q = (q_y, q_x) is bilinear interpolation of the four neighbouring pixels, a pixel outside
the image counting as zero. `offset: (B, G, K, 2, H, W)` holds (Δy, Δx) in pixels, `mask: (B, G, K, H, W)`
(None: all ones). The result `(B, C, K, H, W)` is contracted with weights by the mixer (a dense kernel for DCNv2,
a sum over taps then a projection for DCNv4).

Forms (`impl`): `reference` computes the bilinear weights and gathers the four corners tap by tap;
`grid_sample` samples all taps at once with `torch.nn.functional.grid_sample` (zeros padding,
align_corners=False, which maps pixel centres exactly). Half-precision inputs are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops._checks import check_impl, compute_dtype

IMPLS = ("reference", "grid_sample")


def kernel_grid(kernel_size: tuple[int, int], dilation: int, device=None, dtype=None) -> Tensor:
    """The regular taps p_k as (K, 2) (dy, dx), row-major, centred (left of centre for even sizes)."""
    ky, kx = kernel_size
    dy = (torch.arange(ky, device=device, dtype=dtype) - (ky - 1) // 2) * dilation
    dx = (torch.arange(kx, device=device, dtype=dtype) - (kx - 1) // 2) * dilation
    return torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)


def deformable_sample(x: Tensor, offset: Tensor, mask: Tensor | None = None, *, kernel_size: tuple[int, int],
                      dilation: int = 1, impl: str = "grid_sample") -> Tensor:
    """Modulated bilinear samples `(B, C, K, H, W)` of `x` at p + p_k + Δp (see the module docstring)."""
    op = "deformable_sample"
    check_impl(op, impl, ("auto", *IMPLS))
    impl = "grid_sample" if impl == "auto" else impl
    b, c, h, w = _check(op, x, offset, mask, kernel_size)
    groups, taps = offset.shape[1], offset.shape[2]
    dtype = compute_dtype(x, offset)
    out_dtype = x.dtype
    x, offset = x.to(dtype), offset.to(dtype)
    taps_yx = kernel_grid(kernel_size, dilation, x.device, dtype)                    # (K, 2)
    base_y = torch.arange(h, device=x.device, dtype=dtype).view(1, 1, 1, h, 1)
    base_x = torch.arange(w, device=x.device, dtype=dtype).view(1, 1, 1, 1, w)
    pos_y = base_y + taps_yx[:, 0].view(1, 1, taps, 1, 1) + offset[:, :, :, 0]       # (B, G, K, H, W)
    pos_x = base_x + taps_yx[:, 1].view(1, 1, taps, 1, 1) + offset[:, :, :, 1]
    grouped = x.view(b, groups, c // groups, h, w)
    if impl == "reference":
        samples = torch.stack([_bilinear(grouped, pos_y[:, :, k], pos_x[:, :, k]) for k in range(taps)], dim=3)
    else:
        # normalized coordinates for align_corners=False: pixel i sits at (2i + 1) / size - 1
        grid = torch.stack([(2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1], dim=-1)  # (B, G, K, H, W, 2)
        sampled = F.grid_sample(grouped.reshape(b * groups, c // groups, h, w),
                                grid.reshape(b * groups, taps * h, w, 2),
                                mode="bilinear", padding_mode="zeros", align_corners=False)
        samples = sampled.view(b, groups, c // groups, taps, h, w)
    if mask is not None:
        samples = samples * mask.to(dtype)[:, :, None]
    return samples.reshape(b, c, taps, h, w).to(out_dtype)


def _bilinear(x: Tensor, pos_y: Tensor, pos_x: Tensor) -> Tensor:
    """x: (B, G, Cg, H, W) read at (pos_y, pos_x): (B, G, H', W') → (B, G, Cg, H', W'), zero outside."""
    b, g, cg, h, w = x.shape
    y0, x0 = pos_y.floor(), pos_x.floor()
    flat = x.reshape(b, g, cg, h * w)
    out = 0
    for corner_y, weight_y in ((y0, 1 - (pos_y - y0)), (y0 + 1, pos_y - y0)):
        for corner_x, weight_x in ((x0, 1 - (pos_x - x0)), (x0 + 1, pos_x - x0)):
            inside = (corner_y >= 0) & (corner_y <= h - 1) & (corner_x >= 0) & (corner_x <= w - 1)
            index = (corner_y.clamp(0, h - 1) * w + corner_x.clamp(0, w - 1)).long()
            values = flat.gather(3, index.flatten(2)[:, :, None].expand(b, g, cg, -1)).view(b, g, cg, *pos_y.shape[2:])
            out = out + values * (weight_y * weight_x * inside)[:, :, None]
    return out


def _check(op: str, x: Tensor, offset: Tensor, mask: Tensor | None, kernel_size) -> tuple[int, int, int, int]:
    for name, t in (("x", x), ("offset", offset), ("mask", mask)):
        if t is not None and not (isinstance(t, Tensor) and t.is_floating_point()):
            raise MixerInputError(f"{op}: {name} must be a floating-point tensor")
    if x.ndim != 4:
        raise MixerInputError(f"{op}: x must have shape (batch, channels, height, width), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    taps = kernel_size[0] * kernel_size[1]
    if offset.ndim != 6 or offset.shape[0] != b or offset.shape[2:] != (taps, 2, h, w) or c % offset.shape[1]:
        raise MixerInputError(f"{op}: offset must have shape (batch, groups, {taps}, 2, {h}, {w}) with groups "
                              f"dividing {c} channels, got {tuple(offset.shape)}")
    if mask is not None and mask.shape != (b, offset.shape[1], taps, h, w):
        raise MixerInputError(f"{op}: mask must have shape {(b, offset.shape[1], taps, h, w)}, got {tuple(mask.shape)}")
    return b, c, h, w
