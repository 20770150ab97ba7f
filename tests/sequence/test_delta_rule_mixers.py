"""Delta-rule mixers beyond the conformance suite: how they relate to each other and to their recurrences."""

from __future__ import annotations

import torch

import tokenmix


def test_deltaproduct_with_one_step_is_deltanet():
    deltanet = tokenmix.create("deltanet", 16, num_heads=2, impl="chunk", chunk_size=4).double()
    product = tokenmix.create("deltaproduct", 16, num_heads=2, num_householder=1,
                              allow_negative_eigenvalues=False, impl="chunk", chunk_size=4).double()
    product.load_state_dict(deltanet.state_dict())
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    torch.testing.assert_close(product(x), deltanet(x), rtol=1e-12, atol=1e-12)


def test_gated_deltaproduct_is_householder_substeps_per_token():
    mixer = tokenmix.create("deltaproduct", 16, num_heads=2, num_householder=3, gated=True,
                            impl="chunk", chunk_size=2).double()
    x = torch.randn(1, 7, 16, dtype=torch.float64)
    q, k, v, _ = mixer._features(x, None)                       # (B, H, L, K), (B, H, L, n, K)
    beta = (2 * torch.sigmoid(mixer.beta(x))).unflatten(-1, (3, 2)).permute(0, 3, 1, 2)
    decay = mixer.decay(x).exp()
    state = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    eye = torch.eye(8, dtype=torch.float64)
    outputs = []
    for t in range(7):
        for j in range(3):
            k_j, v_j, b_j = k[:, :, t, j], v[:, :, t, j], beta[:, :, t, j, None, None]
            transition = eye - b_j * k_j[..., :, None] * k_j[..., None, :]
            if j == 0:
                transition = decay[:, :, t, None, None] * transition
            state = transition @ state + b_j * k_j[..., :, None] * v_j[..., None, :]
        outputs.append((q[:, :, t, None] * 8 ** -0.5 @ state).squeeze(-2))
    o = torch.stack(outputs, dim=2)
    y = mixer.out(mixer.norm(o) * torch.nn.functional.silu(mixer.gate(x)))
    torch.testing.assert_close(mixer(x), y, rtol=1e-10, atol=1e-10)


def test_negative_eigenvalues_option_sets_beta_range():
    x = torch.randn(1, 5, 16)
    on = tokenmix.create("deltaproduct", 16, num_heads=2)
    off = tokenmix.create("deltaproduct", 16, num_heads=2, allow_negative_eigenvalues=False)
    assert on.beta_range == 2.0 and off.beta_range == 1.0
    assert torch.isfinite(on(x)).all()


def test_without_short_conv_the_state_is_only_the_matrix():
    mixer = tokenmix.create("deltanet", 16, num_heads=2, use_short_conv=False)
    assert set(mixer.init_state(1)) == {"state"}
    assert set(tokenmix.create("deltanet", 16, num_heads=2).init_state(1)) == {"state", "conv"}
