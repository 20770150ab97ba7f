"""MLP and shift grid mixers: MLP-Mixer's token MLP, ResMLP's linear across patches, gMLP's spatial gating unit,
and the shift operators of Shift-ViT and S²-MLP.

Resolution: the token mixers (`grid_token_mlp`, `resmlp`, `gmlp`) hold one weight per pair of grid positions, so
they are built for a `resolution` (H, W); at (H, W) they are exactly the papers' operators. A larger grid is
rejected with an error naming the size to build for. A smaller h×w grid is placed at the top-left corner of the
H×W grid and the operator is restricted to its positions: only the rows and columns of the token weights (and the
biases) of those positions are used, as the sequence `token_mlp` does for a shorter sequence. For the token MLP
this equals zero-padding to H×W and cropping; for ResMLP and gMLP it is the restriction, not zero-padding (their
affine / normalized inputs are not zero at padded positions). The shift mixers accept any size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._parts import positive_pair
from tokenmix.mixer import GridMixer
from tokenmix.registry import register

_COMMON = dict(layout="grid", causal="never", state="none", spatial_dims=(2,), impls=("reference",))


class _TokenWeights(GridMixer):
    """A mixer with weights over the N = H·W positions of a fixed `resolution`."""

    def __init__(self, dim: int, *, resolution: int | tuple[int, int] = 14, impl: str = "auto",
                 causal: bool | None = None, spatial_dims: int | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.resolution = positive_pair(self, "resolution", resolution)
        self.num_positions = math.prod(self.resolution)

    def positions(self, x: Tensor) -> Tensor | None:
        """The indices (in the H×W grid, row-major) of the positions an h×w input occupies; None when h×w = H×W."""
        (height, width), (h, w) = self.resolution, x.shape[2:]
        if h > height or w > width:
            raise self._fail(f"grid {h}×{w} exceeds the {height}×{width} resolution its token weights were built "
                             f"for; create it with resolution=({max(h, height)}, {max(w, width)})")
        if (h, w) == (height, width):
            return None
        return (torch.arange(h, device=x.device)[:, None] * width + torch.arange(w, device=x.device)).flatten()


def _rows(t: Tensor, index: Tensor | None) -> Tensor:
    return t if index is None else t[index]


def _token_linear(tokens: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """y[b, d, m] = Σ_n weight[m, n] tokens[b, d, n] + bias[m]: one linear map across positions, shared by channels."""
    y = torch.einsum("mn,bdn->bdm", weight, tokens)
    return y if bias is None else y + bias


@register(
    name="grid_token_mlp",
    family="mlp",
    paper="MLP-Mixer: An all-MLP Architecture for Vision",
    arxiv="2105.01601",
    time_complexity="N S D",
    memory_complexity="N (S + D)",
    summary="MLP-Mixer token-mixing MLP across the H·W positions of a fixed resolution, shared by all channels.",
    **_COMMON,
)
class GridTokenMLP(_TokenWeights):
    """MLP-Mixer token mixing (Tolstikhin et al., arXiv 2105.01601), eq. (1) without the block's LayerNorm and
    residual: U_{*,c} = W₂ GELU(W₁ X_{*,c} + b₁) + b₂ for every channel c, X_{*,c} the N = H·W positions of channel
    c, W₁: S × N, W₂: N × S, S = `hidden_dim` (paper: 256 for Mixer-S at 14×14). Fixed `resolution`; smaller grids
    as the module docstring says. The sequence `token_mlp` is the same MLP over a 1D sequence."""

    def __init__(self, dim: int, *, resolution: int | tuple[int, int] = 14, hidden_dim: int = 256,
                 impl: str = "auto", causal: bool | None = None, spatial_dims: int | None = None) -> None:
        super().__init__(dim, resolution=resolution, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.hidden_dim = self._positive_int("hidden_dim", hidden_dim)
        self.fc1 = nn.Linear(self.num_positions, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, self.num_positions)

    def _mix(self, x: Tensor) -> Tensor:
        index = self.positions(x)
        w1 = self.fc1.weight if index is None else self.fc1.weight[:, index]
        hidden = F.gelu(_token_linear(x.flatten(2), w1, self.fc1.bias))
        y = _token_linear(hidden, _rows(self.fc2.weight, index), _rows(self.fc2.bias, index))
        return y.view_as(x)


@register(
    name="resmlp",
    family="mlp",
    paper="ResMLP: Feedforward networks for image classification with data-efficient training",
    arxiv="2105.03404",
    time_complexity="N^2 D",
    memory_complexity="N^2 (the N × N weights)",
    summary="ResMLP cross-patch sublayer: Aff(A Aff(X)), one linear map across the positions of a fixed resolution.",
    **_COMMON,
)
class ResMLPCrossPatch(_TokenWeights):
    """ResMLP's cross-patch sublayer (Touvron et al., arXiv 2105.03404), eq. (2) without the residual:

        Y = Aff_β((A Aff_α(X)ᵀ)ᵀ),   Aff_α(x) = Diag(α) x + β   (per channel)

    A: N × N (with a bias) across the N = H·W positions, shared by the channels; the first Aff starts at α = 1,
    β = 0, the second (the paper's LayerScale-like output scaling) at α = `layer_scale` (paper: 0.1 for depth 12),
    β = 0. Fixed `resolution`; smaller grids as the module docstring says."""

    def __init__(self, dim: int, *, resolution: int | tuple[int, int] = 14, layer_scale: float = 0.1,
                 impl: str = "auto", causal: bool | None = None, spatial_dims: int | None = None) -> None:
        super().__init__(dim, resolution=resolution, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.alpha_in, self.beta_in = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
        self.alpha_out = nn.Parameter(torch.full((dim,), float(layer_scale)))
        self.beta_out = nn.Parameter(torch.zeros(dim))
        self.cross_patch = nn.Linear(self.num_positions, self.num_positions)

    def _mix(self, x: Tensor) -> Tensor:
        index = self.positions(x)
        weight = self.cross_patch.weight if index is None else self.cross_patch.weight[index][:, index]
        tokens = self.alpha_in[:, None] * x.flatten(2) + self.beta_in[:, None]
        y = _token_linear(tokens, weight, _rows(self.cross_patch.bias, index))
        return (self.alpha_out[:, None] * y + self.beta_out[:, None]).view_as(x)


@register(
    name="gmlp",
    family="mlp",
    paper="Pay Attention to MLPs",
    arxiv="2105.08050",
    time_complexity="N^2 E",
    memory_complexity="N^2 (the N × N weights)",
    summary="gMLP token mixing: channel projection, spatial gating unit Z₁ ⊙ (W LN(Z₂) + b) across positions, "
            "projection back.",
    **_COMMON,
)
class SpatialGatingMLP(_TokenWeights):
    """gMLP block's token mixing (Liu et al., arXiv 2105.08050), eq. (1)-(3), without the block's norm and residual:

        Z = GELU(X U),   [Z₁, Z₂] = split(Z),   s(Z) = Z₁ ⊙ f(LN(Z₂)),   f(Z₂) = W Z₂ + b,   Y = s(Z) V

    U: D → E (E = `expansion` · D, split in two halves of E/2), V: E/2 → D, W: N × N across the N = H·W positions,
    LN over channels (the paper normalizes Z₂). W starts near zero (uniform ±`init_scale`/N) and b at ones, so
    f ≈ 1 and s(Z) ≈ Z₁ at initialization: the unit starts as a channel MLP (near identity on the token axis).
    Fixed `resolution`; smaller grids as the module docstring says."""

    def __init__(self, dim: int, *, resolution: int | tuple[int, int] = 14, expansion: int = 6,
                 init_scale: float = 1e-3, impl: str = "auto", causal: bool | None = None,
                 spatial_dims: int | None = None) -> None:
        super().__init__(dim, resolution=resolution, impl=impl, causal=causal, spatial_dims=spatial_dims)
        hidden = dim * self._positive_int("expansion", expansion)
        if hidden % 2:
            raise self._fail(f"expansion · dim = {hidden} must be even (it is split into two halves)")
        self.proj_in = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden // 2)
        n = self.num_positions
        self.spatial_weight = nn.Parameter(torch.empty(n, n).uniform_(-init_scale / n, init_scale / n))
        self.spatial_bias = nn.Parameter(torch.ones(n))
        self.proj_out = nn.Linear(hidden // 2, dim)

    def _mix(self, x: Tensor) -> Tensor:
        index = self.positions(x)
        weight = self.spatial_weight if index is None else self.spatial_weight[index][:, index]
        z = F.gelu(self.proj_in(x.flatten(2).transpose(1, 2)))             # (B, n, E)
        z1, z2 = z.chunk(2, dim=-1)
        gate = _token_linear(self.norm(z2).transpose(1, 2), weight, _rows(self.spatial_bias, index))  # (B, E/2, n)
        y = self.proj_out(z1 * gate.transpose(1, 2))                        # (B, n, D)
        return y.transpose(1, 2).reshape_as(x)


def shift_by(x: Tensor, offset: int, dim: int, fill: str) -> Tensor:
    """out[i] = x[i - offset] along `dim` (a move by `offset` positions); the `|offset|` positions it leaves open
    take zeros (`fill="zero"`) or keep the input's own values there (`fill="keep"`)."""
    n = x.shape[dim]
    size = min(abs(offset), n)
    moved = x.narrow(dim, 0, n - size) if offset > 0 else x.narrow(dim, size, n - size)
    edge = x.narrow(dim, 0, size) if offset > 0 else x.narrow(dim, n - size, size)
    edge = torch.zeros_like(edge) if fill == "zero" else edge
    return torch.cat([edge, moved] if offset > 0 else [moved, edge], dim=dim)


@register(
    name="shift",
    family="shift",
    paper="When Shift Operation Meets Vision Transformer: An Extremely Simple Alternative to Attention Mechanism",
    arxiv="2201.10801",
    time_complexity="N D",
    memory_complexity="N D",
    summary="Shift-ViT partial shift: four small channel groups moved one pixel left, right, up, down; no "
            "parameters.",
    **_COMMON,
)
class PartialShift(GridMixer):
    """Shift-ViT's shift operation (Wang et al., arXiv 2201.10801): a fraction γ = `ratio` of the channels, in four
    equal groups of g = ⌊γ C⌋ // 4, is moved by `shift_size` pixels: group 1 to the left, group 2 to the right,
    group 3 up, group 4 down (zeros enter at the border); the other C - 4g channels pass unchanged. No parameters,
    no FLOPs; paper γ = 1/3. Accepts any grid size."""

    def __init__(self, dim: int, *, ratio: float = 1 / 3, shift_size: int = 1, impl: str = "auto",
                 causal: bool | None = None, spatial_dims: int | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise self._fail(f"ratio must be in (0, 1], got {ratio!r}")
        self.ratio, self.shift_size = float(ratio), self._positive_int("shift_size", shift_size)
        self.group = int(dim * ratio) // 4

    def _mix(self, x: Tensor) -> Tensor:
        g, s = self.group, self.shift_size
        parts = x.split([g, g, g, g, x.shape[1] - 4 * g], dim=1)
        moves = [(-s, 3), (s, 3), (-s, 2), (s, 2)]                          # left, right, up, down
        shifted = [shift_by(p, offset, dim, "zero") for p, (offset, dim) in zip(parts, moves)]
        return torch.cat([*shifted, parts[4]], dim=1)


@register(
    name="spatial_shift",
    family="shift",
    paper="S²-MLP: Spatial-Shift MLP Architecture for Vision",
    arxiv="2106.07477",
    time_complexity="N D^2",
    memory_complexity="N D",
    summary="S²-MLP spatial-shift block: 1×1 projection, GELU, four channel quarters shifted in four directions, "
            "1×1 projection.",
    **_COMMON,
)
class SpatialShiftMLP(GridMixer):
    """S²-MLP's spatial-shift block (Yu et al., arXiv 2106.07477), eq. (3)-(4): Y = W₂ S(GELU(W₁ X)) with W₁, W₂
    1×1 projections (with bias) and S the spatial shift on four channel quarters (C divisible by 4):

        quarter 1: x[:, i, j] ← x[:, i, j - 1]     quarter 2: x[:, i, j] ← x[:, i, j + 1]
        quarter 3: x[:, i, j] ← x[:, i - 1, j]     quarter 4: x[:, i, j] ← x[:, i + 1, j]

    applied where the source exists; the border row or column it cannot fill keeps its own value (the paper's
    in-place assignment). Accepts any grid size."""

    def __init__(self, dim: int, *, impl: str = "auto", causal: bool | None = None,
                 spatial_dims: int | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        if dim % 4:
            raise self._fail(f"dim {dim} must be divisible by 4 (four shifted channel groups)")
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    @staticmethod
    def spatial_shift(x: Tensor) -> Tensor:
        quarters = x.chunk(4, dim=1)
        moves = [(1, 3), (-1, 3), (1, 2), (-1, 2)]
        return torch.cat([shift_by(q, offset, dim, "keep") for q, (offset, dim) in zip(quarters, moves)], dim=1)

    def _mix(self, x: Tensor) -> Tensor:
        return self.proj_out(self.spatial_shift(F.gelu(self.proj_in(x))))
