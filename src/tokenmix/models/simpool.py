"""SimPool attention pooling, a head option of the vision backbone (`VisionModel(..., pooling="simpool")`).

"Keep It SimPool: Who Said Supervised Transformers Suffer from Attention Deficit?", Psomas et al. 2023,
arXiv 2309.06891, section 4: with X̂ = LN(X) the normalized features of the p positions,

    u = GAP(X̂) = X̂ 1_p / p,       a = softmax_i( (W_Q u)·(W_K x̂_i) / √d ),       z = Σ_i a_i x̂_i

(one attention map per head; values are the features themselves, no projection). With `gamma` the weighted
average becomes the generalized (power) mean of the paper's ResNet setting,
z = (Σ_i a_i (x̂_i - m + ε)^γ)^{1/γ} + β, m the minimum of the example's values and β a learned offset.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenmix.errors import MixerInputError


class SimPool(nn.Module):
    """`(B, D, *spatial)` → `(B, D)`: attention pooling with a query from the global average."""

    def __init__(self, dim: int, *, num_heads: int = 1, gamma: float | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise MixerInputError(f"SimPool: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.gamma, self.eps = num_heads, gamma, eps
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.beta = nn.Parameter(torch.zeros(1)) if gamma is not None else None

    def attention(self, features: Tensor) -> Tensor:
        """The attention map `a: (B, heads, p)` over the p positions (each row sums to one)."""
        x = self.norm(features.flatten(2).transpose(1, 2))                         # (B, p, D)
        q = self.query(x.mean(1)).unflatten(-1, (self.num_heads, -1))                # (B, heads, d)
        k = self.key(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)          # (B, heads, p, d)
        scores = (k @ q.unsqueeze(-1)).squeeze(-1) * q.shape[-1] ** -0.5
        return torch.softmax(scores, dim=-1)

    def forward(self, features: Tensor) -> Tensor:
        a = self.attention(features)
        v = self.norm(features.flatten(2).transpose(1, 2)).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
        if self.gamma is None:
            pooled = (a.unsqueeze(-2) @ v).squeeze(-2)                                # (B, heads, d)
        else:
            shift = v.amin(dim=(1, 2, 3), keepdim=True) - self.eps                   # per example
            powered = (a.unsqueeze(-2) @ (v - shift) ** self.gamma).squeeze(-2)
            pooled = powered ** (1.0 / self.gamma) + self.beta
        return pooled.flatten(1)
