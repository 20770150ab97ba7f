"""Latent Spectral Model (LSM) as a grid mixer: a multiscale U of convolutions whose every scale is solved by a
patchwise neural spectral block in a latent space of a few tokens.

"Solving High-Dimensional PDEs with Latent Spectral Models", Wu, Hu, Luo, Wang, Long, ICML 2023, arXiv:2301.12664.
Per patch of points x_1 … x_n (features of c channels, split into h heads) and per head:

    coordinate → latent:   T = T₀ + softmax(T₀ Kᵀ / √d) V,        K, V = x W_k, x W_v      (M learnable tokens T₀)
    latent solve:          T' = T + Σ_{k<K} w_k^sin ⊙ sin(ω_k T) + w_k^cos ⊙ cos(ω_k T),   ω_k = π k / K
    latent → coordinate:   x'_i = x_i + softmax(q_i T'ᵀ / √d) T',       q_i = x_i W_q

(d = c / h; the trigonometric functions act on every entry of the tokens, with one weight per channel and basis
function: the "basis operators" of the paper's neural spectral block, whose sum approximates the latent map). The
projections cost O(n M c), linear in the number of points.

The backbone is the paper's U (its multiscale design): `levels` scales, the grid halved by 2-max-pooling (⌈n/2⌉ points,
so any size works) and the channels doubled down to the last scale (c, 2c, 4c, …, the bottom two equal as in the
paper's bilinear U-Net); each scale is a double convolution (3-point stencils, normalization, ReLU); the spectral
block processes every scale's features before they enter the expanding half, which upsamples by (bi/tri)linear
interpolation to the skip's exact size, concatenates and applies a double convolution; a 1×1 convolution ends it.
The backbone's lift / projection and coordinates are `OperatorModel`'s, so in it this mixer with depth 1 is the
paper's whole model.

Defaults (the authors' Darcy setting, from their released script and model): 5 scales, M = 4 latent tokens, K = 12
basis functions, 8 heads, patches of 6 points per axis, width 64 (the backbone's width here). Deviations, each for
the mixer contract: the released model's BatchNorm mixes the examples of a batch, so the double convolutions use
GroupNorm with one group (per-example statistics); the release pads the grid so every scale divides into whole
patches, here the last patch along an axis may be shorter (its missing points are masked out of the attention) and
pooling rounds up instead of padding; attention scores are scaled by 1/√d as in scaled dot-product attention (the
release leaves them unscaled).

Resolution: patches are a fixed number of grid points and the convolutions are stencils over grid neighbours, so a
finer grid changes the operator: not resolution invariant (the paper trains and tests at one resolution).

`reference` loops over the patches of every scale, each a slice of the grid; `patched` pads every scale to whole
patches, folds the patches into the batch and masks the padding, all patches in one batched attention.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import GridMixer
from tokenmix.registry import register

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


class _DoubleConvolution(nn.Module):
    """(3-point convolution → GroupNorm(1) → ReLU) twice, zero padding so the grid keeps its size."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, mid_channels: int | None = None):
        super().__init__()
        mid = mid_channels or out_channels
        conv = _CONV[spatial_dims]
        self.layers = nn.Sequential(conv(in_channels, mid, 3, padding=1, bias=False), nn.GroupNorm(1, mid), nn.ReLU(),
                                    conv(mid, out_channels, 3, padding=1, bias=False), nn.GroupNorm(1, out_channels),
                                    nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class NeuralSpectralBlock(nn.Module):
    """The patchwise block of the module docstring for `channels` features: latent tokens by attention, the
    trigonometric latent solve, attention back to the points (both with residuals)."""

    def __init__(self, spatial_dims: int, channels: int, *, patch_size: int, num_tokens: int, num_basis: int,
                 num_heads: int) -> None:
        super().__init__()
        self.patch_size, self.num_tokens, self.num_basis, self.num_heads = patch_size, num_tokens, num_basis, num_heads
        self.head_dim = channels // num_heads
        conv = _CONV[spatial_dims]
        self.key_value = conv(channels, 2 * channels, 1)
        self.query = conv(channels, channels, 1)
        # small positive starting values, the scale of the paper's released model (uniform in [0, 1/c))
        self.latent = nn.Parameter(torch.rand(num_heads, num_tokens, self.head_dim) / channels)
        self.basis_weight = nn.Parameter(torch.rand(channels, 2 * num_basis) / channels)

    def solve(self, tokens: Tensor) -> Tensor:
        """T' = T + Σ_k w_k^sin sin(ω_k T) + w_k^cos cos(ω_k T) for tokens `(..., heads, M, d)`."""
        frequencies = math.pi * torch.arange(self.num_basis, dtype=tokens.dtype, device=tokens.device) / self.num_basis
        angles = tokens[..., None] * frequencies                                   # (..., h, M, d, K)
        basis = torch.cat([angles.sin(), angles.cos()], dim=-1)                    # (..., h, M, d, 2K)
        weight = self.basis_weight.view(self.num_heads, 1, self.head_dim, 2 * self.num_basis)
        return tokens + (basis * weight).sum(-1)

    def _heads(self, points: Tensor) -> Tensor:
        """`(B, c, n)` → `(B, h, n, d)`."""
        return points.unflatten(1, (self.num_heads, self.head_dim)).transpose(-1, -2)

    def _patch(self, keys: Tensor, values: Tensor, queries: Tensor, mask: Tensor | None = None) -> Tensor:
        """The block on patches given as flattened points `(P, c, n)`; `mask` `(P, n)` marks the real points."""
        scale = self.head_dim ** -0.5
        keys, values, queries = self._heads(keys), self._heads(values), self._heads(queries)
        latent = self.latent.to(keys.dtype).expand(keys.shape[0], -1, -1, -1)      # (P, h, M, d)
        scores = latent @ keys.transpose(-1, -2) * scale                           # (P, h, M, n)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        tokens = self.solve(latent + scores.softmax(-1) @ values)
        back = (queries @ tokens.transpose(-1, -2) * scale).softmax(-1) @ tokens   # (P, h, n, d)
        return back.transpose(-1, -2).flatten(1, 2)                                # (P, c, n)

    def forward(self, x: Tensor, impl: str) -> Tensor:
        keys, values = self.key_value(x).chunk(2, dim=1)
        queries = self.query(x)
        if impl == "reference":
            return x + self._reference(keys, values, queries)
        return x + self._patched(keys, values, queries)

    def _reference(self, keys: Tensor, values: Tensor, queries: Tensor) -> Tensor:
        sizes = keys.shape[2:]
        out = torch.zeros_like(queries)
        for start in itertools.product(*[range(0, n, self.patch_size) for n in sizes]):
            window = (..., *[slice(s, s + self.patch_size) for s in start])
            shape = queries[window].shape
            patch = self._patch(keys[window].flatten(2), values[window].flatten(2), queries[window].flatten(2))
            out[window] = patch.view(shape)
        return out

    def _patched(self, keys: Tensor, values: Tensor, queries: Tensor) -> Tensor:
        batch, channels, sizes = keys.shape[0], keys.shape[1], tuple(keys.shape[2:])
        p = self.patch_size
        counts = [-(-n // p) for n in sizes]
        padding = [amount for n, c in zip(reversed(sizes), reversed(counts)) for amount in (0, c * p - n)]

        def fold(t: Tensor) -> Tensor:
            """`(B, C, *sizes)` → `(B · patches, C, p^s)`: the patches folded into the batch."""
            t = F.pad(t, padding)
            split = t.reshape(t.shape[0], t.shape[1], *[v for c in counts for v in (c, p)])
            dims = len(sizes)
            order = [0, *[2 + 2 * a for a in range(dims)], 1, *[3 + 2 * a for a in range(dims)]]
            return split.permute(order).reshape(-1, t.shape[1], p ** dims)

        mask = None
        if any(padding):  # the real points of every patch, repeated over the batch (folded batch-major)
            ones = torch.ones(1, 1, *sizes, dtype=keys.dtype, device=keys.device)
            mask = (fold(ones)[:, 0] > 0).repeat(batch, 1)
        out = self._patch(fold(keys), fold(values), fold(queries), mask)      # (B · patches, c, p^s)
        dims = len(sizes)
        out = out.reshape(batch, *counts, channels, *[p] * dims)
        order = [0, 1 + dims, *[v for a in range(dims) for v in (1 + a, 2 + dims + a)]]
        out = out.permute(order).reshape(batch, channels, *[c * p for c in counts])
        return out[(..., *[slice(0, n) for n in sizes])]


@register(
    name="lsm",
    family="neural-operator",
    layout="grid",
    paper="Solving High-Dimensional PDEs with Latent Spectral Models",
    arxiv="2301.12664",
    impls=("reference", "patched"),
    causal="never",
    state="none",
    time_complexity="N d^2 + N M d",
    memory_complexity="N d",
    spatial_dims=(1, 2, 3),
    resolution_invariant=False,
    summary="Multiscale U whose every scale is solved in a latent space of M tokens per patch on a sin/cos basis.",
)
class LatentSpectralModel(GridMixer):
    """The LSM backbone of the module docstring: `levels` scales, channels ×`channel_multiplier` per scale (the bottom
    two equal), at every scale a neural spectral block with `num_tokens` latent tokens, `num_basis` frequencies,
    `num_heads` heads over patches of `patch_size` points per axis. `dim` must divide by `num_heads`."""

    def __init__(self, dim: int, *, levels: int = 5, patch_size: int = 6, num_tokens: int = 4, num_basis: int = 12,
                 num_heads: int = 8, channel_multiplier: int = 2, spatial_dims: int = 2, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        for option, value in (("levels", levels), ("patch_size", patch_size), ("num_tokens", num_tokens),
                              ("num_basis", num_basis), ("num_heads", num_heads),
                              ("channel_multiplier", channel_multiplier)):
            self._positive_int(option, value)
        if dim % num_heads:
            raise self._fail(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.levels = levels
        s = spatial_dims
        channels = [dim * channel_multiplier ** level for level in range(levels - 1)]
        channels.append(channels[-1] if levels > 1 else dim)                       # the bottom two scales equal
        self.down = nn.ModuleList([_DoubleConvolution(s, dim, dim)] + [
            _DoubleConvolution(s, channels[level - 1], channels[level]) for level in range(1, levels)])
        self.blocks = nn.ModuleList(
            NeuralSpectralBlock(s, c, patch_size=patch_size, num_tokens=num_tokens, num_basis=num_basis,
                                num_heads=num_heads) for c in channels)
        # expanding half: from scale l + 1 (with channels `up_in`) to scale l, concatenated with its skip
        self.up = nn.ModuleList()
        below = channels[-1]
        for level in reversed(range(levels - 1)):
            total = channels[level] + below
            below = channels[level - 1] if level > 0 else dim
            self.up.append(_DoubleConvolution(s, total, below, total // 2))
        self.out = _CONV[s](dim, dim, 1)

    def _mix(self, x: Tensor) -> Tensor:
        impl = "patched" if self.impl == "auto" else self.impl
        scales = []
        for level, convolution in enumerate(self.down):
            if level > 0:
                x = _POOL[self.spatial_dims](x, 2, ceil_mode=True)
            x = convolution(x)
            scales.append(x)
        processed = [block(features, impl) for block, features in zip(self.blocks, scales)]
        x = processed[-1]
        for convolution, skip in zip(self.up, reversed(processed[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode=_INTERPOLATION[self.spatial_dims], align_corners=True)
            x = convolution(torch.cat([skip, x], dim=1))
        return self.out(x)
