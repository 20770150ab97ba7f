"""The trainer's model for each kind of task: real-valued sequences and images with one label per example.

Two tiny tasks are registered here (names starting with "test_"), each solvable in a few dozen steps:
- values: is the sum of a length-12 sequence of 2-channel values positive? (per-example, mean-pooled head)
- image: is the one bright bar of three pixels in a 6×6 image horizontal or vertical?
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from tokenmix.bench import ModelSettings, RunConfig, TrainingSettings
from tokenmix.bench.train import build_model, train
from tokenmix.errors import MixerInputError
from tokenmix.models import SequenceModel, VisionModel
from tokenmix.tasks import Split, Task, create_task, register_task


@register_task("test_sum_sign")
@dataclass(frozen=True)
class SumSign(Task):
    vocab_size: int = 1
    sequence_length: int = 12
    num_examples: int = 512
    seed: int = 0

    input_kind = "values"
    target_kind = "per_example"

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def input_channels(self) -> int:
        return 2

    def split(self, name):
        generator = torch.Generator().manual_seed(self.seed + (name == "test"))
        values = torch.randn(self.num_examples, self.sequence_length, 2, generator=generator)
        labels = (values.sum((1, 2)) > 0).long()
        return Split(values, labels, torch.zeros_like(labels))


@register_task("test_bar_direction")
@dataclass(frozen=True)
class BarDirection(Task):
    vocab_size: int = 1
    sequence_length: int = 36
    num_examples: int = 128
    seed: int = 0

    input_kind = "image"
    target_kind = "per_example"

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def input_channels(self) -> int:
        return 1

    def split(self, name):
        generator = torch.Generator().manual_seed(self.seed + (name == "test"))
        labels = torch.randint(2, (self.num_examples,), generator=generator)
        rows, columns = torch.randint(4, (2, self.num_examples), generator=generator)
        images = torch.zeros(self.num_examples, 1, 6, 6)
        for index, (label, row, column) in enumerate(zip(labels.tolist(), rows.tolist(), columns.tolist())):
            if label:
                images[index, 0, row:row + 3, column] = 1.0  # vertical
            else:
                images[index, 0, row, column:column + 3] = 1.0  # horizontal
        return Split(images, labels, labels)


def config(task: str, mixer: str, steps: int = 60) -> RunConfig:
    return RunConfig(task=task, mixer=mixer, model=ModelSettings(dim=16, depth=1, mlp_ratio=2.0),
                     training=TrainingSettings(steps=steps, batch_size=32, warmup_steps=5, learning_rate=1e-2,
                                               eval_batch_size=64, eval_every=0))


def test_values_task_gets_a_pooled_sequence_model():
    model = build_model(config("test_sum_sign", "gla"), create_task("test_sum_sign"))
    assert isinstance(model, SequenceModel) and model.pooling == "mean" and model.input_channels == 2
    assert model(torch.randn(3, 12, 2)).shape == (3, 2)
    with pytest.raises(MixerInputError, match=r"floating values of shape \(batch, length, 2\)"):
        model(torch.randn(3, 12, 5))


def test_image_task_gets_a_vision_model_with_the_patch_size():
    run = config("test_bar_direction", "depthwise_conv")
    run.model = ModelSettings(dim=16, depth=1, patch_size=2)
    model = build_model(run, create_task("test_bar_direction"))
    assert isinstance(model, VisionModel) and model.stem.kernel_size == (2, 2)
    assert model(torch.randn(3, 1, 6, 6)).shape == (3, 2)


def test_per_example_accuracy_counts_each_example_once():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    correct, scored = Task.count_correct(logits, torch.tensor([0, 1, 1]))
    assert correct.tolist() == [1, 1, 0] and scored.tolist() == [1, 1, 1]


# The bar task sits on a plateau near chance for its first ~60 steps (the detector of a 3-pixel line forms late),
# hence 200 steps there.
@pytest.mark.parametrize("task, mixer, steps", [("test_sum_sign", "gla", 60), ("test_sum_sign", "attention", 60),
                                                ("test_bar_direction", "depthwise_conv", 200)])
def test_training_learns_each_kind(task, mixer, steps):
    metrics = train(config(task, mixer, steps), progress=False).metrics
    # both tasks are balanced two-class problems: chance is 50% and log 2 nats
    assert metrics["train_loss"] < 0.5 * math.log(2)
    assert metrics["accuracy"] >= 0.85
    assert metrics["token_accuracy"] == metrics["accuracy"]  # one scored position per example


def test_learned_positions_cover_test_lengths_beyond_training():
    run = RunConfig(task="induction_heads", mixer="attention", mixer_options={"num_heads": 2},
                    task_params={"vocab_size": 8, "sequence_length": 8, "test_sequence_length": [8, 16],
                                 "num_train_examples": 32, "num_test_examples": 20},
                    model=ModelSettings(dim=16, depth=1, position_embedding=True),
                    training=TrainingSettings(steps=2, batch_size=16, warmup_steps=1, eval_batch_size=20))
    model = build_model(run, create_task(run.task, **run.task_params))
    assert model.max_length == 16  # the longest test length, not the training length 8
    metrics = train(run, progress=False).metrics  # evaluates at length 16 without a length error
    assert set(metrics["accuracy_by_sequence_length"]) == {"8", "16"}
