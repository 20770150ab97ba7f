"""The MNIST-1D task: the package's generator with our seed, the split sizes, the cache, bad parameters, training."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from tokenmix.bench import ModelSettings, RunConfig, TrainingSettings
from tokenmix.bench.train import build_model, train
from tokenmix.errors import MixerInputError
from tokenmix.models import SequenceModel
from tokenmix.tasks import create_task, generated


def test_default_seed_42_is_the_packages_own_default_dataset():
    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())  # 5000 samples, 80/20 split, seed 42: the package's defaults
    ours = create_task("mnist1d", seed=42)
    train_split, test_split = ours.split("train"), ours.split("test")
    assert torch.equal(train_split.inputs[..., 0], torch.as_tensor(reference["x"], dtype=torch.float32))
    assert torch.equal(test_split.inputs[..., 0], torch.as_tensor(reference["x_test"], dtype=torch.float32))
    assert torch.equal(train_split.targets, torch.as_tensor(reference["y"]))
    assert torch.equal(test_split.targets, torch.as_tensor(reference["y_test"]))


def test_structure_of_the_default_task():
    task = create_task("mnist1d")
    assert (task.input_kind, task.target_kind, task.sequence_length, task.num_classes, task.input_channels) == (
        "values", "per_example", 40, 10, 1)
    train_split, test_split = task.split("train"), task.split("test")
    assert train_split.inputs.shape == (4000, 40, 1) and test_split.inputs.shape == (1000, 40, 1)
    assert train_split.inputs.dtype == torch.float32 and train_split.targets.dtype == torch.int64
    # 500 examples of each digit in all (the generator is balanced), shuffled before the split
    counts = torch.bincount(torch.cat([train_split.targets, test_split.targets]), minlength=10)
    assert counts.tolist() == [500] * 10
    assert torch.equal(test_split.groups, test_split.targets)
    # the generator standardizes the whole set: mean 0, standard deviation 1 over all 5000 × 40 values
    values = torch.cat([train_split.inputs, test_split.inputs]).double()
    assert abs(float(values.mean())) < 1e-6 and abs(float(values.std(correction=0)) - 1) < 1e-6


def test_sizes_are_parameters():
    task = create_task("mnist1d", num_train_examples=300, num_test_examples=100)
    assert (len(task.split("train")), len(task.split("test"))) == (300, 100)
    # an awkward ratio: float rounding must not move the cut
    task = create_task("mnist1d", num_train_examples=693, num_test_examples=7)
    assert (len(task.split("train")), len(task.split("test"))) == (693, 7)


def test_generation_is_deterministic_and_leaves_global_random_states_alone():
    random.seed(123)
    np.random.seed(123)
    python_before, numpy_before = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    task = create_task("mnist1d", num_train_examples=200, num_test_examples=100)
    first, second = task.generate(), task.generate()
    assert random.random() == python_before and np.random.rand() == numpy_before
    assert all(torch.equal(first[name], second[name]) for name in first)
    other = create_task("mnist1d", num_train_examples=200, num_test_examples=100, seed=1).generate()
    assert not torch.equal(first["train_inputs"], other["train_inputs"])


def test_cache_hit_returns_identical_data(monkeypatch):
    task = create_task("mnist1d", num_train_examples=200, num_test_examples=100)
    fresh = task.split("test")
    assert task.cache_path.exists()
    generated.forget_loaded()
    monkeypatch.setattr(type(task), "generate", lambda self: pytest.fail("regenerated despite the cache file"))
    cached = task.split("test")
    assert torch.equal(fresh.inputs, cached.inputs) and torch.equal(fresh.targets, cached.targets)
    assert create_task("mnist1d", num_train_examples=200, num_test_examples=100, seed=5).cache_path != task.cache_path


@pytest.mark.parametrize("params, message", [({"num_train_examples": 0}, "positive integer"),
                                             ({"num_test_examples": 2.5}, "positive integer"),
                                             ({"num_train_examples": 4001}, "multiple of 10"),
                                             ({"seed": -1}, "non-negative"),
                                             ({"seed": 2**32}, "below 2\\*\\*32"),
                                             ({"length": 80}, "unknown parameter")])
def test_bad_parameters(params, message):
    with pytest.raises(MixerInputError, match=message):
        create_task("mnist1d", **params)
    with pytest.raises(MixerInputError, match="unknown split"):
        create_task("mnist1d").split("valid")


def test_a_short_training_learns():
    config = RunConfig(task="mnist1d", mixer="s4d", task_params={"num_train_examples": 1000, "num_test_examples": 500},
                       model=ModelSettings(dim=32, depth=1, mlp_ratio=2.0),
                       training=TrainingSettings(steps=250, batch_size=32, warmup_steps=5, learning_rate=1e-2,
                                                 eval_batch_size=500, eval_every=0))
    model = build_model(config, create_task("mnist1d"))
    assert isinstance(model, SequenceModel) and model.pooling == "mean" and model.input_channels == 1
    metrics = train(config, progress=False).metrics
    # chance is 10% and ln 10 ≈ 2.30 nats; measured 1.59 nats and 34 % test accuracy after 250 steps
    assert metrics["train_loss"] < 0.8 * math.log(10)
    assert metrics["accuracy"] > 0.25
