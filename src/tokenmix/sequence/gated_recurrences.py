"""Gated linear recurrences over the decayed linear-attention op: Mamba-2 (SSD), HGRN2, Lightning attention (TNL).

They differ in the decay (per-token scalar, per-token vector, fixed per head) and in the projections around it;
the recurrence `S_t = diag(a_t) S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t` lives only in `tokenmix.ops.linear_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import State
from tokenmix.registry import register
from tokenmix.sequence._heads import check_heads, merge_heads, split_heads
from tokenmix.sequence._short_conv import ShortConv
from tokenmix.sequence.linear_attention import LINEAR_IMPLS, _LinearAttentionMixer


class _RMSNorm(nn.Module):
    """RMS norm over the whole last dimension with a gain (Mamba-2 normalizes all d_inner channels at once)."""

    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


@register(
    name="mamba2",
    family="state_space",
    layout="sequence",
    paper="Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space "
          "Duality",
    arxiv="2405.21060",
    impls=LINEAR_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="SSD: scalar data-dependent decay exp(Δ_t A_h) per head, input-dependent B_t, C_t (shared by heads), "
            "x scaled by Δ_t, short conv on (x, B, C), D skip, SiLU(z)-gated RMS norm.",
)
class Mamba2(_LinearAttentionMixer):
    """Mamba-2 block (Dao & Gu 2024, arXiv:2405.21060), heads h with head dim P:

        [z, x, B, C, dt] = W_in u;   [x, B, C] = SiLU(Conv1d([x, B, C]));   Δ = softplus(dt + b_Δ);   A = -exp(A_log)
        h_t = exp(Δ_t A) h_{t-1} + B_t (Δ_t x_t)ᵀ   (state N × P per head),   y_t = h_tᵀ C_t + D x_t
        out = W_out RMSNorm(y ⊙ SiLU(z))

    i.e. the decayed linear-attention op with q = C, k = B, v = Δ x and a per-token scalar log-decay Δ A, with no
    1/√N scale on C·B (`scale=1`: the SSD has none). Defaults follow the paper and the authors' released `Mamba2`
    layer (mamba_ssm): expand 2, head dim P = 64 (`num_heads=None` takes d_inner / 64 heads, one head when
    d_inner < 64; `num_heads` given sets P = d_inner / H), state size N = 64 (ngroups = 1: B and C shared by every
    head; the released layer takes N = 128), conv size 4 with a bias, Δ = softplus(b_Δ) log-uniform in
    [1e-3, 1e-1] at init, A uniform in [1, 16], D = 1, the norm's gain 1 over all d_inner channels (norm after the
    gate). An earlier default of 4 heads (P = 32 at dim 64) was not the paper's; docs/quality.md ("The quick
    suite") measures both on MQAR.
    """

    HEAD_DIM = 64  # the paper's P, taken when num_heads is None

    def __init__(self, dim: int, *, num_heads: int | None = None, expand: int = 2, state_size: int = 64,
                 conv_size: int = 4, chunk_size: int = 64, impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.state_size = self._positive_int("state_size", state_size)
        inner = self._positive_int("expand", expand) * dim
        if num_heads is None:
            if inner % self.HEAD_DIM and inner > self.HEAD_DIM:
                raise self._fail(f"d_inner = expand * dim = {inner} is not a multiple of the head dim "
                                 f"{self.HEAD_DIM}; pass num_heads")
            num_heads = max(1, inner // self.HEAD_DIM)
        self.num_heads, self.inner = num_heads, inner
        self.key_dim, self.value_dim = state_size, check_heads(self.spec.name, inner, num_heads)
        self.in_proj = nn.Linear(dim, 2 * inner + 2 * state_size + num_heads, bias=False)
        self.conv = ShortConv(inner + 2 * state_size, self._positive_int("conv_size", conv_size), bias=True)
        self.A_log = nn.Parameter(torch.empty(num_heads).uniform_(1.0, 16.0).log())
        dt = torch.exp(torch.empty(num_heads).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.D = nn.Parameter(torch.ones(num_heads))
        self.norm = _RMSNorm(inner)
        self.out = nn.Linear(inner, dim, bias=False)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        state = super()._init_state(batch_size, device, dtype)
        state["conv"] = self.conv.init_cache(batch_size, device, dtype)
        return state

    def _mix(self, u: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        n, heads = self.state_size, self.num_heads
        z, xbc, dt = self.in_proj(u).split([self.inner, self.inner + 2 * n, heads], dim=-1)
        xbc, cache = self.conv(xbc, None if state is None else state["conv"])
        x, b, c = F.silu(xbc).split([self.inner, n, n], dim=-1)
        delta = F.softplus(dt + self.dt_bias).transpose(1, 2)                        # (B, H, L)
        x = split_heads(x, heads)                                                    # (B, H, L, P)
        q, k = (t.unsqueeze(1).expand(-1, heads, -1, -1) for t in (c, b))           # (B, H, L, N)
        log_decay = -self.A_log.exp()[:, None] * delta
        y, new = self._run(q, k, x * delta.unsqueeze(-1), log_decay,
                           None if state is None else {"state": state["state"]}, scale=1.0)
        if new is not None:
            new["conv"] = cache
        y = merge_heads(y + self.D[:, None, None] * x)
        return self.out(self.norm(y * F.silu(z))), new


@register(
    name="hgrn2",
    family="linear_attention",
    layout="sequence",
    paper="HGRN2: Gated Linear RNNs with State Expansion",
    arxiv="2404.07904",
    impls=LINEAR_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Gated linear RNN with outer-product state expansion: forget gate f_t (with a lower bound) as a vector "
            "decay, the input gate tied to 1 - f_t as the key, SiLU query (HGRN's output gate), RMS norm.",
)
class HGRN2(_LinearAttentionMixer):
    """HGRN2 (Qin et al. 2024, arXiv:2404.07904), per head:

        f_t = γ + (1 - γ) σ(W_f x_t),   S_t = Diag(f_t) S_{t-1} + (1 - f_t) i_tᵀ,   o_t = S_tᵀ q_t / √K
        with i_t = W_i x_t, q_t = SiLU(W_q x_t);   y = W_o RMSNorm(o)

    The query takes the place of HGRN's output gate, so there is no further gate; the RMS norm (with a gain) spans
    all heads' channels together. Both as in the authors' released layer (flash-linear-attention's `HGRN2Attention`,
    by the paper's authors); an earlier version here had an extra SiLU output gate and a per-head norm.
    `lower_bound` is γ (the paper learns one per layer, rising with depth; a single layer takes it as an option).
    """

    def __init__(self, dim: int, *, num_heads: int = 4, lower_bound: float = 0.0, chunk_size: int = 64,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        if not 0.0 <= lower_bound < 1.0:
            raise self._fail(f"lower_bound must be in [0, 1), got {lower_bound!r}")
        self.lower_bound = float(lower_bound)
        self.num_heads = num_heads
        self.key_dim = self.value_dim = check_heads(self.spec.name, dim, num_heads)
        self.proj = nn.Linear(dim, 3 * dim, bias=False)        # q, f, i
        self.norm = _RMSNorm(dim)
        self.out = nn.Linear(dim, dim, bias=False)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, f, i = (split_heads(t, self.num_heads) for t in self.proj(x).chunk(3, dim=-1))
        gamma = self.lower_bound
        forget = gamma + (1.0 - gamma) * torch.sigmoid(f)
        # log f computed from the logit so that f → 1 keeps full precision
        log_forget = F.logsigmoid(f) if gamma == 0.0 else forget.log()
        o, state = self._run(F.silu(q), 1.0 - forget, i, log_forget, state)
        return self.out(self.norm(merge_heads(o))), state


@register(
    name="lightning_attention",
    family="linear_attention",
    layout="sequence",
    paper="Lightning Attention-2: A Free Lunch for Handling Unlimited Sequence Lengths in Large Language Models",
    arxiv="2401.04658",
    impls=LINEAR_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="TransNormerLLM's gated linear attention: SiLU q, k, fixed per-head decay λ_h = exp(-2^(-8h/H)), "
            "simple RMS norm (no gain), output gate U; the tiled intra/inter-block algorithm is the `chunk` impl.",
)
class LightningAttention(_LinearAttentionMixer):
    """Lightning attention in the TransNormerLLM block (Qin et al., arXiv:2401.04658, arXiv:2307.14995):

        q, k = SiLU(W_q x), SiLU(W_k x),  v = W_v x,  S_t = λ_h S_{t-1} + k_t v_tᵀ,  o_t = S_tᵀ q_t
        y = W_o(SRMSNorm(o) ⊙ W_u x),    λ_h = exp(-2^(-8h/H) · (1 - layer_ratio + 10⁻⁵)),  h = 1..H

    Intra-block masked products plus the inter-block state (Lightning Attention-2's tiling) is `impl="chunk"`.
    The decays are the authors' released ones (ALiBi slopes 2^(-8h/H) scaled by 1 - l/(L-1) + 10⁻⁵ for layer l of
    L, the 10⁻⁵ keeping a slight decay in the last layer); for a head count that is not a power of two ALiBi
    interleaves slopes, here 2^(-8h/H) is used for every H. As in the authors' layer, q·k is not scaled and the
    SRMSNorm (no gain) spans all heads' channels; an earlier version here scaled by 1/√K and normalized per head
    with a gain. Deviation: no LRPE-d positional encoding.
    """

    def __init__(self, dim: int, *, num_heads: int = 4, layer_ratio: float = 0.0, chunk_size: int = 64,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        if not 0.0 <= layer_ratio <= 1.0:
            raise self._fail(f"layer_ratio must be in [0, 1], got {layer_ratio!r}")
        self.num_heads = num_heads
        self.key_dim = self.value_dim = check_heads(self.spec.name, dim, num_heads)
        self.qkvu = nn.Linear(dim, 4 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        heads = torch.arange(1, num_heads + 1, dtype=torch.float64)
        slopes = 2.0 ** (-8.0 * heads / num_heads) * (1.0 - layer_ratio + 1e-5)
        self.register_buffer("log_decay", (-slopes).float())

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v, u = self.qkvu(x).chunk(4, dim=-1)
        q, k, v = (split_heads(t, self.num_heads) for t in (F.silu(q), F.silu(k), v))
        o, state = self._run(q, k, v, self.log_decay, state, scale=1.0)
        o = merge_heads(o)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5)       # SRMSNorm: no gain, all heads together
        return self.out(o * u), state
