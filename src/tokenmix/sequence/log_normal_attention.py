"""Linear Log-Normal attention: log-normal features with moment-matched temperatures over the linear-attention op,
and the paper's full model LLN+Diag (LLN averaged with softmax attention inside blocks along the diagonal).

"Linear Log-Normal Attention with Unbiased Concentration", Nahshan, Kampeas & Haleva 2023, arXiv:2311.13541. The
recurrence lives only in `tokenmix.ops.linear_attention`; the feature map and the α, β formula live in
`tokenmix.ops.feature_maps` (`lognormal`, `lognormal_moment_matching`); the block-diagonal part is
`tokenmix.ops.attention.softmax_attention` with a block mask (`reference`) or over blocks folded into heads (fast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import State
from tokenmix.ops.attention import softmax_attention
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
    (the paper computes them without gradient); the paper's block-diagonal softmax term is the sibling mixer
    `linear_lognormal_diag` (LLN+Diag). exp(αq) is shifted by its per-token maximum, which cancels in
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

    def _log_normal(self, q: Tensor, k: Tensor, v: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        """LLN attention of head-split q, k, v: `(B, H, L, K)` outputs and the updated moments, op state and
        position (None without a state)."""
        phi_q, phi_k, moments = self.features(q, k, state)
        o, new = self._run(phi_q, phi_k, v, None, None if state is None else {"state": state["state"]},
                           normalize=True, scale=1.0)
        if new is not None:
            new["moments"] = moments.to(state["moments"].dtype)
            new["position"] = state["position"] + q.shape[2]
        return o, new

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        o, new = self._log_normal(q, k, v, state)
        return self.out(merge_heads(o)), new


def block_diagonal_attention(q: Tensor, k: Tensor, v: Tensor, block_size: int, *, causal: bool = True,
                             cache_key: Tensor | None = None, cache_value: Tensor | None = None,
                             start: Tensor | None = None, impl: str = "auto") -> Tensor:
    """Softmax attention restricted to blocks of `block_size` = C consecutive positions along the diagonal:

        o_i = Σ_{j: ⌊j/C⌋ = ⌊i/C⌋, j ≤ i when causal} softmax_j(q_i·k_j / √K) v_j

    (the last block is shorter when C does not divide L). `q, k, v: (B, H, L, *)`. A stream passes
    `cache_key, cache_value: (B, H, C-1, *)`, the C - 1 tokens before the first query (most recent last), and
    `start: (B,)`, the absolute position of the first query: only the cached tokens of the query's own block are
    seen (position ≥ its block's start and ≥ 0), so a cache of C - 1 tokens is all a stream needs.

    `impl="reference"` is `softmax_attention(impl="reference")` over the cache and the whole sequence with an additive
    -inf mask outside the blocks (O(L²), for checking). Otherwise the blocks are folded into the head dimension,
    `(B, H, L, K) -> (B, H·N, C, K)`, and one `softmax_attention` call (SDPA) runs them all, causal inside each
    block: O(L·C). When the batch elements of a stream sit at different offsets inside their blocks, the masked
    form is used (correct, O(L·(L + C))).
    """
    length = q.shape[2]
    offsets = None if start is None else start % block_size
    uniform = offsets is None or bool((offsets == offsets[0]).all())
    if impl == "reference" or not uniform:
        return _block_diagonal_masked(q, k, v, block_size, causal, cache_key, cache_value, start)
    offset = 0 if offsets is None else int(offsets[0])
    if offset:  # the current block began `offset` tokens ago: run it from its start, with queries there unused
        k = torch.cat([cache_key[:, :, cache_key.shape[2] - offset:].to(k.dtype), k], dim=2)
        v = torch.cat([cache_value[:, :, cache_value.shape[2] - offset:].to(v.dtype), v], dim=2)
        q = F.pad(q, (0, 0, offset, 0))
    batch, heads, total, _ = q.shape
    # Causal: padding goes after the last real token of the last block, where no real query sees it. Non-causal:
    # the ragged last block runs as a call of its own instead.
    full = total if causal else total - total % block_size
    pad = -full % block_size
    outputs = []
    if full:
        folded = [F.pad(t[:, :, :full], (0, 0, 0, pad)).reshape(batch, heads * ((full + pad) // block_size),
                                                                 block_size, t.shape[-1]) for t in (q, k, v)]
        o = softmax_attention(*folded, causal=causal, impl="sdpa")
        outputs.append(o.reshape(batch, heads, full + pad, -1)[:, :, :full])
    if full < total:
        outputs.append(softmax_attention(q[:, :, full:], k[:, :, full:], v[:, :, full:], causal=False, impl="sdpa"))
    return torch.cat(outputs, dim=2)[:, :, offset:offset + length]


def _block_diagonal_masked(q: Tensor, k: Tensor, v: Tensor, block_size: int, causal: bool,
                           cache_key: Tensor | None, cache_value: Tensor | None, start: Tensor | None) -> Tensor:
    length, device = q.shape[2], q.device
    query_position = torch.arange(length, device=device)[None, :]              # (B|1, L) absolute positions
    key_position = query_position
    if cache_key is not None:
        k = torch.cat([cache_key.to(k.dtype), k], dim=2)
        v = torch.cat([cache_value.to(v.dtype), v], dim=2)
        key_position = torch.arange(-cache_key.shape[2], length, device=device)[None, :] + start[:, None]
        query_position = query_position + start[:, None]
    same_block = key_position[:, None, :] // block_size == query_position[:, :, None] // block_size
    visible = same_block & (key_position[:, None, :] >= 0)
    if causal:
        visible = visible & (key_position[:, None, :] <= query_position[:, :, None])
    bias = torch.zeros(visible.shape, dtype=q.dtype, device=device).masked_fill(~visible, float("-inf"))
    return softmax_attention(q, k, v, causal=False, bias=bias[:, None], impl="reference")


@register(
    name="linear_lognormal_diag",
    family="linear_attention",
    layout="sequence",
    paper="Linear Log-Normal Attention with Unbiased Concentration",
    arxiv="2311.13541",
    impls=LINEAR_IMPLS,
    causal="optional",
    state="fixed",
    time_complexity="L·C",
    memory_complexity="L·C",
    summary="LLN+Diag, the paper's full model: the average of LLN attention (global, linear) and softmax "
            "attention inside diagonal blocks of C tokens (local); streams with a cache of C - 1 tokens.",
)
class LinearLogNormalDiagonalAttention(LinearLogNormalAttention):
    """LLN+Diag (Nahshan et al. 2023, arXiv:2311.13541), per head:

        o_t = ½ (LLN_t + Diag_t),
        LLN_t  = Σ_s exp(α q_t)ᵀexp(β k_s) v_s / Σ_s exp(α q_t)ᵀexp(β k_s)        (as `linear_lognormal`)
        Diag_t = Σ_{s: ⌊s/C⌋ = ⌊t/C⌋} softmax_s(q_tᵀk_s / √K) v_s                    (s ≤ t when causal)

    LLN's global but diluted attention is complemented by exact softmax attention over short blocks along the
    diagonal, for short-range interactions (the paper's Sec. on attention dilution and its Fig. 3). The average
    with equal weights and blocks of C = head_dim tokens (`block_size=None`) follow the authors' released code
    (its default "average" mode; a learned mix is an option there, not here). Both parts read the same q, k, v.
    A stream keeps the last C - 1 keys and values beside LLN's state: O(C) memory per token, independent of L.
    """

    def __init__(self, dim: int, *, num_heads: int = 4, block_size: int | None = None, chunk_size: int = 64,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, num_heads=num_heads, chunk_size=chunk_size, impl=impl, causal=causal)
        self.block_size = self.key_dim if block_size is None else self._positive_int("block_size", block_size)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        state = super()._init_state(batch_size, device, dtype)
        cache = torch.zeros(batch_size, self.num_heads, self.block_size - 1, self.key_dim, device=device, dtype=dtype)
        state["block_key"], state["block_value"] = cache, cache.clone()
        return state

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        o, new = self._log_normal(q, k, v, state)
        impl = "reference" if self.impl == "reference" else "auto"
        if state is None:
            diagonal = block_diagonal_attention(q, k, v, self.block_size, causal=self.causal, impl=impl)
        else:
            diagonal = block_diagonal_attention(q, k, v, self.block_size, cache_key=state["block_key"],
                                                cache_value=state["block_value"], start=state["position"], impl=impl)
            keep = self.block_size - 1
            for name, new_tokens in (("block_key", k), ("block_value", v)):
                tokens = torch.cat([state[name].to(new_tokens.dtype), new_tokens], dim=2)
                new[name] = tokens[:, :, tokens.shape[2] - keep:].to(state[name].dtype)
        return self.out(merge_heads(0.5 * (o + diagonal))), new
