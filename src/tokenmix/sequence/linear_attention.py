"""Linear-attention mixers over the decayed linear-attention op: linear attention, RetNet, GLA.

Each is projections + a feature map or a decay over `tokenmix.ops.linear_attention.linear_attention`; the
recurrence itself lives only in the op. All stream with a fixed-size state `(B, H, K, V)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import SequenceMixer, State
from tokenmix.ops.feature_maps import elu_plus_one
from tokenmix.ops.linear_attention import linear_attention
from tokenmix.ops.rotary import rotary
from tokenmix.registry import register
from tokenmix.sequence._heads import HeadNorm, check_heads, merge_heads, split_heads

LINEAR_IMPLS = ("reference", "recurrent", "chunk")


class _LinearAttentionMixer(SequenceMixer):
    """Shared streaming plumbing: the op's state travels as `state["state"]`."""

    num_heads: int
    key_dim: int    # per head
    value_dim: int  # per head, including a normalizer column when there is one

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return {"state": torch.zeros(batch_size, self.num_heads, self.key_dim, self.value_dim,
                                     device=device, dtype=dtype)}

    def _run(self, q: Tensor, k: Tensor, v: Tensor, log_decay, state: State | None, **options):
        options["chunk_size"] = self.chunk_size
        if not self.causal:
            options.pop("chunk_size")
            return linear_attention(q, k, v, causal=False, impl=self.impl, **options), None
        if state is None:
            return linear_attention(q, k, v, log_decay, impl=self.impl, **options), None
        o, new = linear_attention(q, k, v, log_decay, impl=self.impl, initial_state=state["state"],
                                  return_state=True, **options)
        return o, {"state": new.to(state["state"].dtype)}


@register(
    name="linear_attention",
    family="linear_attention",
    layout="sequence",
    paper="Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
    arxiv="2006.16236",
    impls=LINEAR_IMPLS,
    causal="optional",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Kernelized attention with φ(x) = elu(x) + 1 and the normalizing denominator.",
)
class LinearAttention(_LinearAttentionMixer):
    """o_t = Σ_{s≤t} φ(q_t)ᵀφ(k_s) v_s / Σ_{s≤t} φ(q_t)ᵀφ(k_s), φ = elu + 1."""

    def __init__(self, dim: int, *, num_heads: int = 4, chunk_size: int = 64, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.num_heads = num_heads
        self.key_dim = check_heads(self.spec.name, dim, num_heads)
        self.value_dim = self.key_dim + 1  # the denominator rides along as a column of ones
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        o, state = self._run(elu_plus_one(q), elu_plus_one(k), v, None, state, normalize=True, scale=1.0)
        return self.out(merge_heads(o)), state


@register(
    name="retnet",
    family="linear_attention",
    layout="sequence",
    paper="Retentive Network: A Successor to Transformer for Large Language Models",
    arxiv="2307.08621",
    impls=LINEAR_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Multi-scale retention: fixed decay γ_h = 1 - 2^(-5-h) per head, rotated q/k, "
            "per-head GroupNorm and a swish gate.",
)
class RetNet(_LinearAttentionMixer):
    """Y = W_o(swish(W_g X) ⊙ GroupNorm_h(Retention_h(X))), Retention: S_t = γ_h S_{t-1} + k_tᵀ v_t."""

    def __init__(self, dim: int, *, num_heads: int = 4, chunk_size: int = 64, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.num_heads = num_heads
        self.key_dim = self.value_dim = check_heads(self.spec.name, dim, num_heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.gate = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm = HeadNorm(num_heads, self.value_dim, centered=True)
        # The paper's decays, one per head; a buffer so it moves with the module and is saved.
        gamma = 1.0 - 2.0 ** (-5.0 - torch.arange(num_heads, dtype=torch.float64))
        self.register_buffer("log_decay", gamma.log().float())

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        state = super()._init_state(batch_size, device, dtype)
        state["position"] = torch.zeros(batch_size, dtype=torch.long, device=device)
        return state

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        steps = torch.arange(x.shape[1], device=x.device)
        positions = steps if state is None else state["position"][:, None] + steps
        q, k = rotary(q, positions), rotary(k, positions)
        o, new = self._run(q, k, v, self.log_decay, None if state is None else {"state": state["state"]})
        if new is not None:
            new["position"] = state["position"] + x.shape[1]
        return self.out(F.silu(self.gate(x)) * self.norm(o)), new


@register(
    name="gla",
    family="linear_attention",
    layout="sequence",
    paper="Gated Linear Attention Transformers with Hardware-Efficient Training",
    arxiv="2312.06635",
    impls=LINEAR_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Data-dependent vector decay α_t = σ(x W_α1 W_α2 + b)^(1/τ) (low rank), per-head RMS norm, "
            "swish output gate.",
)
class GatedLinearAttention(_LinearAttentionMixer):
    """S_t = Diag(α_t) S_{t-1} + k_tᵀ v_t, o_t = q_t S_t; y = W_o(swish(W_r x) ⊙ Norm(o))."""

    def __init__(self, dim: int, *, num_heads: int = 4, expand_k: float = 0.5, gate_rank: int = 16,
                 gate_temperature: float = 16.0, chunk_size: int = 64, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.num_heads = num_heads
        key_total = max(num_heads, int(round(dim * expand_k)))
        self.key_dim = check_heads(self.spec.name, dim, num_heads, key_total)
        self.value_dim = check_heads(self.spec.name, dim, num_heads)
        self.gate_temperature = gate_temperature
        self.query = nn.Linear(dim, key_total, bias=False)
        self.key = nn.Linear(dim, key_total, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.decay = nn.Sequential(nn.Linear(dim, gate_rank, bias=False), nn.Linear(gate_rank, key_total))
        self.output_gate = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm = HeadNorm(num_heads, self.value_dim, centered=False)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in (self.query(x), self.key(x), self.value(x)))
        log_decay = split_heads(F.logsigmoid(self.decay(x)) / self.gate_temperature, self.num_heads)
        o, state = self._run(q, k, v, log_decay, state)
        return self.out(F.silu(self.output_gate(x)) * self.norm(o)), state
