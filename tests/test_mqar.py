"""MQAR data: Zoology's semantics, seeded reproducibility, the on-disk cache, and the metric."""

from __future__ import annotations

import pytest
import torch

from tokenmix.errors import MixerInputError
from tokenmix.tasks import IGNORE_INDEX, available_tasks, create_task, generated, get_task
from tokenmix.tasks import mqar as mqar_module

SMALL = {"vocab_size": 64, "sequence_length": 32, "num_kv_pairs": (2, 4), "num_train_examples": 60,
         "num_test_examples": 20, "seed": 3}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
    generated.forget_loaded()


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
    generated.forget_loaded()
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


# --- the Zoology grid: mqar_grid -----------------------------------------------------------------------------------
GRID = {"vocab_size": 32, "train_settings": ((16, 2), (32, 4)), "test_settings": ((16, 2), (32, 4), (32, 7), (48, 8)),
        "num_train_examples": 40, "num_test_examples": 40, "seed": 1}


def test_the_default_mqar_cache_key_is_unchanged():
    # The default suite's cached data depend on this hash of the `mqar` parameters (format 2): adding mqar_grid
    # and the shared cache helpers must not move it. The digest is the one the previous release wrote.
    assert create_task("mqar").cache_path.name == "08138404a656bc753473.safetensors"


def test_grid_defaults_are_zoologys_grid_plus_extrapolation():
    task = create_task("mqar_grid")
    assert task.train_settings == ((64, 4), (128, 8), (256, 16), (512, 64))
    assert task.test_settings == ((64, 4), (128, 8), (256, 16), (512, 64), (512, 128), (1024, 128))
    assert task.sequence_length == task.max_sequence_length == 1024  # the longest length of either split


@pytest.mark.parametrize("split_name, settings, padded_length", [
    ("train", [(16, 2), (32, 4)], 32),
    ("test", [(16, 2), (32, 4), (32, 7), (48, 8)], 48),
])
def test_grid_examples_are_mqar_at_their_own_length_right_padded(split_name, settings, padded_length):
    task = create_task("mqar_grid", **GRID)
    split = task.split(split_name)
    assert split.inputs.shape == split.targets.shape == (40, padded_length)
    assert task.split_length(split_name) == padded_length
    # groups = length·1000 + pairs, every setting evenly represented
    counts = {group: int((split.groups == group).sum()) for group in torch.unique(split.groups).tolist()}
    assert counts == {1000 * length + pairs: 40 // len(settings) for length, pairs in settings}
    for inputs, targets, group in zip(split.inputs.tolist(), split.targets.tolist(), split.groups.tolist()):
        length, pairs = divmod(group, 1000)
        # the padding: token 0, never scored
        assert inputs[length:] == [0] * (padded_length - length)
        assert targets[length:] == [IGNORE_INDEX] * (padded_length - length)
        # the example itself: Zoology's layout, answers recomputed from the context
        context = 2 * pairs
        keys, values = inputs[0:context:2], inputs[1:context:2]
        assert all(1 <= key < 16 for key in keys) and len(set(keys)) == pairs
        assert all(16 <= value < 32 for value in values) and len(set(values)) == pairs
        answers = [position for position, target in enumerate(targets) if target != IGNORE_INDEX]
        assert len(answers) == pairs and all(context <= p < length and (p - context) % 2 == 0 for p in answers)
        assert sorted(inputs[p] for p in answers) == sorted(keys)
        value_of = dict(zip(keys, values))
        assert [targets[p] for p in answers] == [value_of[inputs[p]] for p in answers]


def test_grid_is_seeded_and_cached(monkeypatch, tmp_path):
    task = create_task("mqar_grid", **GRID)
    first = task.split("test")
    assert task.cache_path.exists() and task.cache_path.parent.name == "mqar_grid"
    monkeypatch.setattr(mqar_module.MQARGrid, "generate", lambda self: pytest.fail("should read the cache"))
    generated.forget_loaded()
    cached = create_task("mqar_grid", **GRID).split("test")
    assert all(torch.equal(a, b) for a, b in zip((first.inputs, first.targets, first.groups),
                                                 (cached.inputs, cached.targets, cached.groups)))
    monkeypatch.undo()
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "fresh"))  # generated again from the seed alone
    again = create_task("mqar_grid", **GRID).split("test")
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    other = create_task("mqar_grid", **{**GRID, "seed": 2})
    assert other.cache_path != task.cache_path and not torch.equal(other.split("test").inputs, first.inputs)


