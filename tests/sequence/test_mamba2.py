"""Mamba-2 (arXiv:2405.21060) against its block written out token by token from the paper and the authors' layer:

    [z, x, B, C, dt] = W_in u;   [x, B, C] = SiLU(causal depthwise conv([x, B, C]) + bias);   Δ = softplus(dt + b_Δ)
    h_t = exp(Δ_t A) h_{t-1} + (Δ_t x_t) B_tᵀ  (P × N per head, A = -exp(A_log)),   y_t = h_t C_t + D x_t
    out = W_out (g / rms(g) ⊙ w),   g = y ⊙ SiLU(z)   (the norm over all d_inner channels, after the gate)

Nothing of the mixer's own pieces (its conv module, norm module or the linear-attention op) is used below.
"""

from __future__ import annotations

import pytest
import torch

import tokenmix
from tokenmix import MixerInputError


def _silu(v: torch.Tensor) -> torch.Tensor:
    return v / (1 + torch.exp(-v))


def paper_block(m, u: torch.Tensor) -> torch.Tensor:
    """The Mamba-2 block on `u: (B, L, D)`, one token and one head at a time, from `m`'s weights."""
    batch, length, _ = u.shape
    inner, n, heads = m.inner, m.state_size, m.num_heads
    p = inner // heads
    taps = m.conv.weight.shape[-1]
    weight, bias = m.conv.weight[:, 0], m.conv.bias                    # (C, W): last tap = current token
    a = -torch.exp(m.A_log)
    out = torch.zeros_like(u)
    for b_ in range(batch):
        projected = u[b_] @ m.in_proj.weight.T                          # (L, 2·inner + 2N + H)
        z, xbc, dt = projected[:, :inner], projected[:, inner:2 * inner + 2 * n], projected[:, 2 * inner + 2 * n:]
        h = torch.zeros(heads, p, n, dtype=u.dtype)
        for t in range(length):
            conv = bias.clone()
            for i in range(taps):
                s = t - taps + 1 + i
                if s >= 0:
                    conv = conv + weight[:, i] * xbc[s]
            x, b, c = _silu(conv).split([inner, n, n])
            delta = torch.log1p(torch.exp(dt[t] + m.dt_bias))              # softplus, (H,)
            y = torch.empty(inner, dtype=u.dtype)
            for hd in range(heads):
                x_h = x[hd * p:(hd + 1) * p]
                h[hd] = torch.exp(delta[hd] * a[hd]) * h[hd] + torch.outer(delta[hd] * x_h, b)
                y[hd * p:(hd + 1) * p] = h[hd] @ c + m.D[hd] * x_h
            g = y * _silu(z[t])
            normed = g / torch.sqrt(g.pow(2).mean() + 1e-5) * m.norm.weight
            out[b_, t] = normed @ m.out.weight.T
    return out


def _perturbed(m):
    """Every parameter off its init, with decays that matter over a few tokens (Δ·A of order 0.1 to 1)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in m.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=g, dtype=parameter.dtype))
        m.A_log.copy_(torch.empty(m.num_heads, dtype=m.A_log.dtype).uniform_(0.5, 2.0, generator=g).log())
        m.dt_bias.add_(3.0)
    return m


@pytest.mark.parametrize("impl", ["reference", "recurrent", "chunk"])
@pytest.mark.parametrize("options", [{"num_heads": 2, "state_size": 4}, {"num_heads": 3, "state_size": 3}])
def test_mamba2_is_the_papers_block_token_by_token(impl, options):
    m = _perturbed(tokenmix.create("mamba2", 6, impl=impl, chunk_size=4, **options).double())
    u = torch.randn(2, 9, 6, dtype=torch.float64)
    torch.testing.assert_close(m(u), paper_block(m, u), rtol=1e-10, atol=1e-10)


def test_mamba2_default_block_is_the_papers_block():
    # the defaults at the quick suite's width: d_inner 128 as 2 heads of P = 64, N = 64
    m = _perturbed(tokenmix.create("mamba2", 64).double())
    assert (m.num_heads, m.inner // m.num_heads, m.state_size) == (2, 64, 64)
    u = torch.randn(1, 6, 64, dtype=torch.float64)
    torch.testing.assert_close(m(u), paper_block(m, u), rtol=1e-10, atol=1e-10)


def test_mamba2_one_token_by_hand():
    """The first token: h_1 = Δ x B (no history), y = (B·C) Δ x + D x, no 1/√N on B·C."""
    m = _perturbed(tokenmix.create("mamba2", 4, num_heads=1, state_size=2).double())
    u = torch.randn(1, 1, 4, dtype=torch.float64)
    inner = m.inner
    z, xbc, dt = (u[0, 0] @ m.in_proj.weight.T).split([inner, inner + 4, 1])
    x, b, c = _silu(m.conv.weight[:, 0, -1] * xbc + m.conv.bias).split([inner, 2, 2])
    delta = torch.log1p(torch.exp(dt[0] + m.dt_bias[0]))
    y = (b @ c) * delta * x + m.D[0] * x
    g = y * _silu(z)
    expected = (g / torch.sqrt(g.pow(2).mean() + 1e-5) * m.norm.weight) @ m.out.weight.T
    torch.testing.assert_close(m(u)[0, 0], expected, rtol=1e-12, atol=1e-12)


def test_mamba2_defaults_are_the_papers():
    m = tokenmix.create("mamba2", 128)
    assert (m.inner, m.num_heads, m.state_size, m.conv.kernel_size) == (256, 4, 64, 4)   # P = 64
    delta = torch.nn.functional.softplus(m.dt_bias)
    assert ((delta >= 1e-3 - 1e-9) & (delta <= 1e-1 + 1e-9)).all()
    a = m.A_log.exp()
    assert ((a >= 1.0 - 1e-6) & (a <= 16.0 + 1e-5)).all()
    assert torch.equal(m.D, torch.ones(4)) and torch.equal(m.norm.weight, torch.ones(256))
    assert tokenmix.create("mamba2", 16).num_heads == 1                 # d_inner 32 < 64: one head of 32
    assert tokenmix.create("mamba2", 64, num_heads=4).num_heads == 4    # num_heads given sets P = d_inner / H
    with pytest.raises(MixerInputError, match="num_heads"):
        tokenmix.create("mamba2", 48)                                   # d_inner 96 is not a multiple of 64
