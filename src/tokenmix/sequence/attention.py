"""Multi-head softmax attention with rotary positions and a KV cache for streaming."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenmix.mixer import SequenceMixer, State
from tokenmix.ops.attention import softmax_attention
from tokenmix.ops.rotary import rotary
from tokenmix.registry import register
from tokenmix.sequence._heads import check_heads, merge_heads, split_heads


@register(
    name="attention",
    family="attention",
    layout="sequence",
    paper="Attention Is All You Need",
    arxiv="1706.03762",
    impls=("reference", "sdpa"),
    causal="optional",
    state="growing",
    time_complexity="L^2",
    memory_complexity="L (sdpa) / L^2 (reference)",
    summary="Multi-head scaled dot-product attention, rotary positions (RoFormer, arXiv:2104.09864); "
            "streams with a KV cache.",
)
class Attention(SequenceMixer):
    """y = W_o · concat_h softmax(q_h k_hᵀ / √K + causal mask) v_h, with q, k rotated by position."""

    def __init__(self, dim: int, *, num_heads: int = 4, rotary_positions: bool = True, bias: bool = False,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.num_heads = num_heads
        self.head_dim = check_heads(self.spec.name, dim, num_heads)
        self.rotary_positions = rotary_positions
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        empty = torch.zeros(batch_size, self.num_heads, 0, self.head_dim, device=device, dtype=dtype)
        return {"key": empty, "value": empty.clone()}

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        offset = 0 if state is None else state["key"].shape[2]
        if self.rotary_positions:
            positions = torch.arange(offset, offset + x.shape[1], device=x.device)
            q, k = rotary(q, positions), rotary(k, positions)
        if state is not None:
            k = torch.cat([state["key"].to(k.dtype), k], dim=2)
            v = torch.cat([state["value"].to(v.dtype), v], dim=2)
            state = {"key": k, "value": v}
        o = softmax_attention(q, k, v, causal=self.causal, impl="sdpa" if self.impl == "auto" else self.impl)
        return self.out(merge_heads(o)), state
