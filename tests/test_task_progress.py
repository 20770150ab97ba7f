"""Progress lines of long data generation."""

from __future__ import annotations

from tokenmix.tasks import progress


def test_solved_returns_every_result_in_order_and_reports_slow_work(monkeypatch, capsys):
    clock = iter(range(0, 1000, 10))  # each reading of the clock is 10 s after the one before
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    results = progress.solved("task", [[1, 2], [3], [4, 5, 6]], sum, total=6, count=len)
    assert results == [3, 3, 15]
    lines = capsys.readouterr().err.splitlines()
    # start at 0; items done at 10 (< 15 s since the last line: silent), 20 and 30 s
    assert lines == ["task: 3/6 examples solved, 20 s, about 20 s left",
                     "task: 6/6 examples solved, 30 s, about 0 s left"]


def test_quick_work_prints_nothing(capsys):
    assert progress.solved("task", range(3), lambda x: x * x, total=3) == [0, 1, 4]
    assert capsys.readouterr().err == ""
