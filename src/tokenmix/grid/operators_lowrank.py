"""Low-rank neural operator (LNO) layer as a grid mixer.

"Neural Operator: Learning Maps Between Function Spaces", Kovachki et al. 2021, arXiv:2108.08481, §4.2 (low-rank
neural operator): the kernel integral operator with a rank-r separable kernel

    (K v)(x) = ∫_D κ(x, y) v(y) dy,     κ(x, y) = Σ_{j=1}^{r} φ_j(x) ψ_j(y)ᵀ   (φ_j, ψ_j ∈ R^d),

so (K v)(x) = Σ_j φ_j(x) ⟨ψ_j, v⟩_{L²(D)}: r inner products with the input function, then r output functions, in
O(N r d) instead of the O(N² d²) of a general kernel. φ and ψ are neural networks of the point's features (the
paper's functions of (x, a(x)); in the operator backbone v(x) carries the lifted a(x) and the coordinates x):
two-layer pointwise MLPs R^d → R^{r·d}. The layer is y = W v + b + K v (the activation is the backbone's), and the
integral is the grid mean (1/N Σ_y), a quadrature of the same integral at every resolution.

`reference` builds κ(x, y) for every pair of grid points and sums κ(x, y) v(y) / N (O(N² d²) memory; small grids
only); `lowrank` contracts the inner products first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import GridMixer
from tokenmix.registry import register


@register(
    name="lno",
    family="neural-operator",
    layout="grid",
    paper="Neural Operator: Learning Maps Between Function Spaces",
    arxiv="2108.08481",
    impls=("reference", "lowrank"),
    causal="never",
    state="none",
    time_complexity="N r d + N d h",
    memory_complexity="N r d",
    spatial_dims=(1, 2, 3),
    resolution_invariant=True,
    summary="Low-rank kernel integral W v + Σ_j φ_j(x) ⟨ψ_j, v⟩ / N, φ and ψ pointwise MLPs of the features.",
)
class LowRankLayer(GridMixer):
    """y = W v + b + Σ_{j ≤ rank} φ_j(x) · mean_y ψ_j(y)ᵀ v(y) (see the module docstring); φ, ψ: Linear(d, hidden),
    GELU, Linear(hidden, rank · d), with `hidden` = `hidden_width` (default d)."""

    def __init__(self, dim: int, *, rank: int = 4, hidden_width: int | None = None, spatial_dims: int = 2,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.rank = self._positive_int("rank", rank)
        hidden = dim if hidden_width is None else self._positive_int("hidden_width", hidden_width)
        self.phi = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, rank * dim))
        self.psi = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, rank * dim))
        self.skip = nn.Linear(dim, dim)

    def _mix(self, x: Tensor) -> Tensor:
        batch, spatial = x.shape[0], x.shape[2:]
        v = x.flatten(2).transpose(1, 2)                                  # (B, N, d)
        n = v.shape[1]
        phi = self.phi(v).view(batch, n, self.rank, self.dim)             # φ_j(x)
        psi = self.psi(v).view(batch, n, self.rank, self.dim)             # ψ_j(y)
        if self.impl == "reference":
            kernel = torch.einsum("bxro,byri->bxyoi", phi, psi)           # κ(x, y) = Σ_j φ_j(x) ψ_j(y)ᵀ
            integral = torch.einsum("bxyoi,byi->bxo", kernel, v) / n
        else:
            inner = torch.einsum("byri,byi->br", psi, v) / n              # ⟨ψ_j, v⟩ by the grid quadrature
            integral = torch.einsum("bxro,br->bxo", phi, inner)
        y = self.skip(v) + integral
        return y.transpose(1, 2).reshape(batch, self.dim, *spatial)
