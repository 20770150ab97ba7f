"""MQAR data: Zoology's semantics, seeded reproducibility, the on-disk cache, and the metric."""

from __future__ import annotations

import pytest
import torch

from tokenmix.errors import MixerInputError
from tokenmix.tasks import IGNORE_INDEX, available_tasks, create_task, get_task
from tokenmix.tasks import mqar as mqar_module

SMALL = {"vocab_size": 64, "sequence_length": 32, "num_kv_pairs": (2, 4), "num_train_examples": 60,
         "num_test_examples": 20, "seed": 3}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
    mqar_module._load_or_generate.cache_clear()


def test_registered_with_its_kind_loss_and_metric():
    assert "mqar" in available_tasks()
    task_class = get_task("mqar")
    assert task_class.input_kind == "tokens"
    assert "cross-entropy" in task_class.loss_name and "accuracy" in task_class.metric_name


@pytest.mark.parametrize("split_name", ["train", "test"])
def test_every_example_follows_the_zoology_layout(split_name):
    task = create_task("mqar", **SMALL)
    split = task.split(split_name)
    vocab, half = task.vocab_size, task.vocab_size // 2
    assert split.inputs.shape == split.targets.shape == (len(split), 32)
    assert sorted(torch.unique(split.groups).tolist()) == [2, 4]
    for inputs, targets, pairs in zip(split.inputs.tolist(), split.targets.tolist(), split.groups.tolist()):
        context = 2 * pairs
        keys, values = inputs[0:context:2], inputs[1:context:2]
        assert all(1 <= key < half for key in keys) and len(set(keys)) == pairs
        assert all(half <= value < vocab for value in values) and len(set(values)) == pairs
        assert all(0 <= token < vocab for token in inputs)
        answers = [position for position, target in enumerate(targets) if target != IGNORE_INDEX]
        # every key is queried exactly once, after the context, at an even offset from its end
        assert len(answers) == pairs
        assert all(position >= context and (position - context) % 2 == 0 for position in answers)
        assert sorted(inputs[position] for position in answers) == sorted(keys)
        value_of = dict(zip(keys, values))
        assert all(targets[position] == value_of[inputs[position]] for position in answers)
        assert targets.count(IGNORE_INDEX) == 32 - pairs


def test_query_gaps_follow_a_power_law():
    task = create_task("mqar", vocab_size=64, sequence_length=256, num_kv_pairs=4, num_train_examples=2000,
                       num_test_examples=1)
    split = task.split("train")
    answers = (split.targets != IGNORE_INDEX).nonzero()[:, 1]
    gaps = (answers - 8) // 2  # 124 slots after a context of 8 tokens
    # p(g) ∝ (g+1)^-0.99 puts about 3/4 of the queries in the first quarter of the slots; uniform would put 1/4.
    share_in_first_quarter = (gaps < 31).double().mean().item()
    assert 0.65 < share_in_first_quarter < 0.85


def test_same_seed_same_data_and_splits_differ(tmp_path, monkeypatch):
    first = create_task("mqar", **SMALL).split("train")
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "elsewhere"))  # generated again, not read back
    again = create_task("mqar", **SMALL).split("train")
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    other_seed = create_task("mqar", **{**SMALL, "seed": 4}).split("train")
    assert not torch.equal(first.inputs, other_seed.inputs)
    test = create_task("mqar", **SMALL).split("test")
    assert not torch.equal(first.inputs[:20], test.inputs)


def test_generated_data_is_cached_on_disk_and_reused(monkeypatch, tmp_path):
    task = create_task("mqar", **SMALL)
    assert task.cache_path.is_relative_to(tmp_path / "cache")
    assert not task.cache_path.exists()
    first = task.split("train")
    assert task.cache_path.exists()

    def must_not_generate(self):
        raise AssertionError("the cached file should have been read")

    monkeypatch.setattr(mqar_module.MQAR, "generate", must_not_generate)
    mqar_module._load_or_generate.cache_clear()
    cached = create_task("mqar", **SMALL).split("train")
    assert torch.equal(first.inputs, cached.inputs) and torch.equal(first.groups, cached.groups)
    assert create_task("mqar", **{**SMALL, "seed": 5}).cache_path != task.cache_path


def test_lists_of_pairs_from_json_equal_tuples():
    assert create_task("mqar", **{**SMALL, "num_kv_pairs": [2, 4]}) == create_task("mqar", **SMALL)
    assert create_task("mqar", **SMALL).test_num_kv_pairs == (2, 4)


@pytest.mark.parametrize("params, message", [
    ({"num_kv_pairs": 9}, r"4 \* pairs <= sequence_length \(32\)"),
    ({"vocab_size": 8, "num_kv_pairs": 4}, "distinct keys"),
    ({"power_a": 0.0}, "power_a"),
    ({"num_kv_pair": 4}, "valid: num_kv_pairs, num_test_examples"),
    ({"vocab_size": "many"}, "task mqar"),
])
def test_bad_parameters_raise_mixer_input_error(params, message):
    with pytest.raises(MixerInputError, match=message):
        create_task("mqar", **{"sequence_length": 32, **params})


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(MixerInputError, match="unknown task 'mqr'.*valid: .*mqar.*Did you mean 'mqar'"):
        create_task("mqr")


def test_metrics_count_an_example_only_when_every_answer_is_right():
    task = create_task("mqar", **SMALL)
    targets = torch.full((2, 6), IGNORE_INDEX)
    targets[0, [2, 4]] = torch.tensor([40, 41])
    targets[1, [3, 5]] = torch.tensor([42, 43])
    logits = torch.zeros(2, 6, 64)
    logits[0, 2, 40] = logits[0, 4, 41] = 1.0  # both right
    logits[1, 3, 42] = logits[1, 5, 7] = 1.0  # one of two right
    correct, scored = task.count_correct(logits, targets)
    assert correct.tolist() == [2, 1] and scored.tolist() == [2, 2]
    metrics = task.summarize(correct, scored, torch.tensor([2, 4]))
    assert metrics["accuracy"] == 0.5 and metrics["token_accuracy"] == 0.75
    assert metrics["accuracy_by_num_kv_pairs"] == {"2": 1.0, "4": 0.0}
    expected_loss = torch.nn.functional.cross_entropy(logits[targets != IGNORE_INDEX], targets[targets != IGNORE_INDEX])
    assert torch.allclose(task.loss(logits, targets), expected_loss)
