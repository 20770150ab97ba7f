"""The speed report, read from the results database: terminal tables, Markdown and log-log plots.

Rows of kind "speed" are grouped into *settings* (everything but the mixer and the length: mode, dtype, batch,
width, heads, device, threads) and, within a setting, into one *series* per mixer. Each series gets the fits of
`bench.complexity` (time and memory exponents over all points and over the longest half, a warning where they
contradict the declared complexity); each pair of series in a setting gets its crossover.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

import tokenmix
from tokenmix.bench.complexity import (Crossover, PowerFit, contradiction, crossover, expected_complexity,
                                       fit_power_law, long_length_fit)
from tokenmix.bench.store import ResultsStore
from tokenmix.errors import TokenmixError

SETTING_FIELDS = ("mode", "dtype", "batch", "dim", "heads", "device", "device_name", "threads")
HIDDEN_OPTIONS = ("num_heads", "max_length", "resolution")  # set by the sweep: heads is in the setting,
# max_length = L, resolution = the grid's side


@dataclass
class SpeedSeries:
    """One mixer's points in one setting, shortest first."""

    mixer: str
    label: str
    setting: tuple[Any, ...]
    layout: str = "sequence"
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "finished"]

    def lengths(self) -> list[int]:
        return [r["config"]["length"] for r in self.finished]

    def times(self) -> list[float]:
        return [r["metrics"]["time_median_s"] for r in self.finished]

    def memories(self) -> list[float]:
        return [r["metrics"]["peak_memory_bytes"] for r in self.finished]

    def fits(self) -> dict[str, PowerFit | None]:
        lengths = self.lengths()
        return {"time": fit_power_law(lengths, self.times()), "time_long": long_length_fit(lengths, self.times()),
                "memory": fit_power_law(lengths, self.memories()),
                "memory_long": long_length_fit(lengths, self.memories())}

    def declared(self) -> tuple[str, str]:
        spec = _spec(self.mixer)
        return (spec.time_complexity, spec.memory_complexity) if spec else ("?", "?")

    def warnings(self) -> list[str]:
        spec = _spec(self.mixer)
        if spec is None:
            return []
        mode = dict(zip(SETTING_FIELDS, self.setting))["mode"]
        time, memory = expected_complexity(spec.time_complexity, spec.memory_complexity, mode=mode, state=spec.state,
                                           variable="N" if spec.layout == "grid" else "L")
        fits = self.fits()
        found = [contradiction(fits["time_long"], time, "time"), contradiction(fits["memory_long"], memory, "memory")]
        return [f"{self.label}: {warning}" for warning in found if warning]


def _spec(name: str):
    try:
        return tokenmix.spec(name)
    except TokenmixError:  # a mixer renamed or removed since it was measured
        return None


def load_series(store: ResultsStore, run_ids: list[str] | None = None) -> dict[tuple[Any, ...], list[SpeedSeries]]:
    """Finished and failed speed rows (only `run_ids` when given), grouped by setting, then by mixer."""
    rows = [r for r in store.rows(kind="speed") if r["status"] in ("finished", "failed")]
    if run_ids is not None:
        wanted = set(run_ids)
        rows = [r for r in rows if r["run_id"] in wanted]
    groups: dict[tuple[Any, ...], dict[str, SpeedSeries]] = {}
    for row in rows:
        config = row["config"]
        layout = "grid" if config.get("size") else "sequence"
        setting = (*(config.get(name) for name in SETTING_FIELDS), layout)  # grids are compared among grids
        options = {k: v for k, v in config.get("options", {}).items() if k not in HIDDEN_OPTIONS}
        label = config["mixer"] + (f" ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})"
                                   if options else "")
        series = groups.setdefault(setting, {}).setdefault(label, SpeedSeries(config["mixer"], label, setting, layout))
        series.records.append(row)
    for by_label in groups.values():
        for series in by_label.values():
            series.records.sort(key=lambda r: r["config"]["length"])
    order = run_ids or []
    first_seen = {key: i for i, key in enumerate(order)}

    def position(series: SpeedSeries) -> tuple[int, str]:
        return (min(first_seen.get(r["run_id"], len(order)) for r in series.records), series.label)

    return {setting: sorted(by_label.values(), key=position) for setting, by_label in sorted(
        groups.items(), key=lambda item: tuple(str(v) for v in item[0]))}


