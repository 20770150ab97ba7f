"""The `tokenmix` command: list and describe mixers, train on a task, run the benchmark, report, write docs.

User errors (an unknown mixer, task, option or parameter) print one `error: ...` line and exit with status 2;
Ctrl-C (or SIGTERM) during `train` or `bench` exits with status 130, keeping every finished run in the database.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import tokenmix
from tokenmix.errors import MixerInputError, TokenmixError

app = typer.Typer(name="tokenmix", help="Token mixers: list, describe, train, benchmark, report.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

Command = TypeVar("Command", bound=Callable[..., Any])
USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130


def _console() -> Console:
    console = Console()
    # Piped or captured output would be cut at rich's default 80 columns; tables read better wider.
    return console if console.is_terminal else Console(width=max(console.width, 160))


def user_errors(command: Command) -> Command:
    """Turn tokenmix's user errors into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TokenmixError as error:
            message = " ".join(str(error).split())  # one line, whatever the message holds
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(USER_ERROR_EXIT) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished runs are kept; run the same command again to resume", err=True)
            raise typer.Exit(INTERRUPTED_EXIT) from None

    return wrapper  # type: ignore[return-value]


def parse_assignments(assignments: list[str] | None, what: str) -> dict[str, Any]:
    """`["key=value", ...]` → dict; values are JSON when they parse (`4`, `0.5`, `[4,8]`, `true`), a comma list
    of numbers as a list (`4,8`), else the plain string."""
    parsed: dict[str, Any] = {}
    for assignment in assignments or []:
        key, separator, text = assignment.partition("=")
        if not separator or not key:
            raise MixerInputError(f"{what} must look like key=value, got {assignment!r}")
        parsed[key.strip()] = _parse_value(text.strip())
    return parsed


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [_parse_value(part.strip()) for part in text.split(",")]
    return text


# --- the registry -------------------------------------------------------------------------------------------
@app.command("list")
@user_errors
def list_mixers(layout: Optional[str] = typer.Option(None, help="Only 'sequence' or 'grid' mixers.")) -> None:
    """List the registered mixers."""
    if layout not in (None, "sequence", "grid"):
        raise MixerInputError(f"unknown layout {layout!r}; valid: grid, sequence")
    table = Table(title="tokenmix mixers")
    for column in ("name", "family", "layout", "causal", "state", "complexity (time / memory)", "impls"):
        table.add_column(column, no_wrap=column == "name")
    for name in tokenmix.available(layout):  # type: ignore[arg-type]
        spec = tokenmix.spec(name)
        table.add_row(name, spec.family, spec.layout, spec.causal, spec.state,
                      f"{spec.time_complexity} / {spec.memory_complexity}", ", ".join(spec.impls))
    _console().print(table)


