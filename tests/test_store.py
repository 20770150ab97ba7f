"""The results database: round trip, finished rows are final, resume after a kill or a failure."""

from __future__ import annotations

import sqlite3

import pytest

from tokenmix.bench.store import ResultsStore, RunAlreadyFinished, run_id

CONFIG = {"kind": "train", "task": "mqar", "mixer": "gla", "task_params": {"seed": 0}, "training": {"steps": 10}}
ENVIRONMENT = {"torch": "2.x", "device": "cpu", "threads": 2}


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return ResultsStore(tmp_path / "results.sqlite")


def test_run_id_is_a_hash_of_the_whole_config():
    reordered = {key: CONFIG[key] for key in reversed(list(CONFIG))}
    assert run_id(reordered) == run_id(CONFIG)
    assert run_id({**CONFIG, "training": {"steps": 11}}) != run_id(CONFIG)
    assert len(run_id(CONFIG)) == 16


def test_a_changed_mixer_default_is_a_new_run(monkeypatch):
    # A run keyed by the options given alone was served again after a default changed (mamba2's num_heads 4 -> None).
    import tokenmix
    from tokenmix.bench.config import RunConfig

    config = RunConfig(task="mqar", mixer="mamba2", mixer_options={"state_size": 32})
    stored = config.as_dict()
    assert stored["mixer_options"] == {"state_size": 32}                 # what the run was asked for: its label
    assert stored["mixer_defaults"] == tokenmix.spec("mamba2").options
    before = run_id(stored)
    spec = tokenmix.spec("mamba2")
    monkeypatch.setitem(spec.options, "expand", 3)
    assert run_id(config.as_dict()) != before


def test_round_trip(store):
    key = store.start(CONFIG, ENVIRONMENT)
    row = store.get(key)
    assert row["status"] == "running" and row["config"] == CONFIG and row["environment"] == ENVIRONMENT
    assert (row["kind"], row["task"], row["mixer"], row["attempts"]) == ("train", "mqar", "gla", 1)
    assert not store.is_finished(CONFIG)
    store.finish(key, {"accuracy": 0.875, "by": {"4": 1.0}})
    row = store.get(key)
    assert row["status"] == "finished" and row["metrics"] == {"accuracy": 0.875, "by": {"4": 1.0}}
    assert row["finished_at"] >= row["started_at"]
    assert store.is_finished(CONFIG)
    assert [r["run_id"] for r in store.rows(status="finished", kind="train")] == [key]
    assert store.rows(status="running") == [] and store.rows(kind="speed") == []


def test_a_finished_row_is_never_overwritten(store):
    key = store.start(CONFIG, ENVIRONMENT)
    store.finish(key, {"accuracy": 1.0})
    with pytest.raises(RunAlreadyFinished):
        store.start(CONFIG, ENVIRONMENT)
    with pytest.raises(RunAlreadyFinished):
        store.finish(key, {"accuracy": 0.0})
    with pytest.raises(RunAlreadyFinished):
        store.fail(key, "boom")
    # Even a hand-written statement cannot change or delete it: triggers guard the table itself.
    connection = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="never overwritten"):
        connection.execute("UPDATE runs SET metrics = '{}' WHERE run_id = ?", (key,))
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        connection.execute("DELETE FROM runs WHERE run_id = ?", (key,))
    connection.close()
    assert store.get(key)["metrics"] == {"accuracy": 1.0}


def test_a_killed_run_is_taken_over_by_the_next_attempt(store):
    key = store.start(CONFIG, ENVIRONMENT)  # ... and the process dies: the row stays 'running'
    reopened = ResultsStore(store.path)
    assert reopened.get(key)["status"] == "running" and not reopened.is_finished(CONFIG)
    assert reopened.start(CONFIG, {**ENVIRONMENT, "threads": 1}) == key
    row = reopened.get(key)
    assert row["attempts"] == 2 and row["environment"]["threads"] == 1
    reopened.finish(key, {"accuracy": 0.5})
    assert reopened.is_finished(CONFIG) and len(reopened.rows()) == 1


def test_a_failed_run_keeps_its_reason_and_is_retried(store):
    key = store.start(CONFIG, ENVIRONMENT)
    store.fail(key, "interrupted")
    row = store.get(key)
    assert row["status"] == "failed" and row["error"] == "interrupted" and not store.is_finished(CONFIG)
    store.start(CONFIG, ENVIRONMENT)
    row = store.get(key)
    assert row["status"] == "running" and row["error"] is None and row["attempts"] == 2


def test_default_path_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENMIX_DB", str(tmp_path / "chosen.sqlite"))
    assert ResultsStore().path == tmp_path / "chosen.sqlite"
    monkeypatch.delenv("TOKENMIX_DB")
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
    assert ResultsStore().path == tmp_path / "cache" / "results.sqlite"
