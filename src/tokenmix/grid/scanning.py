"""Scanning mixers: an image read as 1D sequences in several orders, each through a sequence recurrence.

VMamba's SS2D runs the S6 selective scan (the `mamba` mixer's parameterization) along four orders; ViG runs gated
linear attention (the `gla` recurrence) forwards and backwards. Both recurrences are the one decayed
linear-attention op (`tokenmix.ops.linear_attention`, vector decay): no new recurrence lives here.

`impl`: `reference` loops over the directions, one op call each in its `reference` (masked quadratic) form;
the fast forms stack every direction into one op call in its `chunk` / `scan` / `blocked` (or `recurrent`) form.
SS2D's `auto` is `blocked`, which is linear in pixels (the doubling `scan` it used before grew with exponent 1.9:
docs/performance.md, "Selective scan: the blocked form").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import GridMixer
from tokenmix.ops.linear_attention import linear_attention
from tokenmix.registry import register
from tokenmix.sequence._heads import HeadNorm, check_heads, split_heads


def scan_order(x: Tensor, direction: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H·W) read in `direction`: 0 row-major, 1 column-major, 2 and 3 their reverses."""
    sequence = x.flatten(2) if direction % 2 == 0 else x.transpose(2, 3).flatten(2)
    return sequence.flip(-1) if direction >= 2 else sequence


def scan_back(y: Tensor, direction: int, height: int, width: int) -> Tensor:
    """The inverse of `scan_order`: (B, C, H·W) in `direction`'s order -> (B, C, H, W)."""
    if direction >= 2:
        y = y.flip(-1)
    if direction % 2 == 0:
        return y.unflatten(-1, (height, width))
    return y.unflatten(-1, (width, height)).transpose(-1, -2)


def selective_scan(u: Tensor, delta: Tensor, a: Tensor, b: Tensor, c: Tensor, *, impl: str,
                   chunk_size: int = 64) -> Tensor:
    """S6 over the linear-attention op, for G groups (directions) of C channels, state size N:

        h_t[g, c] = exp(Δ_t[g, c] A[g, c]) ⊙ h_{t-1}[g, c] + Δ_t[g, c] B_t[g] u_t[g, c],   y_t[g, c] = C_t[g]ᵀ h_t[g, c]

    `u, delta: (batch, G, C, L)`, `a: (G, C, N)` (negative), `b, c: (batch, G, L, N)`; returns `y: (batch, G, C, L)`.
    Each channel is one op head (key dim N, value dim 1), as in the `mamba` sequence mixer."""
    groups, channels = u.shape[1:3]
    log_decay = (delta.flatten(1, 2), a.flatten(0, 1))          # Δ_t A factored: (batch, G·C, L), (G·C, N)
    v = (delta * u).flatten(1, 2).unsqueeze(-1)                  # (batch, G·C, L, 1)
    # q = C_t and k = B_t have one head per group, shared by the group's C channels (the op's shared heads)
    y = linear_attention(c, b, v, log_decay, scale=1.0, impl=impl, chunk_size=chunk_size)
    return y.squeeze(-1).unflatten(1, (groups, channels))


DIRECTIONS = {1: (0,), 2: (0, 2), 4: (0, 1, 2, 3)}
AUTO_IMPL = "blocked"  # the selective scan's form under impl="auto": docs/performance.md, "Selective scan: the blocked form"
VIG_AUTO_IMPL = "blocked"  # ViG's small GLA states (K = 8, V = 16 per head at 64 channels): same section