def setting_title(setting: tuple[Any, ...]) -> str:
    s = dict(zip(SETTING_FIELDS, setting))
    heads = f", {s['heads']} heads" if s.get("heads") else ""
    grid = "grid mixers (length = grid points), " if setting[-1] == "grid" else ""
    return (f"{grid}{s['mode']}, {s['dtype']}, batch {s['batch']}, dim {s['dim']}{heads}, "
            f"{s['device']} ({s['device_name']}), {s['threads']} thread{'' if s['threads'] == 1 else 's'}")


ALL_PAIRS_UP_TO = 4


def crossovers(series: list[SpeedSeries], pairs: list[tuple[str, str]] | None = None) -> list[Crossover]:
    """The crossovers of the pairs asked for (by label or mixer name) in a setting. By default every pair when
    there are at most four series, else each series against the first (the sweep's first mixer: its reference)."""
    candidates = [s for s in series if s.finished]
    by_name = {s.mixer: s for s in candidates} | {s.label: s for s in candidates}
    if pairs is not None:
        chosen = [(by_name[a], by_name[b]) for a, b in pairs if a in by_name and b in by_name]
    elif len(candidates) <= ALL_PAIRS_UP_TO:
        chosen = list(itertools.combinations(candidates, 2))
    else:
        chosen = [(candidates[0], other) for other in candidates[1:]]
    found = []
    for a, b in chosen:
        result = crossover(a.label, a.lengths(), a.times(), b.label, b.lengths(), b.times())
        if result is not None:
            found.append(result)
    return found


def latest_machine(series: list[SpeedSeries]) -> dict[str, Any] | None:
    """The machine limits stored with the most recently measured point of a setting."""
    finished = [r for s in series for r in s.finished if r["metrics"].get("machine")]
    if not finished:
        return None
    return max(finished, key=lambda r: r["finished_at"] or "")["metrics"]["machine"]


def machine_line(machine: dict[str, Any] | None) -> str:
    if not machine:
        return "machine limits: not measured"
    flops = ", ".join(f"{dtype} matmul {value / 1e9:,.1f} GFLOP/s" for dtype, value in machine["matmul_flops"].items())
    return (f"machine, measured with the sweep: {flops} (n = {machine['matmul_size']}), copy bandwidth "
            f"{machine['bandwidth'] / 1e9:,.1f} GB/s")


def load_line(series: list[SpeedSeries]) -> str | None:
    """The range of the 1-minute load average while the points ran (CPU sweeps), which says how quiet it was."""
    loads = [r["metrics"]["load_average"] for s in series for r in s.finished
             if r["metrics"].get("load_average") is not None]
    if not loads:
        return None
    return f"load average while measuring: {min(loads):.1f}–{max(loads):.1f}"


# --- cells ----------------------------------------------------------------------------------------------------
def _time_cell(record: dict[str, Any]) -> str:
    if record["status"] != "finished":
        return _failure_label(record)
    metrics = record["metrics"]
    median, iqr = metrics["time_median_s"], metrics["time_iqr_s"]
    spread = f" ±{100 * iqr / median:.0f}%" if median > 0 and metrics.get("measurements", 0) > 1 else ""
    return _format_seconds(median) + spread


def _format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _memory_cell(record: dict[str, Any]) -> str:
    if record["status"] != "finished":
        return _failure_label(record)
    return format_bytes(record["metrics"]["peak_memory_bytes"])


def format_bytes(count: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count:.0f} B"


def _flops_cell(record: dict[str, Any]) -> str:
    if record["status"] != "finished":
        return _failure_label(record)
    metrics = record["metrics"]
    if not metrics.get("flops"):
        return "–"
    fraction = metrics.get("matmul_fraction")
    share = f" ({100 * fraction:.0f}%)" if fraction is not None else ""
    return f"{metrics['flops_per_s'] / 1e9:.3g}{share}"


def _failure_label(record: dict[str, Any]) -> str:
    error = record.get("error") or ""
    if error.startswith("not run"):
        return "skipped"
    if "out of memory" in error:
        return "OOM"
    if "out of time" in error:
        return "timeout"
    return "failed"


def _fit_cell(fit: PowerFit | None) -> str:
    return fit.describe() if fit is not None else "–"


def _length_heading(series: list[SpeedSeries], length: int) -> str:
    for s in series:
        for r in s.records:
            if r["config"]["length"] == length and r["config"].get("size"):
                return f"{r['config']['size']}^{r['config']['spatial_dims']}"
    return f"{length:,}".replace(",", " ") if length >= 10_000 else str(length)


