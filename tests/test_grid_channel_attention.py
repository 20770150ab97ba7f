"""Channel attention: ECA's adaptive kernel size, SE/ECA gates depend only on the image mean."""

from __future__ import annotations

import torch

import tokenmix
from tokenmix.grid.channel_attention import eca_kernel_size


def test_eca_kernel_size_follows_the_paper():
    # k = |log2(C)/2 + 1/2|_odd: C = 64 -> 3.5 -> 3; C = 256 -> 4.5 -> 5; C = 512 -> 5; C = 2048 -> 6 -> 7
    assert [eca_kernel_size(c) for c in (64, 256, 512, 2048)] == [3, 5, 5, 7]


def test_se_and_eca_are_channel_gates_in_1d_2d_3d():
    for name in ("squeeze_excitation", "eca"):
        for dims, shape in ((1, (2, 8, 5)), (2, (2, 8, 5, 4)), (3, (2, 8, 3, 4, 2))):
            mixer = tokenmix.create(name, 8, spatial_dims=dims).double()
            x = torch.randn(*shape, dtype=torch.float64)
            y = mixer(x)
            gate = y / x
            flat = gate.flatten(2)
            torch.testing.assert_close(flat, flat[..., :1].expand_as(flat))
            assert ((flat > 0) & (flat < 1)).all()


def test_gather_excite_variants():
    import pytest

    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    for variant, extent in (("theta_minus", None), ("theta_minus", 4), ("theta", 2), ("theta", 8),
                            ("theta_plus", 4)):
        mixer = tokenmix.create("gather_excite", 8, variant=variant, extent=extent).double()
        y = mixer(x)
        assert y.shape == x.shape
        gate = y / x
        assert ((gate > 0) & (gate < 1)).all()
    # θ⁻ with a global extent is SE without parameters: one gate per channel, σ(mean)
    y = tokenmix.create("gather_excite", 8, variant="theta_minus", extent=None)(x)
    torch.testing.assert_close(y, x * torch.sigmoid(x.mean((2, 3), keepdim=True)))
    # θ⁻ with extent 4: cells of 4×4 share a gate
    y = tokenmix.create("gather_excite", 8, variant="theta_minus", extent=4)(x)
    cell = x[:, :, :4, :4]
    torch.testing.assert_close(y[:, :, :4, :4], cell * torch.sigmoid(cell.mean((2, 3), keepdim=True)))
    with pytest.raises(tokenmix.MixerInputError, match="power of two"):
        tokenmix.create("gather_excite", 8, variant="theta", extent=3)


def test_ulsam_maps_are_spatial_distributions_per_subspace():
    mixer = tokenmix.create("ulsam", 8, num_subspaces=2).double()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    attention = (mixer(x) - x) / x                      # A_n broadcast over the subspace's channels
    torch.testing.assert_close(attention[:, 0], attention[:, 3])
    torch.testing.assert_close(attention[:, 4], attention[:, 7])
    torch.testing.assert_close(attention[:, [0, 4]].sum((2, 3)), torch.ones(2, 2, dtype=torch.float64))


def test_ulsam_takes_a_channels_last_input():
    # the vision backbone's LayerNorm hands its mixer a permuted (channels-last) view
    mixer = tokenmix.create("ulsam", 8, num_subspaces=2).double()
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(mixer(x.movedim(-1, 1)), mixer(x.movedim(-1, 1).contiguous()))


def test_senetv2_with_one_branch_is_squeeze_excitation():
    v2 = tokenmix.create("senetv2", 16, cardinality=1, reduction=4).double()
    se = tokenmix.create("squeeze_excitation", 16, reduction=4).double()
    se.squeeze.load_state_dict(v2.branches[0].state_dict())
    se.excite.load_state_dict(v2.excite.state_dict())
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(v2(x), se(x))
