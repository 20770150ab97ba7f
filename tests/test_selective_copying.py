"""Selective copying (Mamba, arXiv:2312.00752 §3.1): layout recomputed independently, seeds, cache, errors, and a
few training steps that lower the loss."""

from __future__ import annotations

import pytest
import torch

from tokenmix.errors import MixerInputError
from tokenmix.tasks import IGNORE_INDEX, create_task, generated, get_task, task_parameters
from tokenmix.tasks import selective_copying as module

SMALL = {"vocab_size": 10, "sequence_length": 24, "num_tokens_to_copy": 4, "num_train_examples": 50,
         "num_test_examples": 20, "seed": 3}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
    generated.forget_loaded()


def test_registered_with_the_mamba_parameters():
    assert get_task("selective_copying").input_kind == "tokens"
    assert set(task_parameters("selective_copying")) == {"vocab_size", "sequence_length", "num_tokens_to_copy",
                                                         "num_train_examples", "num_test_examples", "seed"}


@pytest.mark.parametrize("split_name, count", [("train", 50), ("test", 20)])
def test_targets_are_the_data_tokens_in_order_at_the_markers(split_name, count):
    split = create_task("selective_copying", **SMALL).split(split_name)
    assert split.inputs.shape == split.targets.shape == (count, 24)
    assert split.groups.tolist() == [24] * count
    moved = 0
    for inputs, targets in zip(split.inputs.tolist(), split.targets.tolist()):
        region, markers = inputs[:20], inputs[20:]
        assert markers == [9, 9, 9, 9]  # the marker is the last token of the vocabulary
        # recomputed from the inputs alone: the non-noise tokens of the region, left to right
        data = [token for token in region if token != 0]
        assert len(data) == 4 and all(1 <= token <= 8 for token in data)
        assert targets == [IGNORE_INDEX] * 20 + data
        moved += [position for position, token in enumerate(region) if token != 0] != [0, 1, 2, 3]
    assert moved == count  # the data sit at random positions, not packed at the start
    first_positions = [row.index(next(t for t in row if t != 0)) for row in split.inputs[:, :20].tolist()]
    assert len(set(first_positions)) > 3


def test_data_positions_and_tokens_cover_their_ranges():
    split = create_task("selective_copying", **{**SMALL, "num_train_examples": 2000}).split("train")
    region = split.inputs[:, :20]
    assert (region != 0).double().mean(0).min() > 0.1  # every region position holds data in some examples
    values = torch.unique(region[region != 0]).tolist()
    assert values == list(range(1, 9))  # every data token occurs, noise and marker never do as data


def test_same_seed_same_data_cache_reused_and_other_seed_differs(monkeypatch, tmp_path):
    task = create_task("selective_copying", **SMALL)
    first = task.split("train")
    assert task.cache_path.exists() and task.cache_path.is_relative_to(tmp_path / "cache")
    monkeypatch.setattr(module.SelectiveCopying, "generate", lambda self: pytest.fail("should read the cache"))
    generated.forget_loaded()
    cached = create_task("selective_copying", **SMALL).split("train")
    assert torch.equal(first.inputs, cached.inputs) and torch.equal(first.targets, cached.targets)
    monkeypatch.undo()
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "fresh"))
    again = create_task("selective_copying", **SMALL).split("train")
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.groups, again.groups)
    other = create_task("selective_copying", **{**SMALL, "seed": 4})
    assert other.cache_path != task.cache_path and not torch.equal(other.split("train").inputs, first.inputs)
    assert not torch.equal(create_task("selective_copying", **SMALL).split("test").inputs, first.inputs[:20])


@pytest.mark.parametrize("params, message", [
    ({"sequence_length": 7}, r"sequence_length=7 must be at least 2 \* num_tokens_to_copy \(8\)"),
    ({"vocab_size": 2}, "vocab_size must be at least 3"),
    ({"num_tokens_to_copy": 0}, "num_tokens_to_copy must be a positive integer"),
    ({"num_train_examples": 1.5}, "num_train_examples must be a positive integer"),
    ({"tokens": 4}, "valid: num_test_examples, num_tokens_to_copy"),
])
def test_bad_parameters_raise_mixer_input_error(params, message):
    with pytest.raises(MixerInputError, match=message):
        create_task("selective_copying", **{**SMALL, **params})


def test_a_few_training_steps_lower_the_loss():
    from tokenmix.bench import ModelSettings, RunConfig, TrainingSettings
    from tokenmix.bench.train import train

    params = {"vocab_size": 6, "sequence_length": 12, "num_tokens_to_copy": 2, "num_train_examples": 320,
              "num_test_examples": 32}

    def run(steps: int) -> dict:
        config = RunConfig(task="selective_copying", mixer="attention", task_params=params,
                           mixer_options={"num_heads": 2}, model=ModelSettings(dim=16, depth=1, mlp_ratio=2.0),
                           training=TrainingSettings(steps=steps, batch_size=16, warmup_steps=2, learning_rate=1e-2,
                                                     eval_batch_size=64, eval_every=0))
        return train(config, progress=False).metrics

    first_loss = run(1)["train_loss"]  # the first batch's loss, before any update
    metrics = run(20)
    assert metrics["train_loss"] < 0.9 * first_loss  # smoothed over the 20 steps, so the fall is understated
    assert set(metrics["accuracy_by_sequence_length"]) == {"12"} and metrics["num_examples"] == 32
