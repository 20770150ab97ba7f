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
    # H = 4: slopes 2^(-8h/4) = 1/4, 1/16, 1/64, 1/256, times (1 - l/(L-1) + 1e-5) as the authors' layer
    m = tokenmix.create("lightning_attention", 8, num_heads=4)
    expected = -torch.tensor([1 / 4, 1 / 16, 1 / 64, 1 / 256], dtype=torch.float64) * (1 + 1e-5)
    torch.testing.assert_close(m.log_decay, expected.float())
    last_layer = tokenmix.create("lightning_attention", 8, num_heads=4, layer_ratio=1.0)
    torch.testing.assert_close(last_layer.log_decay, (expected / (1 + 1e-5) * 1e-5).float())  # still decays


def test_hgrn2_is_its_gated_recurrence():
    """S_t = Diag(f_t) S_{t-1} + (1 - f_t) i_tᵀ with f_t = γ + (1-γ)σ(W_f x), o_t = S_tᵀ SiLU(W_q x_t) / √K,
    y = W_o RMSNorm(o) over all heads' channels, no output gate (HGRN2, arXiv:2404.07904)."""
    m = tokenmix.create("hgrn2", 8, num_heads=2, lower_bound=0.5, impl="chunk", chunk_size=3).double()
    x = torch.randn(1, 7, 8, dtype=torch.float64)
    q, f, i = m.proj(x).chunk(3, dim=-1)
    q, forget = F.silu(q), 0.5 + 0.5 * torch.sigmoid(f)
    state = torch.zeros(1, 2, 4, 4, dtype=torch.float64)          # (B, H, K, V)
    outputs = []
    for t in range(7):
        f_t, k_t, i_t = (z[:, t].unflatten(-1, (2, 4)) for z in (forget, 1 - forget, i))
        state = f_t[..., None] * state + k_t[..., None] * i_t[..., None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q[:, t].unflatten(-1, (2, 4))) / 2.0)  # 1/√K
    o = torch.stack(outputs, dim=1).flatten(-2)                   # (B, L, D)
    normalized = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * m.norm.weight
    torch.testing.assert_close(m(x), m.out(normalized), rtol=1e-10, atol=1e-10)


def test_lightning_is_the_transnormerllm_layer():
    """q, k = SiLU(W_q x), SiLU(W_k x), v = W_v x, S_t = λ_h S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t (no 1/√K),
    y = W_o(SRMSNorm(o) ⊙ W_u x) with SRMSNorm over all heads' channels and no gain (TransNormerLLM's layer)."""
    m = tokenmix.create("lightning_attention", 8, num_heads=2, impl="chunk", chunk_size=3).double()
    x = torch.randn(1, 7, 8, dtype=torch.float64)
    q, k, v, u = m.qkvu(x).chunk(4, dim=-1)
    q, k = F.silu(q), F.silu(k)
    decay = -m.log_decay                                  # 2^(-8h/H)(1 + 1e-5), H = 2; its float32 buffer, so exact
    torch.testing.assert_close(decay, torch.tensor([2.0 ** -4, 2.0 ** -8], dtype=torch.float64) * (1 + 1e-5))
    state = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    outputs = []
    for t in range(7):
        k_t, v_t, q_t = (z[:, t].unflatten(-1, (2, 4)) for z in (k, v, q))
        state = (-decay).exp()[:, None, None] * state + k_t[..., None] * v_t[..., None, :]
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q_t))
    o = torch.stack(outputs, dim=1).flatten(-2)
    normalized = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(m(x), m.out(normalized * u), rtol=1e-10, atol=1e-10)
