"""The report's figures (matplotlib, PNG) and its HTML page.

- MQAR accuracy against model dimension and against the state size per example (the zoology plots), one line per
  mixer, error bars the 95% interval over seeds;
- accuracy against training time, one point per (mixer, task setting, model);
- `report.html`: the Markdown report as HTML with the figures inline (relative links), for a browser.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

from tokenmix.bench.summary import SummaryRow  # noqa: E402


def _line_plot(rows: list[SummaryRow], x_of, xlabel: str, title: str, path: Path, log_x: bool) -> Path | None:
    by_mixer: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for row in rows:
        x = x_of(row)
        if x is not None:
            by_mixer[row.mixer].append((x, 100 * row.mean, 100 * (row.interval or 0.0)))
    if not by_mixer:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for mixer, points in sorted(by_mixer.items()):
        points.sort()
        xs, ys, errors = zip(*points)
        axes.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=mixer)
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(-2, 102)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_figures(summary: list[SummaryRow], out_dir: Path) -> list[Path]:
    """Every figure the runs allow, into `out_dir`; returns their paths."""
    paths: list[Path | None] = []
    mqar = defaultdict(list)
    for row in summary:
        if row.task.startswith("mqar"):
            mqar[row.setting].append(row)
    for index, (setting, rows) in enumerate(sorted(mqar.items())):
        paths.append(_line_plot(rows, lambda r: r.dim, "model dimension", f"MQAR ({setting})",
                                out_dir / f"mqar_dimension_{index}.png", log_x=True))
        paths.append(_line_plot(rows, lambda r: r.state_size, "state size per example (numbers, all layers)",
                                f"MQAR ({setting})", out_dir / f"mqar_state_size_{index}.png", log_x=True))
    by_task = defaultdict(list)
    for row in summary:
        by_task[row.task].append(row)
    for task, rows in sorted(by_task.items()):
        paths.append(_time_scatter(rows, f"{task}: accuracy against training time", out_dir / f"time_{task}.png"))
    return [path for path in paths if path is not None]


def _time_scatter(rows: list[SummaryRow], title: str, path: Path) -> Path | None:
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for mixer in sorted({row.mixer for row in rows}):
        mine = [row for row in rows if row.mixer == mixer]
        axes.scatter([max(row.train_seconds, 1e-3) for row in mine], [100 * row.mean for row in mine], label=mixer)
    axes.set_xscale("log")
    axes.set_xlabel("training time (s, mean over seeds)")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(-2, 102)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def markdown_to_html(text: str, title: str) -> str:
    """The report's own Markdown (headings, pipe tables, images, bullet lists, paragraphs) as one HTML page."""
    body: list[str] = []
    table: list[list[str]] = []

    def inline(value: str) -> str:
        value = html.escape(value.replace("\\|", "|"))
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", value)

    def flush_table() -> None:
        if table:
            header, *rows = table
            body.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in header) + "</tr></thead>"
                        "<tbody>" + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>"
                                            for row in rows) + "</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                table.append(cells)
            continue
        flush_table()
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
        heading = re.match(r"(#+) (.*)", line)
        if image:
            body.append(f'<p><img src="{html.escape(image.group(2))}" alt="{html.escape(image.group(1))}"></p>')
        elif heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<ul><li>{inline(line[2:])}</li></ul>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
