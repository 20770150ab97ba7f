"""Log-linear Mamba-2: Mamba-2's block over the log-linear attention op (a Fenwick-tree hierarchy of states).

The hierarchy lives only in `tokenmix.ops.log_linear_attention`; this file adds the per-level weights λ to the
Mamba-2 block of `tokenmix.sequence.gated_recurrences`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import State
from tokenmix.ops.log_linear_attention import log_linear_attention
from tokenmix.registry import register
from tokenmix.sequence._heads import merge_heads, split_heads
from tokenmix.sequence.gated_recurrences import Mamba2


@register(
    name="log_linear_mamba2",
    family="state_space",
    layout="sequence",
    paper="Log-Linear Attention",
    arxiv="2506.04761",
    impls=("reference", "recurrent", "chunk"),
    causal="always",
    state="growing",
    time_complexity="L log L",
    memory_complexity="L",
    summary="Mamba-2 with a Fenwick-tree hierarchy of O(log L) states per head, each level read with its own "
            "data-dependent weight λ_t^(ℓ).",
)
class LogLinearMamba2(Mamba2):
    """Log-linear Mamba-2 (Guo et al. 2025, arXiv:2506.04761):

        o_t = Σ_{s≤t} λ_t^(ℓ(t,s)) exp(Σ_{r=s+1..t} Δ_r A) (C_t · B_s) Δ_s x_s + D x_t,   ℓ(t, s) the Fenwick level

    with Mamba-2's projections, conv, D skip and gated RMS norm (see `mamba2`), and λ_t = softplus(W_λ u_t + b_λ)
    per head and level. b_λ starts at softplus⁻¹(1), so an untrained layer is exactly Mamba-2. `num_levels`
    states per head serve 2^(num_levels-1) tokens exactly; older tokens share the top level. `chunk` uses chunks
    of the largest power of two ≤ `chunk_size` (the hierarchy needs aligned power-of-two chunks).
    """

    def __init__(self, dim: int, *, num_heads: int = 4, expand: int = 2, state_size: int = 64, conv_size: int = 4,
                 num_levels: int = 16, chunk_size: int = 64, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, num_heads=num_heads, expand=expand, state_size=state_size, conv_size=conv_size,
                         chunk_size=chunk_size, impl=impl, causal=causal)
        self.num_levels = self._positive_int("num_levels", num_levels)
        self.level_proj = nn.Linear(dim, num_heads * num_levels)
        with torch.no_grad():
            self.level_proj.weight.mul_(0.1)
            self.level_proj.bias.fill_(math.log(math.e - 1.0))

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return {"state": torch.zeros(batch_size, self.num_heads, self.num_levels, self.state_size, self.value_dim,
                                     device=device, dtype=dtype),
                "position": torch.zeros(batch_size, dtype=torch.long, device=device),
                "conv": self.conv.init_cache(batch_size, device, dtype)}

    def _mix(self, u: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        n, heads = self.state_size, self.num_heads
        z, xbc, dt = self.in_proj(u).split([self.inner, self.inner + 2 * n, heads], dim=-1)
        xbc, cache = self.conv(xbc, None if state is None else state["conv"])
        x, b, c = F.silu(xbc).split([self.inner, n, n], dim=-1)
        delta = F.softplus(dt + self.dt_bias).transpose(1, 2)                        # (B, H, L)
        x = split_heads(x, heads)                                                    # (B, H, L, P)
        q, k = (t.unsqueeze(1).expand(-1, heads, -1, -1) for t in (c, b))           # (B, H, L, N)
        levels = split_heads(F.softplus(self.level_proj(u)), heads)                 # (B, H, L, levels)
        log_decay = -self.A_log.exp()[:, None] * delta
        v, options = x * delta.unsqueeze(-1), dict(scale=1.0, chunk_size=self.chunk_size, impl=self.impl)
        if state is None:
            y, new = log_linear_attention(q, k, v, levels, log_decay, **options), None
        else:
            start = int(state["position"][0])
            y, memory = log_linear_attention(q, k, v, levels, log_decay, start=start, initial_state=state["state"],
                                             return_state=True, **options)
            new = {"state": memory.to(state["state"].dtype), "position": state["position"] + u.shape[1],
                   "conv": cache}
        y = merge_heads(y + self.D[:, None, None] * x)
        return self.out(self.norm(y * F.silu(z))), new
