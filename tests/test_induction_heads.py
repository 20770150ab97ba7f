"""Induction heads (H3 arXiv:2212.14052, Mamba arXiv:2312.00752 §4.1.2): answers recomputed from the inputs,
test lengths beyond training, seeds, cache, errors, and a few training steps that lower the loss."""

from __future__ import annotations

import pytest
import torch

from tokenmix.errors import MixerInputError
from tokenmix.tasks import IGNORE_INDEX, create_task, generated, get_task
from tokenmix.tasks import induction_heads as module

SMALL = {"vocab_size": 8, "sequence_length": 16, "test_sequence_length": [16, 40], "num_train_examples": 60,
         "num_test_examples": 30, "seed": 2}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
    generated.forget_loaded()


def _check_example(inputs: list[int], targets: list[int], length: int, padded_length: int) -> int:
    """Recompute the answer from the inputs alone; return the trigger's first position."""
    trigger = 7
    assert inputs[length:] == [0] * (padded_length - length) and targets[length:] == [IGNORE_INDEX] * (
        padded_length - length)
    example = inputs[:length]
    occurrences = [position for position, token in enumerate(example) if token == trigger]
    assert len(occurrences) == 2 and occurrences[1] == length - 1 and occurrences[0] <= length - 3
    assert all(0 <= token < trigger for position, token in enumerate(example) if position not in occurrences)
    answer = example[occurrences[0] + 1]
    assert targets[:length] == [IGNORE_INDEX] * (length - 1) + [answer]
    return occurrences[0]


def test_train_examples_score_the_token_after_the_first_trigger():
    task = create_task("induction_heads", **SMALL)
    assert get_task("induction_heads").input_kind == "tokens"
    split = task.split("train")
    assert split.inputs.shape == split.targets.shape == (60, 16) and split.groups.tolist() == [16] * 60
    first_triggers = [_check_example(i, t, 16, 16) for i, t in zip(split.inputs.tolist(), split.targets.tolist())]
    assert min(first_triggers) == 0 and max(first_triggers) == 13  # the whole range [0, L - 3] is used


def test_test_split_holds_every_test_length_right_padded():
    task = create_task("induction_heads", **SMALL)
    assert task.test_sequence_length == (16, 40) and task.max_sequence_length == 40
    split = task.split("test")
    assert split.inputs.shape == (30, 40)
    assert split.groups.tolist() == [16] * 15 + [40] * 15
    for inputs, targets, length in zip(split.inputs.tolist(), split.targets.tolist(), split.groups.tolist()):
        _check_example(inputs, targets, length, 40)


def test_answers_are_spread_over_the_vocabulary():
    split = create_task("induction_heads", **{**SMALL, "num_train_examples": 700}).split("train")
    answers = split.targets[:, -1]
    counts = torch.bincount(answers, minlength=7)
    assert counts.shape == (7,) and counts.min() > 60  # 7 answer tokens, 100 expected each


def test_same_seed_same_data_cache_reused_and_other_seed_differs(monkeypatch, tmp_path):
    task = create_task("induction_heads", **SMALL)
    first = task.split("test")
    assert task.cache_path.exists() and task.cache_path.is_relative_to(tmp_path / "cache")
    monkeypatch.setattr(module.InductionHeads, "generate", lambda self: pytest.fail("should read the cache"))
    generated.forget_loaded()
    cached = create_task("induction_heads", **SMALL).split("test")
    assert torch.equal(first.inputs, cached.inputs) and torch.equal(first.groups, cached.groups)
    monkeypatch.undo()
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "fresh"))
    again = create_task("induction_heads", **SMALL).split("test")
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    other = create_task("induction_heads", **{**SMALL, "seed": 3})
    assert other.cache_path != task.cache_path and not torch.equal(other.split("test").inputs, first.inputs)


def test_test_length_defaults_to_training_length_and_accepts_one_number():
    assert create_task("induction_heads", sequence_length=32).test_sequence_length == (32,)
    task = create_task("induction_heads", sequence_length=32, test_sequence_length=64)
    assert task.test_sequence_length == (64,) and "test L=64" in task.setting()


@pytest.mark.parametrize("params, message", [
    ({"sequence_length": 2}, "every sequence length must be an integer of at least 3"),
    ({"test_sequence_length": [16, 2]}, "every sequence length must be an integer of at least 3"),
    ({"test_sequence_length": [16, 16]}, "lists a length twice"),
    ({"test_sequence_length": []}, "must be a length or a non-empty list"),
    ({"vocab_size": 2}, "vocab_size must be at least 3"),
    ({"num_test_examples": 1}, "at least one test example per test length"),
    ({"num_train_examples": 0}, "num_train_examples must be a positive integer"),
])
def test_bad_parameters_raise_mixer_input_error(params, message):
    with pytest.raises(MixerInputError, match=message):
        create_task("induction_heads", **{**SMALL, **params})


def test_a_few_training_steps_lower_the_loss_and_every_test_length_is_reported():
    from tokenmix.bench import ModelSettings, RunConfig, TrainingSettings
    from tokenmix.bench.train import train

    params = {"vocab_size": 6, "sequence_length": 12, "test_sequence_length": [12, 24], "num_train_examples": 320,
              "num_test_examples": 32}

    def run(steps: int) -> dict:
        # no learned positions: the model must run at the longer test length (attention keeps order by rotary)
        config = RunConfig(task="induction_heads", mixer="attention", task_params=params,
                           mixer_options={"num_heads": 2},
                           model=ModelSettings(dim=16, depth=2, mlp_ratio=2.0, position_embedding=False),
                           training=TrainingSettings(steps=steps, batch_size=16, warmup_steps=2, learning_rate=1e-2,
                                                     eval_batch_size=64, eval_every=0))
        return train(config, progress=False).metrics

    first_loss = run(1)["train_loss"]  # the first batch's loss, before any update
    metrics = run(20)
    assert metrics["train_loss"] < 0.9 * first_loss  # smoothed over the 20 steps, so the fall is understated
    assert set(metrics["accuracy_by_sequence_length"]) == {"12", "24"} and metrics["num_examples"] == 32
