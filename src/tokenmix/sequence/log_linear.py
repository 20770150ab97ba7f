"""Log-linear Mamba-2 and Log-Linear Gated DeltaNet: their blocks over the log-linear ops (a Fenwick-tree
hierarchy of states).

The hierarchy lives only in `tokenmix.ops.log_linear_attention`; this file adds the per-level weights λ to the
Mamba-2 block of `tokenmix.sequence.gated_recurrences` and to the Gated DeltaNet block of
`tokenmix.sequence.delta_rule`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import State
from tokenmix.ops.log_linear_attention import log_linear_attention, log_linear_delta_rule
from tokenmix.registry import register
from tokenmix.sequence._heads import merge_heads, split_heads
from tokenmix.sequence.delta_rule import GatedDeltaNet
from tokenmix.sequence.gated_recurrences import Mamba2


def _level_projection(dim: int, num_heads: int, num_levels: int) -> nn.Linear:
    """λ_t = softplus(W_λ x_t + b_λ) per head and level, starting at λ = 1 (W_λ = 0, b_λ = softplus⁻¹(1)) so that
    an untrained layer is exactly its linear-time parent; W_λ still receives gradients."""
    projection = nn.Linear(dim, num_heads * num_levels)
    with torch.no_grad():
        projection.weight.zero_()
        projection.bias.fill_(math.log(math.e - 1.0))
    return projection


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
        self.level_proj = _level_projection(dim, num_heads, num_levels)

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


@register(
    name="log_linear_gated_deltanet",
    family="delta_rule",
    layout="sequence",
    paper="Log-Linear Attention",
    arxiv="2506.04761",
    impls=("reference", "recurrent", "chunk"),
    causal="always",
    state="growing",
    time_complexity="L log L",
    memory_complexity="L",
    summary="Gated DeltaNet with a Fenwick-tree hierarchy of O(log L) delta-rule states per head, each level read "
            "with its own data-dependent weight λ_t^(ℓ): O = (A ⊙ M^S ⊙ M^H) V.",
)
class LogLinearGatedDeltaNet(GatedDeltaNet):
    """Log-Linear Gated DeltaNet (Guo et al. 2025, arXiv:2506.04761, Sec. 3.3), per head:

        o_t = Σ_{s≤t} λ_t^(ℓ(t,s)) β_s q_tᵀ Φ(t, s) k_s v_s,   Φ(t, s) = Π_{r=s+1..t} α_r (I - β_r k_r k_rᵀ)

    i.e. Gated DeltaNet's attention matrix times the hierarchical mask M^H (ℓ(t, s) the Fenwick level), with Gated
    DeltaNet's projections, short convolutions, gates, norm and output gate (see `gated_deltanet`) and
    λ_t = softplus(W_λ x_t + b_λ) per head and level, starting at 1 (an untrained layer is exactly Gated DeltaNet).
    `num_levels` states per head serve 2^(num_levels-1) tokens exactly; older tokens share the top level. `chunk`
    uses chunks of the largest power of two ≤ `chunk_size` (the hierarchy needs aligned power-of-two chunks), each
    summarized in the delta rule's WY form.
    """

    def __init__(self, dim: int, *, num_heads: int = 4, use_short_conv: bool = True, conv_size: int = 4,
                 num_levels: int = 16, chunk_size: int = 64, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, num_heads=num_heads, use_short_conv=use_short_conv, conv_size=conv_size,
                         chunk_size=chunk_size, impl=impl, causal=causal)
        self.num_levels = self._positive_int("num_levels", num_levels)
        self.level_proj = _level_projection(dim, num_heads, num_levels)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        state = super()._init_state(batch_size, device, dtype)
        state["state"] = torch.zeros(batch_size, self.num_heads, self.num_levels, self.head_dim, self.head_dim,
                                     device=device, dtype=dtype)
        state["position"] = torch.zeros(batch_size, dtype=torch.long, device=device)
        return state

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v, cache = self._features(x, state)
        k, v = k.squeeze(3), v.squeeze(3)                                            # one key per token
        beta = torch.sigmoid(self.beta(x)).transpose(1, 2)                          # (B, H, L)
        levels = split_heads(F.softplus(self.level_proj(x)), self.num_heads)        # (B, H, L, levels)
        options = dict(impl=self.impl, chunk_size=self.chunk_size)
        if state is None:
            o, new = log_linear_delta_rule(q, k, v, beta, levels, self.decay(x), **options), None
        else:
            start = int(state["position"][0])
            o, memory = log_linear_delta_rule(q, k, v, beta, levels, self.decay(x), start=start,
                                              initial_state=state["state"], return_state=True, **options)
            new = {"state": memory.to(state["state"].dtype), "position": state["position"] + x.shape[1]}
            if cache is not None:
                new["conv"] = cache
        return self.out(self.norm(o) * F.silu(self.gate(x))), new
