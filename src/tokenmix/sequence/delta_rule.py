"""Delta-rule mixers over `tokenmix.ops.delta_rule.delta_rule`: DeltaNet, Gated DeltaNet, DeltaProduct.

Each is projections + short convolutions + normalizations over the one op; the recurrence lives only in the op.
All are causal and stream with a fixed-size state: the op's `(B, H, K, V)` matrix plus the short convolutions'
last `conv_size - 1` inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.mixer import SequenceMixer, State
from tokenmix.ops.delta_rule import delta_rule
from tokenmix.registry import register
from tokenmix.sequence._heads import HeadNorm, check_heads, split_heads
from tokenmix.sequence._short_conv import ShortConv

DELTA_IMPLS = ("reference", "recurrent", "chunk")


class _DeltaRuleMixer(SequenceMixer):
    """Shared plumbing: q/k/v projections (+ short conv, SiLU), L2-normalized q and k, β, the op, the state."""

    def __init__(self, dim: int, *, num_heads: int, num_keys: int, use_short_conv: bool, conv_size: int,
                 chunk_size: int, impl: str, causal: bool | None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.conv_size = self._positive_int("conv_size", conv_size)
        self.num_heads = num_heads
        self.head_dim = check_heads(self.spec.name, dim, num_heads)
        self.num_keys = num_keys  # keys / values / β per token (DeltaProduct's n_h; 1 otherwise)
        width = (1 + 2 * num_keys) * dim
        self.qkv = nn.Linear(dim, width, bias=False)
        self.conv = ShortConv(width, conv_size) if use_short_conv else None
        self.beta = nn.Linear(dim, num_keys * num_heads, bias=True)
        self.norm = HeadNorm(num_heads, self.head_dim, centered=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        state = {"state": torch.zeros(batch_size, self.num_heads, self.head_dim, self.head_dim,
                                      device=device, dtype=dtype)}
        if self.conv is not None:
            state["conv"] = self.conv.init_cache(batch_size, device, dtype)
        return state

    def _features(self, x: Tensor, state: State | None):
        """q (B, H, L, K); k, v (B, H, L, n, K); the new conv cache."""
        qkv, cache = self.qkv(x), None
        if self.conv is not None:
            qkv, cache = self.conv(qkv, None if state is None else state["conv"])
        qkv = F.silu(qkv)
        q, k, v = qkv.split([self.dim, self.num_keys * self.dim, self.num_keys * self.dim], dim=-1)
        q = F.normalize(split_heads(q, self.num_heads), dim=-1)
        k, v = (t.unflatten(-1, (self.num_keys, self.dim)).movedim(2, 1) for t in (k, v))  # (B, n, L, D)
        k = F.normalize(split_heads(k.flatten(0, 1), self.num_heads), dim=-1)
        v = split_heads(v.flatten(0, 1), self.num_heads)
        batch = x.shape[0]
        k, v = (t.unflatten(0, (batch, self.num_keys)).permute(0, 2, 3, 1, 4) for t in (k, v))
        return q, k, v, cache

    def _delta(self, q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_decay: Tensor | None,
               state: State | None, cache: Tensor | None) -> tuple[Tensor, State | None]:
        """Run the op; `k, v: (B, H, L, n, K)`, `beta: (B, H, L, n)`, `log_decay: (B, H, L)` or None.

        With n > 1 the sub-steps are interleaved into a sequence of L·n transitions; the decay acts on the first
        sub-step of a token and the output is read after its last."""
        n = self.num_keys
        if n > 1:
            q = torch.cat([q.new_zeros(*q.shape[:3], n - 1, q.shape[-1]), q.unsqueeze(3)], dim=3)
            if log_decay is not None:
                log_decay = torch.cat([log_decay.unsqueeze(-1), log_decay.new_zeros(*log_decay.shape, n - 1)], -1)
                log_decay = log_decay.flatten(2)
            q = q.flatten(2, 3)
        k, v, beta = k.flatten(2, 3), v.flatten(2, 3), beta.flatten(2)
        options = dict(impl=self.impl, chunk_size=self.chunk_size * n)
        if state is None:
            o, new = delta_rule(q, k, v, beta, log_decay, **options), None
        else:
            o, final = delta_rule(q, k, v, beta, log_decay, initial_state=state["state"], return_state=True,
                                  **options)
            new = {"state": final.to(state["state"].dtype)}
            if cache is not None:
                new["conv"] = cache
        return o[:, :, n - 1::n], new


@register(
    name="deltanet",
    family="delta_rule",
    layout="sequence",
    paper="Parallelizing Linear Transformers with the Delta Rule over Sequence Length",
    arxiv="2406.06484",
    impls=DELTA_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Delta-rule fast weights: S_t = (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ with L2-normalized SiLU "
            "q, k, β = σ(w_βᵀx), short convolutions, per-head RMS norm.",
)
class DeltaNet(_DeltaRuleMixer):
    """DeltaNet (Yang et al. 2024, arXiv:2406.06484), per head:

        q, k = L2(SiLU(Conv(W_q x))), L2(SiLU(Conv(W_k x))),  v = SiLU(Conv(W_v x)),  β = σ(W_β x)
        S_t = (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t / √K,   y = W_o RMSNorm_h(o).

    `use_short_conv=False` drops the depthwise convolutions (the original DeltaNet of Schlag et al. 2021 had none).
    """

    def __init__(self, dim: int, *, num_heads: int = 4, use_short_conv: bool = True, conv_size: int = 4,
                 chunk_size: int = 64, impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, num_heads=num_heads, num_keys=1, use_short_conv=use_short_conv, conv_size=conv_size,
                         chunk_size=chunk_size, impl=impl, causal=causal)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v, cache = self._features(x, state)
        beta = split_heads(torch.sigmoid(self.beta(x)), self.num_heads)
        o, new = self._delta(q, k, v, beta, None, state, cache)
        return self.out(self.norm(o)), new


class _DecayGate(nn.Module):
    """Mamba-2's per-head scalar decay: log a_t = -exp(A_log) · softplus(w_aᵀ x + dt_bias) ≤ 0, with the
    paper's initialization (A ∈ [1, 16], Δ = softplus(dt_bias) log-uniform in [0.001, 0.1])."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.project = nn.Linear(dim, num_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(num_heads).uniform_(1.0, 16.0).log())
        dt = torch.exp(torch.empty(num_heads).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> log-decay (B, H, L)."""
        return (-self.A_log.exp() * F.softplus(self.project(x) + self.dt_bias)).transpose(1, 2)


@register(
    name="gated_deltanet",
    family="delta_rule",
    layout="sequence",
    paper="Gated Delta Networks: Improving Mamba2 with Delta Rule",
    arxiv="2412.06464",
    impls=DELTA_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Gated delta rule S_t = α_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ with Mamba-2's data-dependent "
            "scalar decay α_t, short convolutions, RMS norm and a SiLU output gate.",
)
class GatedDeltaNet(_DeltaRuleMixer):
    """Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024, arXiv:2412.06464), per head:

        α_t = exp(-exp(A) · softplus(w_αᵀ x_t + b_Δ))   (Mamba-2's gate),   β_t = σ(w_βᵀ x_t)
        S_t = α_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,   o_t = S_tᵀ q_t / √K
        y = W_o (RMSNorm_h(o) ⊙ SiLU(W_g x))

    with q, k, v as in DeltaNet. Deviation: the value width equals `dim` (the paper expands it 2×).
    """

    def __init__(self, dim: int, *, num_heads: int = 4, use_short_conv: bool = True, conv_size: int = 4,
                 chunk_size: int = 64, impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, num_heads=num_heads, num_keys=1, use_short_conv=use_short_conv, conv_size=conv_size,
                         chunk_size=chunk_size, impl=impl, causal=causal)
        self.decay = _DecayGate(dim, num_heads)
        self.gate = nn.Linear(dim, dim, bias=False)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v, cache = self._features(x, state)
        beta = split_heads(torch.sigmoid(self.beta(x)), self.num_heads)
        o, new = self._delta(q, k, v, beta, self.decay(x), state, cache)
        return self.out(self.norm(o) * F.silu(self.gate(x))), new


@register(
    name="deltaproduct",
    family="delta_rule",
    layout="sequence",
    paper="DeltaProduct: Improving State-Tracking in Linear RNNs via Householder Products",
    arxiv="2502.10297",
    impls=DELTA_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L·n_h",
    memory_complexity="L·n_h",
    summary="n_h delta-rule steps per token: the transition is a product of n_h generalized Householder "
            "matrices (diagonal + rank n_h); β ∈ [0, 2] allows negative eigenvalues; optional Mamba-2 gate.",
)
class DeltaProduct(_DeltaRuleMixer):
    """DeltaProduct (Siems et al. 2025, arXiv:2502.10297), per head and token t, for j = 1..n_h:

        S ← a_t^[j=1] (I - β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ,   o_t = Sᵀ q_t / √K

    with k_{t,j}, v_{t,j}, β_{t,j} from separate projections (keys L2-normalized, SiLU, short conv as in DeltaNet),
    β = 2σ(·) when `allow_negative_eigenvalues` (so I - β k kᵀ has eigenvalue 1 - β ∈ [-1, 1]) else σ(·).
    `gated=True` is Gated DeltaProduct: a Mamba-2 decay a_t on the first sub-step and a SiLU output gate.
    """

    def __init__(self, dim: int, *, num_heads: int = 4, num_householder: int = 2,
                 allow_negative_eigenvalues: bool = True, gated: bool = False, use_short_conv: bool = True,
                 conv_size: int = 4, chunk_size: int = 64, impl: str = "auto", causal: bool | None = None) -> None:
        if isinstance(num_householder, bool) or not isinstance(num_householder, int) or num_householder <= 0:
            raise MixerInputError(f"{self.spec.name}: num_householder must be a positive integer, "
                                  f"got {num_householder!r}")
        super().__init__(dim, num_heads=num_heads, num_keys=num_householder, use_short_conv=use_short_conv,
                         conv_size=conv_size, chunk_size=chunk_size, impl=impl, causal=causal)
        self.beta_range = 2.0 if allow_negative_eigenvalues else 1.0
        self.decay = _DecayGate(dim, num_heads) if gated else None
        self.gate = nn.Linear(dim, dim, bias=False) if gated else None

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v, cache = self._features(x, state)
        beta = self.beta_range * torch.sigmoid(self.beta(x))                       # (B, L, n·H), n-major
        beta = beta.unflatten(-1, (self.num_keys, self.num_heads)).permute(0, 3, 1, 2)  # (B, H, L, n)
        log_decay = None if self.decay is None else self.decay(x)
        o, new = self._delta(q, k, v, beta, log_decay, state, cache)
        y = self.norm(o)
        if self.gate is not None:
            y = y * F.silu(self.gate(x))
        return self.out(y), new
