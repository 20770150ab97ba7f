"""Kernelized-attention mixers: a feature map (ops/feature_maps.py) over the decayed linear-attention op.

cosFormer (cos re-weighting), TransNormer's NormAttention (no denominator, normalized output), Based (2nd-order
Taylor features), FLatten (focused features + depthwise conv on V). Causal ones stream with the op's fixed-size
state; the recurrence lives only in `tokenmix.ops.linear_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import State
from tokenmix.ops.feature_maps import cosformer, elu_plus_one, focused, taylor
from tokenmix.registry import register
from tokenmix.sequence._heads import HeadNorm, check_heads, merge_heads, split_heads
from tokenmix.sequence._short_conv import ShortConv
from tokenmix.sequence.linear_attention import LINEAR_IMPLS, _LinearAttentionMixer


@register(
    name="cosformer",
    family="linear_attention",
    layout="sequence",
    paper="cosFormer: Rethinking Softmax in Attention",
    arxiv="2202.08791",
    impls=LINEAR_IMPLS,
    causal="optional",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="ReLU features with cos(π(i-j)/2M) re-weighting, decomposed as cos·cos + sin·sin into one linear "
            "attention over doubled features, with the row-sum denominator.",
)
class CosFormer(_LinearAttentionMixer):
    """o_i = Σ_j ReLU(q_i)ᵀReLU(k_j) cos(π(i-j)/2M) v_j / Σ_j ReLU(q_i)ᵀReLU(k_j) cos(π(i-j)/2M)   (j ≤ i if causal)

    computed with φ(x_i) = [ReLU(x_i) cos θ_i, ReLU(x_i) sin θ_i], θ_i = πi/2M. M is the sequence length when
    non-causal (as in the paper) and `max_length` when causal, so that a streamed position keeps its weight; the
    mixer then accepts at most `max_length` tokens per call (the weight turns negative beyond M).
    """

    def __init__(self, dim: int, *, num_heads: int = 4, max_length: int = 4096, chunk_size: int = 64,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.period = self._positive_int("max_length", max_length)
        if self.causal:
            self.max_length = max_length
        self.num_heads = num_heads
        head_dim = check_heads(self.spec.name, dim, num_heads)
        self.key_dim, self.value_dim = 2 * head_dim, head_dim + 1
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        state = super()._init_state(batch_size, device, dtype)
        state["position"] = torch.zeros(batch_size, dtype=torch.long, device=device)
        return state

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        steps = torch.arange(x.shape[1], device=x.device)
        period = self.period if self.causal else x.shape[1]
        positions = steps if state is None else (state["position"][:, None] + steps)[:, None]
        q, k = cosformer(q, positions, period), cosformer(k, positions, period)
        o, new = self._run(q, k, v, None, None if state is None else {"state": state["state"]},
                           normalize=True, scale=1.0)
        if new is not None:
            new["position"] = state["position"] + x.shape[1]
        return self.out(merge_heads(o)), new


@register(
    name="transnormer",
    family="linear_attention",
    layout="sequence",
    paper="The Devil in Linear Transformer",
    arxiv="2210.10340",
    impls=LINEAR_IMPLS,
    causal="optional",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="NormAttention: O = Norm(φ(Q)(φ(K)ᵀV)) — no scaling, no denominator, the output normalized instead "
            "(bounded gradients).",
)
class TransNormer(_LinearAttentionMixer):
    """NormAttention (Qin et al. 2022, arXiv:2210.10340): o_t = RMSNorm_h(Σ_{s≤t} φ(q_t)ᵀφ(k_s) v_s), φ = elu + 1.

    Only the NormAttention layer is implemented; the paper's DiagAttention (block-local softmax attention in
    early layers) is a different layer. The norm is taken per head (the paper normalizes the whole output).
    """

    def __init__(self, dim: int, *, num_heads: int = 4, chunk_size: int = 64, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.num_heads = num_heads
        self.key_dim = self.value_dim = check_heads(self.spec.name, dim, num_heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.norm = HeadNorm(num_heads, self.value_dim, centered=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        o, state = self._run(elu_plus_one(q), elu_plus_one(k), v, None, state, scale=1.0)
        return self.out(self.norm(o)), state


@register(
    name="based",
    family="linear_attention",
    layout="sequence",
    paper="Simple linear attention language models balance the recall-throughput tradeoff",
    arxiv="2402.18668",
    impls=LINEAR_IMPLS,
    causal="optional",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Based's linear attention: q, k projected to a small feature dim d' (16), 2nd-order Taylor features "
            "of exp (1 + d' + d'² wide), normalized. Pair it with `sliding_window` layers as the paper does.",
)
class Based(_LinearAttentionMixer):
    """o_t = Σ_{s≤t} φ(q_t)ᵀφ(k_s) v_s / Σ_{s≤t} φ(q_t)ᵀφ(k_s),  φ(x)ᵀφ(y) = 1 + xᵀy/√d' + (xᵀy)²/2d'.

    This is the linear-attention layer of Based (Arora et al. 2024, arXiv:2402.18668); the architecture interleaves
    it with short sliding-window softmax attention layers (`tokenmix.create("sliding_window", ...)`) and gated
    convolutions.
    """

    def __init__(self, dim: int, *, num_heads: int = 4, feature_dim: int = 16, chunk_size: int = 64,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.feature_dim = self._positive_int("feature_dim", feature_dim)
        self.num_heads = num_heads
        head_dim = check_heads(self.spec.name, dim, num_heads)
        self.key_dim, self.value_dim = 1 + feature_dim + feature_dim ** 2, head_dim + 1
        self.query = nn.Linear(dim, num_heads * feature_dim, bias=False)
        self.key = nn.Linear(dim, num_heads * feature_dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in (self.query(x), self.key(x), self.value(x)))
        o, state = self._run(taylor(q), taylor(k), v, None, state, normalize=True, scale=1.0)
        return self.out(merge_heads(o)), state


@register(
    name="flatten",
    family="linear_attention",
    layout="sequence",
    paper="FLatten Transformer: Vision Transformer using Focused Linear Attention",
    arxiv="2308.00442",
    impls=LINEAR_IMPLS,
    causal="optional",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Focused linear attention: f_p(x) = ‖ReLU(x)‖/‖ReLU(x)^p‖ · ReLU(x)^p on q, k (learned scale), the "
            "normalized linear attention, plus a depthwise convolution of V to restore rank.",
)
class FocusedLinearAttention(_LinearAttentionMixer):
    """O_i = f(Q_i)(Σ_j f(K_j)ᵀV_j) / (f(Q_i)Σ_j f(K_j)ᵀ) + DWConv(V)_i,   f = f_p(· / softplus(s))

    (Han et al. 2023, arXiv:2308.00442; p = 3 and a 5-tap depthwise conv, as in the paper's vision models, here
    over the sequence: causal when the mixer is causal, centered otherwise).
    """

    def __init__(self, dim: int, *, num_heads: int = 4, focusing_power: float = 3.0, kernel_size: int = 5,
                 chunk_size: int = 64, impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.kernel_size = self._positive_int("kernel_size", kernel_size)
        self.focusing_power = float(focusing_power)
        self.num_heads = num_heads
        head_dim = check_heads(self.spec.name, dim, num_heads)
        self.key_dim, self.value_dim = head_dim, head_dim + 1
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.scale = nn.Parameter(torch.zeros(dim))
        self.conv = ShortConv(dim, kernel_size, bias=True)
        self.out = nn.Linear(dim, dim, bias=False)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        state = super()._init_state(batch_size, device, dtype)
        state["conv"] = self.conv.init_cache(batch_size, device, dtype)
        return state

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scale = F.softplus(self.scale)
        q, k = (focused(split_heads(t / scale, self.num_heads), self.focusing_power) for t in (q, k))
        o, new = self._run(q, k, split_heads(v, self.num_heads), None,
                           None if state is None else {"state": state["state"]}, normalize=True, scale=1.0)
        if self.causal:
            local, cache = self.conv(v, None if state is None else state["conv"])
        else:  # centered window: shift the causal conv's output back by half the kernel
            half = (self.kernel_size - 1) // 2
            local = self.conv(F.pad(v, (0, 0, 0, half)))[0][:, half:]
            cache = None
        if new is not None:
            new["conv"] = cache
        return self.out(merge_heads(o) + local), new
