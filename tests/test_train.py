"""Training end to end through the results database: metrics, determinism, resume, interruption, suites."""

from __future__ import annotations

import math

import pytest

import tokenmix

import tokenmix.bench.train as train_module
from tokenmix.bench import ModelSettings, ResultsStore, RunConfig, TrainingSettings
from tokenmix.bench.suites import SUITES, quick_suite, run_suite
from tokenmix.bench.train import learning_rate_factor, train

TINY_TASK = {"vocab_size": 16, "sequence_length": 16, "num_kv_pairs": (2, 3), "num_train_examples": 64,
             "num_test_examples": 30}


def tiny_config(mixer: str = "attention", steps: int = 24, seed: int = 0) -> RunConfig:
    return RunConfig(task="mqar", mixer=mixer, task_params=dict(TINY_TASK), mixer_options={"num_heads": 2},
                     model=ModelSettings(dim=16, depth=1, mlp_ratio=2.0),
                     training=TrainingSettings(steps=steps, batch_size=16, warmup_steps=4, learning_rate=3e-3,
                                               seed=seed, eval_batch_size=16, eval_every=0))


def without_seconds(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in entry.items() if key != "seconds"} for entry in history]


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return ResultsStore(tmp_path / "results.sqlite")


def test_a_run_is_recorded_with_its_metrics_and_environment(store):
    outcome = train(tiny_config(), store, progress=False)
    assert not outcome.skipped
    metrics = outcome.metrics
    # 64 examples in batches of 16: an evaluation after every 4 steps (an epoch), the last one after step 24
    assert [entry["step"] for entry in metrics["history"]] == [4, 8, 12, 16, 20, 24]
    assert metrics["accuracy"] == metrics["history"][-1]["accuracy"]
    assert 0.0 <= metrics["accuracy"] <= metrics["token_accuracy"] <= 1.0
    assert set(metrics["accuracy_by_num_kv_pairs"]) == {"2", "3"} and metrics["num_examples"] == 30
    assert metrics["train_loss"] < math.log(16)  # better than a uniform guess over the vocabulary
    # embedding 16·16 + positions 16·16 + 1 block (2 norms, attention 4·16·16, MLP 16·32+32+32·16+16)
    # + final norm + head 16·16+16
    assert metrics["parameters"] == 256 + 256 + (16 + 1024 + 16 + 1072) + 16 + 272
    row = store.get(outcome.run_id)
    assert row["status"] == "finished" and row["metrics"] == metrics
    assert row["config"]["task_params"]["power_a"] == 0.01  # defaults are part of the stored config
    assert row["environment"]["device"] == "cpu" and row["environment"]["dtype"] == "float32"
    assert row["environment"]["threads"] >= 1 and row["environment"]["torch"]


def test_a_finished_run_is_not_trained_again(store, monkeypatch):
    first = train(tiny_config(steps=4), store, progress=False)
    monkeypatch.setattr(train_module, "_fit", lambda *args, **kwargs: pytest.fail("trained a finished run"))
    again = train(tiny_config(steps=4), store, progress=False)
    assert again.skipped and again.run_id == first.run_id and again.metrics == first.metrics
    assert store.get(first.run_id)["attempts"] == 1


def test_same_seed_same_result_and_another_seed_differs():
    first = train(tiny_config(steps=8), progress=False).metrics
    second = train(tiny_config(steps=8), progress=False).metrics
    other = train(tiny_config(steps=8, seed=1), progress=False).metrics
    assert first["train_loss"] == second["train_loss"]
    assert without_seconds(first["history"]) == without_seconds(second["history"])  # all but the wall-clock times
    assert other["train_loss"] != first["train_loss"]


def test_an_interrupted_run_is_marked_and_resumed(store, monkeypatch):
    original = train_module.evaluate

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "evaluate", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(steps=4), store, progress=False)
    (row,) = store.rows()
    assert row["status"] == "failed" and row["error"] == "interrupted"
    monkeypatch.setattr(train_module, "evaluate", original)
    outcome = train(tiny_config(steps=4), store, progress=False)
    row = store.get(outcome.run_id)
    assert row["status"] == "finished" and row["attempts"] == 2


def test_a_suite_skips_what_is_finished(store):
    configs = [tiny_config(steps=4), tiny_config(steps=4, seed=1)]
    train(configs[0], store, progress=False)
    outcomes = run_suite(configs, store, progress=False)
    assert [outcome.skipped for outcome in outcomes] == [True, False]
    assert len(store.rows(status="finished")) == 2


def test_learning_rate_warms_up_then_decays_to_zero():
    settings = TrainingSettings(steps=110, warmup_steps=10)
    assert learning_rate_factor(0, settings) == pytest.approx(0.1)
    assert learning_rate_factor(9, settings) == pytest.approx(1.0)
    assert learning_rate_factor(60, settings) == pytest.approx(0.5)
    assert learning_rate_factor(110, settings) == pytest.approx(0.0)


def test_the_quick_suite_has_one_main_member_per_family_on_one_mqar_setting():
    suite = quick_suite()
    mqar = [config for config in suite.runs if config.task == "mqar"]
    assert [config.mixer for config in mqar] == ["attention", "gla", "deltanet", "hyena"]
    assert len({str(config.as_dict()["task_params"]) for config in mqar}) == 1
    assert suite.speed is not None and set(suite.speed.mixers) <= {config.mixer for config in suite.runs}


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_names_valid_tasks_mixers_and_options(name):
    suite = SUITES[name]()
    assert suite.runs
    for config in suite.runs:
        tokenmix.spec(config.mixer)
        config.as_dict()  # validates the task and its parameters
    assert len({str(config.as_dict()) for config in suite.runs}) == len(suite.runs)  # no run twice