@app.command()
@user_errors
def info(name: str = typer.Argument(..., help="A mixer name, as `tokenmix list` shows it.")) -> None:
    """Describe one mixer: its spec, paper and options."""
    spec = tokenmix.spec(name)
    table = Table(title=f"{spec.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in spec.as_dict().items():
        if key == "options":
            value = ", ".join(f"{option}={default!r}" for option, default in value.items()) or "—"
        elif key == "arxiv":
            value = f"{value} (https://arxiv.org/abs/{value})" if value else "—"
        elif isinstance(value, tuple):
            value = ", ".join(map(str, value)) or "—"
        table.add_row(key, str(value))
    for key, value in _cost_rows(name):
        table.add_row(key, value)
    _console().print(table)


def _cost_rows(name: str) -> list[tuple[str, str]]:
    """Parameters, FLOPs, saved activations and state at the docs' fixed size (tokenmix.analysis.cost)."""
    from tokenmix.analysis.cost import cost_rows, mixer_cost

    try:
        return cost_rows(mixer_cost(name))
    except MixerInputError as error:   # a mixer that cannot run at the fixed size still has its spec shown
        return [("cost", f"n/a: {' '.join(str(error).split())}")]


# --- training and the benchmark -----------------------------------------------------------------------------
@app.command()
@user_errors
def train(
    mixer: str = typer.Option("attention", help="The mixer to put in every block."),
    task: str = typer.Option("mqar", help="The task to train on."),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="A task parameter, key=value (repeat)."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="A mixer option, key=value (repeat)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps."),
    lr: Optional[str] = typer.Option(None, "--lr", help="Peak learning rate; a list (1e-3,3e-3,1e-2) sweeps it, one "
                                                         "run each."),
    batch_size: Optional[int] = typer.Option(None, help="Examples per step."),
    warmup_steps: Optional[int] = typer.Option(None, help="Steps of linear warm-up (default 50, or steps/10 "
                                                          "when that is more than the steps)."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay (matrices only)."),
    seed: Optional[str] = typer.Option(None, help="Seed of the model initialization and the data order; a list "
                                                  "(0,1,2) runs each."),
    target_accuracy: Optional[float] = typer.Option(None, help="Stop at the first evaluation reaching it."),
    precision: Optional[str] = typer.Option(None, help="auto (bfloat16 autocast on CUDA that supports it), "
                                                       "float32 or bfloat16."),
    dim: Optional[int] = typer.Option(None, help="Model width."),
    depth: Optional[int] = typer.Option(None, help="Number of blocks."),
    mlp_ratio: Optional[float] = typer.Option(None, help="MLP width / model width (0: no MLP)."),
    position_embedding: Optional[bool] = typer.Option(None, "--position-embedding/--no-position-embedding",
                                                      help="Add learned absolute positions to the embedding."),
    patch_size: Optional[int] = typer.Option(None, help="Image tasks: the stem's patch size."),
    db: Optional[Path] = typer.Option(None, help="Results database (default: $TOKENMIX_DB or the cache folder)."),
    device: str = typer.Option("auto", help="'auto' (CUDA when present), 'cpu', 'cuda', ..."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train a model with MIXER on TASK and record the run; a run already finished is reported, not redone.

    Lists in --lr and --seed expand into one run each. Under `torchrun --nproc-per-node N -m tokenmix.cli train ...`
    the N processes train data-parallel."""
    import dataclasses

    from tokenmix.bench import ModelSettings, ResultsStore, RunConfig, TrainingSettings
    from tokenmix.bench.sweep import expand, parse_numbers
    from tokenmix.bench.train import train as train_run

    learning_rates, seeds = parse_numbers(lr, "--lr"), parse_numbers(seed, "--seed", int)
    training = {"steps": steps, "batch_size": batch_size, "warmup_steps": warmup_steps,
                "weight_decay": weight_decay, "target_accuracy": target_accuracy, "precision": precision}
    model = {"dim": dim, "depth": depth, "mlp_ratio": mlp_ratio, "position_embedding": position_embedding,
             "patch_size": patch_size}
    training_settings = TrainingSettings(**{key: value for key, value in training.items() if value is not None})
    if warmup_steps is None and training_settings.warmup_steps > training_settings.steps:
        training_settings = dataclasses.replace(training_settings, warmup_steps=training_settings.steps // 10)
    base = RunConfig(task=task, mixer=mixer, task_params=parse_assignments(param, "--param"),
                     mixer_options=parse_assignments(option, "--option"),
                     model=ModelSettings(**{key: value for key, value in model.items() if value is not None}),
                     training=training_settings)
    configs = expand([base], learning_rates, seeds)
    tokenmix.spec(mixer)  # an unknown mixer fails here, in one line, before any data is generated
    console = _console()
    store = ResultsStore(db)
    for index, config in enumerate(configs, start=1):
        label = mixer if len(configs) == 1 else (f"[{index}/{len(configs)}] {mixer} lr={config.training.learning_rate:g}"
                                                 f" seed={config.training.seed}")
        outcome = train_run(config, store, device=device, progress=progress, console=console, label=label)
        metrics = outcome.metrics
        state = "already finished; not redone" if outcome.skipped else f"trained in {metrics['train_seconds']:.1f} s"
        by_group = next((value for key, value in metrics.items() if key.startswith("accuracy_by_")), {})
        console.print(f"run {outcome.run_id} ({state}): {label} on {task}: accuracy {100 * metrics['accuracy']:.2f}%, "
                      f"token accuracy {100 * metrics['token_accuracy']:.2f}%, "
                      + ", ".join(f"{group}: {100 * value:.1f}%" for group, value in by_group.items()))


@app.command()
@user_errors
def bench(
    suite: str = typer.Option("quick", help="quick (minutes on 2 CPU cores), standard (hours on a CPU), full "
                                            "(a GPU or a cluster), or the vision tables: vision (digits), "
                                            "vision-shapes (global shapes)."),
    lr: Optional[str] = typer.Option(None, "--lr", help="Sweep these learning rates over every run (1e-3,3e-3)."),
    seed: Optional[str] = typer.Option(None, help="Run every run with each of these seeds (0,1,2)."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Run the suite's speed sweep too."),
    db: Optional[Path] = typer.Option(None, help="Results database (default: $TOKENMIX_DB or the cache folder)."),
    out: Path = typer.Option(Path("results"), help="Folder of the report (Markdown, HTML, figures)."),
    device: str = typer.Option("auto", help="'auto' (CUDA when present), 'cpu', 'cuda', ..."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show progress bars."),
    plan: bool = typer.Option(False, "--plan", help="Do not train: time a few steps of each distinct run and print "
                                                    "how long the runs left would take on this machine."),
) -> None:
    """Run a benchmark suite (skipping runs already finished), then print and write the report."""
    import dataclasses
    import time

    from tokenmix.bench import ResultsStore
    from tokenmix.bench.suites import SUITES, run_suite
    from tokenmix.bench.sweep import expand, parse_numbers
    from tokenmix.errors import unknown_name

    if suite not in SUITES:
        raise unknown_name("suite", suite, SUITES)
    chosen = SUITES[suite]()
    runs = expand(chosen.runs, parse_numbers(lr, "--lr"), parse_numbers(seed, "--seed", int))
    console = _console()
    store = ResultsStore(db)
    if plan:
        _print_plan(suite, runs, store, console, device, chosen.speed if speed else None)
        return
    start = time.perf_counter()
    run_suite(runs, store, progress=progress, console=console, device=device)
    speed_ids = None
    if speed and chosen.speed is not None:
        from tokenmix.bench.speed import sweep

        settings = dataclasses.replace(chosen.speed, device=device)
        console.print(f"speed sweep: {', '.join(settings.mixers)} at lengths {settings.lengths}")
        speed_ids = sweep(settings, store, console=console, progress=progress).run_ids
    console.print(f"suite {suite!r} done in {time.perf_counter() - start:.0f} s; results in {store.path}")
    _report(store, out, console)
    if speed_ids:
        _speed_report(store, out, console, speed_ids)


def _print_plan(suite: str, runs: list, store, console, device: str, speed_settings) -> None:
    """`bench --plan`: the suite's runs per task with their estimated time (`tokenmix.bench.plan`)."""
    from rich.table import Table

    from tokenmix.bench.plan import estimate, summarize_plan

    console.print(f"suite {suite!r}: {len(runs)} runs; timing a few steps of each distinct run (lr and seed aside)")
    estimates = estimate(runs, store, device=device,
                         on_probe=lambda config: console.print(f"  probing {config.task} / {config.mixer}",
                                                               highlight=False))
    total = sum(item.seconds for item in estimates)
    left = sum(not item.done for item in estimates)
    for by in ("task", "mixer"):
        table = Table(title=f"the runs left, by {by}")
        for column in (by, "runs", "left", "estimated hours", "slowest run left"):
            table.add_column(column, justify="left" if column in (by, "slowest run left") else "right")
        for row in summarize_plan(estimates, by):
            name, seconds = row["slowest"]
            table.add_row(row[by], str(row["runs"]), str(row["left"]), f"{row['seconds'] / 3600:.2f}",
                          f"{name} ({seconds / 60:.1f} min)" if name else "-")
        table.add_row("all", str(len(estimates)), str(left), f"{total / 3600:.2f}", "")
        console.print(table)
    if speed_settings is not None:
        points = len(speed_settings.mixers) * len(speed_settings.lengths)
        console.print(f"plus the speed sweep: {points} points of at least {speed_settings.min_run_time:g} s each, "
                      f"none longer than {speed_settings.max_seconds:g} s a call (not estimated)")
    console.print("Runs that stop early at their target accuracy take less; a loaded machine gives a pessimistic "
                  "plan. Nothing was trained.")


@app.command()
@user_errors
def speed(
    mixers: str = typer.Option("attention,linear_attention,gla", help="Comma-separated mixer names, or all."),
    lengths: str = typer.Option("256..4k", help="Sequence lengths: 512..16k (powers of two) or 1k,3000,4k."),
    sizes: str = typer.Option("16..64", help="Grid mixers: points per side, as --lengths."),
    dim: int = typer.Option(256, help="Channels."),
    heads: int = typer.Option(4, help="num_heads, for the mixers that have it."),
    mode: str = typer.Option("fwd", help="fwd (inference), fwdbwd (forward + backward) or step (one streamed "
                                         "token after a prefill of L - 1)."),
    dtype: str = typer.Option("float32", help="float32, bfloat16, float16 or float64."),
    batch: int = typer.Option(1, help="Batch size."),
    device: str = typer.Option("auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'."),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: torch's setting); recorded."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="A mixer option, mixer.key=value (repeat)."),
    pairs: Optional[str] = typer.Option(None, help="Crossovers to report, a:b,c:d (default: every pair of up "
                                                   "to four mixers, else each against the first)."),
    min_run_time: float = typer.Option(0.2, help="Seconds of timed calls per point."),
    max_seconds: float = typer.Option(60.0, help="A call slower than this (or predicted to be) fails its point."),
    db: Optional[Path] = typer.Option(None, help="Results database (default: $TOKENMIX_DB or the cache folder)."),
    out: Path = typer.Option(Path("results"), help="Folder of speed.md, speed.html and the plots."),
    docs: Optional[Path] = typer.Option(None, help="Also write the tables into this Markdown file's generated "
                                                   "section (e.g. docs/performance.md), replacing the last one."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Time and peak memory of mixers as the length grows; fitted exponents, crossovers, the machine's limits."""
    import time

    from tokenmix.bench import ResultsStore
    from tokenmix.bench.speed import SpeedSettings, parse_lengths, sweep

    options: dict[str, dict[str, Any]] = {}
    for key, value in parse_assignments(option, "--option").items():
        mixer_name, dot, name = key.partition(".")
        if not dot or not mixer_name or not name:
            raise MixerInputError(f"--option must look like mixer.key=value, got {key!r}")
        options.setdefault(mixer_name, {})[name] = value
    pair_list = None
    if pairs:
        pair_list = [tuple(part.strip() for part in pair.split(":")) for pair in pairs.split(",") if pair.strip()]
        if any(len(pair) != 2 or not all(pair) for pair in pair_list):
            raise MixerInputError(f"--pairs must look like a:b,c:d, got {pairs!r}")
    settings = SpeedSettings(
        mixers=tuple(name.strip() for name in mixers.split(",") if name.strip()), lengths=parse_lengths(lengths),
        sizes=parse_lengths(sizes), dim=dim, heads=heads, mode=mode, dtype=dtype, batch=batch, device=device,
        threads=threads, options=options, min_run_time=min_run_time, max_seconds=max_seconds)
    console = _console()
    store = ResultsStore(db)
    start = time.perf_counter()
    outcome = sweep(settings, store, console=console, progress=progress)
    console.print(f"{outcome.measured} points measured, {outcome.skipped} already finished, {outcome.failed} failed "
                  f"in {time.perf_counter() - start:.0f} s; results in {store.path}")
    _speed_report(store, out, console, outcome.run_ids, pair_list)
    if docs is not None:
        from tokenmix.bench.speed_report import write_into_docs

        command = (f"tokenmix speed --mixers {mixers} --lengths {lengths} --sizes {sizes} --dim {dim} --heads {heads}"
                   f" --mode {mode} --dtype {dtype} --batch {batch}" + (f" --threads {threads}" if threads else "")
                   + f" --docs {docs}")
        console.print(f"tables written into {write_into_docs(store, docs, outcome.run_ids, pair_list, command)}")


def _speed_report(store: Any, out: Path, console: Console, run_ids: Optional[list[str]] = None,
                  pairs: Optional[list[tuple[str, str]]] = None) -> None:
    from tokenmix.bench.speed_report import load_series, terminal_report, write_speed_report

    groups = load_series(store, run_ids)
    if not groups:
        console.print(f"no speed results in {store.path}; run `tokenmix speed` first")
        return
    console.print(terminal_report(groups, pairs))
    paths = write_speed_report(store, out, run_ids, pairs)
    console.print(f"speed report written to {paths[0]}" + (f"; plots: {', '.join(map(str, paths[1:]))}"
                                                           if paths[1:] else ""))


@app.command()
@user_errors
def report(
    db: Optional[Path] = typer.Option(None, help="Results database (default: $TOKENMIX_DB or the cache folder)."),
    out: Path = typer.Option(Path("results"), help="Folder of the Markdown report."),
    speed: bool = typer.Option(False, "--speed", help="The speed report instead (rows of `tokenmix speed`): "
                                                     "tables, speed.md and log-log plots."),
) -> None:
    """Print the leaderboard of finished runs and write it as Markdown (with --speed: the speed report)."""
    from tokenmix.bench import ResultsStore
    from tokenmix.paths import default_database

    path = db.expanduser() if db is not None else default_database()
    if not path.exists():  # opening it would create an empty database, which hides a mistyped path
        raise MixerInputError(f"no results database at {path}; run `tokenmix bench` or `tokenmix train` first")
    if speed:
        _speed_report(ResultsStore(path), out, _console())
    else:
        _report(ResultsStore(path), out, _console())


def _report(store: Any, out: Path, console: Console) -> None:
    from tokenmix.bench.report import leaderboard, terminal_table, write_markdown

    rows = leaderboard(store)
    console.print(terminal_table(rows) if rows else f"no finished runs in {store.path}")
    console.print(f"report written to {write_markdown(store, out)}")


# --- analysis -----------------------------------------------------------------------------------------------
@app.command()
@user_errors
def analyze(
    tool: str = typer.Argument(..., help="erf, lipschitz, linearize, energy, reparam, cost or distill."),
    mixer: str = typer.Option("depthwise_conv", help="A mixer name (erf and cost: a comma list or 'all')."),
    checkpoint: Optional[Path] = typer.Option(None, help="A state_dict (.safetensors or .pt) of the mixer (erf, "
                                                          "linearize, reparam) or of its VisionModel (lipschitz, energy)."),
    out: Path = typer.Option(Path("results/analysis"), help="Folder of the figures and the Markdown summary."),
    dim: int = typer.Option(16, help="Mixer width."),
    size: int = typer.Option(32, help="Grid side (sequence mixers: L = size²)."),
    samples: int = typer.Option(4, help="Random inputs averaged (erf)."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="A mixer option, key=value (repeat)."),
) -> None:
    """Analyze a mixer: receptive field, Lipschitz bounds, linear system, first-layer energy, reparam, cost."""
    from tokenmix.analysis.command import run_analysis

    run_analysis(tool, mixer, out=out, checkpoint=checkpoint, dim=dim, size=size, samples=samples,
                 options=parse_assignments(option, "--option"), console=_console())


# --- documentation -----------------------------------------------------------------------------------------
@app.command()
@user_errors
def docs(out: Path = typer.Option(Path("docs/mixers.md"), help="Where to write the mixer reference.")) -> None:
    """Regenerate docs/mixers.md from the registry."""
    from tokenmix.mixer_docs import mixers_markdown

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(mixers_markdown())
    _console().print(f"wrote {out} ({len(tokenmix.available())} mixers)")


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    # `kill` then unwinds like Ctrl-C: the running row is marked failed and every finished row stays.
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    app(prog_name="tokenmix")


if __name__ == "__main__":
    sys.exit(main())
