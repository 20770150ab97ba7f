"""The mLSTM block against the paper's per-token recurrence, written out by hand (unstabilized, float64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tokenmix


def test_mlstm_is_the_papers_recurrence():
    m = tokenmix.create("mlstm", 8, num_heads=2, impl="chunk", chunk_size=3).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(1, 7, 8, dtype=torch.float64)
    a, z = m.up(x).chunk(2, dim=-1)
    c = F.silu(m.conv(a)[0])
    q, k, v = m.query(c), m.key(c), m.value(a)
    i_pre, f_pre = m.gates(torch.cat([q, k, v], dim=-1)).chunk(2, dim=-1)    # (B, L, H)
    q, k, v = (t.unflatten(-1, (2, 8)) for t in (q, k, v))                 # (B, L, H, d)
    C = torch.zeros(1, 2, 8, 8, dtype=torch.float64)                       # (B, H, d_v, d_k)
    n = torch.zeros(1, 2, 8, dtype=torch.float64)
    hs = []
    for t in range(7):
        i, f = i_pre[:, t].exp(), torch.sigmoid(f_pre[:, t])               # (B, H)
        k_t = k[:, t] / 8 ** 0.5
        C = f[..., None, None] * C + i[..., None, None] * v[:, t, :, :, None] * k_t[:, :, None, :]
        n = f[..., None] * n + i[..., None] * k_t
        denominator = (n * q[:, t]).sum(-1).abs().clamp_min(1.0)
        hs.append((C @ q[:, t, :, :, None]).squeeze(-1) / denominator[..., None])
    h = torch.stack(hs, dim=2)                                             # (B, H, L, d)
    y = m.down((m.norm(h) + m.skip * c) * F.silu(z))
    torch.testing.assert_close(m(x), y, rtol=1e-10, atol=1e-10)


def test_mlstm_strong_input_gates_stay_finite_in_float32():
    m = tokenmix.create("mlstm", 16, num_heads=2)
    with torch.no_grad():
        m.gates.bias[:2] = 80.0  # exp(80 · a few) would overflow float32 without the stabilizer
    y, state = m(torch.randn(2, 50, 16), return_state=True)
    assert torch.isfinite(y).all() and all(torch.isfinite(t).all() for t in state.values())
