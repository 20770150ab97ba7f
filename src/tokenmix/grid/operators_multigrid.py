"""MgNO layer as a grid mixer: the linear operator parameterized as one multigrid V-cycle.

"MgNO: Efficient Parameterization of Linear Operators via Multigrid", He, Liu, Xu 2023, arXiv:2310.19809: a layer
O(u) = σ(W u + b) whose linear operator W (between multi-channel functions) is a multigrid V-cycle with learned
convolutions, the MgNet form of the solver u ≈ A⁻¹ f started from u = 0:

    level ℓ = 1 … L (going down),  f¹ = v:
        u^ℓ   = S^ℓ ∗ f^ℓ                                  (one smoothing step from u = 0: u ← u + S (f − A u))
        f^{ℓ+1} = R^ℓ ∗ (f^ℓ − A^ℓ ∗ u^ℓ)                   (restrict the residual: stride-2 convolution)
    level ℓ = L − 1 … 1 (going up):
        u^ℓ ← u^ℓ + P^ℓ ∗ u^{ℓ+1}                          (prolongation: stride-2 transposed convolution)
        u^ℓ ← u^ℓ + S'^ℓ ∗ (f^ℓ − A^ℓ ∗ u^ℓ)               (post-smoothing)
    W v = u¹

A^ℓ (the learned discretization), S^ℓ, S'^ℓ (smoothers) are 3 × 3 (3 in 1D) multi-channel convolutions with zero
padding, R^ℓ and P^ℓ stride-2 ones; a grid of n points has ⌈n/2⌉ on the next level. The layer returns W v + b (the
paper's bias is function-valued on a fixed grid; here one bias per channel so any grid size works); the activation
is the backbone's. The stencils act on grid neighbours, so the operator depends on the grid spacing: not
resolution invariant (the paper trains and tests at one resolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import GridMixer
from tokenmix.registry import register


@register(
    name="mgno",
    family="neural-operator",
    layout="grid",
    paper="MgNO: Efficient Parameterization of Linear Operators via Multigrid",
    arxiv="2310.19809",
    impls=("reference",),
    causal="never",
    state="none",
    time_complexity="N d^2",
    memory_complexity="N d",
    spatial_dims=(1, 2),
    resolution_invariant=False,
    summary="Linear operator as one multigrid V-cycle of learned convolutions (smoothers, restriction, prolongation).",
)
class MultigridLayer(GridMixer):
    """W v + b with W the V-cycle of the module docstring over `levels` grids (the finest included)."""

    def __init__(self, dim: int, *, levels: int = 4, spatial_dims: int = 2, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        self.levels = self._positive_int("levels", levels)
        conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        transposed = nn.ConvTranspose1d if spatial_dims == 1 else nn.ConvTranspose2d

        def same() -> nn.Module:
            return conv(dim, dim, 3, padding=1, bias=False)

        self.discretization = nn.ModuleList(same() for _ in range(self.levels))
        self.smoother = nn.ModuleList(same() for _ in range(self.levels))
        self.post_smoother = nn.ModuleList(same() for _ in range(self.levels - 1))
        self.restriction = nn.ModuleList(conv(dim, dim, 3, stride=2, padding=1, bias=False)
                                         for _ in range(self.levels - 1))
        self.prolongation = nn.ModuleList(transposed(dim, dim, 3, stride=2, padding=1, bias=False)
                                          for _ in range(self.levels - 1))
        self.bias = nn.Parameter(torch.zeros(dim))

    def _mix(self, x: Tensor) -> Tensor:
        f, u = [x], []
        for level in range(self.levels):                              # down: smooth, restrict the residual
            u.append(self.smoother[level](f[level]))
            if level < self.levels - 1:
                residual = f[level] - self.discretization[level](u[level])
                f.append(self.restriction[level](residual))
        for level in reversed(range(self.levels - 1)):                # up: prolongate the correction, smooth
            sizes = f[level].shape[2:]
            padding = [n - (2 * m - 1) for n, m in zip(sizes, u[level + 1].shape[2:])]  # 0 or 1 per axis
            u[level] = u[level] + self._prolongate(level, u[level + 1], padding)
            u[level] = u[level] + self.post_smoother[level](f[level] - self.discretization[level](u[level]))
        return u[0] + self.bias.view(-1, *[1] * self.spatial_dims)

    def _prolongate(self, level: int, coarse: Tensor, output_padding: list[int]) -> Tensor:
        layer = self.prolongation[level]
        function = F.conv_transpose1d if self.spatial_dims == 1 else F.conv_transpose2d
        return function(coarse, layer.weight, stride=2, padding=1, output_padding=tuple(output_padding))
