"""xLSTM's matrix-memory cell (mLSTM) in its pre-up-projection block, over the decayed linear-attention op.

The recurrence, its exponential input gate, the stabilizer and the max(|nᵀq|, 1) normalizer live only in
`tokenmix.ops.linear_attention` (`log_input_gate=`, `normalize="max"`); this file holds the block around it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import SequenceMixer, State
from tokenmix.ops.linear_attention import linear_attention
from tokenmix.registry import register
from tokenmix.sequence._heads import HeadNorm, check_heads, split_heads
from tokenmix.sequence._short_conv import ShortConv
from tokenmix.sequence.linear_attention import LINEAR_IMPLS


class _BlockDiagonal(nn.Module):
    """x W with W block-diagonal (blocks of `block_size`), as the mLSTM block's q, k, v projections."""

    def __init__(self, width: int, block_size: int) -> None:
        super().__init__()
        self.block_size = block_size
        blocks = width // block_size
        self.weight = nn.Parameter(torch.randn(blocks, block_size, block_size) * block_size ** -0.5)

    def forward(self, x: Tensor) -> Tensor:
        x = x.unflatten(-1, (-1, self.block_size))
        return torch.einsum("...ni,noi->...no", x, self.weight).flatten(-2)


@register(
    name="mlstm",
    family="linear_attention",
    layout="sequence",
    paper="xLSTM: Extended Long Short-Term Memory",
    arxiv="2405.04517",
    impls=LINEAR_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L",
    memory_complexity="L",
    summary="Matrix LSTM: exponential input gate and sigmoid forget gate per head with a stabilizer state, "
            "normalizer max(|nᵀq|, 1); pre-up-projection block with causal conv, block-diagonal q/k/v, "
            "GroupNorm, learnable skip and SiLU gate.",
)
class MLSTM(SequenceMixer):
    """mLSTM block (Beck et al. 2024, arXiv:2405.04517), per head with head dim d:

        C_t = f_t C_{t-1} + i_t v_t k_tᵀ,   n_t = f_t n_{t-1} + i_t k_t,   h̃_t = C_t q_t / max(|n_tᵀ q_t|, 1)
        i_t = exp(ĩ_t),  f_t = σ(f̃_t),  k_t = W_k x / √d,   stabilized by m_t = max(log f_t + m_{t-1}, ĩ_t)

    Block (pre up-projection, factor `expand`): [a, z] = W_up x;  c = SiLU(CausalConv(a));  q, k = BlockDiag(c),
    v = BlockDiag(a);  [ĩ, f̃] = W_g [q, k, v] + b;  y = W_down((GroupNorm_h(h̃) + s ⊙ c) ⊙ SiLU(z)).
    Defaults follow the paper: expand 2, 4 heads, conv size 4, q/k/v blocks of 4; forget-gate biases start in
    [3, 6] so the cell starts remembering. The cell's output gate o_t is the block's SiLU(z) branch, as in the
    paper's block. The state is the op's stabilized pair (`state`, `stabilizer`) plus the conv cache.
    """

    def __init__(self, dim: int, *, num_heads: int = 4, expand: int = 2, conv_size: int = 4,
                 qkv_block_size: int = 4, chunk_size: int = 64, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.chunk_size = self._positive_int("chunk_size", chunk_size)
        inner = self._positive_int("expand", expand) * dim
        block = self._positive_int("qkv_block_size", qkv_block_size)
        if inner % block:
            raise self._fail(f"the inner width {inner} is not divisible by qkv_block_size={block}")
        self.num_heads, self.inner = num_heads, inner
        self.head_dim = check_heads(self.spec.name, inner, num_heads)
        self.up = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = ShortConv(inner, self._positive_int("conv_size", conv_size), bias=True)
        self.query, self.key, self.value = (_BlockDiagonal(inner, block) for _ in range(3))
        self.gates = nn.Linear(3 * inner, 2 * num_heads)
        with torch.no_grad():
            self.gates.weight.zero_()
            self.gates.bias[:num_heads].normal_(0.0, 0.1)
            self.gates.bias[num_heads:] = torch.linspace(3.0, 6.0, num_heads)
        self.norm = HeadNorm(num_heads, self.head_dim, centered=True)
        self.skip = nn.Parameter(torch.ones(inner))
        self.down = nn.Linear(inner, dim, bias=False)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        heads, width = self.num_heads, self.head_dim
        return {"state": torch.zeros(batch_size, heads, width, width + 1, device=device, dtype=dtype),
                "stabilizer": torch.zeros(batch_size, heads, device=device, dtype=dtype),
                "conv": self.conv.init_cache(batch_size, device, dtype)}

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        a, z = self.up(x).chunk(2, dim=-1)
        c, cache = self.conv(a, None if state is None else state["conv"])
        c = F.silu(c)
        q, k, v = self.query(c), self.key(c), self.value(a)
        log_input, forget = self.gates(torch.cat([q, k, v], dim=-1)).transpose(1, 2).chunk(2, dim=1)  # (B, H, L)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        options = dict(log_input_gate=log_input, normalize="max", impl=self.impl, chunk_size=self.chunk_size)
        if state is None:
            h, new = linear_attention(q, k, v, F.logsigmoid(forget), **options), None
        else:
            h, (memory, stabilizer) = linear_attention(
                q, k, v, F.logsigmoid(forget), initial_state=(state["state"], state["stabilizer"]),
                return_state=True, **options)
            dtype = state["state"].dtype
            new = {"state": memory.to(dtype), "stabilizer": stabilizer.to(dtype), "conv": cache}
        y = (self.norm(h) + self.skip * c) * F.silu(z)
        return self.down(y), new
