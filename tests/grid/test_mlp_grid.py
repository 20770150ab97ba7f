"""MLP and shift grid mixers: each against its paper's equation by hand, the fixed-resolution policy, and the
shifts on small hand-written tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tokenmix

GRID = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=torch.float64)


def perturbed(name: str, dim: int, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    mixer = tokenmix.create(name, dim, **options).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return mixer


def test_grid_token_mlp_by_hand_and_equal_to_the_sequence_token_mlp():
    mixer = perturbed("grid_token_mlp", 3, resolution=(4, 5), hidden_dim=7)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    tokens = x.flatten(2)                                                    # (B, C, N): each channel a vector
    hidden = F.gelu(tokens @ mixer.fc1.weight.T + mixer.fc1.bias)
    expected = (hidden @ mixer.fc2.weight.T + mixer.fc2.bias).view_as(x)
    torch.testing.assert_close(mixer(x), expected, rtol=1e-12, atol=1e-12)
    sequence = tokenmix.create("token_mlp", 3, max_length=20, hidden_dim=7).double()
    sequence.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(sequence(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape_as(x), mixer(x))


def test_grid_token_mlp_smaller_grid_is_zero_padding_and_larger_is_rejected():
    mixer = perturbed("grid_token_mlp", 3, resolution=(4, 5), hidden_dim=7)
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64)
    padded = F.pad(x, (0, 3, 0, 1))                                          # to 4×5, the input at the top left
    torch.testing.assert_close(mixer(x), mixer(padded)[:, :, :3, :2], rtol=1e-12, atol=1e-12)
    for size in [(5, 5), (4, 6)]:
        with pytest.raises(tokenmix.MixerInputError, match=r"grid_token_mlp.*exceeds the 4×5 resolution"):
            mixer(torch.randn(1, 3, *size, dtype=torch.float64))


def restricted(mixer: torch.nn.Module, name: str, size: tuple[int, int], **options) -> torch.nn.Module:
    """A mixer built at `size` holding the rows and columns of `mixer`'s token weights for the top-left positions."""
    small = tokenmix.create(name, mixer.dim, resolution=size, **options).double()
    index = mixer.positions(torch.zeros(1, 1, *size))
    state = {}
    for key, value in mixer.state_dict().items():
        if key in ("cross_patch.weight", "spatial_weight"):
            value = value[index][:, index]
        elif key in ("cross_patch.bias", "spatial_bias"):
            value = value[index]
        state[key] = value
    small.load_state_dict(state)
    return small


def test_resmlp_by_hand_and_restriction():
    mixer = perturbed("resmlp", 3, resolution=(3, 4))
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    affine = mixer.alpha_in[:, None] * x.flatten(2) + mixer.beta_in[:, None]   # Aff over channels
    mixed = affine @ mixer.cross_patch.weight.T + mixer.cross_patch.bias      # A across patches
    expected = (mixer.alpha_out[:, None] * mixed + mixer.beta_out[:, None]).view_as(x)
    torch.testing.assert_close(mixer(x), expected, rtol=1e-12, atol=1e-12)
    assert tokenmix.create("resmlp", 3).alpha_out.detach().eq(0.1).all()        # the LayerScale-like init
    small = x[:, :, :2, :3]
    torch.testing.assert_close(mixer(small), restricted(mixer, "resmlp", (2, 3))(small), rtol=1e-12, atol=1e-12)
    with pytest.raises(tokenmix.MixerInputError, match="resmlp"):
        mixer(torch.randn(1, 3, 3, 5, dtype=torch.float64))


def test_gmlp_by_hand_starts_near_a_channel_mlp_and_restricts():
    mixer = perturbed("gmlp", 4, resolution=(3, 3), expansion=2)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    z = F.gelu(x.flatten(2).transpose(1, 2) @ mixer.proj_in.weight.T + mixer.proj_in.bias)   # (B, N, E)
    z1, z2 = z[..., :4], z[..., 4:]
    normalized = F.layer_norm(z2, (4,), mixer.norm.weight, mixer.norm.bias)
    gate = mixer.spatial_weight @ normalized + mixer.spatial_bias[:, None]                    # W Z₂ + b over N
    expected = (z1 * gate) @ mixer.proj_out.weight.T + mixer.proj_out.bias
    torch.testing.assert_close(mixer(x), expected.transpose(1, 2).reshape_as(x), rtol=1e-12, atol=1e-12)
    small = x[:, :, :2, :2]
    torch.testing.assert_close(mixer(small), restricted(mixer, "gmlp", (2, 2), expansion=2)(small),
                               rtol=1e-12, atol=1e-12)
    # At initialization W ≈ 0 and b = 1: the unit is the channel MLP proj_out(Z₁) up to |W| ≤ 1e-3 / N.
    fresh = tokenmix.create("gmlp", 4, resolution=(3, 3), expansion=2).double()
    assert fresh.spatial_weight.abs().max() <= 1e-3 / 9 and fresh.spatial_bias.eq(1).all()
    z = F.gelu(fresh.proj_in(x.flatten(2).transpose(1, 2)))
    channel_only = fresh.proj_out(z[..., :4]).transpose(1, 2).reshape_as(x)
    assert (fresh(x) - channel_only).abs().max() < 1e-2 * channel_only.abs().max()
    with pytest.raises(tokenmix.MixerInputError, match="gmlp"):
        tokenmix.create("gmlp", 3, expansion=1)                               # 3 hidden channels cannot split


