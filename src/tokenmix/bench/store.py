"""The results database: one SQLite row per run, keyed by a hash of the run's full config.

A row holds the config (JSON), the environment it ran in, its metrics and a status: `running` while it trains,
`finished` when its metrics are in, `failed` when it raised. A finished row is never overwritten (a trigger
enforces it inside SQLite), so an interrupted suite loses nothing and `is_finished(config)` tells it what to skip.
A run killed mid-way leaves a `running` row, which the next attempt simply takes over.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokenmix.errors import TokenmixError
from tokenmix.paths import default_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    task         TEXT,
    mixer        TEXT,
    config       TEXT NOT NULL,
    environment  TEXT,
    metrics      TEXT,
    status       TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    error        TEXT,
    attempts     INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE TRIGGER IF NOT EXISTS finished_rows_are_final_on_update BEFORE UPDATE ON runs
WHEN OLD.status = 'finished'
BEGIN SELECT RAISE(ABORT, 'a finished run is never overwritten'); END;
CREATE TRIGGER IF NOT EXISTS finished_rows_are_final_on_delete BEFORE DELETE ON runs
WHEN OLD.status = 'finished'
BEGIN SELECT RAISE(ABORT, 'a finished run is never deleted'); END;
"""


class RunAlreadyFinished(TokenmixError):
    """Starting or finishing a run whose row is already finished."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs give equal text (and equal hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def run_id(config: dict[str, Any]) -> str:
    """The key of a run: a hash of its full config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultsStore:
    """A results database at `path` (default: `$TOKENMIX_DB` or `~/.cache/tokenmix/results.sqlite`)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_database()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # executescript commits whatever transaction is open, so the schema brings its own BEGIN ... COMMIT.
        with self._reader() as connection:
            connection.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one write transaction: committed on success, rolled back on any error."""
        # isolation_level=None lets us issue BEGIN IMMEDIATE ourselves: the write lock is taken before the
        # read-then-write in `start`, so two processes cannot both claim the same run.
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            connection.close()

    # --- writes -------------------------------------------------------------------------------------------
    def start(self, config: dict[str, Any], environment: dict[str, Any]) -> str:
        """Mark the run of `config` as running (a new row, or taking over a running/failed one); returns its id."""
        key = run_id(config)
        now = _now()
        with self._transaction() as connection:
            row = connection.execute("SELECT status FROM runs WHERE run_id = ?", (key,)).fetchone()
            if row is None:
                connection.execute(
                    "INSERT INTO runs (run_id, kind, task, mixer, config, environment, status, created_at, started_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                    (key, config.get("kind", "run"), config.get("task"), config.get("mixer"), canonical_json(config),
                     canonical_json(environment), now, now))
            elif row["status"] == "finished":
                raise RunAlreadyFinished(f"run {key} is already finished; its row is kept as it is")
            else:
                connection.execute(
                    "UPDATE runs SET status = 'running', environment = ?, metrics = NULL, error = NULL,"
                    " attempts = attempts + 1, started_at = ?, finished_at = NULL WHERE run_id = ?",
                    (canonical_json(environment), now, key))
        return key

    def finish(self, key: str, metrics: dict[str, Any]) -> None:
        """Store the metrics of a running run and mark it finished (final from now on)."""
        self._close(key, "finished", metrics=canonical_json(metrics))

    def fail(self, key: str, error: str) -> None:
        """Mark a running run as failed with a one-line reason; the next attempt re-runs it."""
        self._close(key, "failed", error=error)

    def _close(self, key: str, status: str, metrics: str | None = None, error: str | None = None) -> None:
        with self._transaction() as connection:
            row = connection.execute("SELECT status FROM runs WHERE run_id = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(f"no run {key} in {self.path}")
            if row["status"] == "finished":
                raise RunAlreadyFinished(f"run {key} is already finished; its row is kept as it is")
            connection.execute("UPDATE runs SET status = ?, metrics = ?, error = ?, finished_at = ? WHERE run_id = ?",
                               (status, metrics, error, _now(), key))

    # --- reads --------------------------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        """The row of run `key` with its JSON columns decoded, or None."""
        with self._reader() as connection:
            row = connection.execute("SELECT * FROM runs WHERE run_id = ?", (key,)).fetchone()
        return None if row is None else _decode(row)

    def is_finished(self, config: dict[str, Any]) -> bool:
        """Whether the run of `config` has a finished row (so a suite can skip it)."""
        row = self.get(run_id(config))
        return row is not None and row["status"] == "finished"

    def rows(self, status: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """All rows (optionally of one status and kind), oldest first, JSON columns decoded."""
        query, parameters = "SELECT * FROM runs WHERE 1 = 1", []
        if status is not None:
            query += " AND status = ?"
            parameters.append(status)
        if kind is not None:
            query += " AND kind = ?"
            parameters.append(kind)
        with self._reader() as connection:
            return [_decode(row) for row in connection.execute(query + " ORDER BY created_at, run_id", parameters)]

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=30)
        connection.row_factory = sqlite3.Row
        try:
            yield connection
        finally:
            connection.close()


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    decoded = dict(row)
    for column in ("config", "environment", "metrics"):
        if decoded[column] is not None:
            decoded[column] = json.loads(decoded[column])
    return decoded
