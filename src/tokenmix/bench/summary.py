"""The report's aggregate view: runs averaged over seeds, the best learning rate per mixer, confidence intervals,
state sizes, and one table across tasks with speed columns.

For each (task, setting, model, mixer, steps) every learning rate's runs are averaged over their seeds; the rate
with the best mean accuracy is kept, as the zoology papers report the best of their learning-rate sweep (the report
says so). The interval is the 95% Student-t confidence interval of the mean over seeds (none with one seed).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from scipy import stats

import tokenmix
from tokenmix.bench.report import LeaderboardRow
from tokenmix.errors import TokenmixError

BEST_LEARNING_RATE_NOTE = ("Each row is the learning rate with the best mean accuracy over seeds among those tried, "
                           "as the zoology papers report the best of a sweep; ± is the 95% confidence interval "
                           "of the mean over seeds (Student t).")


@dataclass(frozen=True)
class SummaryRow:
    """One mixer on one task setting at its best learning rate, averaged over seeds."""

    task: str
    setting: str
    model: str
    mixer: str
    dim: int
    steps: int
    learning_rate: float
    learning_rates_tried: tuple[float, ...]
    accuracies: tuple[float, ...]
    train_seconds: float
    parameters: int
    state_size: int | None = None  # numbers held per example after the whole sequence (None: not streamable)
    images_per_second: float | None = None  # median forward throughput over the seeds' runs (image tasks)
    runs: list[LeaderboardRow] = field(default_factory=list, compare=False, repr=False)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    @property
    def interval(self) -> float | None:
        """Half-width of the 95% confidence interval of the mean (None with one seed)."""
        n = len(self.accuracies)
        if n < 2:
            return None
        return float(stats.t.ppf(0.975, n - 1)) * self.std / math.sqrt(n)

    def accuracy_cell(self) -> str:
        interval = self.interval
        text = f"{100 * self.mean:.1f}%"
        return text + (f" ± {100 * interval:.1f}" if interval is not None else "")


def summarize(rows: list[LeaderboardRow]) -> list[SummaryRow]:
    """The best-learning-rate, seed-averaged rows, grouped by task and setting, best mean first."""
    groups: dict[tuple, dict[float, list[LeaderboardRow]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[(row.task, row.setting, row.model, row.mixer, row.steps)][row.learning_rate].append(row)
    summary = []
    for (task, setting, model, mixer, steps), by_rate in groups.items():
        rate, runs = max(by_rate.items(), key=lambda item: (statistics.fmean(r.accuracy for r in item[1]), -item[0]))
        summary.append(SummaryRow(
            task=task, setting=setting, model=model, mixer=mixer, dim=runs[0].dim, steps=steps, learning_rate=rate,
            learning_rates_tried=tuple(sorted(by_rate)), accuracies=tuple(r.accuracy for r in runs),
            train_seconds=statistics.fmean(r.train_seconds for r in runs), parameters=runs[0].parameters,
            state_size=state_size(runs[0].mixer_name, runs[0].mixer_options_key, runs[0].dim, runs[0].depth,
                                  runs[0].sequence_length),
            images_per_second=_median([r.images_per_second for r in runs if r.images_per_second is not None]),
            runs=runs))
    return sorted(summary, key=lambda r: (r.task, r.setting, r.model, -r.mean, r.mixer))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@lru_cache(maxsize=256)
def state_size(mixer: str, options_key: tuple, dim: int, depth: int, length: int | None) -> int | None:
    """Numbers a causal sequence mixer holds per example after `length` tokens, over `depth` layers (a KV cache
    grows with the length; a recurrent state does not); None for mixers without a streaming state."""
    if length is None:
        return None
    try:
        spec = tokenmix.spec(mixer)
        if spec.layout != "sequence" or spec.state == "none" or spec.causal == "never":
            return None
        options = dict(options_key)
        if spec.causal == "optional":
            options["causal"] = True
        module = tokenmix.create(mixer, dim, **options)
        with torch.no_grad():
            _, state = module(torch.zeros(1, length, dim), return_state=True)
    except (TokenmixError, TypeError, RuntimeError, ValueError):
        return None
    tensors = state.values() if isinstance(state, dict) else (state if isinstance(state, (tuple, list)) else [state])
    return depth * sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))


def markdown_tables(summary: list[SummaryRow]) -> list[str]:
    """One Markdown leaderboard per (task, setting, model); image tasks add the forward throughput (the median
    over seeds of images per second, at the batch and clock the runs state)."""
    lines: list[str] = []
    current = None
    measured = {(row.task, row.setting, row.model) for row in summary if row.images_per_second is not None}
    for row in summary:
        key = (row.task, row.setting, row.model)
        if key != current:
            current = key
            throughput = [_throughput_header(row)] if key in measured else []
            header = ["mixer", "accuracy", "seeds", "best lr (tried)", "state size", "train time", "params"]
            lines += ["", f"### {row.task}: {row.setting} ({row.model}, {row.steps} steps)", "",
                      "| " + " | ".join(header + throughput) + " |", "|---|---:|---:|---|---:|---:|---:|"
                      + "---:|" * len(throughput)]
        tried = ", ".join(f"{rate:g}" for rate in row.learning_rates_tried)
        cells = [row.mixer, row.accuracy_cell(), str(len(row.accuracies)), f"{row.learning_rate:g} ({tried})",
                 _count(row.state_size), f"{row.train_seconds:.0f} s", f"{row.parameters:,}"]
        if key in measured:
            cells.append("—" if row.images_per_second is None else f"{row.images_per_second:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _throughput_header(row: SummaryRow) -> str:
    """The throughput column's name, with the batch and clock of the first run that measured it."""
    record = next((run for run in row.runs if run.images_per_second is not None), None)
    batch = record.throughput_batch if record is not None else None
    clock = record.throughput_clock if record is not None else None
    return "images/s (forward" + (f", batch {batch}" if batch else "") + (f", {clock} time" if clock else "") + ")"