def test_grid_settings_from_json_lists_and_one_flat_pair():
    as_lists = {**GRID, "train_settings": [[16, 2], [32, 4]], "test_settings": None}
    task = create_task("mqar_grid", **as_lists)
    assert task.train_settings == task.test_settings == ((16, 2), (32, 4))
    assert create_task("mqar_grid", **{**GRID, "train_settings": [16, 2]}).train_settings == ((16, 2),)
    assert task.describe_group(32004) == "L=32 kv=4"
    assert "16x2,32x4" in task.setting()


@pytest.mark.parametrize("params, message", [
    ({"train_settings": [[16, 5]]}, r"setting \(16, 5\) needs 1 <= 4 \* pairs <= length"),
    ({"test_settings": [[64, 16]]}, "needs 16 distinct keys, the lower half of vocab_size=32 has 15"),
    ({"train_settings": [[16, 2], [16, 2]]}, "lists a setting twice"),
    ({"train_settings": [[16, 2, 1]]}, r"must be a pair of integers \(length, pairs\)"),
    ({"train_settings": []}, "non-empty list"),
    ({"vocab_size": 100_000, "test_settings": [[4096, 1000]]}, "pairs must be below 1000"),
    ({"num_test_examples": 3}, "at least one train and one test example per setting"),
    ({"power_a": 2.0}, "power_a"),
])
def test_grid_bad_parameters_raise_mixer_input_error(params, message):
    with pytest.raises(MixerInputError, match=message):
        create_task("mqar_grid", **{**GRID, **params})


def test_grid_trains_and_reports_accuracy_per_setting():
    from tokenmix.bench import ModelSettings, RunConfig, TrainingSettings
    from tokenmix.bench.train import train

    params = {"vocab_size": 16, "train_settings": [[8, 1], [16, 2]], "test_settings": [[8, 1], [16, 2], [24, 3]],
              "num_train_examples": 256, "num_test_examples": 30}

    def run(steps: int) -> dict:
        config = RunConfig(task="mqar_grid", mixer="attention", task_params=params, mixer_options={"num_heads": 2},
                           model=ModelSettings(dim=16, depth=1, mlp_ratio=2.0),
                           training=TrainingSettings(steps=steps, batch_size=16, warmup_steps=2, learning_rate=1e-2,
                                                     eval_batch_size=64, eval_every=0))
        return train(config, progress=False).metrics

    first_loss = run(1)["train_loss"]  # the loss of the first batch, before any update
    metrics = run(20)
    assert metrics["train_loss"] < 0.9 * first_loss  # smoothed over the 20 steps, so the fall is understated
    assert set(metrics["accuracy_by_setting"]) == {"8001", "16002", "24003"}  # the extrapolation setting too
    assert metrics["num_examples"] == 30


def test_right_padding_does_not_reach_a_causal_models_scored_outputs():
    from tokenmix.models import SequenceModel

    task = create_task("mqar_grid", **GRID)
    split = task.split("test")
    short = split.groups == 16002  # length 16, padded to 48
    inputs, targets = split.inputs[short][:4], split.targets[short][:4]
    torch.manual_seed(0)
    model = SequenceModel(vocab_size=32, dim=16, depth=2, mixer="attention", mixer_options={"num_heads": 2},
                          max_length=48).double().eval()
    with torch.no_grad():
        padded, unpadded = model(inputs), model(inputs[:, :16])
    # the same float64 computation over the first 16 positions, whatever follows them
    assert torch.allclose(padded[:, :16], unpadded, atol=1e-12, rtol=0)
    assert (targets[:, 16:] == IGNORE_INDEX).all()
