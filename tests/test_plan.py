"""`tokenmix bench --plan`: a suite's cost estimated from a few timed steps of each distinct run."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from tokenmix.bench import ModelSettings, ResultsStore, RunConfig, TrainingSettings, suites
from tokenmix.bench import plan
from tokenmix.bench.sweep import expand
from tokenmix.bench.train import train
from tokenmix.cli import app

TINY_PARAMS = {"vocab_size": 16, "sequence_length": 16, "num_kv_pairs": 2, "num_train_examples": 32,
               "num_test_examples": 10}


def tiny(mixer: str = "attention", steps: int = 4, eval_every: int = 2) -> RunConfig:
    return RunConfig(task="mqar", mixer=mixer, mixer_options={"num_heads": 2}, task_params=dict(TINY_PARAMS),
                     model=ModelSettings(dim=16, depth=1),
                     training=TrainingSettings(steps=steps, batch_size=8, warmup_steps=1, eval_every=eval_every))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_evaluations_count_every_interval_and_the_last_step():
    assert plan.evaluations(tiny(steps=4, eval_every=2), 32) == 2
    assert plan.evaluations(tiny(steps=5, eval_every=2), 32) == 3      # steps 2, 4 and the last
    assert plan.evaluations(tiny(steps=1000, eval_every=200), 32) == 5
    per_epoch = tiny(steps=13, eval_every=0)                            # 35 examples / batch 8: 4 steps an epoch
    assert plan.evaluations(per_epoch, 35) == 4                         # steps 4, 8, 12 and the last


def test_one_probe_per_shape_and_the_estimate_is_steps_times_the_step(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(plan, "probe", lambda config, **_: calls.append(config.mixer) or (0.5, 2.0, 10))
    runs = expand([tiny("attention", steps=10, eval_every=5), tiny("linear_attention", steps=10, eval_every=5)],
                  (1e-3, 3e-3), (0, 1))
    estimates = plan.estimate(runs)
    assert calls == ["attention", "linear_attention"]               # lr and seed do not change the cost
    assert [item.seconds for item in estimates] == [10 * 0.5 + 2 * 2.0] * 8
    (row,) = plan.summarize_plan(estimates)
    assert row["runs"] == row["left"] == 8 and row["seconds"] == pytest.approx(72.0)
    by_mixer = plan.summarize_plan(estimates, "mixer")
    assert [(row["mixer"], row["runs"], row["slowest"]) for row in by_mixer] == [
        ("attention", 4, ("mqar", 9.0)), ("linear_attention", 4, ("mqar", 9.0))]


def test_finished_runs_cost_nothing_and_are_not_probed(cache, monkeypatch):
    store = ResultsStore(cache / "results.sqlite")
    finished = tiny()
    train(finished, store, progress=False)
    monkeypatch.setattr(plan, "probe", lambda config, **_: (1.0, 1.0, 10))
    done, left = plan.estimate([finished, dataclasses.replace(finished, mixer="linear_attention")], store)
    assert done.done and done.seconds == 0.0 and not left.done and left.seconds == 4 + 2
    (row,) = plan.summarize_plan([done, left])
    assert (row["runs"], row["left"], row["slowest"]) == (2, 1, ("linear_attention", 6.0))


def test_a_real_probe_times_training_steps_and_an_evaluation(cache):
    step_seconds, evaluation_seconds, train_examples = plan.probe(tiny(), probe_steps=2)
    assert 0 < step_seconds < 10 and 0 < evaluation_seconds < 10 and train_examples == 32


def test_bench_plan_prints_the_estimate_and_trains_nothing(cache, monkeypatch):
    database = cache / "results.sqlite"
    monkeypatch.setenv("TOKENMIX_DB", str(database))
    monkeypatch.setitem(suites.SUITES, "quick", lambda: suites.Suite("quick", [tiny(), tiny("linear_attention")]))
    result = CliRunner().invoke(app, ["bench", "--plan", "--no-speed"])
    assert result.exit_code == 0, result.output
    assert "probing mqar / attention" in result.output and "probing mqar / linear_attention" in result.output
    assert "estimated hours" in result.output and "Nothing was trained" in result.output
    assert "by task" in result.output and "by mixer" in result.output
    assert ResultsStore(database).rows() == []