def _tables(series: list[SpeedSeries]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the time, memory and FLOP/s tables of one setting."""
    lengths = sorted({r["config"]["length"] for s in series for r in s.records})
    headings = [_length_heading(series, n) for n in lengths]
    tables = []
    for title, cell, kind in (("time per call (median ± IQR/median)", _time_cell, "time"),
                              ("peak memory of the call", _memory_cell, "memory"),
                              ("useful GFLOP/s (% of the matmul limit)", _flops_cell, None)):
        header = ["mixer", *headings]
        if kind:
            header += ["exponent (all)", "exponent (long L)", "declared"]
        rows = []
        for s in series:
            by_length = {r["config"]["length"]: r for r in s.records}
            row = [s.label] + [cell(by_length[n]) if n in by_length else "" for n in lengths]
            if kind:
                fits = s.fits()
                declared_time, declared_memory = s.declared()
                row += [_fit_cell(fits[kind]), _fit_cell(fits[f"{kind}_long"]),
                        declared_time if kind == "time" else declared_memory]
            rows.append(row)
        tables.append((title, header, rows))
    return tables


def _failures(series: list[SpeedSeries]) -> list[str]:
    return [f"{s.label} at {_length_heading([s], r['config']['length'])}: {r['error']}"
            for s in series for r in s.records if r["status"] != "finished"]


# --- outputs --------------------------------------------------------------------------------------------------
def terminal_report(groups: dict[tuple[Any, ...], list[SpeedSeries]], pairs: list[tuple[str, str]] | None = None):
    """A rich renderable: per setting, the three tables, the machine, crossovers, warnings and failures."""
    parts: list[Any] = []
    for setting, series in groups.items():
        parts.append(Text(f"speed: {setting_title(setting)}", style="bold"))
        for title, header, rows in _tables(series):
            table = Table(title=title, title_justify="left")
            for i, column in enumerate(header):
                table.add_column(column, justify="left" if i == 0 or column == "declared" else "right",
                                 no_wrap=i == 0)
            for row in rows:
                table.add_row(*row)
            parts.append(table)
        parts.append(Text(machine_line(latest_machine(series))))
        if load_line(series):
            parts.append(Text(load_line(series)))
        for found in crossovers(series, pairs):
            parts.append(Text(f"crossover: {found.describe()}"))
        for warning in itertools.chain.from_iterable(s.warnings() for s in series):
            parts.append(Text(f"warning: {warning}", style="yellow"))
        for failure in _failures(series):
            parts.append(Text(f"failed: {failure}", style="red"))
        parts.append(Text(""))
    return Group(*parts)


def markdown(groups: dict[tuple[Any, ...], list[SpeedSeries]], database: Path,
             plots: dict[tuple[Any, ...], Path] | None = None, pairs: list[tuple[str, str]] | None = None) -> str:
    """The speed report as Markdown; `plots` maps a setting to its PNG, linked relative to the report."""
    lines = ["# tokenmix speed", "",
             f"Generated by `tokenmix report --speed` from `{database.name}` on "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; measured with `tokenmix speed`.",
             "Times are medians of torch.utils.benchmark's blocked_autorange (± the interquartile range as a share "
             "of the median); memory is the call's peak above what was allocated before it (see "
             "`tokenmix.bench.memory`). Exponents are log-log least-squares fits over all points and over the "
             "longest half, with the RMS scatter around the line.", ""]
    for setting, series in groups.items():
        lines += [f"## {setting_title(setting)}", ""]
        if plots and setting in plots:
            lines += [f"![time and memory against length]({plots[setting].name})", ""]
        for title, header, rows in _tables(series):
            lines += [f"**{title}**", "", "| " + " | ".join(header) + " |",
                      "|" + "|".join("---" if i == 0 or h == "declared" else "---:" for i, h in enumerate(header)) + "|"]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
            lines.append("")
        lines += [machine_line(latest_machine(series)) + (f"; {load_line(series)}" if load_line(series) else ""), ""]
        extra = ([f"- crossover: {c.describe()}" for c in crossovers(series, pairs)]
                 + [f"- warning: {w}" for s in series for w in s.warnings()]
                 + [f"- failed: {f}" for f in _failures(series)])
        if extra:
            lines += extra + [""]
        environments = sorted({_environment_label(r["environment"] or {}) for s in series for r in s.finished})
        if environments:
            lines += ["Measured with:", ""] + [f"- {label}" for label in environments] + [""]
    return "\n".join(lines)


def _environment_label(environment: dict[str, Any]) -> str:
    revision = environment.get("git_revision") or "unknown revision"
    revision = revision[:12] + ("-dirty" if revision.endswith("-dirty") else "")
    return f"torch {environment.get('torch', '?')}, tokenmix {environment.get('tokenmix', '?')} at {revision}"


def setting_slug(setting: tuple[Any, ...]) -> str:
    s = dict(zip(SETTING_FIELDS, setting))
    grid = "-grid" if setting[-1] == "grid" else ""
    text = (f"speed{grid}-{s['mode']}-{s['dtype']}-b{s['batch']}-d{s['dim']}-h{s['heads']}-{s['device']}"
            f"-t{s['threads']}")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def plot(series: list[SpeedSeries], path: Path, title: str, pairs: list[tuple[str, str]] | None = None) -> Path:
    """Time and peak memory against length, log-log, one line per mixer, crossovers marked; a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {}
    for s in series:
        if not s.finished:
            continue
        fits = s.fits()
        exponent = f" (L^{fits['time_long'].exponent:.2f})" if fits["time_long"] else ""
        line, = time_axis.plot(s.lengths(), s.times(), marker="o", label=s.label + exponent)
        colors[s.label] = line.get_color()
        memory_exponent = f" (L^{fits['memory_long'].exponent:.2f})" if fits["memory_long"] else ""
        memory_axis.plot(s.lengths(), [m / 2 ** 20 for m in s.memories()], marker="o", color=line.get_color(),
                         label=s.label + memory_exponent)
    by_label = {s.label: s for s in series}
    for found in crossovers(series, pairs):
        if found.length is None:
            continue
        first = by_label[found.first]
        fit_time = _interpolate(first.lengths(), first.times(), found.length)
        time_axis.plot([found.length], [fit_time], marker="X", markersize=11, color="black", zorder=5)
        time_axis.annotate(f"{found.first} = {found.second}\nL ≈ {found.length:,.0f}", (found.length, fit_time),
                           textcoords="offset points", xytext=(-8, 8), ha="right", fontsize=8)
        time_axis.axvline(found.length, color="gray", linestyle=":", linewidth=1)
    for axis, label in ((time_axis, "time per call (s)"), (memory_axis, "peak memory (MiB)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("length L (tokens; grid: points)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _interpolate(lengths: list[int], values: list[float], at: float) -> float:
    """ln(value) interpolated linearly in ln(length) (the point a crossover mark sits on)."""
    points = sorted(zip(lengths, values))
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= at <= x1:
            w = (math.log(at) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp((1 - w) * math.log(y0) + w * math.log(y1))
    return points[-1][1]


def write_speed_report(store: ResultsStore, out_dir: str | Path = "results", run_ids: list[str] | None = None,
                       pairs: list[tuple[str, str]] | None = None) -> list[Path]:
    """Write `speed.md`, `speed.html` and one PNG per setting into `out_dir`; returns their paths (the Markdown
    first)."""
    from tokenmix.bench.report_figures import markdown_to_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = load_series(store, run_ids)
    plots = {setting: plot(series, out / f"{setting_slug(setting)}.png", setting_title(setting), pairs)
             for setting, series in groups.items() if any(s.finished for s in series)}
    path = out / "speed.md"
    text = markdown(groups, store.path, plots, pairs)
    path.write_text(text)
    (out / "speed.html").write_text(markdown_to_html(text, "tokenmix speed"))
    return [path, *plots.values()]


DOCS_BEGIN = "<!-- generated by tokenmix speed --docs: begin -->"
DOCS_END = "<!-- generated by tokenmix speed --docs: end -->"


def write_into_docs(store: ResultsStore, docs: str | Path, run_ids: list[str] | None = None,
                    pairs: list[tuple[str, str]] | None = None, command: str = "") -> Path:
    """Replace the generated section of `docs` (between `DOCS_BEGIN` and `DOCS_END`, appended when absent) with the
    speed report of `run_ids`, its headings demoted under the document's own and its plots left out."""
    path = Path(docs)
    text = path.read_text() if path.exists() else ""
    report = markdown(load_series(store, run_ids), store.path, None, pairs)
    body = [("#" + line) if line.startswith("#") else line for line in report.splitlines()[1:]]
    section = "\n".join([DOCS_BEGIN, "", f"Regenerate with `{command}`." if command else "", *body, DOCS_END])
    if DOCS_BEGIN in text and DOCS_END in text:
        before, _, rest = text.partition(DOCS_BEGIN)
        _, _, after = rest.partition(DOCS_END)
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    return path
