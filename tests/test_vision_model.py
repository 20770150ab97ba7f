"""The MetaFormer vision backbone on tiny images: any grid or sequence mixer per stage, the model API."""

from __future__ import annotations

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.models.vision import VisionModel


def test_hierarchical_model_with_a_mixer_per_stage_trains():
    torch.manual_seed(0)
    model = VisionModel(["poolformer", "van_lka"], num_classes=5, depths=(1, 1), dims=(8, 16), patch_size=2)
    images = torch.randn(3, 3, 12, 10)
    features = model.forward_features(images)
    assert features.shape == (3, 16, 3, 3)
    logits = model(images)
    assert logits.shape == (3, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_isotropic_model_runs_a_sequence_mixer_through_the_flatten_adapter():
    model = VisionModel("attention", num_classes=4, depths=(2,), dims=(16,), patch_size=4,
                        mixer_options={"num_heads": 2})
    images = torch.randn(2, 3, 8, 8)
    assert model(images).shape == (2, 4)
    # non-causal: the first patch's features depend on the last patch
    changed = images.clone()
    changed[..., 4:, 4:] += 1.0
    first = model.forward_features(images)[..., 0, 0]
    assert not torch.allclose(first, model.forward_features(changed)[..., 0, 0])


def test_reset_classifier_and_pre_logits():
    model = VisionModel("depthwise_conv", num_classes=3, depths=(1, 1), dims=(8, 8),
                        mixer_options={"kernel_size": 3})
    images = torch.randn(2, 3, 16, 16)
    assert model.forward_head(model.forward_features(images), pre_logits=True).shape == (2, 8)
    model.reset_classifier(7)
    assert model(images).shape == (2, 7)
    model.reset_classifier(0)
    assert model(images).shape == (2, 8)


def test_bad_configurations_and_inputs_raise():
    with pytest.raises(MixerInputError, match="stages"):
        VisionModel(["poolformer"], depths=(1, 1), dims=(8, 8))
    with pytest.raises(MixerInputError, match="no_such"):
        VisionModel("no_such_mixer", depths=(1,), dims=(8,))
    model = VisionModel("poolformer", depths=(1,), dims=(8,))
    with pytest.raises(MixerInputError, match="VisionModel"):
        model(torch.randn(2, 1, 8, 8))


def test_spd_downsampling_keeps_every_pixel():
    from tokenmix.models.vision import SpaceToDepthConv

    spd = SpaceToDepthConv(2, 3).double()
    x = torch.randn(1, 2, 5, 7, dtype=torch.float64)
    assert spd(x).shape == (1, 3, 3, 4)
    model = VisionModel("poolformer", num_classes=2, depths=(1, 1), dims=(4, 8), patch_size=1, downsample="spd")
    assert model.forward_features(torch.randn(2, 3, 7, 9)).shape == (2, 8, 4, 5)
    with pytest.raises(MixerInputError, match="downsample"):
        VisionModel("poolformer", depths=(1, 1), dims=(4, 8), downsample="pool")


def test_odd_blocks_take_their_own_options_for_alternating_pairs():
    model = VisionModel("swin_attention", in_channels=1, num_classes=3, depths=(4,), dims=(16,), patch_size=1,
                        mixer_options={"window_size": 4, "num_heads": 2}, odd_block_options={"shift_size": 2})
    shifts = [block.mixer.shift_size for block in model.stages[0]]
    assert shifts == [0, 2, 0, 2]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
