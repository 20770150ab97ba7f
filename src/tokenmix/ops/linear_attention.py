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
`(B, H, K, V + 1)` whose last column is `z`.

Forms (`impl`):
* `reference`: the masked quadratic form `o_t = Σ_{s≤t} (q_t ⊙ exp(c_t - c_s))·k_s v_s` with `c` the cumulative
  log-decay; it materializes an `(L, L, K)` tensor, so it is for checking, not for speed;
* `recurrent`: the token loop above (the streaming form);
* `chunk`: chunkwise parallel: masked matmuls inside chunks, the state passed between chunks. Every exponent it
  takes is ≤ 0, so strong decays neither overflow nor lose the state. Vector decays use a second level of
  sub-chunks inside a chunk (as in the GLA paper's secondary chunking) so no `(C, C, K)` tensor is built.

`causal=False` is the global form `o_t = (Σ_s k_s v_sᵀ)ᵀ q_t` (no decay, no state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.ops._checks import check_heads, check_impl, compute_dtype

IMPLS = ("reference", "recurrent", "chunk")
SUB_CHUNK = 16


def linear_attention(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | float | None = None, *,
                     scale: float | None = None, causal: bool = True, normalize: bool = False, eps: float = 1e-6,
                     initial_state: Tensor | None = None, return_state: bool = False, impl: str = "auto",
                     chunk_size: int = 64):
    """Decayed linear attention on `(B, H, L, K)` q, k and `(B, H, L, V)` v.

    Returns `o: (B, H, L, V)` in the dtype of `v`, or `(o, final_state)` with `return_state=True`; the state is
    `(B, H, K, V)` (`V + 1` with `normalize`) in the compute dtype (float32 for half inputs).
    """
    op = "linear_attention"
    check_impl(op, impl, ("auto", *IMPLS))
    check_heads(op, q=q, k=k, v=v)
    batch, heads, length, key_dim = q.shape
    if k.shape != q.shape or v.shape[2] != length:
        raise MixerInputError(f"{op}: q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not agree")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise MixerInputError(f"{op}: chunk_size must be a positive integer, got {chunk_size!r}")
    dtype, out_dtype = compute_dtype(q, k, v), v.dtype
    scale = key_dim ** -0.5 if scale is None else scale
    q, k, v = q.to(dtype) * scale, k.to(dtype), v.to(dtype)
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    value_dim = v.shape[-1]

    if not causal:
        if log_decay is not None or initial_state is not None or return_state:
            raise MixerInputError(f"{op}: causal=False is the global form: no decay, no initial or returned state")
        o = _global(q, k, v, impl)
        return _finish(o, normalize, eps, None, False, out_dtype)

    g = _canonical_decay(op, log_decay, batch, heads, length, key_dim, dtype, q.device)
    state = torch.zeros(batch, heads, key_dim, value_dim, dtype=dtype, device=q.device)
    if initial_state is not None:
        if initial_state.shape != state.shape:
            raise MixerInputError(f"{op}: initial_state must have shape {tuple(state.shape)}, "
                                  f"got {tuple(initial_state.shape)}")
        state = initial_state.to(dtype)

    if impl == "auto":
        impl = "recurrent" if length <= 2 else "chunk"
    if impl == "reference":
        o, state = _reference(q, k, v, g, state)
    elif impl == "recurrent":
        o, state = _recurrent(q, k, v, g, state)
    else:
        o, state = _chunk(q, k, v, g, state, chunk_size)
    return _finish(o, normalize, eps, state, return_state, out_dtype)


def _finish(o: Tensor, normalize: bool, eps: float, state: Tensor | None, return_state: bool, out_dtype):
    if normalize:
        o = o[..., :-1] / (o[..., -1:] + eps)
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


def _global(q: Tensor, k: Tensor, v: Tensor, impl: str) -> Tensor:
    if impl == "reference":
        return torch.einsum("bhts,bhsv->bhtv", torch.einsum("bhtk,bhsk->bhts", q, k), v)
    return q @ (k.transpose(-1, -2) @ v)


def _reference(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, state: Tensor) -> tuple[Tensor, Tensor]:
    length = q.shape[2]
    if g is None:
        g = torch.zeros_like(q[..., :1])
    c = g.cumsum(dim=2)                                          # c_t = Σ_{r≤t} log a_r
    visible = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    exponent = (c.unsqueeze(3) - c.unsqueeze(2)).masked_fill(~visible[:, :, None], float("-inf"))
    scores = (q.unsqueeze(3) * k.unsqueeze(2) * exponent.exp()).sum(-1)     # (B, H, t, s)
    o = scores @ v + (q * c.exp()) @ state
    c_last = c[:, :, -1:]
    final = c_last.transpose(2, 3).exp() * state + (k * (c_last - c).exp()).transpose(2, 3) @ v
    return o, final


def _recurrent(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, state: Tensor) -> tuple[Tensor, Tensor]:
    outputs = []
    for t in range(q.shape[2]):
        if g is not None:
            state = g[:, :, t].exp().unsqueeze(-1) * state
        state = state + k[:, :, t].unsqueeze(-1) * v[:, :, t].unsqueeze(-2)
        outputs.append((q[:, :, t].unsqueeze(-2) @ state).squeeze(-2))
    return torch.stack(outputs, dim=2), state


def _chunk(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, state: Tensor,
           chunk_size: int) -> tuple[Tensor, Tensor]:
    batch, heads, length, _ = q.shape
    size = min(chunk_size, length)
    pad = -length % size
    if g is None:
        g = q.new_zeros(1, 1, length, 1)
    if pad:  # zero keys and zero log-decay leave the state untouched, so padding changes nothing
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        g = F.pad(g, (0, 0, 0, pad))
    chunks = (length + pad) // size
    q, k, v = (t.unflatten(2, (chunks, size)) for t in (q, k, v))   # (B, H, N, C, *)
    b = g.unflatten(2, (chunks, size)).cumsum(dim=3)                 # log-decay from chunk start, ≤ 0
    b_last = b[:, :, :, -1:]

    # Inter-chunk: the state entering each chunk, then its contribution through exp(b) ≤ 1.
    updates = (k * (b_last - b).exp()).transpose(-1, -2) @ v         # (B, H, N, K, V)
    chunk_decay = b_last.transpose(-1, -2).exp()                     # (B, H, N, K|1, 1)
    entering = []
    for n in range(chunks):
        entering.append(state)
        state = chunk_decay[:, :, n] * state + updates[:, :, n]
    entering = torch.stack(entering, dim=2)                          # (B, H, N, K, V)
    o = (q * b.exp()) @ entering

    # Intra-chunk.
    if b.shape[-1] == 1:
        o = o + _intra_scalar(q, k, b) @ v
    else:
        o = o + _intra_vector(q, k, b) @ v
    o = o.flatten(2, 3)[:, :, :length]
    return o, state


def _intra_scalar(q: Tensor, k: Tensor, b: Tensor) -> Tensor:
    """Scores `(q_i·k_j) exp(b_i - b_j)` for j ≤ i inside each chunk, for a scalar decay."""
    size = q.shape[3]
    visible = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    exponent = (b - b.transpose(-1, -2)).masked_fill(~visible, float("-inf"))
    return (q @ k.transpose(-1, -2)) * exponent.exp()


def _intra_vector(q: Tensor, k: Tensor, b: Tensor) -> Tensor:
    """Scores `Σ_k q_ik k_jk exp(b_ik - b_jk)` for j ≤ i inside each chunk, for a vector decay.

    Keys in earlier sub-chunks meet each query sub-chunk through its first position r: the factors
    `exp(b_i - b_r)` and `exp(b_r - b_j)` are both ≤ 1. The diagonal sub-chunks are formed elementwise.
    """
    size = q.shape[3]
    sub = SUB_CHUNK if size % SUB_CHUNK == 0 else size
    parts = size // sub
    starts = torch.arange(0, size, sub, device=q.device)
    positions = torch.arange(size, device=q.device)
    leading = b[:, :, :, starts].unsqueeze(-2)                        # (B, H, N, P, 1, K): b at each r
    q_sub = q.unflatten(3, (parts, sub))                              # (B, H, N, P, c, K)
    b_sub = b.unflatten(3, (parts, sub))
    q_scaled = q_sub * (b_sub - leading).exp()
    earlier = (positions[None, :] < starts[:, None])[:, :, None]      # (P, C, 1): key j before sub-chunk p
    key_exponent = (leading - b.unsqueeze(3)).masked_fill(~earlier, float("-inf"))
    k_scaled = k.unsqueeze(3) * key_exponent.exp()                    # (B, H, N, P, C, K)
    scores = q_scaled @ k_scaled.transpose(-1, -2)                    # (B, H, N, P, c, C)

    visible = torch.ones(sub, sub, dtype=torch.bool, device=q.device).tril()[:, :, None]
    exponent = (b_sub.unsqueeze(-2) - b_sub.unsqueeze(-3)).masked_fill(~visible, float("-inf"))
    k_sub = k.unflatten(3, (parts, sub))
    diagonal = (q_sub.unsqueeze(-2) * k_sub.unsqueeze(-3) * exponent.exp()).sum(-1)   # (B, H, N, P, c, c)
    scores = scores.unflatten(-1, (parts, sub))                       # (B, H, N, P, c, P, c)
    eye = torch.eye(parts, dtype=torch.bool, device=q.device)[:, None, :, None]
    scores = torch.where(eye, diagonal.unsqueeze(-2), scores)
    return scores.flatten(-2).flatten(3, 4)                           # (B, H, N, C, C)
