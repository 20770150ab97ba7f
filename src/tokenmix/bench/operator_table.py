"""The operator table: every registered neural-operator grid mixer, and DeepONet, trained with one reduced protocol
per task (the same for every model on a task) on Burgers 1D and Darcy 2D, and a Markdown table of the test error at
the training resolution and at one finer resolution without retraining (zero-shot), the parameter count, the
seconds per epoch and the training time.

    python -m tokenmix.bench.operator_table                       # every row not yet in the results file, then the table
    python -m tokenmix.bench.operator_table --measure             # one epoch per model and task: seconds per epoch
    python -m tokenmix.bench.operator_table --tasks darcy --mixers fno lsm

Each finished row is one JSON line in `--results` (rows already there, for the same protocol, are skipped), and each
row's training is checkpointed by `operator_train` (a killed run resumes inside the row). The Markdown table is
written to `--markdown` from the results file alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

import tokenmix
from tokenmix.bench.operator_train import train_operator
from tokenmix.tasks import create_task

# The reduced protocols: the FNO paper's optimizer (Adam 1e-3, weight decay 1e-4, batch 20, relative L2 loss, step
# decay ×0.5) at a smaller width, resolution and epoch count, chosen so the whole table takes about half an hour on one
# quiet CPU thread: `--measure` gave about 60 s of CPU per epoch of all Burgers rows and 200 s for Darcy (see
# docs/quality.md), so 10 and 5 epochs.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "burgers": dict(task="burgers", resolution=128, solver_resolution=1024, num_train=1000, num_test=100, width=32,
                    depth=4, modes=16, epochs=10, step_every=3, batch_size=20, normalize=False,
                    eval_resolutions=(512,)),
    "darcy": dict(task="darcy", resolution=22, solver_resolution=85, num_train=1000, num_test=100, width=32, depth=4,
                  modes=8, epochs=5, step_every=2, batch_size=20, normalize=True, eval_resolutions=(43,)),
}

# Options a model needs beyond the protocol (shown in the table). uno gets the protocol's modes like fno and ffno.
# gno: radius 0.05 (13 neighbours at s = 128, 5 at s = 22); the default 0.1 made it 8x fno's cost per epoch.
# lsm: the mixer is the paper's whole U, so one of them (depth 1, as in the paper's model, instead of the protocol's
# depth) at 3 scales without channel doubling: at the protocol's depth 4 even these lighter U's cost 16x fno per
# epoch (46 s against 2.9 s of CPU on Burgers).
MODEL_OPTIONS: dict[str, dict[str, Any]] = {
    "uno": {"modes": "protocol"},
    "gno": {"radius": 0.05},
    "lsm": {"levels": 3, "channel_multiplier": 1},
}
# The attention operators carry no pointwise path of their own (their papers add a residual around each layer), so in
# the plain backbone each point's features must pass through a weighted average; they get the backbone's pointwise
# skip σ(mixer(v) + W v), the neural-operator layer that fno, lno and gno contain already.
MODEL_PROTOCOL: dict[str, dict[str, Any]] = {
    "lsm": {"depth": 1},
    "galerkin_attention": {"pointwise_skip": True},
    "fourier_attention": {"pointwise_skip": True},
    "gnot_attention": {"pointwise_skip": True},
}


def table_models() -> list[str]:
    """Every registered neural-operator grid mixer, then DeepONet."""
    mixers = [name for name in tokenmix.available(layout="grid") if tokenmix.spec(name).family == "neural-operator"]
    return sorted(mixers) + ["deeponet"]


def model_options(model: str, protocol: dict[str, Any]) -> dict[str, Any]:
    options = dict(MODEL_OPTIONS.get(model, {}))
    return {key: protocol["modes"] if value == "protocol" else value for key, value in options.items()}


def protocol_key(protocol: dict[str, Any]) -> str:
    """A hash of the protocol and of its data's version (regenerated data make new rows)."""
    data = create_task(protocol["task"], resolution=protocol["resolution"],
                       solver_resolution=protocol["solver_resolution"], num_train_examples=protocol["num_train"],
                       num_test_examples=protocol["num_test"]).cache_path.name
    return hashlib.sha256(json.dumps({**protocol, "data": data}, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_table(*, tasks: list[str], models: list[str], results: Path, protocols: dict[str, dict[str, Any]],
              checkpoint_dir: Path | None = None) -> list[dict[str, Any]]:
    """Train every (task, model) row missing from `results` and append it there; returns all rows."""
    done = {(row["task"], row["mixer"], row["protocol"]) for row in read_rows(results)}
    for task in tasks:
        protocol = protocols[task]
        key = protocol_key(protocol)
        for model in models:
            if (task, model, key) in done:
                continue
            options = model_options(model, protocol)
            overrides = MODEL_PROTOCOL.get(model, {})
            start = time.perf_counter()
            row = train_operator(**{**protocol, **overrides}, mixer=model, mixer_options=options, checkpoint_every=1,
                                 checkpoint_dir=checkpoint_dir, label=f"{task} {model}")
            row.update(protocol=key, options={**overrides, **options}, wall_seconds=round(time.perf_counter() - start, 1),
                       load_average=[round(v, 2) for v in os.getloadavg()], date=time.strftime("%Y-%m-%d %H:%M"))
            results.parent.mkdir(parents=True, exist_ok=True)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"{task} {model}: test rel. L2 {row['test_relative_l2']:.4f}, "
                  f"{row['seconds_per_epoch']:.1f} s/epoch", flush=True)
    return read_rows(results)


def measure(tasks: list[str], models: list[str], protocols: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Seconds of one training epoch per (task, model), at the protocol's settings (nothing saved)."""
    seconds: dict[str, dict[str, float]] = {}
    for task in tasks:
        protocol = dict(protocols[task], epochs=1, eval_resolutions=())
        for model in models:
            cpu = time.process_time()
            row = train_operator(**{**protocol, **MODEL_PROTOCOL.get(model, {})}, mixer=model,
                                 mixer_options=model_options(model, protocol), checkpoint_every=0, resume=False,
                                 progress_every=0)
            cpu = time.process_time() - cpu  # on a loaded machine the CPU time is what one quiet thread would take
            seconds.setdefault(task, {})[model] = row["seconds_per_epoch"]
            print(f"{task} {model}: {row['seconds_per_epoch']:.2f} s/epoch wall, {cpu:.2f} s CPU (with the "
                  f"evaluations), {row['parameters']:,} parameters", flush=True)
    return seconds


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table per task from the result rows (the latest row per model)."""
    parts = []
    for task in dict.fromkeys(row["task"] for row in rows):
        latest = {row["mixer"]: row for row in rows if row["task"] == task}
        first = next(iter(latest.values()))
        zero_shot = next(iter(first["test_relative_l2_at"]), None)
        parts.append(f"**{task}**: trained at s = {first['resolution']} (data solved at {first['solver_resolution']}), "
                     f"{first['num_train']} / {first['num_test']} examples, width {first['width']}, depth "
                     f"{first['depth']}, {first['epochs']} epochs, ×0.5 every {first['step_every']}"
                     + (", normalized" if first["normalize"] else "") + f", {first['coordinates']} coordinates")
        parts.append("")
        parts.append(f"| model | options | parameters | test rel. L2 @{first['resolution']} | zero-shot @{zero_shot} "
                     "| s / epoch | train s |")
        parts.append("|---|---|---:|---:|---:|---:|---:|")
        for model, row in sorted(latest.items(), key=lambda item: item[1]["test_relative_l2"]):
            options = ", ".join(f"{k}={v}" for k, v in row.get("options", {}).items()) or "—"
            shot = row["test_relative_l2_at"].get(str(zero_shot))
            parts.append(f"| {model} | {options} | {row['parameters']:,} | {row['test_relative_l2']:.4f} | "
                         f"{'—' if shot is None else f'{shot:.4f}'} | {row['seconds_per_epoch']:.1f} | "
                         f"{row['train_seconds']:.0f} |")
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(PROTOCOLS), default=sorted(PROTOCOLS))
    parser.add_argument("--mixers", nargs="+", help="default: every neural-operator grid mixer and deeponet")
    parser.add_argument("--epochs", type=int, help="override the protocols' epochs (step decay every epochs/4)")
    parser.add_argument("--results", type=Path, default=Path("results/operator_table.jsonl"))
    parser.add_argument("--markdown", type=Path, default=Path("results/operator_table.md"))
    parser.add_argument("--measure", action="store_true", help="time one epoch per model and task, train nothing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    protocols = {task: dict(protocol) for task, protocol in PROTOCOLS.items()}
    if args.epochs:
        for protocol in protocols.values():
            protocol.update(epochs=args.epochs, step_every=max(1, args.epochs // 4))
    models = args.mixers or table_models()
    if args.measure:
        measure(args.tasks, models, protocols)
        return
    rows = run_table(tasks=args.tasks, models=models, results=args.results, protocols=protocols)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown([row for row in rows if row["task"] in args.tasks]))
    print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
