"""Decayed linear attention, the family op of linear attention, RetNet, Lightning attention, Mamba-2/SSD and GLA.

    S_t = diag(a_t) S_{t-1} + k_t v_tᵀ,      o_t = S_tᵀ (scale · q_t)

with the decay `a_t = exp(log_decay_t)` given as a log-decay that is

* absent (`None`): plain linear attention, "Transformers are RNNs", Katharopoulos et al. 2020, arXiv:2006.16236;
* a fixed scalar per head, shape `(H,)`: RetNet, arXiv:2307.08621; Lightning Attention-2, arXiv:2401.04658;
* a per-token scalar, shape `(B, H, L)`: Mamba-2 / SSD, arXiv:2405.21060;
* a per-token vector over K, shape `(B, H, L, K)`: GLA, "Gated Linear Attention Transformers with
  Hardware-Efficient Training", Yang et al. 2023, arXiv:2312.06635.

`normalize=True` adds the kernelized-attention denominator: `o_t = S_tᵀ q_t / (z_tᵀ q_t + eps)` with
`z_t = diag(a_t) z_{t-1} + k_t`. It is carried as one more value column of ones, so the state is a single tensor
`(B, H, K, V + 1)` whose last column is `z`. `normalize="max"` is mLSTM's normalizer `max(|z_tᵀ q_t|, 1)`.

`log_input_gate` (per-token scalar `log i_t`, shape `(B, H, L)`) is the exponential input gate of the mLSTM
("xLSTM: Extended Long Short-Term Memory", Beck et al. 2024, arXiv:2405.04517):
`S_t = a_t S_{t-1} + i_t k_t v_tᵀ` with `i_t = exp(log i_t)` unbounded. It needs a normalizer and a scalar decay.
The state is then stored stabilized, as in the paper's appendix: a pair `(S'_t, m_t)` with
`m_t = max(log a_t + m_{t-1}, log i_t)` and `S'_t = exp(-m_t) S_t` (`m_0 = 0`), so every exponent any form takes
is ≤ 0, and the normalizers read `max(|z'ᵀq|, exp(-m_t))` and `z'ᵀq + eps·exp(-m_t)`, exactly the unstabilized
ratios. `m_t = max(c_t + m_0, max_{s≤t} log i_s + c_t - c_s)` in closed form (`c` the cumulative log-decay): the
reference takes it over its masked matrix, `chunk` as a running max inside each chunk plus a scalar chain over chunks.

Forms (`impl`):
* `reference`: the masked quadratic form `o_t = Σ_{s≤t} (q_t ⊙ exp(c_t - c_s))·k_s v_s` with `c` the cumulative
  log-decay; it materializes an `(L, L, K)` tensor, so it is for checking, not for speed;
* `recurrent`: the token loop above (the streaming form);
* `scan`: every state `S_t` at once by a doubling (Hillis–Steele) scan, log2(L) elementwise steps over a
  `(B, H, L, K, V)` tensor, O(L log L) work and, under autograd, every level's states kept (`blocked` below does
  the same job in O(L) work and without the per-token states: 30-50× faster on CPU at Mamba's shapes);
* `chunk`: chunkwise parallel: masked matmuls inside chunks, the state passed between chunks. Every exponent of the
  state passing is ≤ 0, so strong decays neither overflow nor lose the state. Inside a chunk a vector decay is
  factored, `(q_i ⊙ exp(b_i))·(k_j ⊙ exp(-b_j))` with `b` summed from the chunk's start (one matmul, as a scalar
  decay), where the chunk's decay span keeps `exp(-b_j)` a normal float (`FACTORED_SPAN`: 60 nats in float32);
  a chunk past it uses a second level of sub-chunks (the GLA paper's secondary chunking) whose exponents are all
  ≤ 0, with the diagonal sub-chunks formed elementwise, so no `(C, C, K)` tensor is built;
* `blocked`: the states of `scan`, one block of `chunk_size` tokens at a time: inside a block every state
  `S_t = a_t ⊙ S_{t-1} + k_t v_tᵀ` is formed exactly (a token loop of one fused multiply-add per token on CPU, the
  doubling scan on other devices), the `(B, H, K, V)` state is carried from block to block, and only each block's
  entering state is kept for backward, which recomputes the block and runs the adjoint recurrence
  `dS_t = q_t do_tᵀ + a_{t+1} ⊙ dS_{t+1}` through it (a custom autograd function). Every exponent it takes is one
  token's log-decay (≤ 0). Time O(L·H·K·V) as the token loop (O(L·log C·H·K·V) with the doubling inside blocks),
  with O(C·H·K·V) working memory and O((L/C)·H·K·V) saved for backward, against `scan`'s O(L·H·K·V) per
  doubling level. With a factored decay and shared q, k (below) nothing of size L·H·K is ever built: this is the
  selective scan of Mamba, whose state per channel is small (V = 1) and whose per-token states are what costs.

`scan` and `blocked` live in `tokenmix.ops.linear_attention_scan`.

Two input forms exist for the selective scan (Mamba, arXiv:2312.00752; VMamba's SS2D), which every form accepts:
* `log_decay` may be a pair `(step, rate)` of shapes `(B, H, L)` and `(H, K)`: the vector log-decay
  `step_t[h] · rate[h, k]` (Mamba's `Δ_t A`, step ≥ 0, rate ≤ 0). `blocked` forms it one block at a time; the
  other forms build the `(B, H, L, K)` tensor;
* q and k may have fewer heads than v, `H_qk` dividing `H`: q/k head `j` serves v heads `j·H/H_qk .. (j+1)·H/H_qk - 1`
  (Mamba's B_t and C_t, shared by every channel; SS2D's, shared by the channels of one direction). `blocked` never
  repeats them; the other forms do.

`causal=False` is the global form `o_t = (Σ_s k_s v_sᵀ)ᵀ q_t` (no decay, no state).

`impl="auto"` with a factored decay is `blocked` (the selective scan: docs/performance.md, "Selective scan: the
blocked form"). Otherwise (`auto_impl`): `recurrent` for L ≤ 2 and `chunk` beyond, for every decay and with or
without a gradient (the factored vector-decay chunk is 3-9× faster than the token loop forward-only from L = 8 on
CPU, docs/performance.md; on CUDA a token loop is one kernel launch per token). On CUDA with flash-linear-attention
installed, a bf16/fp16 call without a normalizer, input gate, factored decay or shared heads runs on its
`chunk_simple_gla` (no decay, scalar decays) or `chunk_gla` (vector decay) kernel instead (`tokenmix.ops.flash_linear_attention`, which states the mapping and when it applies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops import flash_linear_attention as flash
from tokenmix.ops import linear_attention_scan as scan_forms
from tokenmix.ops._checks import check_head_tensors, check_impl, compute_dtype

IMPLS = ("reference", "recurrent", "chunk", "scan", "blocked")
SUB_CHUNK = 16
# the largest decay span (-log of a chunk's total decay, its smallest channel) at which `chunk` factors a vector
# decay as exp(b_i)·exp(-b_j), per compute dtype (half inputs compute in float32): exp(60) = 1.1e26 leaves float32
# (max 3.4e38) room for the masked-out products q_i·k_j·exp(b_i - b_j), j > i; exp(600) = 3.8e260 leaves float64's
FACTORED_SPAN = {torch.float32: 60.0, torch.float64: 600.0}


def auto_impl(length: int) -> str:
    """The form `impl="auto"` takes (the rule in the module docstring)."""
    return "recurrent" if length <= 2 else "chunk"


def linear_attention(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | float | None = None, *,
                     scale: float | None = None, causal: bool = True, normalize: bool | str = False,
                     eps: float = 1e-6, log_input_gate: Tensor | None = None,
                     initial_state: Tensor | tuple[Tensor, Tensor] | None = None, return_state: bool = False,
                     impl: str = "auto", chunk_size: int = 64):
    """Decayed linear attention on `(B, H, L, K)` q, k and `(B, H, L, V)` v (q, k may have `H_qk` heads dividing
    `H`, and `log_decay` may be a factored pair `(step, rate)`: the module docstring). `chunk_size` is the chunk of
    `chunk` and the block of `blocked`.

    Returns `o: (B, H, L, V)` in the dtype of `v`, or `(o, final_state)` with `return_state=True`; the state is
    `(B, H, K, V)` (`V + 1` with `normalize`) in the compute dtype (float32 for half inputs). `normalize` is
    False, True / "sum" (`zᵀq + eps`) or "max" (`max(|zᵀq|, 1)`). With `log_input_gate` the state is the
    stabilized pair `(S', m)` with `m: (B, H)`.
    """
    op = "linear_attention"
    check_impl(op, impl, ("auto", *IMPLS))
    check_head_tensors(op, q=q, k=k)
    check_head_tensors(op, v=v)
    batch, shared_heads, length, key_dim = q.shape
    heads = v.shape[1]
    if (k.shape != q.shape or v.shape[0] != batch or v.shape[2] != length
            or heads % shared_heads):
        raise MixerInputError(f"{op}: q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not agree "
                              f"(q and k have v's batch and length, and a number of heads that divides v's)")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise MixerInputError(f"{op}: chunk_size must be a positive integer, got {chunk_size!r}")
    if normalize not in (False, True, "sum", "max"):
        raise MixerInputError(f"{op}: normalize must be False, True, 'sum' or 'max', got {normalize!r}")
    dtype, out_dtype = compute_dtype(q, k, v), v.dtype
    scale = key_dim ** -0.5 if scale is None else scale
    gated = log_input_gate is not None
    routed = impl == "auto" and flash.routes_linear_attention(
        q, k, v, causal=causal, normalize=normalize, gated=gated, factored=isinstance(log_decay, (tuple, list)))
    if not routed:  # fla takes q, k, v as given: its kernels scale and accumulate in float32 themselves
        q, k, v = q.to(dtype) * scale, k.to(dtype), v.to(dtype)
    if gated and (not causal or not normalize):
        raise MixerInputError(f"{op}: log_input_gate needs causal=True and a normalizer (normalize='max' or 'sum')")
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    value_dim = v.shape[-1]

    if not causal:
        if log_decay is not None or initial_state is not None or return_state:
            raise MixerInputError(f"{op}: causal=False is the global form: no decay, no initial or returned state")
        if shared_heads != heads:
            q, k = (_repeat_heads(t, heads) for t in (q, k))
        o = _global(q, k, v, impl)
        return _finish(o, normalize, eps, 1.0, None, False, out_dtype)

    factored = None
    if isinstance(log_decay, (tuple, list)):
        factored = _factored_decay(op, log_decay, batch, heads, length, key_dim, dtype)
        impl = "blocked" if impl == "auto" else impl
        log_decay = None if impl == "blocked" else factored[0].unsqueeze(-1) * factored[1].unsqueeze(1)
    g = _canonical_decay(op, log_decay, batch, heads, length, key_dim, dtype, q.device)
    li = m = None
    if gated:
        if not isinstance(log_input_gate, Tensor) or log_input_gate.shape != (batch, heads, length):
            raise MixerInputError(f"{op}: log_input_gate must have shape ({batch}, {heads}, {length}), "
                                  f"got {tuple(getattr(log_input_gate, 'shape', ()))}")
        if g is not None and g.shape[-1] != 1:
            raise MixerInputError(f"{op}: log_input_gate needs a scalar decay (None, per head or per token)")
        li = log_input_gate.to(dtype).unsqueeze(-1)
    state = torch.zeros(batch, heads, key_dim, value_dim, dtype=dtype, device=q.device)
    if gated:
        m = torch.zeros(batch, heads, dtype=dtype, device=q.device)
    if initial_state is not None:
        if gated:
            if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
                raise MixerInputError(f"{op}: with log_input_gate, initial_state is a pair (state, stabilizer)")
            initial_state, initial_m = initial_state
            if initial_m.shape != m.shape:
                raise MixerInputError(f"{op}: the initial stabilizer must have shape {tuple(m.shape)}, "
                                      f"got {tuple(initial_m.shape)}")
            m = initial_m.to(dtype)
        if not isinstance(initial_state, Tensor) or initial_state.shape != state.shape:
            raise MixerInputError(f"{op}: initial_state must have shape {tuple(state.shape)}, "
                                  f"got {tuple(getattr(initial_state, 'shape', ()))}")
        state = initial_state.to(dtype)
    if gated:
        m = m[:, :, None, None]                                      # (B, H, 1, 1)

    if routed:
        o, state = flash.linear_attention(q, k, v, g, scale=scale,
                                          initial_state=None if initial_state is None else state,
                                          return_state=return_state)
        return (o, state) if return_state else o
    if impl == "auto":
        impl = auto_impl(length)
    if impl in ("scan", "blocked") and gated:
        raise MixerInputError(f"{op}: impl={impl!r} does not take log_input_gate; use reference, recurrent or chunk")
    if impl != "blocked" and shared_heads != heads:
        q, k = (_repeat_heads(t, heads) for t in (q, k))
    if impl == "blocked":
        step, rate = factored if factored is not None else (None, None)
        o, state = scan_forms.BlockedScan.apply(q, k, v, g, step, rate, state, chunk_size,
                                                q.device.type in scan_forms.BLOCK_PARALLEL_DEVICES)
    elif impl == "reference":
        o, state, m = _reference(q, k, v, g, state, li, m)
    elif impl == "scan":
        o, state = scan_forms.scan(q, k, v, g, state)
    elif impl == "recurrent":
        o, state, m = _recurrent(q, k, v, g, state, li, m)
    else:
        o, state, m = _chunk(q, k, v, g, state, chunk_size, li, m)
    if gated:
        floor = (-m).exp()                                           # m: (B, H, L, 1), the stabilizer per token
        state = (state, m[:, :, -1, 0])
    else:
        floor = 1.0
    return _finish(o, normalize, eps, floor, state, return_state, out_dtype)


def _finish(o: Tensor, normalize: bool | str, eps: float, floor: Tensor | float, state, return_state: bool,
            out_dtype):
    """Divide by the normalizer column; `floor` is exp(-m_t) with a stabilizer (the 1 of max(|zᵀq|, 1)), else 1."""
    if normalize == "max":
        o = o[..., :-1] / torch.maximum(o[..., -1:].abs(), torch.as_tensor(floor, dtype=o.dtype))
    elif normalize:
        o = o[..., :-1] / (o[..., -1:] + eps * floor)
    o = o.to(out_dtype)
    return (o, state) if return_state else o


def _canonical_decay(op: str, log_decay, batch: int, heads: int, length: int, key_dim: int,
                     dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """Log-decay as `(B|1, H, L, 1)` (scalar) or `(B, H, L, K)` (vector), or None."""
    if log_decay is None:
        return None
    g = torch.as_tensor(log_decay, dtype=dtype, device=device)
    if g.ndim == 0:
        return g.expand(1, heads, length).unsqueeze(-1)
    if g.shape == (heads,):
        return g.view(1, heads, 1, 1).expand(1, heads, length, 1)
    if g.shape == (batch, heads, length):
        return g.unsqueeze(-1)
    if g.shape == (batch, heads, length, key_dim):
        return g
    raise MixerInputError(
        f"{op}: log_decay must be a scalar, ({heads},), ({batch}, {heads}, {length}) or "
        f"({batch}, {heads}, {length}, {key_dim}); got shape {tuple(g.shape)}")


def _factored_decay(op: str, pair, batch: int, heads: int, length: int, key_dim: int,
                    dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """`(step, rate)` checked to be `(B, H, L)` and `(H, K)` tensors, in the compute dtype."""
    if len(pair) != 2 or not all(isinstance(t, Tensor) for t in pair):
        raise MixerInputError(f"{op}: a factored log_decay is a pair of tensors (step, rate)")
    step, rate = pair
    if step.shape != (batch, heads, length) or rate.shape != (heads, key_dim):
        raise MixerInputError(f"{op}: a factored log_decay (step, rate) has shapes ({batch}, {heads}, {length}) and "
                              f"({heads}, {key_dim}); got {tuple(step.shape)} and {tuple(rate.shape)}")
    return step.to(dtype), rate.to(dtype)


def _repeat_heads(t: Tensor, heads: int) -> Tensor:
    """Shared q or k `(B, H_qk, L, K)` as `(B, H, L, K)`: each head repeated for the v heads it serves."""
    if t.shape[1] == 1:
        return t.expand(-1, heads, -1, -1)
    return t.repeat_interleave(heads // t.shape[1], dim=1)


def _global(q: Tensor, k: Tensor, v: Tensor, impl: str) -> Tensor:
    if impl == "reference":
        return torch.einsum("bhts,bhsv->bhtv", torch.einsum("bhtk,bhsk->bhts", q, k), v)
    return q @ (k.transpose(-1, -2) @ v)


def _reference(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, state: Tensor, li: Tensor | None = None,
               m0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """With `li`: weights exp(c_t - c_s + log i_s - m_t), m_t the max of those exponents and c_t + m_0."""
    length = q.shape[2]
    if g is None:
        g = torch.zeros_like(q[..., :1])
    c = g.cumsum(dim=2)                                          # c_t = Σ_{r≤t} log a_r
    visible = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    exponent = c.unsqueeze(3) - c.unsqueeze(2)                   # (B, H, t, s, 1|K)
    carried = c                                                  # log-weight of the initial state at t
    if li is not None:
        exponent = exponent + li.unsqueeze(2)
    exponent = exponent.masked_fill(~visible[:, :, None], float("-inf"))
    m = None
    if li is not None:
        m = torch.maximum(exponent.amax(dim=3), c + m0)          # (B, H, t, 1)
        exponent, carried = exponent - m.unsqueeze(3), c + m0 - m
    scores = (q.unsqueeze(3) * k.unsqueeze(2) * exponent.exp()).sum(-1)     # (B, H, t, s)
    o = scores @ v + (q * carried.exp()) @ state
    c_last = c[:, :, -1:]
    key_log = c_last - c if li is None else c_last - c + li - m[:, :, -1:]
    final = carried[:, :, -1:].transpose(2, 3).exp() * state + (k * key_log.exp()).transpose(2, 3) @ v
    return o, final, m


def _recurrent(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, state: Tensor, li: Tensor | None = None,
               m: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    outputs, stabilizers = [], []
    # per-token views taken once (unbind/split): indexing `[:, :, t]` inside the loop would make backward add
    # every token's gradient into its own full-size zero tensor, O(L²) work
    g_t = g.unbind(2) if g is not None else None
    li_t = li.split(1, dim=2) if li is not None else None
    for t, (q_t, k_t, v_t) in enumerate(zip(q.unbind(2), k.unbind(2), v.unbind(2))):
        update = k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        if li is None:
            if g is not None:
                state = g_t[t].exp().unsqueeze(-1) * state
            state = state + update
        else:  # m_t = max(log a_t + m_{t-1}, log i_t)
            # S'_t = exp(log a_t + m_{t-1} - m_t) S'_{t-1} + exp(log i_t - m_t) k_t v_tᵀ
            carried = m if g is None else m + g_t[t].unsqueeze(2)
            m = torch.maximum(carried, li_t[t])
            state = (carried - m).exp() * state + (li_t[t] - m).exp() * update
            stabilizers.append(m)
        outputs.append((q_t.unsqueeze(-2) @ state).squeeze(-2))
    m = torch.cat(stabilizers, dim=2) if li is not None else None
    return torch.stack(outputs, dim=2), state, m


def _chunk(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, state: Tensor, chunk_size: int,
           li: Tensor | None = None, m: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    batch, heads, length, _ = q.shape
    size = min(chunk_size, length)
    pad = -length % size
    undecayed = g is None and li is None
    if g is None:
        g = q.new_zeros(1, 1, length, 1)
    if pad:  # zero keys and zero log-decay leave the state untouched, so padding changes nothing
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        g = F.pad(g, (0, 0, 0, pad))
        if li is not None:  # a gate of exp(-inf) = 0 never raises the stabilizer
            li = F.pad(li, (0, 0, 0, pad), value=float("-inf"))
    chunks = (length + pad) // size
    q, k, v = (t.unflatten(2, (chunks, size)) for t in (q, k, v))   # (B, H, N, C, *)
    if undecayed:  # no exponentials; the state passing is a running sum (a loop of adds: CPU cumsum along this
        entering = []  # axis, or a matmul with a triangle of ones, measured 2-4× slower at 64-1024 chunks)
        for update_n in (k.transpose(-1, -2) @ v).unbind(2):
            entering.append(state)
            state = state + update_n
        o = q @ torch.stack(entering, dim=2) + (q @ k.transpose(-1, -2)).tril() @ v
        return o.flatten(2, 3)[:, :, :length], state, None
    b = g.unflatten(2, (chunks, size)).cumsum(dim=3)                 # log-decay from chunk start, ≤ 0
    b_last = b[:, :, :, -1:]

    if li is None:
        key_log, query_log, entering_log = b_last - b, b, b_last
    else:
        # m_i = b_i + max(m_in, max_{j≤i} log i_j - b_j): a running max in the chunk, a scalar chain across chunks.
        li = li.unflatten(2, (chunks, size))
        running = (li - b).cummax(dim=3).values                      # (B, H, N, C, 1)
        m_in = []
        for b_last_n, running_n in zip(b_last.unbind(2), running[:, :, :, -1:].unbind(2)):
            m_in.append(m)
            m = b_last_n + torch.maximum(m, running_n)
        m_in = torch.stack(m_in, dim=2)                              # (B, H, N, 1, 1)
        stabilizer = b + torch.maximum(m_in, running)                # (B, H, N, C, 1)
        m_out = stabilizer[:, :, :, -1:]
        key_log = b_last - b + li - m_out                            # all ≤ 0
        query_log = b + m_in - stabilizer
        entering_log = b_last + m_in - m_out

    # Inter-chunk: the state entering each chunk, then its contribution through exp(·) ≤ 1.
    updates = (k * key_log.exp()).transpose(-1, -2) @ v              # (B, H, N, K, V)
    chunk_decay = entering_log.transpose(-1, -2).exp()               # (B, H, N, K|1, 1)
    entering = []
    # unbound once: indexing `[:, :, n]` in the loop would give backward a full-size zero tensor per chunk
    for decay_n, update_n in zip(chunk_decay.unbind(2), updates.unbind(2)):
        entering.append(state)
        state = decay_n * state + update_n
    entering = torch.stack(entering, dim=2)                          # (B, H, N, K, V)
    q_decayed = q * query_log.exp()
    o = q_decayed @ entering

    # Intra-chunk.
    if li is not None:
        o = o + _intra_scalar(q, k, b - stabilizer, b - li) @ v
        m = stabilizer.flatten(2, 3)[:, :, :length]
    elif b.shape[-1] == 1:
        o = o + _intra_scalar(q, k, b, b) @ v
        m = None
    else:
        o = o + _intra_vector(q, k, b, q_decayed) @ v
        m = None
    o = o.flatten(2, 3)[:, :, :length]
    return o, state, m


def _intra_scalar(q: Tensor, k: Tensor, query_log: Tensor, key_log: Tensor) -> Tensor:
    """Scores `(q_i·k_j) exp(query_log_i - key_log_j)` for j ≤ i inside each chunk, for a scalar decay
    (`b_i - b_j`, or `b_i - m_i - (b_j - log i_j)` with an input gate and its stabilizer)."""
    size = q.shape[3]
    visible = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    exponent = (query_log - key_log.transpose(-1, -2)).masked_fill(~visible, float("-inf"))
    return (q @ k.transpose(-1, -2)) * exponent.exp()


def _intra_vector(q: Tensor, k: Tensor, b: Tensor, q_decayed: Tensor) -> Tensor:
    """Scores `Σ_k q_ik k_jk exp(b_ik - b_jk)` for j ≤ i inside each chunk, for a vector decay (`b` the log-decay
    summed from the chunk's start, ≤ 0 and falling; `q_decayed` is `q ⊙ exp(b)`).

    Factored: `(q_i ⊙ exp(b_i)) · (k_j ⊙ exp(-b_j))`, one matmul per chunk and one exponential per key entry. A
    chunk whose decay span `-b_last` (its smallest channel) exceeds `FACTORED_SPAN[dtype]` would overflow or
    underflow `exp(-b_j)`; those chunks alone take `_intra_vector_sub_chunks`, whose every exponent is ≤ 0. Below
    the limit every factor is a normal float, so each product keeps full relative precision.
    """
    span_ok = b[..., -1, :].amin(dim=-1) >= -FACTORED_SPAN[q.dtype]                  # (B, H, N)
    k_grown = k * torch.where(span_ok[..., None, None], -b, 0.0).exp()
    # the products above the diagonal are finite (the span bounds them), so tril masks them; it runs ~2× faster
    # than masked_fill on CPU, forward and backward
    scores = (q_decayed @ k_grown.transpose(-1, -2)).tril()                          # (B, H, N, C, C)
    if bool(span_ok.all()):
        return scores
    leading = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], b.shape[:-2])
    strong = (~span_ok).expand(leading).flatten().nonzero().squeeze(1)
    rows = [t.expand(*leading, *t.shape[-2:]).flatten(0, -3).index_select(0, strong) for t in (q, k, b)]
    exact = _intra_vector_sub_chunks(*rows)
    return scores.flatten(0, -3).index_copy(0, strong, exact).view(scores.shape)


def _intra_vector_sub_chunks(q: Tensor, k: Tensor, b: Tensor) -> Tensor:
    """`_intra_vector`'s scores on `(..., C, K)` chunks with every exponent ≤ 0, for any decay.

    Keys in earlier sub-chunks meet each query sub-chunk through its first position r: the factors
    `exp(b_i - b_r)` and `exp(b_r - b_j)` are both ≤ 1. The diagonal sub-chunks are formed elementwise.
    """
    size = q.shape[-2]
    sub = SUB_CHUNK if size % SUB_CHUNK == 0 else size
    parts = size // sub
    starts = torch.arange(0, size, sub, device=q.device)
    positions = torch.arange(size, device=q.device)
    leading = b.index_select(-2, starts).unsqueeze(-2)                 # (..., P, 1, K): b at each r
    q_sub = q.unflatten(-2, (parts, sub))                              # (..., P, c, K)
    b_sub = b.unflatten(-2, (parts, sub))
    q_scaled = q_sub * (b_sub - leading).exp()
    earlier = (positions[None, :] < starts[:, None])[:, :, None]       # (P, C, 1): key j before sub-chunk p
    key_exponent = (leading - b.unsqueeze(-3)).masked_fill(~earlier, float("-inf"))
    k_scaled = k.unsqueeze(-3) * key_exponent.exp()                    # (..., P, C, K)
    scores = q_scaled @ k_scaled.transpose(-1, -2)                     # (..., P, c, C)

    visible = torch.ones(sub, sub, dtype=torch.bool, device=q.device).tril()[:, :, None]
    exponent = (b_sub.unsqueeze(-2) - b_sub.unsqueeze(-3)).masked_fill(~visible, float("-inf"))
    k_sub = k.unflatten(-2, (parts, sub))
    diagonal = (q_sub.unsqueeze(-2) * k_sub.unsqueeze(-3) * exponent.exp()).sum(-1)   # (..., P, c, c)
    scores = scores.unflatten(-1, (parts, sub))                        # (..., P, c, P, c)
    eye = torch.eye(parts, dtype=torch.bool, device=q.device)[:, None, :, None]
    scores = torch.where(eye, diagonal.unsqueeze(-2), scores)
    return scores.flatten(-2).flatten(-3, -2)                          # (..., C, C)
