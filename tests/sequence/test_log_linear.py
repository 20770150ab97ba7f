"""Log-linear Mamba-2: with every level weight λ = 1 it is Mamba-2 exactly."""

from __future__ import annotations

import torch

import tokenmix


def test_unit_level_weights_give_mamba2():
    log_linear = tokenmix.create("log_linear_mamba2", 8, num_heads=2, state_size=4, num_levels=3).double()
    with torch.no_grad():
        log_linear.level_proj.weight.zero_()          # λ = softplus(softplus⁻¹(1)) = 1 on every level
    mamba2 = tokenmix.create("mamba2", 8, num_heads=2, state_size=4).double()
    missing, unexpected = mamba2.load_state_dict(log_linear.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"level_proj.weight", "level_proj.bias"}
    x = torch.randn(2, 21, 8, dtype=torch.float64)
    torch.testing.assert_close(log_linear(x), mamba2(x), rtol=1e-10, atol=1e-10)


def test_levels_matter():
    m = tokenmix.create("log_linear_mamba2", 8, num_heads=2, state_size=4, num_levels=3).double()
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    y = m(x)
    with torch.no_grad():
        m.level_proj.bias.view(2, 3)[:, 2] += 1.0     # only the top level's weight changes
    changed = m(x)
    torch.testing.assert_close(changed[:, :2], y[:, :2], rtol=1e-12, atol=1e-12)   # t < 2 has no level 2
    assert not torch.allclose(changed[:, 2:], y[:, 2:])
