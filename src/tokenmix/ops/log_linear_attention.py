"""Log-linear attention: decayed linear attention with a Fenwick-tree hierarchy of states.

"Log-Linear Attention", Guo, Yang, Goel, Xing, Dao & Kim 2025, arXiv:2506.04761. The prefix of query t (positions
counted from 0) is split into buckets of sizes 1, 1, 2, 4, ...: token s ≤ t sits at level

    ℓ(t, s) = 0 if s = t,   else  ⌊log2(t XOR s)⌋ + 1
    (level ℓ ≥ 1 holds 2^(ℓ-1) tokens and is present iff bit ℓ-1 of t is set)

and each level has its own data-dependent weight λ_t^(ℓ) ≥ 0:

    o_t = Σ_{s≤t} λ_t^(ℓ(t,s)) exp(c_t - c_s) (q_t · k_s) v_s            (c the cumulative scalar log-decay, as Mamba-2)

i.e. `O = (Q Kᵀ ⊙ M^S ⊙ M^H) V` with the semiseparable decay mask M^S and the hierarchical mask M^H. The state is one
`(K, V)` matrix per level, `(B, H, num_levels, K, V)`; levels at or above `num_levels - 1` share the top one, so a
state of `num_levels` matrices serves `2^(num_levels-1)` tokens exactly and stays finite beyond.

Forms (`impl`): `reference` (the masked quadratic form above); `recurrent` (per token: the levels the Fenwick
increment of t carries over merge into one, everything decays, the token becomes level 0; the streaming form);
`chunk` (chunks of C = 2^c tokens aligned to absolute positions: inside a chunk the masked form with levels ≤ c;
between chunks ℓ(t, s) = c + ℓ(T, S) for chunk indices T, S, so the same Fenwick recurrence runs over chunk
states — O(L C + (L / C) log L) work; unaligned head and ragged tail tokens go through `recurrent`).
`start` is the absolute position of the first token (the hierarchy depends on it); the initial state is the one
left after token `start - 1`, whose level ℓ' reaches a later t at level max(ℓ(t, start-1), ℓ') (the top level
when `start = 0`: a state carried into position 0 is older than any bucket).

`log_linear_delta_rule` is Log-Linear Gated DeltaNet (the paper's Sec. 3.3): the same hierarchical mask over the
gated delta rule's attention matrix, `O = (A ⊙ M^S ⊙ M^H) V` with `A ⊙ M^S` Gated DeltaNet's matrix
`W_ts = β_s q_tᵀ Φ(t, s) k_s`, `Φ(t, s) = A_t ⋯ A_{s+1}`, `A_r = a_r (I - β_r k_r k_rᵀ)`:

    o_t = Σ_{s≤t} λ_t^(ℓ(t,s)) β_s q_tᵀ Φ(t, s) k_s v_s.

Every level's state takes the full transition `A_t` (sums commute with it, so the Fenwick merges are unchanged);
the new token `β_t k_t v_tᵀ` enters level 0. Forms: `reference` (the matrix W, from `ops.delta_rule`, times the
hierarchical mask), `recurrent`, and `chunk` (the chunk form above with the delta rule's WY summaries per chunk:
see `_chunk`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops import delta_rule as _delta
from tokenmix.ops._checks import check_head_tensors, check_impl, compute_dtype

IMPLS = ("reference", "recurrent", "chunk")


def fenwick_level(t: Tensor, s: Tensor, num_levels: int) -> Tensor:
    """min(ℓ(t, s), num_levels - 1) for integer tensors (broadcast): the bit length of t XOR s, counted exactly."""
    x = torch.bitwise_xor(t, s)
    level = torch.zeros_like(x)
    for bit in range(num_levels - 1):
        level = level + (torch.bitwise_right_shift(x, bit) > 0).long()
    return level


def log_linear_attention(q: Tensor, k: Tensor, v: Tensor, level_weights: Tensor, log_decay: Tensor | None = None,
                         *, scale: float | None = None, start: int = 0, initial_state: Tensor | None = None,
                         return_state: bool = False, impl: str = "auto", chunk_size: int = 64):
    """Log-linear attention on `(B, H, L, K)` q, k, `(B, H, L, V)` v, `level_weights` λ `(B, H, L, num_levels)`
    and a per-token scalar `log_decay` `(B, H, L)` (≤ 0) or None. Returns `o` or `(o, state)`, the state being
    `(B, H, num_levels, K, V)` in the compute dtype."""
    op = "log_linear_attention"
    check_impl(op, impl, ("auto", *IMPLS))
    check_head_tensors(op, q=q, k=k, v=v, level_weights=level_weights)
    batch, heads, length, key_dim = q.shape
    if k.shape != q.shape or v.shape[2] != length or level_weights.shape[2] != length:
        raise MixerInputError(f"{op}: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} and "
                              f"level_weights {tuple(level_weights.shape)} do not agree")
    num_levels = level_weights.shape[-1]
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise MixerInputError(f"{op}: start must be a non-negative integer, got {start!r}")
    dtype, out_dtype = compute_dtype(q, k, v), v.dtype
    scale = key_dim ** -0.5 if scale is None else scale
    q, k, v, lam = q.to(dtype) * scale, k.to(dtype), v.to(dtype), level_weights.to(dtype)
    if log_decay is None:
        g = q.new_zeros(batch, heads, length)
    else:
        if log_decay.shape != (batch, heads, length):
            raise MixerInputError(f"{op}: log_decay must have shape ({batch}, {heads}, {length}), "
                                  f"got {tuple(log_decay.shape)}")
        g = log_decay.to(dtype)
    state = q.new_zeros(batch, heads, num_levels, key_dim, v.shape[-1])
    if initial_state is not None:
        if initial_state.shape != state.shape:
            raise MixerInputError(f"{op}: initial_state must have shape {tuple(state.shape)}, "
                                  f"got {tuple(initial_state.shape)}")
        state = initial_state.to(dtype)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise MixerInputError(f"{op}: chunk_size must be a positive integer, got {chunk_size!r}")
    if impl == "auto":
        impl = "recurrent" if length <= 2 else "chunk"
    if impl == "chunk":
        o, state = _chunk(q, k, v, lam, g, state, start, 1 << (chunk_size.bit_length() - 1))
    else:
        o, state = (_reference if impl == "reference" else _recurrent)(q, k, v, lam, g, state, start)
    o = o.to(out_dtype)
    return (o, state) if return_state else o


def _previous_level(t: Tensor, start: int, num_levels: int) -> Tensor:
    """ℓ(t, start - 1), clamped; the top level for start = 0."""
    if start == 0:
        return torch.full_like(t, num_levels - 1)
    return fenwick_level(t, torch.tensor(start - 1, device=t.device), num_levels)


def _reference(q: Tensor, k: Tensor, v: Tensor, lam: Tensor, g: Tensor, state: Tensor,
               start: int) -> tuple[Tensor, Tensor]:
    length, num_levels = q.shape[2], lam.shape[-1]
    positions = torch.arange(start, start + length, device=q.device)
    level = fenwick_level(positions[:, None], positions[None, :], num_levels)       # (t, s)
    visible = positions[None, :] <= positions[:, None]
    c = g.cumsum(dim=2)
    decay = (c.unsqueeze(-1) - c.unsqueeze(-2)).masked_fill(~visible, float("-inf")).exp()
    weights = lam.gather(-1, level.expand(*lam.shape[:2], length, length))          # λ_t^(ℓ(t,s))
    o = (q @ k.transpose(-1, -2) * decay * weights) @ v
    last = positions[-1]
    final = torch.zeros_like(state)
    key_levels = fenwick_level(last, positions, num_levels)                          # (s,)
    contribution = k.unsqueeze(-1) * v.unsqueeze(-2) * (c[:, :, -1:] - c).exp()[..., None, None]
    final = final.index_add(2, key_levels, contribution)
    # the carried levels: level ℓ' reaches t at level max(ℓ(t, start-1), ℓ'), the top one when start = 0
    carried = torch.arange(num_levels, device=q.device)
    reached = torch.maximum(_previous_level(positions, start, num_levels)[:, None], carried[None, :])  # (t, ℓ')
    read = torch.einsum("bhtk,bhlkv->bhtlv", q, state)                              # q_tᵀ S0[ℓ']
    o = o + c.exp().unsqueeze(-1) * (lam.gather(-1, reached.expand(*lam.shape[:2], -1, -1)).unsqueeze(-1)
                                     * read).sum(3)
    final_reached = torch.maximum(_previous_level(last, start, num_levels), carried)
    final = final.index_add(2, final_reached, state * c[:, :, -1].exp()[..., None, None, None])
    return o, final


def _recurrent(q: Tensor, k: Tensor, v: Tensor, lam: Tensor, g: Tensor, state: Tensor,
               start: int) -> tuple[Tensor, Tensor]:
    num_levels = lam.shape[-1]
    top = num_levels - 1
    outputs = []
    # per-token views taken once (indexing `[:, :, i]` in the loop would make backward O(L²))
    q, k, v, lam, g = (x.unbind(2) for x in (q, k, v, lam, g))
    for i in range(len(q)):
        t = start + i
        # the Fenwick increment t-1 -> t carries levels 0..j into level j + 1 (clamped; all of them into t = 0)
        target = top if t == 0 else min((t & -t).bit_length(), top)
        if target > 0:
            merged = state[:, :, :target + 1].sum(2, keepdim=True)
            state = torch.cat([torch.zeros_like(state[:, :, :target]), merged, state[:, :, target + 1:]], dim=2)
        state = g[i].exp()[..., None, None, None] * state
        token = (k[i].unsqueeze(-1) * v[i].unsqueeze(-2)).unsqueeze(2)
        state = torch.cat([state[:, :, :1] + token, state[:, :, 1:]], dim=2)
        read = torch.einsum("bhk,bhlkv->bhlv", q[i], state)
        outputs.append((lam[i].unsqueeze(-1) * read).sum(2))
    return torch.stack(outputs, dim=2), state


def _chunk(q: Tensor, k: Tensor, v: Tensor, lam: Tensor, g: Tensor, state: Tensor, start: int,
           size: int, beta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Aligned chunks of C = 2^c tokens; with `beta`, the gated delta rule (`log_linear_delta_rule`).

    Each chunk is summarized by four things, built for all chunks at once: the intra-chunk attention matrix (before
    the level weights), the effective queries that read the state entering the chunk, the chunk's transition of a
    state (a scalar decay, or the K × K matrix Φ(end, start) of the delta rule) and its own contribution to the
    state at its end. For the delta rule they come from the WY form of `ops.delta_rule`: with the unit lower
    triangular `T = I + tril(diag(β) K Kᵀ ⊙ Γ, -1)` (Γ the decays) and `P = T⁻¹ diag(β)`, the intra matrix is
    `tril(Q Kᵀ ⊙ Γ) P`, the effective queries `Q ⊙ exp b - tril(Q Kᵀ ⊙ Γ) P (K ⊙ exp b)`, the transition
    `exp(b_C) I - K̃ᵀ P (K ⊙ exp b)` and the contribution `K̃ᵀ P V`, `K̃ = K ⊙ exp(b_C - b)`; token s's own image at
    the end of its chunk, Φ(C, s) β_s k_s, is column s of `K̃ᵀ P`.
    """
    length, num_levels = q.shape[2], lam.shape[-1]
    top, bits = num_levels - 1, size.bit_length() - 1                    # chunk size C = 2^bits

    def loop(lo: int, hi: int, state: Tensor) -> tuple[Tensor, Tensor]:
        part = [t[:, :, lo:hi] for t in (q, k, v)]
        if beta is None:
            return _recurrent(*part, lam[:, :, lo:hi], g[:, :, lo:hi], state, start + lo)
        return _delta_recurrent(*part, beta[:, :, lo:hi], lam[:, :, lo:hi], g[:, :, lo:hi], state, start + lo)

    head = min(-start % size, length)
    chunks = (length - head) // size
    if chunks == 0:
        return loop(0, length, state)
    outputs = []
    if head:
        o, state = loop(0, head, state)
        outputs.append(o)
    body = slice(head, head + chunks * size)
    first = (start + head) // size                                        # absolute index of the first chunk
    qc, kc, vc, lc = (t[:, :, body].unflatten(2, (chunks, size)) for t in (q, k, v, lam))
    b = g[:, :, body].unflatten(2, (chunks, size)).cumsum(dim=3).unsqueeze(-1)    # (B, H, N, C, 1), ≤ 0
    b_last = b[:, :, :, -1:]                                                        # (B, H, N, 1, 1)

    offsets = torch.arange(size, device=q.device)
    visible = offsets[None, :] <= offsets[:, None]
    decay = (b - b.transpose(-1, -2)).masked_fill(~visible, float("-inf")).exp()    # exp(b_t - b_s), s ≤ t
    scores = qc @ kc.transpose(-1, -2) * decay
    k_to_end = kc * (b_last - b).exp()                                              # K̃
    if beta is None:
        intra, queries, transition = scores, qc * b.exp(), b_last.exp()
        updates = k_to_end.transpose(-1, -2) @ vc                                   # (B, H, N, K, V)
        images = k_to_end[:, :, -1]                                                 # (B, H, C, K)
    else:
        bc = beta[:, :, body].unflatten(2, (chunks, size)).unsqueeze(-1)            # (B, H, N, C, 1)
        eye = torch.eye(size, dtype=q.dtype, device=q.device)
        system = eye + bc * (kc @ kc.transpose(-1, -2)) * decay * (visible & ~eye.bool())
        solved = torch.linalg.solve_triangular(system, torch.diag_embed(bc.squeeze(-1)), upper=False,
                                               unitriangular=True)                  # P = T⁻¹ diag(β)
        w_k = solved @ (kc * b.exp())
        intra, queries = scores @ solved, qc * b.exp() - scores @ w_k
        key_eye = torch.eye(kc.shape[-1], dtype=q.dtype, device=q.device)
        transition = b_last.exp() * key_eye - k_to_end.transpose(-1, -2) @ w_k    # (B, H, N, K, K)
        updates = k_to_end.transpose(-1, -2) @ (solved @ vc)
        images = (solved.transpose(-1, -2) @ k_to_end)[:, :, -1]

    # Intra-chunk: levels ≤ c depend only on offsets inside an aligned chunk.
    level = fenwick_level(offsets[:, None], offsets[None, :], num_levels)          # (C, C)
    weights = lc.gather(-1, level.expand(*lc.shape[:3], size, size))
    o = (intra * weights) @ vc

    # Inter-chunk: the Fenwick recurrence over chunk states; chunk level ℓ_c is token level min(c + ℓ_c, top).
    top_c = max(top - bits, 1)
    z = state.new_zeros(*state.shape[:2], top_c + 1, *state.shape[3:])
    if first == 0:
        z[:, :, top_c] = state.sum(2)                                     # carried into position 0: oldest
    else:
        z[:, :, 0] = state[:, :, :bits + 1].sum(2)                        # levels 0..c of token first·C - 1: its chunk
        for level_c in range(1, top_c + 1):
            z[:, :, level_c] = state[:, :, bits + level_c:].sum(2) if level_c == top_c else state[:, :, bits + level_c]
    entering = []
    transitions, chunk_updates = transition.unbind(2), updates.unbind(2)  # once: `[:, :, n]` makes backward O(N²)
    for n in range(chunks):
        chunk_index = first + n
        target = top_c if chunk_index == 0 else min((chunk_index & -chunk_index).bit_length(), top_c)
        z = torch.cat([torch.zeros_like(z[:, :, :target]), z[:, :, :target + 1].sum(2, keepdim=True),
                       z[:, :, target + 1:]], dim=2)
        entering.append(z)
        if transition.shape[-2:] == (1, 1):                                # a scalar decay (or K = 1)
            z = transitions[n].unsqueeze(2) * z
        else:
            z = torch.einsum("bhij,bhljv->bhliv", transitions[n], z)
        z = torch.cat([z[:, :, :1] + chunk_updates[n].unsqueeze(2), z[:, :, 1:]], dim=2)
    entering = torch.stack(entering, dim=2)[:, :, :, 1:]                  # (B, H, N, top_c, K, V)
    token_level = torch.clamp(torch.arange(1, top_c + 1, device=q.device) + bits, max=top)
    read = torch.einsum("bhnck,bhnlkv->bhnclv", queries, entering)
    o = o + (lc[..., token_level].unsqueeze(-1) * read).sum(-2)
    outputs.append(o.flatten(2, 3))

    # The token-level state after the body: the last chunk's tokens split by level, older chunks by chunk level.
    final = torch.zeros_like(state)
    key_levels = fenwick_level(torch.tensor(size - 1, device=q.device), offsets, num_levels)
    final = final.index_add(2, key_levels, images.unsqueeze(-1) * vc[:, :, -1].unsqueeze(-2))
    final = final.index_add(2, token_level, z[:, :, 1:])
    state = final
    end = head + chunks * size
    if end < length:
        o, state = loop(end, length, state)
        outputs.append(o)
    return torch.cat(outputs, dim=2), state


