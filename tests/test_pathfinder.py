"""Pathfinder: labels re-derived by flood fill of the rendered images, balance, views, cache, parameters, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from tokenmix.bench import ModelSettings, RunConfig, TrainingSettings
from tokenmix.bench.train import build_model, train
from tokenmix.errors import MixerInputError
from tokenmix.models import SequenceModel, VisionModel
from tokenmix.tasks import create_task, generated

SMALL = {"num_train_examples": 90, "num_test_examples": 60}
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def test_structure_balance_and_views():
    task = create_task("pathfinder", **SMALL)
    assert (task.input_kind, task.sequence_length, task.num_classes, task.input_channels) == ("values", 1024, 2, 1)
    split = task.split("train")
    assert split.inputs.shape == (90, 1024, 1) and split.inputs.dtype == torch.float32
    assert set(split.inputs.unique().tolist()) == {0.0, 1.0}
    # 30 images per level, exactly half of them connected
    assert split.groups.tolist() == [6] * 30 + [9] * 30 + [14] * 30
    for level in (6, 9, 14):
        assert int(split.targets[split.groups == level].sum()) == 15
    image = create_task("pathfinder", view="image", **SMALL)
    assert image.input_kind == "image" and image.cache_path == task.cache_path
    assert torch.equal(image.split("train").inputs.reshape(90, 1024, 1), split.inputs)  # raster order


@pytest.mark.parametrize("params", [{}, {"contour_lengths": 14, "num_distractors": 1},
                                    {"contour_lengths": [6, 9], "num_distractors": 3}])
def test_labels_are_connectedness_recomputed_by_flood_fill(params):
    task = create_task("pathfinder", view="image", **SMALL, **params)
    for name in ("train", "test"):
        split, markers = task.split(name), task.markers(name).numpy()
        contours = 2 + task.num_distractors
        for image, label, (first, second) in zip(split.inputs[:, 0].numpy() > 0, split.targets.tolist(), markers):
            components, count = ndimage.label(image, structure=EIGHT_CONNECTED)
            # every contour (with its markers) is its own component: contours never touch one another
            assert count == contours
            # the markers are drawn: the 3×3 square around each centre is lit
            for row, column in (first, second):
                assert image[row - 1:row + 2, column - 1:column + 2].all()
            connected = components[tuple(first)] == components[tuple(second)]
            assert connected == bool(label)


def test_contours_have_the_requested_length():
    # A contour of n paddles of 1.5 px is a path of length 1.5 n; its pixels are 8-neighbours in turn, each step
    # at most √2 long, so it lights at least 1.5 n / √2 + 1 of them (fewer only where it crosses itself), and at
    # most 1.5 n · √2 + 2 (one pixel per unit step in row or column). An image has 3 contours and 2 markers of 9.
    means = {}
    for level in (6, 14):
        task = create_task("pathfinder", view="image", contour_lengths=level, **SMALL)
        lit = task.split("test").inputs.sum((1, 2, 3))
        means[level] = float(lit.mean())
        assert means[level] >= 3 * (1.5 * level / math.sqrt(2) + 1)
        assert float(lit.max()) <= 3 * (1.5 * level * math.sqrt(2) + 2) + 2 * 9
    assert means[14] > 1.8 * means[6]


def test_generation_is_deterministic_and_the_cache_returns_identical_data(monkeypatch):
    task = create_task("pathfinder", **SMALL)
    first, second = task.generate(), task.generate()
    assert all(torch.equal(first[name], second[name]) for name in first)
    other = create_task("pathfinder", **SMALL, seed=1).generate()
    assert not torch.equal(first["train_images"], other["train_images"])
    fresh = task.split("test")
    assert task.cache_path.exists()
    generated.forget_loaded()
    monkeypatch.setattr(type(task), "generate", lambda self: pytest.fail("regenerated despite the cache file"))
    cached = task.split("test")
    assert torch.equal(fresh.inputs, cached.inputs) and torch.equal(fresh.targets, cached.targets)


@pytest.mark.parametrize("params, message", [({"view": "tokens"}, "view must be one of"),
                                             ({"contour_lengths": []}, "contour_lengths"),
                                             ({"contour_lengths": [6, 6]}, "distinct"),
                                             ({"num_distractors": 4}, "at most 3"),
                                             ({"num_distractors": 3, "contour_lengths": 14}, "too long to fit"),
                                             ({"paddle_length": 0.5}, "paddle_length"),
                                             ({"max_turn_degrees": 120}, "max_turn_degrees"),
                                             ({"num_train_examples": 3}, "num_train_examples"),
                                             ({"size": 64}, "unknown parameter")])
def test_bad_parameters(params, message):
    with pytest.raises(MixerInputError, match=message):
        create_task("pathfinder", **params)
    with pytest.raises(MixerInputError, match="unknown split"):
        create_task("pathfinder", **SMALL).split("val")


def test_each_view_gets_its_model_and_a_short_training_fits_a_small_set():
    config = RunConfig(task="pathfinder", mixer="attention",
                       task_params={"view": "image", "num_train_examples": 32, "num_test_examples": 32},
                       model=ModelSettings(dim=32, depth=1, mlp_ratio=2.0, patch_size=2),
                       training=TrainingSettings(steps=100, batch_size=32, warmup_steps=5, learning_rate=3e-3,
                                                 eval_batch_size=64, eval_every=0))
    assert isinstance(build_model(config, create_task("pathfinder", view="image", **SMALL)), VisionModel)
    sequence = build_model(RunConfig(task="pathfinder", mixer="s4d", model=ModelSettings(dim=8, depth=1)),
                           create_task("pathfinder", **SMALL))
    assert isinstance(sequence, SequenceModel) and sequence.input_channels == 1 and sequence.pooling == "mean"
    # Pathfinder itself takes thousands of steps; here the loss must fall on a set small enough to memorize
    # (32 images, one batch): from about ln 2 to well below it (measured 0.15 nats after 100 steps; a depthwise
    # convolution stays near ln 2 that long)
    metrics = train(config, progress=False).metrics
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] < 0.5 * math.log(2)
