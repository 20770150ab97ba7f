"""The `tokenmix` command through typer's CliRunner: listing, errors as one line, train, bench, report, docs."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import tokenmix
from tokenmix.bench import ModelSettings, ResultsStore, RunConfig, TrainingSettings
from tokenmix.bench import suites
from tokenmix.cli import app, parse_assignments

runner = CliRunner()
TINY_TRAIN = ["train", "--mixer", "attention", "-o", "num_heads=2", "-p", "vocab_size=16", "-p", "sequence_length=16",
              "-p", "num_kv_pairs=2,3", "-p", "num_train_examples=32", "-p", "num_test_examples=10",
              "--steps", "4", "--batch-size", "16", "--dim", "16", "--depth", "1", "--no-progress"]


@pytest.fixture
def database(tmp_path, monkeypatch):
    path = tmp_path / "results.sqlite"
    monkeypatch.setenv("TOKENMIX_DB", str(path))
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
    return path


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and all(fragment in lines[0] for fragment in fragments)


def test_list_shows_every_registered_mixer():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for name in tokenmix.available():
        assert name in result.output
    assert "L^2" in result.output and "reference" in result.output


def test_info_prints_the_spec():
    result = runner.invoke(app, ["info", "attention"])
    assert result.exit_code == 0, result.output
    assert "Attention Is All You Need" in result.output and "https://arxiv.org/abs/1706.03762" in result.output
    assert "num_heads=4" in result.output


@pytest.mark.parametrize("arguments, fragments", [
    (["info", "atention"], ("unknown mixer 'atention'", "Did you mean 'attention'?")),
    (["train", "--mixer", "nosuch"], ("unknown mixer 'nosuch'",)),
    (["train", "--task", "nosuch"], ("unknown task 'nosuch'", "mqar")),
    (["train", "-p", "num_kv_pair=4"], ("unknown parameter 'num_kv_pair'",)),
    (["train", "-o", "heads=2"], ("attention: unknown option 'heads'",)),
    (["train", "-p", "vocab_size"], ("--param must look like key=value",)),
    (["train", "--task", "burgers"], ("input kind 'grid'", "kind 'tokens'")),
    (["train", "--steps", "0"], ("training: steps must be positive, got 0",)),
    (["bench", "--suite", "nosuch"], ("unknown suite 'nosuch'", "quick")),
])
def test_user_errors_are_one_line_and_a_nonzero_exit(database, arguments, fragments):
    assert_one_line_error(runner.invoke(app, arguments), *fragments)
    assert not database.exists() or ResultsStore(database).rows() == []


def test_train_records_a_run_and_does_not_redo_it(database):
    result = runner.invoke(app, TINY_TRAIN)
    assert result.exit_code == 0, result.output
    assert "attention on mqar: accuracy" in result.output and "trained in" in result.output
    (row,) = ResultsStore(database).rows(status="finished")
    assert row["config"]["task_params"]["num_kv_pairs"] == [2, 3]
    assert row["config"]["mixer_options"] == {"num_heads": 2} and row["config"]["training"]["steps"] == 4
    again = runner.invoke(app, TINY_TRAIN)
    assert again.exit_code == 0 and "already finished; not redone" in again.output
    assert ResultsStore(database).get(row["run_id"])["attempts"] == 1


def test_report_reads_the_database_and_writes_markdown(database, tmp_path):
    runner.invoke(app, TINY_TRAIN)
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--db", str(database), "--out", str(out)])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    (row,) = ResultsStore(database).rows()
    accuracy = f"{100 * row['metrics']['accuracy']:.1f}%"
    assert "| attention (num_heads=2) | mqar | L=16 V=16 kv=2,3 n=32 | d=16 ×1 | " + accuracy in markdown
    assert "cpu" in markdown and "attention" in result.output and accuracy in result.output


def test_report_without_a_database_is_a_user_error(tmp_path):
    assert_one_line_error(runner.invoke(app, ["report", "--db", str(tmp_path / "missing.sqlite")]),
                          "no results database")


def test_bench_runs_the_suite_then_reports(database, tmp_path, monkeypatch):
    tiny = [RunConfig(task="mqar", mixer=mixer, mixer_options={"num_heads": 2},
                      task_params={"vocab_size": 16, "sequence_length": 16, "num_kv_pairs": 2,
                                   "num_train_examples": 32, "num_test_examples": 10},
                      model=ModelSettings(dim=16, depth=1), training=TrainingSettings(steps=2, warmup_steps=1))
            for mixer in ("attention", "linear_attention")]
    monkeypatch.setitem(suites.SUITES, "quick", lambda: suites.Suite("quick", tiny))
    out = tmp_path / "results"
    result = runner.invoke(app, ["bench", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "[1/2] attention" in result.output and "[2/2] linear_attention" in result.output
    assert len(ResultsStore(database).rows(status="finished")) == 2
    assert "linear_attention" in (out / "report.md").read_text()
    again = runner.invoke(app, ["bench", "--out", str(out), "--no-progress"])
    assert again.output.count("already finished") == 2


def test_docs_regenerates_the_mixer_reference(tmp_path):
    out = tmp_path / "docs" / "mixers.md"
    result = runner.invoke(app, ["docs", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    for name in tokenmix.available():
        assert f"\n## {name}\n" in text
    assert "[arXiv:1706.03762](https://arxiv.org/abs/1706.03762)" in text and "| `num_heads` | `4` |" in text


def test_assignments_parse_json_lists_and_strings():
    assert parse_assignments(["a=4", "b=0.5", "c=4,8", "d=[1, 2]", "e=gelu", "f=true"], "--param") == {
        "a": 4, "b": 0.5, "c": [4, 8], "d": [1, 2], "e": "gelu", "f": True}


def test_committed_mixer_reference_is_current():
    # docs/mixers.md is generated from the registry; a mixer added without `tokenmix docs` fails here.
    from pathlib import Path

    from tokenmix.mixer_docs import mixers_markdown

    committed = Path(__file__).resolve().parents[1] / "docs" / "mixers.md"
    assert committed.read_text() == mixers_markdown()