DELTA_IMPLS = ("reference", "recurrent", "chunk")


def log_linear_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, level_weights: Tensor,
                          log_decay: Tensor | None = None, *, scale: float | None = None, start: int = 0,
                          initial_state: Tensor | None = None, return_state: bool = False, impl: str = "auto",
                          chunk_size: int = 64):
    """Log-linear gated delta rule on `(B, H, L, K)` q, k (keys as given: the mixer normalizes them), `(B, H, L, V)`
    v, `(B, H, L)` β, λ `(B, H, L, num_levels)` and a per-token `log_decay` `(B, H, L)` (≤ 0) or None. Returns `o`
    or `(o, state)`, the state `(B, H, num_levels, K, V)` in the compute dtype; `start` as in
    `log_linear_attention`."""
    op = "log_linear_delta_rule"
    check_impl(op, impl, ("auto", *DELTA_IMPLS))
    check_head_tensors(op, q=q, k=k, v=v, level_weights=level_weights)
    batch, heads, length, key_dim = q.shape
    if k.shape != q.shape or v.shape[2] != length or level_weights.shape[2] != length:
        raise MixerInputError(f"{op}: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} and "
                              f"level_weights {tuple(level_weights.shape)} do not agree")
    if not isinstance(beta, Tensor) or not beta.is_floating_point() or beta.shape != (batch, heads, length):
        raise MixerInputError(f"{op}: beta must be a floating tensor of shape ({batch}, {heads}, {length}), "
                              f"got {tuple(getattr(beta, 'shape', ()))}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise MixerInputError(f"{op}: start must be a non-negative integer, got {start!r}")
    dtype, out_dtype = compute_dtype(q, k, v, beta), v.dtype
    scale = key_dim ** -0.5 if scale is None else scale
    q, k, v, beta, lam = q.to(dtype) * scale, k.to(dtype), v.to(dtype), beta.to(dtype), level_weights.to(dtype)
    if log_decay is None:
        g = q.new_zeros(batch, heads, length)
    else:
        if log_decay.shape != (batch, heads, length):
            raise MixerInputError(f"{op}: log_decay must have shape ({batch}, {heads}, {length}), "
                                  f"got {tuple(log_decay.shape)}")
        g = log_decay.to(dtype)
    state = q.new_zeros(batch, heads, lam.shape[-1], key_dim, v.shape[-1])
    if initial_state is not None:
        if initial_state.shape != state.shape:
            raise MixerInputError(f"{op}: initial_state must have shape {tuple(state.shape)}, "
                                  f"got {tuple(initial_state.shape)}")
        state = initial_state.to(dtype)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise MixerInputError(f"{op}: chunk_size must be a positive integer, got {chunk_size!r}")
    if impl == "auto":
        impl = "recurrent" if length <= 2 else "chunk"
    if impl == "reference":
        o, state = _delta_reference(q, k, v, beta, lam, g, state, start)
    elif impl == "recurrent":
        o, state = _delta_recurrent(q, k, v, beta, lam, g, state, start)
    else:
        o, state = _chunk(q, k, v, lam, g, state, start, 1 << (chunk_size.bit_length() - 1), beta=beta)
    o = o.to(out_dtype)
    return (o, state) if return_state else o


def _delta_reference(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, lam: Tensor, g: Tensor, state: Tensor,
                     start: int) -> tuple[Tensor, Tensor]:
    length, num_levels = q.shape[2], lam.shape[-1]
    weights, carried = _delta.attention_weights(q, k, beta, g)          # (B, H, L + K, L), (B, H, L + K, K)
    positions = torch.arange(start, start + length, device=q.device)
    level = fenwick_level(positions[:, None], positions[None, :], num_levels)       # (t, s)
    mask = lam.gather(-1, level.expand(*lam.shape[:2], length, length))             # λ_t^(ℓ(t,s))
    o = (weights[:, :, :length] * mask) @ v
    levels = torch.arange(num_levels, device=q.device)
    reached = torch.maximum(_previous_level(positions, start, num_levels)[:, None], levels[None, :])  # (t, ℓ')
    read = torch.einsum("bhtk,bhlkv->bhtlv", carried[:, :, :length], state)        # q_tᵀ Φ(t, 0) S0[ℓ']
    o = o + (lam.gather(-1, reached.expand(*lam.shape[:2], -1, -1)).unsqueeze(-1) * read).sum(3)
    # the final state by level: key images Φ(L, s) β_s k_s are the unit queries' rows, Φ(L, 0) their carried part
    key_levels = fenwick_level(positions[-1], positions, num_levels)                # (s,)
    one_hot = (key_levels[:, None] == levels[None, :]).to(q.dtype)                  # (s, ℓ)
    final = torch.einsum("bhks,sl,bhsv->bhlkv", weights[:, :, length:], one_hot, v)
    final_reached = torch.maximum(_previous_level(positions[-1], start, num_levels), levels)
    carried_state = torch.einsum("bhij,bhljv->bhliv", carried[:, :, length:], state)
    final = final.index_add(2, final_reached, carried_state)
    return o, final


def _delta_recurrent(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, lam: Tensor, g: Tensor, state: Tensor,
                     start: int) -> tuple[Tensor, Tensor]:
    top = lam.shape[-1] - 1
    outputs = []
    q, k, v, beta, lam, g = (x.unbind(2) for x in (q, k, v, beta, lam, g))  # once: `[:, :, i]` makes backward O(L²)
    for i in range(len(q)):
        t = start + i
        target = top if t == 0 else min((t & -t).bit_length(), top)          # the Fenwick carry, as above
        if target > 0:
            merged = state[:, :, :target + 1].sum(2, keepdim=True)
            state = torch.cat([torch.zeros_like(state[:, :, :target]), merged, state[:, :, target + 1:]], dim=2)
        k_t = k[i][:, :, None, :, None]                                        # (B, H, 1, K, 1)
        b_t = beta[i][:, :, None, None, None]
        # every level: S ← a_t (I - β_t k_t k_tᵀ) S
        state = g[i].exp()[..., None, None, None] * (state - b_t * k_t * (k_t.transpose(-1, -2) @ state))
        token = (b_t * k_t * v[i][:, :, None, None, :])                        # (B, H, 1, K, V)
        state = torch.cat([state[:, :, :1] + token, state[:, :, 1:]], dim=2)
        read = torch.einsum("bhk,bhlkv->bhlv", q[i], state)
        outputs.append((lam[i].unsqueeze(-1) * read).sum(2))
    return torch.stack(outputs, dim=2), state
