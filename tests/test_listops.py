"""ListOps: the evaluator on hand-written expressions, the generator's bounds and labels, balance, cache, training."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tokenmix.bench import ModelSettings, RunConfig, TrainingSettings
from tokenmix.bench.train import train
from tokenmix.errors import MixerInputError
from tokenmix.tasks import create_task, generated
from tokenmix.tasks.listops import (END_TOKEN, MIN_TOKEN, decode, encode, evaluate_expression, generate_expression,
                                    nesting_depth)
from tokenmix.tasks.token_storage import PAD_TOKEN, load_or_generate

SMALL = {"num_train_examples": 300, "num_test_examples": 200}


@pytest.mark.parametrize("expression, value", [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 5 3 8 ]", 3),
    ("[SM 7 8 9 ]", 4),  # 24 mod 10
    ("[SM 3 [MED 1 8 5 6 ] ]", 8),  # MED(1, 5, 6, 8) = (5 + 6) // 2 = 5; (3 + 5) mod 10 = 8
    ("[MED 1 2 ]", 1),  # even count: mean of the middle two rounded down (1.5 → 1), as LRA's int(np.median)
    ("[MED 3 4 6 9 ]", 5),  # (4 + 6) / 2
    ("[MED 9 0 5 ]", 5),  # odd count: the middle value
    ("[MAX [MIN [SM 9 9 ] 8 ] [MED 0 0 9 ] 2 ]", 8),  # SM 18 → 8, MIN 8, MED 0 → MAX(8, 0, 2)
    ("[SM [SM 5 5 ] [MAX 0 0 ] ]", 0),
])
def test_evaluator_on_hand_written_expressions(expression, value):
    tokens = encode(expression)
    assert evaluate_expression(tokens) == value
    assert evaluate_expression(tokens + [PAD_TOKEN] * 5) == value  # padding is ignored
    assert decode(tokens) == expression


@pytest.mark.parametrize("expression", ["[MAX 2 9", "[MIN 3 ] ]", "4 5", "]", "[MIN ]"])
def test_evaluator_rejects_malformed_expressions(expression):
    with pytest.raises(MixerInputError):
        evaluate_expression(encode(expression))


def test_token_layout():
    assert encode("0 9 [MIN [MAX [MED [SM ]") == [1, 10, 11, 12, 13, 14, 15]
    assert nesting_depth(torch.tensor([encode("[MAX 1 [MIN 2 3 ] [SM [MED 4 5 ] 6 ] ] ") + [0, 0]])).tolist() == [3]


def _check_split(task, split_name):
    split = task.split(split_name)
    inputs = split.inputs
    assert inputs.shape == (len(split), task.max_length) and inputs.dtype == torch.int64
    assert int(inputs.min()) >= 0 and int(inputs.max()) < task.vocab_size
    real = inputs != PAD_TOKEN
    lengths = real.sum(1)
    # right padding: every real token comes before every padding token
    assert torch.equal(real, torch.arange(task.max_length) < lengths[:, None])
    assert int(lengths.min()) >= task.min_length and int(lengths.max()) <= task.max_length
    depths = nesting_depth(inputs)
    assert torch.equal(split.groups, depths)
    assert int(depths.min()) >= 1 and int(depths.max()) <= task.max_depth - 1  # digits fill the last level
    # the arguments of an operator: at most max_args, at least 2 (counted by a scan of the tokens)
    for row in inputs[:50].tolist():
        counts: list[int] = []
        for token in row:
            if token >= MIN_TOKEN and token != END_TOKEN:
                if counts:
                    counts[-1] += 1
                counts.append(0)
            elif token == END_TOKEN:
                assert 2 <= counts.pop() <= task.max_args
            elif token != PAD_TOKEN:
                counts[-1] += 1
    # every label is the value of its expression, recomputed by the independent evaluator
    assert [evaluate_expression(row) for row in inputs.tolist()] == split.targets.tolist()
    return split


def test_short_variant_respects_the_bounds_and_labels():
    task = create_task("listops_short", **SMALL)
    assert (task.min_length, task.max_length, task.max_depth, task.max_args) == (20, 100, 4, 10)
    assert (task.vocab_size, task.sequence_length, task.num_classes, task.input_kind, task.target_kind) == (
        16, 100, 10, "tokens", "per_example")
    train_split = _check_split(task, "train")
    _check_split(task, "test")
    assert int(train_split.groups.max()) == 3  # the deepest allowed nesting does occur in 300 examples


def test_lra_setting_respects_the_bounds_and_labels():
    task = create_task("listops", num_train_examples=12, num_test_examples=4)
    assert (task.min_length, task.max_length, task.max_depth, task.max_args, task.sequence_length) == (
        500, 2000, 10, 10, 2000)
    _check_split(task, "train")


def test_classes_are_roughly_balanced():
    # Not uniform by construction: MIN and MAX of many digits pile up at 0 and 9. Measured on 3000 short examples:
    # 0 and 9 about 16 % each, the other digits 7-10 % each.
    rng = random.Random(0)
    values = torch.tensor([generate_expression(rng, 20, 100, 4, 10)[1] for _ in range(3000)])
    shares = torch.bincount(values, minlength=10).double() / len(values)
    assert float(shares.min()) > 0.05 and float(shares.max()) < 0.22
    assert float(shares[[0, 9]].min()) > float(shares[1:9].max())


def test_generation_is_deterministic_and_the_cache_returns_identical_data(monkeypatch):
    task = create_task("listops_short", **SMALL)
    first, second = task.generate(), task.generate()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["train_inputs"], first["test_inputs"][:1].expand(300, -1))
    other = create_task("listops_short", **SMALL, seed=1).generate()
    assert not torch.equal(first["train_inputs"], other["train_inputs"])
    fresh = task.split("train")
    assert task.cache_path.exists()
    generated.forget_loaded()
    monkeypatch.setattr(type(task), "generate", lambda self: pytest.fail("regenerated despite the cache file"))
    cached = task.split("train")
    assert torch.equal(fresh.inputs, cached.inputs) and torch.equal(fresh.targets, cached.targets)
    assert torch.equal(cached.inputs, first["train_inputs"]) and torch.equal(cached.groups, first["train_groups"])


@pytest.mark.parametrize("params, message", [({"min_length": 0}, "positive integer"),
                                             ({"max_depth": 1}, "at least 2"),
                                             ({"max_args": 1}, "at least 2"),
                                             ({"min_length": 200, "max_length": 100}, "exceeds max_length"),
                                             ({"min_length": 200, "max_length": 300, "max_depth": 3,
                                               "max_args": 3}, "no tree of depth"),
                                             ({"seed": 1.5}, "integer"),
                                             ({"operators": "MIN"}, "unknown parameter")])
def test_bad_parameters(params, message):
    with pytest.raises(MixerInputError, match=message):
        create_task("listops_short", **params)
    with pytest.raises(MixerInputError, match="unknown split"):
        create_task("listops_short", **SMALL).split("dev")


def test_a_short_training_learns():
    config = RunConfig(task="listops_short", mixer="attention",
                       task_params={"num_train_examples": 2000, "num_test_examples": 200, "max_length": 60},
                       model=ModelSettings(dim=32, depth=1, mlp_ratio=2.0),
                       training=TrainingSettings(steps=60, batch_size=32, warmup_steps=5, learning_rate=1e-2,
                                                 eval_batch_size=200, eval_every=0))
    metrics = train(config, progress=False).metrics
    # 10 classes, not uniform (0 and 9 are the common answers): the uniform guess costs ln 10 ≈ 2.30 nats, the
    # class prior about 2.2, and the commonest class is about 16 % of the examples; 60 steps learn more than the
    # prior (e.g. that MIN tends to 0 and MAX to 9): measured 1.83 nats and 32 % test accuracy
    assert metrics["train_loss"] < 0.85 * math.log(10)
    assert metrics["accuracy"] > 0.2