@register(
    name="ss2d",
    family="state_space",
    layout="grid",
    paper="VMamba: Visual State Space Model",
    arxiv="2401.10166",
    impls=("reference", "chunk", "scan", "blocked"),
    causal="never",
    state="none",
    time_complexity="N",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="SS2D: S6 selective scans along row-major, column-major and both reverses (own Δ, B, C, A, D per "
            "direction), merged by sum; depthwise conv + SiLU before, LayerNorm and SiLU(z) gate after.",
)
class SelectiveScan2d(GridMixer):
    """The SS2D mixer of VMamba's VSS block (Liu et al., arXiv 2401.10166), eq. (1)-(2) and Fig. 2-3:

        [u, z] = W_in x;   u = SiLU(DWConv_{3×3}(u));   for each direction k (cross-scan):
        [δ, B, C] = W_x^k u;   Δ = softplus(W_Δ^k δ + b_Δ^k);   h_t = exp(Δ_t A^k) h_{t-1} + Δ_t B_t u_t,
        y^k_t = C_tᵀ h_t + D^k u_t   over the sequence of u in direction k;
        y = Σ_k y^k (cross-merge, back on the grid);   out = W_out(LayerNorm(y) ⊙ SiLU(z))

    directions: 4 (row-major, column-major and their reverses, the paper), 2 (row-major both ways) or 1.
    Defaults as the `mamba` mixer: expand 2, N = 16, R = ⌈D/16⌉, A = -(n + 1) init, Δ log-uniform in [1e-3, 1e-1].
    """

    def __init__(self, dim: int, *, expand: int = 2, state_size: int = 16, dt_rank: int | None = None,
                 conv_size: int = 3, directions: int = 4, chunk_size: int = 64, **base) -> None:
        super().__init__(dim, **base)
        if directions not in DIRECTIONS:
            raise self._fail(f"directions must be 1, 2 or 4, got {directions!r}")
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.state_size = self._positive_int("state_size", state_size)
        self.dt_rank = math.ceil(dim / 16) if dt_rank is None else self._positive_int("dt_rank", dt_rank)
        self.inner = inner = self._positive_int("expand", expand) * dim
        self.directions = DIRECTIONS[directions]
        groups, rank = directions, self.dt_rank
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        conv_size = self._positive_int("conv_size", conv_size)
        self.conv = nn.Conv2d(inner, inner, conv_size, padding=conv_size // 2, groups=inner)
        bound = inner ** -0.5
        self.x_proj_weight = nn.Parameter(torch.empty(groups, rank + 2 * state_size, inner).uniform_(-bound, bound))
        self.dt_proj_weight = nn.Parameter(torch.empty(groups, inner, rank).uniform_(-rank ** -0.5, rank ** -0.5))
        dt = torch.exp(torch.empty(groups, inner).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_proj_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))        # softplus⁻¹(dt)
        self.A_log = nn.Parameter(torch.arange(1, state_size + 1, dtype=torch.float32).log().repeat(groups, inner, 1))
        self.D = nn.Parameter(torch.ones(groups, inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def _scan(self, u: Tensor, index: slice, impl: str) -> Tensor:
        """The selective scans of the directions `index` over `u: (B, G, E, L)` (sequences already ordered)."""
        projected = torch.einsum("bgel,gre->bglr", u, self.x_proj_weight[index])
        dt, b, c = projected.split([self.dt_rank, self.state_size, self.state_size], dim=-1)
        delta = F.softplus(torch.einsum("bglr,ger->bgel", dt, self.dt_proj_weight[index])
                           + self.dt_proj_bias[index][..., None])
        y = selective_scan(u, delta, -self.A_log[index].exp(), b, c, impl=impl, chunk_size=self.chunk_size)
        return y + self.D[index][..., None] * u

    def _mix(self, x: Tensor) -> Tensor:
        height, width = x.shape[2:]
        u, z = self.in_proj(x.movedim(1, -1)).chunk(2, dim=-1)                     # (B, H, W, E)
        u = F.silu(self.conv(u.movedim(-1, 1)))                                    # (B, E, H, W)
        sequences = torch.stack([scan_order(u, d) for d in self.directions], dim=1)  # (B, K, E, L)
        if self.impl == "reference":
            scans = torch.cat([self._scan(sequences[:, k:k + 1], slice(k, k + 1), "reference")
                               for k in range(len(self.directions))], dim=1)
        else:
            scans = self._scan(sequences, slice(None), AUTO_IMPL if self.impl == "auto" else self.impl)
        y = sum(scan_back(scans[:, k], d, height, width) for k, d in enumerate(self.directions))
        y = self.out_norm(y.movedim(1, -1)) * F.silu(z)
        return self.out_proj(y).movedim(-1, 1)


@register(
    name="vig",
    family="linear_attention",
    layout="grid",
    paper="ViG: Linear-complexity Visual Sequence Learning with Gated Linear Attention",
    arxiv="2405.18425",
    impls=("reference", "recurrent", "chunk", "blocked"),
    causal="never",
    state="none",
    time_complexity="N",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="ViG BiGLA: gated linear attention forwards and backwards over the row-major pixels (shared q, k, v, "
            "direction-wise forget gates), averaged; 2D gating locality injection from a depthwise conv.",
)
class BidirectionalGatedLinearAttention(GridMixer):
    """ViG's BiGLA layer (Liao et al., arXiv 2405.18425), section 3:

        X_c = SiLU(DWConv_{3×3}(X)),   [Q, K, V] = X_c W (shared by both directions),
        α^→, α^← = σ(X_c W_α1 W_α2^{→,←} + b)^{1/τ}   (direction-wise forget gates; one shared if `shared_gates`)
        S^→_t = Diag(α^→_t) S^→_{t-1} + k_tᵀv_t over t = 1..N,   S^←_t = Diag(α^←_t) S^←_{t+1} + k_tᵀv_t over t = N..1
        O = (Q S^→ + Q S^←) / 2
        G = σ(X_c W_g + b_g),   Y = W_o(G ⊙ RMSNorm_h(O) + (1 - G) ⊙ RMSNorm_h(X_c))   (2D gating locality injection)

    the sequence is the row-major order of the pixels; both scans are the GLA recurrence of the linear-attention
    op (q scaled by d_k^{-1/2}, as in the `gla` mixer); expand_k = 0.5, gate rank 16, τ = 16 as in GLA / ViG."""

    def __init__(self, dim: int, *, num_heads: int = 4, expand_k: float = 0.5, gate_rank: int = 16,
                 gate_temperature: float = 16.0, conv_size: int = 3, shared_gates: bool = False,
                 chunk_size: int = 64, **base) -> None:
        super().__init__(dim, **base)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.num_heads = num_heads
        self.key_total = max(num_heads, int(round(dim * expand_k)))
        check_heads(self.spec.name, dim, num_heads, self.key_total)
        self.value_dim = check_heads(self.spec.name, dim, num_heads)
        self.gate_temperature = float(gate_temperature)
        self.shared_gates = bool(shared_gates)
        conv_size = self._positive_int("conv_size", conv_size)
        self.conv = nn.Conv2d(dim, dim, conv_size, padding=conv_size // 2, groups=dim, bias=False)
        self.qkv = nn.Linear(dim, 2 * self.key_total + dim, bias=False)
        gates = 1 if self.shared_gates else 2
        self.decay = nn.Sequential(nn.Linear(dim, self._positive_int("gate_rank", gate_rank), bias=False),
                                   nn.Linear(gate_rank, gates * self.key_total))
        self.gate = nn.Linear(dim, dim)
        self.global_norm = HeadNorm(num_heads, self.value_dim, centered=False)
        self.local_norm = HeadNorm(num_heads, self.value_dim, centered=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _mix(self, x: Tensor) -> Tensor:
        local = F.silu(self.conv(x)).flatten(2).transpose(1, 2)                    # (B, L, D), row-major
        q, k, v = (split_heads(t, self.num_heads)
                   for t in self.qkv(local).split([self.key_total, self.key_total, self.dim], dim=-1))
        log_decay = F.logsigmoid(self.decay(local)) / self.gate_temperature
        if self.shared_gates:
            forward_decay = backward_decay = split_heads(log_decay, self.num_heads)
        else:
            forward_decay, backward_decay = (split_heads(t, self.num_heads) for t in log_decay.chunk(2, dim=-1))
        flipped = [t.flip(2) for t in (q, k, v, backward_decay)]
        if self.impl == "reference":
            forward = linear_attention(q, k, v, forward_decay, impl="reference")
            backward = linear_attention(*flipped[:3], flipped[3], impl="reference").flip(2)
        else:  # both directions in one op call, stacked along the batch
            impl = VIG_AUTO_IMPL if self.impl == "auto" else self.impl
            both = [torch.cat(pair) for pair in zip((q, k, v, forward_decay), flipped)]
            forward, backward = linear_attention(*both[:3], both[3], impl=impl,
                                                 chunk_size=self.chunk_size).chunk(2)
            backward = backward.flip(2)
        gate = torch.sigmoid(self.gate(local))
        mixed = gate * self.global_norm((forward + backward) / 2) \
            + (1 - gate) * self.local_norm(split_heads(local, self.num_heads))
        return self.out(mixed).transpose(1, 2).reshape(x.shape)
