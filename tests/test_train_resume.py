"""Checkpoints: a killed run resumes and ends exactly where the uninterrupted run ends; early stopping; weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import tokenmix.bench.train as train_module
from tokenmix.bench import ResultsStore
from tokenmix.bench.checkpoint import checkpoint_path, final_weights_path, load_weights
from tokenmix.bench.train import build_model, train
from tokenmix.errors import MixerInputError
from tokenmix.tasks import create_task

from test_train import tiny_config, without_seconds
from test_train_input_kinds import config as input_kinds_config

TIMES = ("train_seconds",)


def comparable(metrics: dict) -> dict:
    return {key: (without_seconds(value) if key == "history" else value) for key, value in metrics.items()
            if key not in TIMES}


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_as_if_never_killed(tmp_path, monkeypatch):
    config = tiny_config(mixer="gla", steps=24)  # 4 steps an epoch: evaluations and checkpoints at 4, 8, 12, ...
    uninterrupted = train(config, ResultsStore(tmp_path / "a.sqlite"), progress=False).metrics

    store = ResultsStore(tmp_path / "b.sqlite")
    original, calls = train_module.evaluate, []

    def evaluate_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the evaluation after step 16: the last checkpoint is the one after step 12
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config, store, progress=False)
    (row,) = store.rows()
    assert row["status"] == "failed" and checkpoint_path(row["run_id"]).exists()

    monkeypatch.setattr(train_module, "evaluate", original)
    resumed = train(config, store, progress=False)
    # bit-identical: the model, AdamW moments, schedule, data order and generators all came back
    assert comparable(resumed.metrics) == comparable(uninterrupted)
    assert not checkpoint_path(resumed.run_id).exists()  # replaced by the final weights
    assert store.get(resumed.run_id)["attempts"] == 2


def test_final_weights_load_back_into_the_same_model(tmp_path):
    config = tiny_config(steps=4)
    outcome = train(config, ResultsStore(tmp_path / "results.sqlite"), progress=False)
    task = create_task(config.task, **config.task_params)
    torch.manual_seed(123)  # a different initialization, overwritten by the loaded weights
    model = build_model(config, task)
    stored_config = load_weights(final_weights_path(outcome.run_id), model)
    assert stored_config["mixer"] == "attention" and stored_config["training"]["steps"] == 4
    model.eval()
    evaluated = train_module.evaluate(model, task, task.split("test"), 16, torch.device("cpu"))
    assert evaluated["token_accuracy"] == outcome.metrics["token_accuracy"]
    with pytest.raises(MixerInputError, match="no weights file"):
        load_weights(tmp_path / "missing.safetensors", model)


def test_training_stops_early_at_the_target_accuracy():
    config = input_kinds_config("test_sum_sign", "attention", 60)  # evaluations after steps 16, 32, 48 and 60
    full = train(config, progress=False).metrics
    target = full["history"][1]["accuracy"]  # reached at step 32 at the latest
    assert target > 0.5  # above chance, so it is a real target
    stopping = dataclasses.replace(config, training=dataclasses.replace(config.training, target_accuracy=target))
    early = train(stopping, progress=False).metrics
    reached_at = next(entry["step"] for entry in full["history"] if entry["accuracy"] >= target)
    assert reached_at <= 32 and early["stopped_early"] and early["steps"] == reached_at
    assert early["accuracy"] >= target and len(early["history"]) == reached_at // 16


def test_bad_training_settings_are_refused():
    with pytest.raises(MixerInputError, match="target_accuracy"):
        dataclasses.replace(tiny_config().training, target_accuracy=1.5)
    with pytest.raises(MixerInputError, match="precision"):
        dataclasses.replace(tiny_config().training, precision="float8")


def test_a_checkpoint_of_another_kind_is_refused(tmp_path):
    # The trainer's and the operator trainer's checkpoints share their tensor layout (bench.checkpoint's helpers)
    # but not their progress records: each loader checks the format and names what it expected.
    from tokenmix.bench.checkpoint import load_checkpoint
    from tokenmix.bench.operator_checkpoint import load_operator_checkpoint, save_operator_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "operator.safetensors"
    save_operator_checkpoint(path, model, optimizer, schedule, epoch=1, history=[0.5])
    with pytest.raises(MixerInputError, match="not a tokenmix checkpoint of format"):
        load_checkpoint(path, model, optimizer, schedule, torch.Generator())
    restored = torch.nn.Linear(3, 2)
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    epoch, history = load_operator_checkpoint(path, restored, restored_optimizer,
                                              torch.optim.lr_scheduler.StepLR(restored_optimizer, step_size=1))
    assert (epoch, history) == (1, [0.5])
    torch.testing.assert_close(restored.weight, model.weight, rtol=0, atol=0)
    torch.testing.assert_close(restored_optimizer.state_dict()["state"][0]["exp_avg"],
                               optimizer.state_dict()["state"][0]["exp_avg"], rtol=0, atol=0)
