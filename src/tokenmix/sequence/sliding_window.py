"""Sliding-window softmax attention: each token attends to itself and the `window - 1` tokens before it, so a
stream keeps a bounded cache of `window - 1` keys and values (state "fixed": O(W) per token, not O(L))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import SequenceMixer, State
from tokenmix.ops._checks import compute_dtype
from tokenmix.ops.rotary import rotary
from tokenmix.registry import register
from tokenmix.sequence._heads import check_heads, merge_heads, split_heads


def sliding_window_attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor, window: int, *, impl: str,
                             scale: float | None = None) -> Tensor:
    """Banded softmax attention. `q: (B, H, L, K)`; `k, v: (B, H, W-1+L, *)` — a cache of `W - 1` earlier
    tokens then the `L` new ones; `key_valid: (B, W-1+L)` marks real keys (an empty cache is all False).
    Query i sees keys i .. i+W-1 of the concatenation (itself and the W-1 before it) that are valid:

        o_i = Σ_j softmax_j(scale · q_i·k_j + m_ij) v_j,   m_ij = 0 if i ≤ j ≤ i + W - 1 and key j valid, else -inf

    `reference` builds the full (L, W-1+L) score matrix; `blocked` cuts the queries into blocks of W, each meeting
    a slab of 2W - 1 keys, so time and memory are O(L·W).
    """
    dtype = compute_dtype(q, k, v)
    out_dtype = v.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q, k, v = q.to(dtype) * scale, k.to(dtype), v.to(dtype)
    length = q.shape[2]
    if impl == "reference":
        i = torch.arange(length, device=q.device)[:, None]
        j = torch.arange(k.shape[2], device=q.device)[None, :]
        visible = (j >= i) & (j <= i + window - 1) & key_valid[:, None, None, :]
        scores = (q @ k.transpose(-1, -2)).masked_fill(~visible, float("-inf"))
        return (torch.softmax(scores, dim=-1) @ v).to(out_dtype)

    blocks = -(-length // window)
    q = F.pad(q, (0, 0, 0, blocks * window - length)).unflatten(2, (blocks, window))        # (B, H, N, W, K)
    extra = blocks * window + window - 1 - k.shape[2]
    # padded keys are marked valid: only padded queries can see them, and those rows are dropped
    k, v = (F.pad(t, (0, 0, 0, extra)) for t in (k, v))
    valid = F.pad(key_valid, (0, extra), value=True)
    slab = 2 * window - 1
    k, v = (t.unfold(2, slab, window).transpose(-1, -2) for t in (k, v))                    # (B, H, N, S, *)
    valid = valid.unfold(1, slab, window)[:, None, :, None, :]                             # (B, 1, N, 1, S)
    r = torch.arange(window, device=q.device)[:, None]
    s = torch.arange(slab, device=q.device)[None, :]
    visible = (s >= r) & (s <= r + window - 1) & valid                                       # (B, 1, N, W, S)
    scores = (q @ k.transpose(-1, -2)).masked_fill(~visible, float("-inf"))
    o = (torch.softmax(scores, dim=-1) @ v).flatten(2, 3)[:, :, :length]
    return o.to(out_dtype)


@register(
    name="sliding_window",
    family="attention",
    layout="sequence",
    paper="Longformer: The Long-Document Transformer",
    arxiv="2004.05150",
    impls=("reference", "blocked"),
    causal="always",
    state="fixed",
    time_complexity="L·W",
    memory_complexity="L·W",
    summary="Causal softmax attention over the last `window` tokens (rotary positions); streams with a bounded "
            "cache of window - 1 keys and values. The local-attention layer of Based, Samba and DeltaNet hybrids.",
)
class SlidingWindowAttention(SequenceMixer):
    """y_i = W_o · concat_h Σ_{i-W<j≤i} softmax_j(q_i·k_j / √K) v_j, q and k rotated by absolute position.

    Causal sliding-window ("local") attention, as the windowed attention of Longformer (Beltagy et al. 2020,
    arXiv:2004.05150) restricted to the past.
    """

    def __init__(self, dim: int, *, num_heads: int = 4, window: int = 64, rotary_positions: bool = True,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.window = self._positive_int("window", window)
        self.num_heads = num_heads
        self.head_dim = check_heads(self.spec.name, dim, num_heads)
        self.rotary_positions = rotary_positions
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        cache = torch.zeros(batch_size, self.num_heads, self.window - 1, self.head_dim, device=device, dtype=dtype)
        return {"key": cache, "value": cache.clone(),
                "valid": torch.zeros(batch_size, self.window - 1, dtype=torch.bool, device=device),
                "position": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        batch, length = x.shape[:2]
        steps = torch.arange(length, device=x.device)
        fresh = state is None
        if fresh:
            state = self._init_state(batch, x.device, x.dtype)
        if self.rotary_positions:
            positions = steps if fresh else state["position"][:, None] + steps
            q, k = rotary(q, positions), rotary(k, positions)
        keys = torch.cat([state["key"].to(k.dtype), k], dim=2)
        values = torch.cat([state["value"].to(v.dtype), v], dim=2)
        valid = torch.cat([state["valid"], torch.ones(batch, length, dtype=torch.bool, device=x.device)], dim=1)
        impl = "blocked" if self.impl == "auto" else self.impl
        o = sliding_window_attention(q, keys, values, valid, self.window, impl=impl)
        y = self.out(merge_heads(o))
        if fresh:
            return y, None
        keep = self.window - 1
        new = {"key": keys[:, :, keys.shape[2] - keep:].to(state["key"].dtype),
               "value": values[:, :, values.shape[2] - keep:].to(state["value"].dtype),
               "valid": valid[:, valid.shape[1] - keep:], "position": state["position"] + length}
        return y, new
