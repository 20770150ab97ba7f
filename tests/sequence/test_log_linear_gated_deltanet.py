"""Log-Linear Gated DeltaNet (arXiv:2506.04761): an untrained layer is Gated DeltaNet; trained level weights
change only what the hierarchy says they should."""

from __future__ import annotations

import math

import torch

import tokenmix


def test_untrained_layer_is_gated_deltanet():
    torch.manual_seed(0)
    log_linear = tokenmix.create("log_linear_gated_deltanet", 8, num_heads=2, num_levels=4).double()
    with torch.no_grad():  # softplus⁻¹(1) again in float64: the float32 initial bias is 1 only to ~1e-8
        log_linear.level_proj.bias.fill_(math.log(math.e - 1.0))
    parent = tokenmix.create("gated_deltanet", 8, num_heads=2, impl="recurrent").double()
    missing = parent.load_state_dict(log_linear.state_dict(), strict=False)
    assert set(missing.unexpected_keys) == {"level_proj.weight", "level_proj.bias"} and not missing.missing_keys
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    torch.testing.assert_close(log_linear(x), parent(x), rtol=1e-12, atol=1e-12)


def test_level_weights_act_on_levels_beyond_the_token_itself():
    """λ^(0) weighs only s = t, so raising it changes every output; λ^(3) weighs buckets of 4 tokens, which a query
    at t = 2 does not yet have (t = 2 has levels 0, 2 only): its output must not move."""
    torch.manual_seed(1)
    mixer = tokenmix.create("log_linear_gated_deltanet", 8, num_heads=2, num_levels=4, impl="reference").double()
    x = torch.randn(1, 9, 8, dtype=torch.float64)
    before = mixer(x)
    with torch.no_grad():
        bias = mixer.level_proj.bias.view(2, 4)          # (heads, levels), head-major as split_heads reads it
        bias[:, 3] += 2.0
    after = mixer(x)
    torch.testing.assert_close(after[:, :3], before[:, :3], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(after[:, 4:], before[:, 4:])   # t ≥ 4 has a full level-3 bucket
