"""Linear Log-Normal attention: log-normal features with moment-matched temperatures over the linear-attention op.

"Linear Log-Normal Attention with Unbiased Concentration", Nahshan, Kampeas & Haleva 2023, arXiv:2311.13541. The
recurrence lives only in `tokenmix.ops.linear_attention`; the feature map and the α, β formula live in
`tokenmix.ops.feature_maps` (`lognormal`, `lognormal_moment_matching`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenmix.mixer import State
from tokenmix.ops.feature_maps import lognormal, lognormal_moment_matching
from tokenmix.registry import register
from tokenmix.sequence._heads import check_heads, merge_heads, split_heads
from tokenmix.sequence.linear_attention import LINEAR_IMPLS, _LinearAttentionMixer

VARIANCE_FLOOR = 1e-6  # keeps α = σ̃/σ_q finite when a head's first token has (nearly) equal entries


def _prefix_moments(x: Tensor, previous: Tensor | None, count: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean and mean square of `x: (B, H, L, K)` over every entry of tokens ≤ t (and the `count` tokens summarized
    by `previous: (B, H, 2)`), for each t: two `(B, H, L)` tensors."""
    width = x.shape[-1]
    first = x.sum(-1).cumsum(-1)
    second = x.pow(2).sum(-1).cumsum(-1)
    entries = width * torch.arange(1, x.shape[2] + 1, device=x.device, dtype=x.dtype)
    if previous is not None:
        seen = (width * count).to(x.dtype)[:, None, None]                # (B, 1, 1)
        first = first + seen * previous[..., :1]
        second = second + seen * previous[..., 1:]
        entries = entries + seen
    return first / entries, second / entries


def _deviation(mean: Tensor, mean_square: Tensor) -> Tensor:
    return (mean_square - mean.pow(2)).clamp_min(0.0).add(VARIANCE_FLOOR).sqrt()


@register(
    name="linear_lognormal",
    family="linear_attention",
    layout="sequence",
    paper="Linear Log-Normal Attention with Unbiased Concentration",
    arxiv="2311.13541",
    impls=LINEAR_IMPLS,
    causal="optional",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="LLN attention: features exp(αq), exp(βk) with α, β set by moment matching so the attention "
            "matrix's log-normal variance equals softmax's (σ_q²σ_k²); normalized linear attention.",
)
class LinearLogNormalAttention(_LinearAttentionMixer):
    """LLN attention (Nahshan et al. 2023, arXiv:2311.13541), per head:

        o_t = Σ_s exp(α q_t)ᵀexp(β k_s) v_s / Σ_s exp(α q_t)ᵀexp(β k_s)       (s ≤ t when causal)
        σ̃² = (σ_q² σ_k² - b) / (2a),   α = σ̃ / σ_q,   β = σ̃ / σ_k

    σ_q, σ_k are the standard deviations of the head's query and key entries. The paper takes them over the whole
    batch; here they are per batch element and head, over the whole sequence when non-causal and over the prefix
    s ≤ t when causal (α_t for the query at t, β_s for the key at s), so that the layer stays causal, batch
    elements stay independent and streaming carries them in its state. Deviations: gradients flow through α, β
    (the paper computes them without gradient); the paper's block-diagonal softmax term ("LLN+Diag") is not part
    of this layer (pair it with `sliding_window`). exp(αq) is shifted by its per-token maximum, which cancels in
    the ratio; when non-causal so is exp(βk) by its per-head maximum, while causal keys are left unshifted (a
    shift must be the same for every key a query sees).
    """

    def __init__(self, dim: int, *, num_heads: int = 4, chunk_size: int = 64, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        self.num_heads = num_heads
        self.key_dim = check_heads(self.spec.name, dim, num_heads)
        self.value_dim = self.key_dim + 1  # the denominator rides along as a column of ones
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        state = super()._init_state(batch_size, device, dtype)
        # running mean and mean square of the query and key entries seen so far, per head
        state["moments"] = torch.zeros(batch_size, self.num_heads, 4, device=device, dtype=dtype)
        state["position"] = torch.zeros(batch_size, dtype=torch.long, device=device)
        return state

    def features(self, q: Tensor, k: Tensor, state: State | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """φ(q), φ(k) for head-split `(B, H, L, K)` q, k, and the updated moments (causal with a state)."""
        if not self.causal:
            sigma_q, sigma_k = (_deviation(t.mean((-2, -1)), t.pow(2).mean((-2, -1)))[..., None, None]
                                for t in (q, k))
            alpha, beta = lognormal_moment_matching(sigma_q, sigma_k)
            keys = beta * k
            return self._shifted_queries(alpha * q), lognormal(keys - keys.amax((-2, -1), keepdim=True), 1.0), None
        previous = count = None
        if state is not None:
            previous, count = state["moments"].to(q.dtype), state["position"]
        q_mean, q_square = _prefix_moments(q, None if previous is None else previous[..., :2], count)
        k_mean, k_square = _prefix_moments(k, None if previous is None else previous[..., 2:], count)
        # (B, H, L): α_t for the query at t and β_s for the key at s, each from the moments of tokens up to it
        alpha, beta = lognormal_moment_matching(_deviation(q_mean, q_square), _deviation(k_mean, k_square))
        moments = torch.stack([q_mean[..., -1], q_square[..., -1], k_mean[..., -1], k_square[..., -1]], dim=-1)
        return self._shifted_queries(alpha.unsqueeze(-1) * q), lognormal(k, beta.unsqueeze(-1)), moments

    @staticmethod
    def _shifted_queries(scaled: Tensor) -> Tensor:
        return lognormal(scaled - scaled.amax(-1, keepdim=True), 1.0)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        phi_q, phi_k, moments = self.features(q, k, state)
        o, new = self._run(phi_q, phi_k, v, None, None if state is None else {"state": state["state"]},
                           normalize=True, scale=1.0)
        if new is not None:
            new["moments"] = moments.to(state["moments"].dtype)
            new["position"] = state["position"] + x.shape[1]
        return self.out(merge_heads(o)), new
