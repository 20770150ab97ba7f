"""The leaderboard: finished training runs read from the results database, as a terminal table and Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.table import Table

from tokenmix.bench.store import ResultsStore
from tokenmix.errors import TokenmixError
from tokenmix.tasks import create_task

COLUMNS = ("mixer", "task", "setting", "model", "accuracy", "by group", "token acc.", "train time", "params",
           "steps", "lr", "seed")


@dataclass(frozen=True)
class LeaderboardRow:
    """One finished run, in the words of the report."""

    mixer: str
    task: str
    setting: str
    model: str
    accuracy: float
    accuracy_by_group: str
    token_accuracy: float
    train_seconds: float
    parameters: int
    steps: int
    seed: int
    run_id: str
    environment: dict[str, Any]
    learning_rate: float = 0.0
    dim: int = 0
    depth: int = 0
    mixer_name: str = ""
    mixer_options_key: tuple = ()  # the mixer's options as sorted (key, value) pairs (hashable)
    sequence_length: int | None = None
    images_per_second: float | None = None  # image tasks: forward throughput of the trained model (throughput.py)
    throughput_batch: int | None = None
    throughput_clock: str | None = None

    def cells(self) -> tuple[str, ...]:
        return (self.mixer, self.task, self.setting, self.model, f"{100 * self.accuracy:.1f}%",
                self.accuracy_by_group, f"{100 * self.token_accuracy:.1f}%", f"{self.train_seconds:.0f} s",
                f"{self.parameters:,}", str(self.steps), f"{self.learning_rate:g}", str(self.seed))


def leaderboard(store: ResultsStore) -> list[LeaderboardRow]:
    """Every finished training run, grouped by task and setting, best accuracy first."""
    rows = [_row(record) for record in store.rows(status="finished", kind="train")]
    return sorted(rows, key=lambda row: (row.task, row.setting, row.model, -row.accuracy, row.mixer, row.seed))


def _row(record: dict[str, Any]) -> LeaderboardRow:
    config, metrics = record["config"], record["metrics"]
    model = config["model"]
    by_group = next((value for key, value in metrics.items() if key.startswith("accuracy_by_")), {})
    return LeaderboardRow(
        mixer=config["mixer"] + _options_label(config.get("mixer_options", {})),
        task=config["task"],
        setting=_setting_label(config["task"], config["task_params"]),
        model=f"d={model['dim']} ×{model['depth']}",
        accuracy=metrics["accuracy"],
        accuracy_by_group=" ".join(f"{group}:{100 * value:.1f}%" for group, value in
                                   sorted(by_group.items(), key=lambda item: int(item[0]))),
        token_accuracy=metrics.get("token_accuracy", float("nan")),
        train_seconds=metrics.get("train_seconds", float("nan")),
        parameters=metrics.get("parameters", 0),
        steps=config["training"]["steps"],
        seed=config["training"]["seed"],
        run_id=record["run_id"],
        environment=record["environment"] or {},
        learning_rate=config["training"]["learning_rate"],
        dim=model["dim"],
        depth=model["depth"],
        mixer_name=config["mixer"],
        mixer_options_key=tuple(sorted((key, _hashable(value)) for key, value in
                                       config.get("mixer_options", {}).items())),
        sequence_length=_sequence_length(config["task"], config["task_params"]),
        images_per_second=metrics.get("forward_images_per_second"),
        throughput_batch=metrics.get("throughput_batch"),
        throughput_clock=metrics.get("throughput_clock"),
    )


def _sequence_length(task: str, params: dict[str, Any]) -> int | None:
    try:
        return int(create_task(task, **params).sequence_length)
    except (TokenmixError, AttributeError, NotImplementedError, TypeError):
        return params.get("sequence_length")


def _hashable(value: Any) -> Any:
    return tuple(_hashable(item) for item in value) if isinstance(value, list) else value


def _options_label(options: dict[str, Any]) -> str:
    return f" ({', '.join(f'{key}={value}' for key, value in sorted(options.items()))})" if options else ""


def _setting_label(task: str, params: dict[str, Any]) -> str:
    try:
        return create_task(task, **params).setting()
    except TokenmixError:  # a task renamed or removed since the run: its raw parameters still say what it was
        return ", ".join(f"{key}={value}" for key, value in sorted(params.items()))


def terminal_table(rows: list[LeaderboardRow], title: str = "tokenmix leaderboard") -> Table:
    """A rich table of the leaderboard."""
    table = Table(title=title)
    for column in COLUMNS:
        numeric = column in ("accuracy", "token acc.", "train time", "params", "steps", "lr", "seed")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column == "mixer")
    for row in rows:
        table.add_row(*row.cells())
    return table


def markdown(rows: list[LeaderboardRow], database: Path, *, summary: list | None = None,
             speeds: dict[str, dict[str, Any]] | None = None, figures: list[Path] | None = None) -> str:
    """The report as a Markdown page: the seed-averaged leaderboards at each mixer's best learning rate (`summary`),
    one table across tasks with speed columns, the figures, every run, and the environments they ran in."""
    from tokenmix.bench.summary import BEST_LEARNING_RATE_NOTE, cross_task_table, markdown_tables

    lines = [
        "# tokenmix leaderboard",
        "",
        f"Generated by `tokenmix report` from `{database.name}` on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; reproduce with `tokenmix bench`.",
        "Accuracy counts an example as right only when every answer in it is right; "
        "\"by group\" splits it by the task's group (for MQAR, the number of key-value pairs).",
    ]
    if summary:
        lines += ["", "## Leaderboards", "", BEST_LEARNING_RATE_NOTE, "State size: the numbers a causal mixer keeps "
                  "per example after the whole sequence, over all layers (a KV cache grows with the length)."]
        lines += markdown_tables(summary)
        lines += ["", "## Across tasks", "", "Mean accuracy at the best learning rate and model size"
                  + (", and the forward time measured by `tokenmix speed`." if speeds else "."), ""]
        lines += cross_task_table(summary, speeds or {})
    if figures:
        lines += ["", "## Figures", ""] + [f"![{path.stem}]({path.name})" for path in figures]
    lines += [
        "", "## All runs", "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if column in ("accuracy", "token acc.", "train time", "params", "steps", "lr", "seed")
                       else "---" for column in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in rows]
    environments = sorted({_environment_label(row.environment) for row in rows})
    if environments:
        lines += ["", "Measured on:", ""] + [f"- {label}" for label in environments]
    return "\n".join(lines) + "\n"


def _environment_label(environment: dict[str, Any]) -> str:
    revision = environment.get("git_revision") or "unknown revision"
    return (f"{environment.get('device', '?')} ({environment.get('device_name', '?')}), "
            f"{environment.get('threads', '?')} threads, {environment.get('dtype', '?')}, "
            f"torch {environment.get('torch', '?')}, tokenmix {environment.get('tokenmix', '?')} at {revision[:12]}")


def write_markdown(store: ResultsStore, out_dir: str | Path = "results") -> Path:
    """Write `report.md`, `report.html` and the figures into `out_dir` (created if needed); returns the Markdown's
    path."""
    from tokenmix.bench.report_figures import markdown_to_html, write_figures
    from tokenmix.bench.summary import speed_columns, summarize

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = leaderboard(store)
    summary = summarize(rows)
    figures = write_figures(summary, out)
    text = markdown(rows, store.path, summary=summary, speeds=speed_columns(store), figures=figures)
    path = out / "report.md"
    path.write_text(text)
    (out / "report.html").write_text(markdown_to_html(text, "tokenmix leaderboard"))
    return path
