"""The global-shapes task: labels recomputed from the pixels, separation, balance, determinism, views, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmix.errors import MixerInputError
from tokenmix.tasks import create_task
from tokenmix.tasks.global_shapes import CROSS, SQUARE

SMALL = {"size": 16, "min_separation": 6, "noise": 0.0, "num_train_examples": 200, "num_test_examples": 50}


def locate(images: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Top-left corner (row, column) of the one exact occurrence of `shape` in each noiseless image, found by
    template matching independently of the generator: the window whose pixels equal the shape exactly."""
    windows = F.unfold(images.unsqueeze(1), 3)  # (N, 9, positions)
    matches = (windows == shape.flatten()[None, :, None]).all(1)
    side = images.shape[-1] - 2
    assert (matches.sum(1) == 1).all()  # exactly one place each
    position = matches.float().argmax(1)
    return torch.stack([position // side, position % side], 1)


def test_the_label_says_whether_the_square_is_left_of_the_cross():
    split = create_task("global_shapes", **SMALL).split("train")
    images = split.inputs[:, 0]
    assert set(images.unique().tolist()) == {0.0, 1.0} and (images.sum((1, 2)) == 9 + 5).all()
    square, cross = locate(images, SQUARE), locate(images, CROSS)
    assert torch.equal(split.targets, (square[:, 1] < cross[:, 1]).long())
    assert ((square[:, 1] - cross[:, 1]).abs() >= 6).all()  # never closer than min_separation
    assert 0.4 < split.targets.float().mean() < 0.6  # balanced


def test_views_determinism_and_noise():
    task = create_task("global_shapes", **SMALL)
    image = task.split("test")
    sequence = create_task("global_shapes", **SMALL, view="sequence").split("test")
    assert image.inputs.shape == (50, 1, 16, 16) and sequence.inputs.shape == (50, 256, 1)
    assert torch.equal(sequence.inputs[:, :, 0], image.inputs.flatten(1))  # row-major pixels
    assert torch.equal(create_task("global_shapes", **SMALL).split("test").inputs, image.inputs)
    assert not torch.equal(create_task("global_shapes", **{**SMALL, "seed": 1}).split("test").inputs, image.inputs)
    noisy = create_task("global_shapes", **{**SMALL, "noise": 0.1}).split("test").inputs
    assert 0.07 < (noisy - image.inputs).std() < 0.13  # the same shapes under N(0, 0.1²) noise
    assert task.input_kind == "image" and task.num_classes == 2 and task.input_channels == 1


@pytest.mark.parametrize("bad, fragment", [({"size": 4}, "size >= 8"), ({"min_separation": 2}, "at least 3"),
                                           ({"min_separation": 14}, "min_separation <= size - 3"),
                                           ({"view": "tokens"}, "view must be"), ({"noise": -1.0}, "noise")])
def test_bad_parameters_are_refused(bad, fragment):
    with pytest.raises(MixerInputError, match=fragment):
        create_task("global_shapes", **{**SMALL, **bad})
