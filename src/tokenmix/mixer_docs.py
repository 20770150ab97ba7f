"""`docs/mixers.md`, generated from the registry: one section per mixer with its spec, paper and options."""

from __future__ import annotations

import tokenmix
from tokenmix.registry import MixerSpec


def arxiv_link(arxiv: str) -> str:
    return f"[arXiv:{arxiv}](https://arxiv.org/abs/{arxiv})" if arxiv else "—"


def mixers_markdown() -> str:
    """The whole page: an index table, then a section per registered mixer."""
    specs = [tokenmix.spec(name) for name in tokenmix.available()]
    lines = [
        "# Mixers",
        "",
        "Generated from the registry by `tokenmix docs`; do not edit by hand.",
        "",
        "| mixer | family | layout | causal | state | time | paper |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| [{spec.name}](#{spec.name.replace('_', '-')}) | {spec.family} | {spec.layout} | {spec.causal} "
              f"| {spec.state} | {_cell(spec.time_complexity)} | {arxiv_link(spec.arxiv)} |" for spec in specs]
    for spec in specs:
        lines += ["", *_section(spec)]
    return "\n".join(lines) + "\n"


def _section(spec: MixerSpec) -> list[str]:
    lines = [f"## {spec.name}", ""]
    if spec.summary:
        lines += [spec.summary, ""]
    fields = [
        ("family", spec.family),
        ("layout", spec.layout + (f" ({', '.join(f'{d}D' for d in spec.spatial_dims)})" if spec.spatial_dims else "")),
        ("paper", f"{spec.paper} ({arxiv_link(spec.arxiv)})"),
        ("implementations", ", ".join(f"`{impl}`" for impl in spec.impls)),
        ("causal", spec.causal),
        ("streaming state", spec.state),
        ("time / memory in L", f"{spec.time_complexity} / {spec.memory_complexity}"),
    ]
    if spec.resolution_invariant:
        fields.append(("resolution invariant", "yes"))
    lines += ["| | |", "|---|---|"] + [f"| {key} | {_cell(value)} |" for key, value in fields]
    if spec.options:
        lines += ["", "| option | default |", "|---|---|"]
        lines += [f"| `{option}` | `{_cell(repr(value))}` |" for option, value in spec.options.items()]
    return lines


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
