"""Gated recurrences against their papers' per-token recurrences, written out by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tokenmix


def test_mamba2_is_the_selective_state_space_recurrence():
    m = tokenmix.create("mamba2", 8, num_heads=2, state_size=4, impl="chunk", chunk_size=3).double()
    u = torch.randn(1, 7, 8, dtype=torch.float64)
    z, xbc, dt = m.in_proj(u).split([16, 16 + 8, 2], dim=-1)
    x, b, c = F.silu(m.conv(xbc)[0]).split([16, 4, 4], dim=-1)
    delta, a = F.softplus(dt + m.dt_bias), -m.A_log.exp()
    x = x.unflatten(-1, (2, 8))                                     # (B, L, H, P)
    h = torch.zeros(1, 2, 4, 8, dtype=torch.float64)               # (B, H, N, P)
    ys = []
    for t in range(7):
        h = (delta[:, t] * a).exp()[..., None, None] * h \
            + b[:, t, None, :, None] * (delta[:, t, :, None] * x[:, t])[:, :, None, :]
        ys.append(torch.einsum("bhnp,bn->bhp", h, c[:, t]) + m.D[:, None] * x[:, t])
    y = torch.stack(ys, dim=1).flatten(-2)
    torch.testing.assert_close(m(u), m.out(m.norm(y * F.silu(z))), rtol=1e-10, atol=1e-10)


def test_hgrn2_forget_gate_respects_its_lower_bound():
    m = tokenmix.create("hgrn2", 8, num_heads=2, lower_bound=0.9).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    f = m.proj(x).chunk(3, dim=-1)[1]
    forget = 0.9 + 0.1 * torch.sigmoid(f)
    assert (forget >= 0.9).all() and torch.isfinite(m(x)).all()


def test_lightning_decays_are_alibi_slopes():
    m = tokenmix.create("lightning_attention", 8, num_heads=4)
    expected = -(2.0 ** (-8.0 * torch.arange(1, 5) / 4))
    torch.testing.assert_close(m.log_decay, expected.float())
