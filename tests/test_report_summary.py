"""The report's aggregate view: seeds averaged, the best learning rate kept, intervals, state sizes, figures, HTML."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from tokenmix.bench import ResultsStore
from tokenmix.bench.report import leaderboard, write_markdown
from tokenmix.bench.sweep import expand, parse_numbers
from tokenmix.bench.summary import state_size, summarize
from tokenmix.cli import app
from tokenmix.errors import MixerInputError

from test_cli import TINY_TRAIN
from test_train import tiny_config


def fake_store(tmp_path, accuracies: dict[tuple[float, int], float]) -> ResultsStore:
    """A database of finished tiny MQAR runs with the given accuracy per (learning rate, seed), no training."""
    store = ResultsStore(tmp_path / "results.sqlite")
    for config in expand([tiny_config(mixer="gla")], sorted({rate for rate, _ in accuracies}),
                         sorted({seed for _, seed in accuracies})):
        accuracy = accuracies[(config.training.learning_rate, config.training.seed)]
        key = store.start(config.as_dict(), {"device": "cpu"})
        store.finish(key, {"accuracy": accuracy, "token_accuracy": accuracy, "train_seconds": 2.0,
                           "parameters": 100, "accuracy_by_num_kv_pairs": {"2": accuracy}})
    return store


def test_the_best_learning_rate_is_chosen_by_mean_accuracy_over_seeds(tmp_path):
    # lr 1e-3 has the single best run (0.9) but the lower mean; 1e-2 wins on the mean (0.8 vs 0.6)
    store = fake_store(tmp_path, {(1e-3, 0): 0.9, (1e-3, 1): 0.3, (1e-3, 2): 0.6,
                                  (1e-2, 0): 0.8, (1e-2, 1): 0.7, (1e-2, 2): 0.9})
    (row,) = summarize(leaderboard(store))
    assert row.learning_rate == 1e-2 and row.learning_rates_tried == (1e-3, 1e-2)
    assert sorted(row.accuracies) == [0.7, 0.8, 0.9] and row.mean == pytest.approx(0.8)
    assert row.std == pytest.approx(0.1)
    # t(0.975, 2) = 4.3027: the 95% interval of a mean over 3 seeds with std 0.1
    assert row.interval == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert row.accuracy_cell() == "80.0% ± 24.8"


def test_one_seed_has_no_interval(tmp_path):
    (row,) = summarize(leaderboard(fake_store(tmp_path, {(3e-3, 0): 0.5})))
    assert row.interval is None and row.accuracy_cell() == "50.0%"


def test_state_size_is_the_kv_cache_for_attention_and_fixed_for_a_recurrence():
    # attention keeps keys and values of every position: 2 · L · d per layer
    assert state_size("attention", (("num_heads", 2),), 16, 2, 32) == 2 * (2 * 32 * 16)
    # gla keeps one (K, V) matrix per head whatever the length
    assert state_size("gla", (("num_heads", 2),), 16, 1, 32) == state_size("gla", (("num_heads", 2),), 16, 1, 64)
    assert state_size("depthwise_conv", (), 16, 1, 32) is None  # a grid mixer has no streaming state


def test_report_writes_markdown_html_and_figures(tmp_path):
    store = fake_store(tmp_path, {(1e-3, 0): 0.4, (1e-2, 0): 0.6})
    path = write_markdown(store, tmp_path / "out")
    text = path.read_text()
    assert "## Leaderboards" in text and "| gla (num_heads=2) | 60.0% | 1 | 0.01 (0.001, 0.01) |" in text
    assert "## Across tasks" in text and "## All runs" in text
    figures = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert figures == ["mqar_dimension_0.png", "mqar_state_size_0.png", "time_mqar.png"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<table>") == 3 and '<img src="mqar_dimension_0.png"' in page and "60.0%" in page


def test_image_runs_add_a_throughput_column_with_the_median_over_seeds(tmp_path):
    from tokenmix.bench.config import ModelSettings, RunConfig, TrainingSettings
    from tokenmix.bench.summary import markdown_tables

    store = ResultsStore(tmp_path / "results.sqlite")
    for seed, speed in ((0, 900.0), (1, 1200.0), (2, 1000.0)):
        config = RunConfig(task="digits", mixer="depthwise_conv", task_params={"view": "image"},
                           model=ModelSettings(dim=8, depth=1), training=TrainingSettings(steps=3, seed=seed))
        key = store.start(config.as_dict(), {"device": "cpu"})
        store.finish(key, {"accuracy": 0.9, "token_accuracy": 0.9, "train_seconds": 1.0, "parameters": 10,
                           "forward_images_per_second": speed, "throughput_batch": 250,
                           "throughput_clock": "process cpu"})
    (row,) = summarize(leaderboard(store))
    assert row.images_per_second == 1000.0  # the median of 900, 1200, 1000
    lines = markdown_tables([row])
    assert lines[3].endswith("| params | images/s (forward, batch 250, process cpu time) |")
    assert lines[4].count("---:") == 6 and lines[5].endswith("| 10 | 1,000 |")


def test_sweeps_expand_learning_rates_outermost_then_seeds():
    configs = expand([tiny_config()], [1e-3, 1e-2], [0, 1])
    assert [(c.training.learning_rate, c.training.seed) for c in configs] == [(1e-3, 0), (1e-3, 1), (1e-2, 0),
                                                                              (1e-2, 1)]
    assert parse_numbers("1e-3, 3e-3", "--lr") == [1e-3, 3e-3] and parse_numbers(None, "--lr") is None
    with pytest.raises(MixerInputError, match="--seed must be a comma-separated list of int"):
        parse_numbers("0,x", "--seed", int)


def test_cli_sweep_runs_each_learning_rate_and_seed(tmp_path, monkeypatch):
    database = tmp_path / "results.sqlite"
    monkeypatch.setenv("TOKENMIX_DB", str(database))
    result = CliRunner().invoke(app, TINY_TRAIN + ["--lr", "1e-3,1e-2", "--seed", "0,1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("trained in") == 4 and "[4/4] attention lr=0.01 seed=1" in result.output
    runs = ResultsStore(database).rows(status="finished")
    assert sorted((r["config"]["training"]["learning_rate"], r["config"]["training"]["seed"]) for r in runs) == [
        (1e-3, 0), (1e-3, 1), (1e-2, 0), (1e-2, 1)]