def test_partial_shift_by_hand():
    mixer = tokenmix.create("shift", 8, ratio=0.5)                           # g = ⌊4⌋ // 4 = 1 channel per move
    x = GRID.expand(1, 8, 3, 3).clone()
    y = mixer(x)[0]
    left = torch.tensor([[2.0, 3, 0], [5, 6, 0], [8, 9, 0]], dtype=torch.float64)
    right = torch.tensor([[0.0, 1, 2], [0, 4, 5], [0, 7, 8]], dtype=torch.float64)
    up = torch.tensor([[4.0, 5, 6], [7, 8, 9], [0, 0, 0]], dtype=torch.float64)
    down = torch.tensor([[0.0, 0, 0], [1, 2, 3], [4, 5, 6]], dtype=torch.float64)
    for channel, expected in enumerate([left, right, up, down]):
        torch.testing.assert_close(y[channel], expected, rtol=0, atol=0)
    torch.testing.assert_close(y[4:], x[0, 4:], rtol=0, atol=0)
    assert tokenmix.create("shift", 12).group == 1                           # paper γ = 1/3: ⌊4⌋ // 4
    y2 = tokenmix.create("shift", 4, ratio=1.0, shift_size=2)(GRID.expand(1, 4, 3, 3))[0]
    torch.testing.assert_close(y2[0], torch.tensor([[3.0, 0, 0], [6, 0, 0], [9, 0, 0]], dtype=torch.float64))
    torch.testing.assert_close(y2[3], torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, 2, 3]], dtype=torch.float64))


def test_spatial_shift_by_hand_and_block_equation():
    from tokenmix.grid.mlp import SpatialShiftMLP
    x = GRID.expand(1, 4, 3, 3)
    y = SpatialShiftMLP.spatial_shift(x)[0]
    expected = [
        [[1.0, 1, 2], [4, 4, 5], [7, 7, 8]],    # from the left neighbour; the first column keeps its values
        [[2.0, 3, 3], [5, 6, 6], [8, 9, 9]],    # from the right neighbour
        [[1.0, 2, 3], [1, 2, 3], [4, 5, 6]],    # from the row above
        [[4.0, 5, 6], [7, 8, 9], [7, 8, 9]],    # from the row below
    ]
    torch.testing.assert_close(y, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=0)
    mixer = perturbed("spatial_shift", 8)
    z = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(mixer(z), mixer.proj_out(SpatialShiftMLP.spatial_shift(F.gelu(mixer.proj_in(z)))))
    torch.testing.assert_close(tokenmix.create("spatial_shift", 4).spatial_shift(torch.ones(1, 4, 1, 1)),
                               torch.ones(1, 4, 1, 1))               # a 1×1 grid has no neighbours: unchanged
    with pytest.raises(tokenmix.MixerInputError, match="spatial_shift"):
        tokenmix.create("spatial_shift", 6)


@pytest.mark.parametrize("name", ["grid_token_mlp", "resmlp", "gmlp", "shift", "spatial_shift"])
def test_in_the_vision_backbone(name):
    from tokenmix.models.vision import VisionModel
    torch.manual_seed(0)
    fixed = name in ("grid_token_mlp", "resmlp", "gmlp")
    options = [{"resolution": 8}, {"resolution": 4}] if fixed else None  # 16×16 images, patch 2, then halved
    model = VisionModel(name, num_classes=3, depths=(1, 1), dims=(8, 16), patch_size=2, mixer_options=options)
    logits = model(torch.randn(2, 3, 16, 16))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert torch.isfinite(logits).all()
    assert all(p.grad is not None for p in model.parameters())
    if fixed:
        with pytest.raises(tokenmix.MixerInputError, match="exceeds"):
            model(torch.randn(1, 3, 18, 18))
