"""The (gated) delta rule, the family op of DeltaNet, Gated DeltaNet and DeltaProduct.

    S_t = a_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,      o_t = S_tᵀ (scale · q_t)

with `S_t: (K, V)` per head (the transpose of the papers' `V × K` matrix, as in `ops/linear_attention.py`),
`β_t` a per-token scalar and the decay `a_t = exp(log_decay_t)` absent (DeltaNet, "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", Yang et al. 2024, arXiv:2406.06484), a fixed scalar per
head `(H,)`, or a per-token scalar `(B, H, L)` (Gated DeltaNet, "Gated Delta Networks: Improving Mamba2 with Delta
Rule", Yang et al. 2024, arXiv:2412.06464). DeltaProduct (arXiv:2502.10297) is this op over `n_h` sub-steps per
token, with the decay only on the first sub-step: the mixer interleaves them, the op needs nothing more.

Forms (`impl`):

* `reference`: the unrolled closed form. With the transition `A_t = a_t (I - β_t k_t k_tᵀ)` and
  `Φ(t, s) = A_t A_{t-1} ⋯ A_{s+1}` (identity when `t = s`),

      S_t = Φ(t, 0) S_0 + Σ_{s≤t} Φ(t, s) β_s k_s v_sᵀ,   so   o_t = Σ_{s≤t} W_ts v_s + S_0ᵀ Φ(t, 0)ᵀ q_t,
      W_ts = β_s q_tᵀ Φ(t, s) k_s.

  It builds the attention matrix `W` explicitly by carrying every query backwards through the transitions
  (`Φ(t, s-1)ᵀ q_t = A_sᵀ Φ(t, s)ᵀ q_t`; `A_s` is symmetric). The final state is read by K extra queries, the
  unit vectors at the last position (`e_iᵀ S_L` is row i of `S_L`). It shares no code path with the forward
  recurrence of states, so it checks `recurrent` and `chunk` independently. O(L² K) time, O(L²) memory.
* `recurrent`: the token loop `S ← a S;  S ← S + β k (v - Sᵀ k)ᵀ` (the streaming form).
* `chunk`: the WY / UT representation. Inside a chunk with entering state `S_0` and cumulative log-decay `b_t`,
  the update reads `S_t = a_t S_{t-1} + k_t u_tᵀ` with `u_t = β_t (v_t - a_t S_{t-1}ᵀ k_t)`, hence

      (I + A) U = diag(β) (V - diag(exp b) K S_0),    A_tj = β_t exp(b_t - b_j) k_tᵀ k_j  (j < t),

  a unit lower-triangular system solved once per chunk for both right-hand sides (`U = W_v - W_k S_0`, all chunks
  in parallel); then the chunks pass the state in order:
  `o = (Q ⊙ exp b) S_0 + tril(Q Kᵀ ⊙ exp(b_t - b_j)) U`, `S_C = exp(b_C) S_0 + (K ⊙ exp(b_C - b))ᵀ U`.
  Every exponent is ≤ 0, so strong decays neither overflow nor lose the state.

Inputs in bf16/fp16 accumulate in float32.

`impl="auto"` takes `recurrent` for L ≤ 2 and `chunk` otherwise; on CUDA with flash-linear-attention installed, a
bf16/fp16 call runs on its `chunk_delta_rule` (no decay) or `chunk_gated_delta_rule` kernel instead
(`tokenmix.ops.flash_linear_attention`, which states the mapping and when it applies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops import flash_linear_attention as flash
from tokenmix.ops._checks import check_head_tensors, check_impl, compute_dtype

IMPLS = ("reference", "recurrent", "chunk")


def delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, log_decay: Tensor | float | None = None, *,
               scale: float | None = None, initial_state: Tensor | None = None, return_state: bool = False,
               impl: str = "auto", chunk_size: int = 64):
    """The gated delta rule on `(B, H, L, K)` q, k, `(B, H, L, V)` v and `(B, H, L)` β.

    `log_decay` (≤ 0) is None, a scalar, `(H,)` or `(B, H, L)`. Returns `o: (B, H, L, V)` in the dtype of `v`, or
    `(o, final_state)` with `return_state=True`; the state is `(B, H, K, V)` in the compute dtype (float32 for half
    inputs). Keys are used as given: the mixers normalize them (the transition is contractive when ‖k‖ = 1 and
    β ∈ [0, 2]).
    """
    op = "delta_rule"
    check_impl(op, impl, ("auto", *IMPLS))
    check_head_tensors(op, q=q, k=k, v=v)
    batch, heads, length, key_dim = q.shape
    if k.shape != q.shape or v.shape[2] != length:
        raise MixerInputError(f"{op}: q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not agree")
    if not isinstance(beta, Tensor) or not beta.is_floating_point() or beta.shape != (batch, heads, length):
        shape = tuple(beta.shape) if isinstance(beta, Tensor) else type(beta).__name__
        raise MixerInputError(f"{op}: beta must be a floating tensor of shape ({batch}, {heads}, {length}), "
                              f"got {shape}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise MixerInputError(f"{op}: chunk_size must be a positive integer, got {chunk_size!r}")
    dtype, out_dtype = compute_dtype(q, k, v, beta), v.dtype
    scale = key_dim ** -0.5 if scale is None else scale
    g = _canonical_decay(op, log_decay, batch, heads, length, dtype, q.device)

    state = torch.zeros(batch, heads, key_dim, v.shape[-1], dtype=dtype, device=q.device)
    if initial_state is not None:
        if initial_state.shape != state.shape:
            raise MixerInputError(f"{op}: initial_state must have shape {tuple(state.shape)}, "
                                  f"got {tuple(initial_state.shape)}")
        state = initial_state.to(dtype)

    if impl == "auto" and flash.routes_delta_rule(q, k, v):
        o, state = flash.delta_rule(q, k, v, beta, g, scale=scale,
                                    initial_state=None if initial_state is None else state, return_state=return_state)
        return (o, state) if return_state else o
    q, k, v, beta = q.to(dtype) * scale, k.to(dtype), v.to(dtype), beta.to(dtype)
    if impl == "auto":
        impl = "recurrent" if length <= 2 else "chunk"
    if impl == "reference":
        o, state = _reference(q, k, v, beta, g, state)
    elif impl == "recurrent":
        o, state = _recurrent(q, k, v, beta, g, state)
    else:
        o, state = _chunk(q, k, v, beta, g, state, chunk_size)
    o = o.to(out_dtype)
    return (o, state) if return_state else o


def _canonical_decay(op: str, log_decay, batch: int, heads: int, length: int, dtype: torch.dtype,
                     device: torch.device) -> Tensor | None:
    """Log-decay as `(B|1, H, L)`, or None."""
    if log_decay is None:
        return None
    g = torch.as_tensor(log_decay, dtype=dtype, device=device)
    if g.ndim == 0:
        return g.expand(1, heads, length)
    if g.shape == (heads,):
        return g.view(1, heads, 1).expand(1, heads, length)
    if g.shape == (batch, heads, length):
        return g
    raise MixerInputError(f"{op}: log_decay must be a scalar, ({heads},) or ({batch}, {heads}, {length}); "
                          f"got shape {tuple(g.shape)}")


def _reference(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None,
               state: Tensor) -> tuple[Tensor, Tensor]:
    length = q.shape[2]
    weights, carried = attention_weights(q, k, beta, g)
    out = weights @ v + carried @ state                   # carried is Φ(t, 0)ᵀ q_t
    return out[:, :, :length], out[:, :, length:]


def attention_weights(q: Tensor, k: Tensor, beta: Tensor, g: Tensor | None) -> tuple[Tensor, Tensor]:
    """The delta rule's attention matrix, built backwards through the transitions (see `reference` above).

    Returns `W: (B, H, L + K, L)` with `W_ts = β_s q_tᵀ Φ(t, s) k_s` (zero for s > t), the last K rows being the
    unit queries at the last position (so `W[L + i, s] = β_s (Φ(L, s) k_s)_i`), and `R: (B, H, L + K, K)` with row
    t equal to `Φ(t, 0)ᵀ q_t` (the last K rows form `Φ(L, 0)`). `g` is the canonical `(B|1, H, L)` log-decay."""
    batch, heads, length, key_dim = q.shape
    eye = torch.eye(key_dim, dtype=q.dtype, device=q.device).expand(batch, heads, key_dim, key_dim)
    r = torch.cat([q, eye], dim=2)                       # r_j = Φ(t_j, s)ᵀ q_j as s runs backwards
    position = torch.cat([torch.arange(length, device=q.device),
                          torch.full((key_dim,), length - 1, device=q.device)])
    decay = torch.ones_like(beta) if g is None else g.exp().expand_as(beta)
    columns = []
    for s in reversed(range(length)):
        reached = (position >= s)[:, None]               # queries at t ≥ s see key s
        w = beta[:, :, s, None, None] * (r @ k[:, :, s, :, None])                  # β_s q_tᵀ Φ(t, s) k_s
        w = w * reached
        columns.append(w)
        applied = decay[:, :, s, None, None] * (r - w * k[:, :, s, None, :])       # A_sᵀ r
        r = torch.where(reached, applied, r)
    return torch.cat(columns[::-1], dim=-1), r            # (B, H, L + K, L); r is now Φ(t, 0)ᵀ q_t


def _recurrent(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None,
               state: Tensor) -> tuple[Tensor, Tensor]:
    outputs = []
    # per-token views taken once: indexing `[:, :, t]` in the loop would make backward O(L²) (a full-size zero
    # tensor per token)
    g_t = g.unbind(2) if g is not None else None
    for t, (q_t, k_t, v_t, beta_t) in enumerate(zip(q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2))):
        if g is not None:
            state = g_t[t][:, :, None, None].exp() * state
        error = v_t - (k_t.unsqueeze(-2) @ state).squeeze(-2)       # v_t - Sᵀ k_t
        state = state + beta_t[:, :, None, None] * k_t.unsqueeze(-1) * error.unsqueeze(-2)
        outputs.append((q_t.unsqueeze(-2) @ state).squeeze(-2))
    return torch.stack(outputs, dim=2), state


def _chunk(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None, state: Tensor,
           chunk_size: int) -> tuple[Tensor, Tensor]:
    length = q.shape[2]
    size = min(chunk_size, length)
    pad = -length % size
    if pad:  # zero β and zero log-decay make a padded token the identity transition with no write
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        beta = F.pad(beta, (0, pad))
        g = None if g is None else F.pad(g.expand(*beta.shape[:2], length), (0, pad))
    chunks = (length + pad) // size
    q, k, v = (t.unflatten(2, (chunks, size)) for t in (q, k, v))     # (B, H, N, C, *)
    beta = beta.unflatten(2, (chunks, size)).unsqueeze(-1)             # (B, H, N, C, 1)
    if g is None:  # no decay: every factor below is 1, and the masks are the triangles themselves
        q_from_start, k_from_start, k_to_end, chunk_decay = q, k, k.transpose(-1, -2), None
        gram, scores = (k @ k.transpose(-1, -2)), (q @ k.transpose(-1, -2)).tril()
    else:
        b = g.unflatten(2, (chunks, size)).cumsum(dim=3).unsqueeze(-1)  # log-decay from chunk start, ≤ 0
        b_last = b[:, :, :, -1:]
        visible = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
        relative = (b - b.transpose(-1, -2)).masked_fill(~visible, float("-inf")).exp()  # exp(b_t - b_j), j ≤ t
        from_start = b.exp()
        q_from_start, k_from_start = q * from_start, k * from_start
        k_to_end = (k * (b_last - b).exp()).transpose(-1, -2)           # (B, H, N, K, C)
        chunk_decay = b_last.exp()                                      # (B, H, N, 1, 1)
        gram = (k @ k.transpose(-1, -2)) * relative
        scores = (q @ k.transpose(-1, -2)) * relative                   # causal, decayed, diagonal included
    system = (beta * gram).tril(-1) + torch.eye(size, dtype=q.dtype, device=q.device)
    # U = W_v - W_k S_0 for every chunk at once: one triangular solve for both right-hand sides.
    value_dim = v.shape[-1]
    w_v, w_k = torch.linalg.solve_triangular(system, beta * torch.cat([v, k_from_start], dim=-1),
                                             upper=False, unitriangular=True).split([value_dim, k.shape[-1]], -1)

    # Only the state passing is sequential (two small matmuls per chunk); the outputs are batched after it.
    entering, updates = [], []
    # unbound once: indexing `[:, :, n]` in the loop would give backward a full-size zero tensor per chunk
    decays = (None,) * chunks if chunk_decay is None else chunk_decay.unbind(2)
    for w_v_n, w_k_n, decay_n, k_to_end_n in zip(w_v.unbind(2), w_k.unbind(2), decays, k_to_end.unbind(2)):
        entering.append(state)
        updates.append(w_v_n - w_k_n @ state)
        state = (state if decay_n is None else decay_n * state) + k_to_end_n @ updates[-1]
    entering, u = torch.stack(entering, dim=2), torch.stack(updates, dim=2)    # (B, H, N, K, V), (B, H, N, C, V)
    o = q_from_start @ entering + scores @ u
    o = o.flatten(2, 3)[:, :, :length]
    return o, state
