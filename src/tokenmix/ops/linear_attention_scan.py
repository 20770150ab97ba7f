"""The `scan` and `blocked` forms of the decayed linear-attention op (`tokenmix.ops.linear_attention`, whose
docstring defines both): every state S_t formed, by a doubling scan over the token axis, or one block of tokens at a
time with only the blocks' entering states kept for a hand-written backward (the selective scan of Mamba)."""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK_PARALLEL_DEVICES = ("cuda",)  # device types whose `blocked` form uses the doubling scan inside a block


def scan(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, state: Tensor) -> tuple[Tensor, Tensor]:
    """Every state at once by the doubling scan over the token axis (`_doubling_states`)."""
    s = _doubling_states(k.unsqueeze(-1) * v.unsqueeze(-2), None if g is None else g.unsqueeze(-1), state, dim=2)
    o = (q.unsqueeze(-2) @ s).squeeze(-2)
    return o, s[:, :, -1]


def _doubling_states(s: Tensor, log_a: Tensor | None, state: Tensor, dim: int) -> Tensor:
    """`S_t = a_t ⊙ S_{t-1} + s_t` along `dim` for every t, from `S_{-1} = state`, by a Hillis–Steele scan.

    After the step of offset o, `s[t] = Σ_{t-2o < j ≤ t} exp(c_t - c_j) s_j` and `a[t] = c_t - c_{t-2o}` (windows
    clipped at the start, c the cumulative log-decay); every exponent is a sum of log-decays, so ≤ 0.
    `state` lacks the token axis; `log_a` broadcasts against `s` (None: no decay)."""
    if log_a is None:
        return s.cumsum(dim) + state.unsqueeze(dim)
    length, offset = s.shape[dim], 1
    while offset < length:
        later = s.narrow(dim, offset, length - offset)
        earlier = s.narrow(dim, 0, length - offset)
        a_later = log_a.narrow(dim, offset, length - offset)
        s = torch.cat([s.narrow(dim, 0, offset), later + a_later.exp() * earlier], dim=dim)
        log_a = torch.cat([log_a.narrow(dim, 0, offset), a_later + log_a.narrow(dim, 0, length - offset)], dim=dim)
        offset *= 2
    return s + log_a.exp() * state.unsqueeze(dim)                  # log_a[t] = c_t now


