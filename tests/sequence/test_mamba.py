"""Mamba's block against the paper's per-channel selective scan, written out by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tokenmix


def test_mamba_is_the_selective_scan():
    m = tokenmix.create("mamba", 8, state_size=4, impl="chunk", chunk_size=3).double()
    u = torch.randn(1, 7, 8, dtype=torch.float64)
    x, z = m.in_proj(u).chunk(2, dim=-1)
    x = F.silu(m.conv(x)[0])                                        # (B, L, E·D)
    dt, b, c = m.x_proj(x).split([1, 4, 4], dim=-1)
    delta, a = F.softplus(m.dt_proj(dt)), -m.A_log.exp()            # (B, L, E·D), (E·D, N)
    h = torch.zeros(1, 16, 4, dtype=torch.float64)                 # (B, E·D, N)
    ys = []
    for t in range(7):
        h = (delta[:, t, :, None] * a).exp() * h + delta[:, t, :, None] * b[:, t, None, :] * x[:, t, :, None]
        ys.append((h * c[:, t, None, :]).sum(-1) + m.D * x[:, t])
    y = torch.stack(ys, dim=1)
    torch.testing.assert_close(m(u), m.out_proj(y * F.silu(z)), rtol=1e-10, atol=1e-10)


def test_mamba_defaults_follow_the_paper():
    m = tokenmix.create("mamba", 64)
    assert m.inner == 128 and m.state_size == 16 and m.dt_rank == 4 and m.conv.kernel_size == 4
    torch.testing.assert_close(-m.A_log.exp()[0], -torch.arange(1.0, 17.0))
    delta = F.softplus(m.dt_proj.bias)
    assert (delta > 0.9e-3).all() and (delta < 1.1e-1).all()


def test_mamba_training_memory_has_no_per_token_states():
    # impl="auto" is the op's blocked form: autograd keeps O(L·E·D) tensors and one state per block, never the
    # (B, E·D, L, N) per-token states (or decays) that the doubling scan kept
    m = tokenmix.create("mamba", 16, state_size=64)
    length = 256
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(torch.randn(1, length, 16, requires_grad=True)).sum().backward()
    per_token_states = length * m.inner * m.state_size
    assert max(sizes) <= 2 * length * m.inner                       # the input projection's output
    assert sum(sizes) < per_token_states / 2                        # all of them together (the scan kept 25×)