def cross_task_table(summary: list[SummaryRow], speeds: dict[str, dict[str, Any]]) -> list[str]:
    """One row per mixer: its mean accuracy on each task setting (best model size), then its measured speed."""
    columns = sorted({(row.task, row.setting) for row in summary})
    best: dict[tuple[str, tuple[str, str]], float] = {}
    for row in summary:
        key = (row.mixer, (row.task, row.setting))
        best[key] = max(best.get(key, 0.0), row.mean)
    mixers = sorted({row.mixer for row in summary})
    speed_header = next(iter(speeds.values()))["header"] if speeds else None
    header = ["mixer"] + [f"{task} ({setting})" for task, setting in columns] + ([speed_header] if speed_header else [])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for mixer in mixers:
        cells = [f"{100 * best[(mixer, column)]:.1f}%" if (mixer, column) in best else "—" for column in columns]
        if speed_header:
            base = mixer.split(" (")[0]
            cells.append(speeds.get(base, {}).get("cell", "—"))
        lines.append("| " + " | ".join([mixer] + cells) + " |")
    return lines


def speed_columns(store: Any) -> dict[str, dict[str, Any]]:
    """Per mixer, its forward time at the longest length every measured sequence mixer reached (from the rows of
    `tokenmix speed`), for the cross-task table; empty when nothing was measured."""
    from tokenmix.bench.speed_report import load_series

    groups = load_series(store)
    sequence = [(setting, series) for setting, series in groups.items() if series and series[0].layout == "sequence"]
    if not sequence:
        return {}
    setting, series = max(sequence, key=lambda item: len(item[1]))  # the setting that measured the most mixers
    common = set.intersection(*(set(s.lengths()) for s in series if s.lengths())) if series else set()
    if not common:
        return {}
    length = max(common)
    header = f"forward time at L={length}"
    columns = {}
    for item in series:
        times = dict(zip(item.lengths(), item.times()))
        if length in times:
            columns[item.mixer] = {"header": header, "cell": f"{1000 * times[length]:.2f} ms"}
    return columns


def _count(value: int | None) -> str:
    if value is None:
        return "—"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)