class BlockedScan(torch.autograd.Function):
    """The `blocked` form: q, k `(B, H_qk, L, K)`, v `(B, H, L, V)`, a log-decay `g` `(B|1, H, L, K|1)` or the
    factors `step (B, H, L)`, `rate (H, K)` (or neither), state `(B, H, K, V)`; returns `o (B, H, L, V)` and the
    final state. Inside a block the tensors are token-major, `(C, B, H_qk, R, ...)` with `R = H / H_qk`, so that one
    token's state is one contiguous slice. Saved for backward: the inputs and the state entering each block."""

    @staticmethod
    def forward(ctx, q, k, v, g, step, rate, state, block_size: int, parallel: bool):
        batch, shared, length, _ = q.shape
        heads, value_dim = v.shape[1], v.shape[-1]
        size = min(block_size, length)
        state = state.unflatten(1, (shared, heads // shared))
        o = v.new_empty(length, batch, shared, heads // shared, value_dim)
        entering = []
        for lo in range(0, length, size):
            hi = min(lo + size, length)
            entering.append(state)
            q_b, k_b, v_b, log_a = _block_inputs(q, k, v, g, step, rate, lo, hi)
            states = _block_states(_outer(k_b, v_b), log_a, state, parallel)
            o[lo:hi] = torch.einsum("cbhrkv,cbhk->cbhrv", states, q_b)
            state = states[-1].clone()                               # not a view that would keep the block alive
        ctx.save_for_backward(q, k, v, g, step, rate, torch.stack(entering))
        ctx.size, ctx.parallel = size, parallel
        return o.flatten(2, 3).movedim(0, 2), state.flatten(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_o, grad_state):
        q, k, v, g, step, rate, entering = ctx.saved_tensors
        size, parallel = ctx.size, ctx.parallel
        shared, heads, length = q.shape[1], v.shape[1], q.shape[2]
        need_q, need_k, need_v, need_g, need_step, need_rate, need_state = ctx.needs_input_grad[:7]
        grad_o = grad_o.unflatten(1, (shared, heads // shared))       # (B, H_qk, R, L, V)
        carry = (torch.zeros_like(entering[0]) if grad_state is None
                 else grad_state.unflatten(1, (shared, heads // shared)))
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dg = torch.empty(g.shape, dtype=g.dtype, device=g.device) if g is not None and need_g else None
        dstep = torch.empty_like(step) if step is not None and need_step else None
        drate = torch.zeros_like(rate).unflatten(0, (shared, -1)) if rate is not None and need_rate else None
        for lo in reversed(range(0, length, size)):
            hi = min(lo + size, length)
            before = entering[lo // size]
            q_b, k_b, v_b, log_a = _block_inputs(q, k, v, g, step, rate, lo, hi)
            do_b = grad_o[:, :, :, lo:hi].movedim(3, 0).contiguous()  # (C, B, H_qk, R, V)
            a = None if log_a is None else log_a.exp()
            states = _block_states(_outer(k_b, v_b), log_a, before, parallel, a=a)
            # The adjoint runs backwards in time: dS_t = q_t do_tᵀ + a_{t+1} ⊙ dS_{t+1}; after the block, `carry`.
            adjoint = _block_states(_outer(q_b, do_b), log_a, carry, parallel, reverse=True, a=a)
            dq[:, :, lo:hi] = torch.einsum("cbhrkv,cbhrv->cbhk", states, do_b).movedim(0, 2)
            dk[:, :, lo:hi] = torch.einsum("cbhrkv,cbhrv->cbhk", adjoint, v_b).movedim(0, 2)
            dv[:, :, lo:hi] = torch.einsum("cbhrkv,cbhk->cbhrv", adjoint, k_b).flatten(2, 3).movedim(0, 2)
            if log_a is None:
                carry = adjoint[0]
                continue
            # d log a_t = a_t ⊙ Σ_v dS_t ⊙ S_{t-1}
            a = a.unsqueeze(-1)
            carry = a[0] * adjoint[0]
            weighted = adjoint.mul_(a)
            weighted[1:].mul_(states[:-1])
            weighted[0].mul_(before)
            dlog_a = _sum_last(weighted)                              # (C, B, H_qk, R, K)
            if dg is not None:
                dg[:, :, lo:hi] = _sum_to(dlog_a, log_a.shape).flatten(2, 3).movedim(0, 2)
            if dstep is not None:
                dstep[:, :, lo:hi] = torch.einsum("cbhrk,hrk->cbhr", dlog_a,
                                                  rate.unflatten(0, (shared, -1))).flatten(2, 3).movedim(0, 2)
            if drate is not None:
                drate += torch.einsum("cbhrk,cbhr->hrk", dlog_a,
                                      step[:, :, lo:hi].movedim(2, 0).unflatten(2, (shared, -1)))
        return (dq if need_q else None, dk if need_k else None, dv if need_v else None, dg, dstep,
                None if drate is None else drate.flatten(0, 1), carry.flatten(1, 2) if need_state else None,
                None, None)


def _block_inputs(q, k, v, g, step, rate, lo: int, hi: int):
    """Tokens lo..hi-1, token-major: q, k `(C, B, H_qk, K)`, v `(C, B, H_qk, R, V)`, log-decay
    `(C, B|1, H_qk, R, K|1)` or None."""
    shared = q.shape[1]
    q_b, k_b = (t[:, :, lo:hi].movedim(2, 0).contiguous() for t in (q, k))
    v_b = v[:, :, lo:hi].movedim(2, 0).unflatten(2, (shared, -1)).contiguous()
    if step is not None:
        step_b = step[:, :, lo:hi].movedim(2, 0).unflatten(2, (shared, -1))
        log_a = step_b.unsqueeze(-1) * rate.unflatten(0, (shared, -1))
    elif g is not None:
        log_a = g[:, :, lo:hi].movedim(2, 0).unflatten(2, (shared, -1)).contiguous()
    else:
        log_a = None
    return q_b, k_b, v_b, log_a


def _outer(k_b: Tensor, v_b: Tensor) -> Tensor:
    """`k_t v_tᵀ` per token and head: `(C, B, H_qk, K)` and `(C, B, H_qk, R, V)` -> `(C, B, H_qk, R, K, V)`."""
    return k_b[:, :, :, None, :, None] * v_b.unsqueeze(-2)


def _block_states(s: Tensor, log_a: Tensor | None, state: Tensor, parallel: bool, reverse: bool = False,
                  a: Tensor | None = None) -> Tensor:
    """`S_t = a_t ⊙ S_{t-1} + s_t` for the tokens of a block (token-major `s`, `(C, ..., K, V)`), from `state`;
    with `reverse`, the adjoint `S_t = a_{t+1} ⊙ S_{t+1} + s_t` from `S_C = state` (the decay that leads out of the
    block is not applied: the caller's `state` already carries it). The doubling scan when `parallel`, else a loop
    of one in-place multiply-add per token (fewer passes over memory, which is what a CPU core is short of); `a`
    is `exp(log_a)` if the caller has it. `s` is consumed."""
    if parallel:
        if log_a is None:
            return _doubling_states(s.flip(0), None, state, dim=0).flip(0) if reverse \
                else _doubling_states(s, None, state, dim=0)
        log_a = log_a.unsqueeze(-1)
        if not reverse:
            return _doubling_states(s, log_a, state, dim=0)
        following = torch.cat([log_a[1:], torch.zeros_like(log_a[:1])])      # a_{t+1} at t, 1 at the last token
        return _doubling_states(s.flip(0), following.flip(0), state, dim=0).flip(0)
    rows = s.unbind(0)
    if log_a is None:
        decays = (None,) * len(rows)
    else:
        decays = (log_a.exp() if a is None else a).unsqueeze(-1).unbind(0)
    if reverse:
        rows[-1].add_(state)
        for t in range(len(rows) - 2, -1, -1):
            _multiply_add(rows[t], decays[t + 1], rows[t + 1])
    else:
        _multiply_add(rows[0], decays[0], state)
        for t in range(1, len(rows)):
            _multiply_add(rows[t], decays[t], rows[t - 1])
    return s


def _multiply_add(row: Tensor, decay: Tensor | None, previous: Tensor) -> None:
    if decay is None:
        row.add_(previous)
    else:
        row.addcmul_(decay, previous)


def _sum_last(t: Tensor) -> Tensor:
    """Sum over the value axis (a free squeeze for Mamba's single value)."""
    return t.squeeze(-1) if t.shape[-1] == 1 else t.sum(-1)


def _sum_to(t: Tensor, shape) -> Tensor:
    """Sum `t` over the axes where `shape` has 1 (the broadcast ones), keeping them."""
    axes = tuple(i for i, (n, m) in enumerate(zip(t.shape, shape)) if m == 1 and n != 1)
    return t.sum(axes, keepdim=True) if axes else t
