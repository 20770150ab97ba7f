"""`tokenmix speed`: time and peak memory of mixers as the input grows, one results-database row per point.

A point is one mixer at one length (a grid mixer: one resolution, `size` per spatial side) in one setting: mode,
dtype, batch, width, heads, device, threads. Modes:

- `fwd`: the forward pass over the whole input, without autograd (inference);
- `fwdbwd`: forward, then backward of a fixed random output gradient into the parameters and the input;
- `step`: one streamed token at position L, after a prefill of L - 1 tokens (what a decoding step costs).

Timing is `torch.utils.benchmark.Timer.blocked_autorange` (warm-up, adaptive block size, median and interquartile
range over blocks; it synchronizes CUDA itself) at the sweep's thread count. Each point also gets its peak memory
(`bench.memory`), its matmul FLOPs (`bench.machine.count_flops`) and their fraction of the machine's matmul limit,
measured at the start of the same sweep (`bench.machine.measure_machine`).

Every point is keyed by the hash of its config, so a sweep run again skips what is finished and resumes an
interrupted one. A point that runs out of memory or over the time limit is stored as failed with the reason, and
the mixer's longer lengths are stored as failed without being tried; the sweep goes on with the next mixer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import tokenmix
from tokenmix.bench.environment import cpu_name, environment, resolve_device
from tokenmix.bench.machine import MachineLimits, measure_machine
from tokenmix.bench.speed_point import (DTYPES, PointFailed, failure_reason, free_memory, is_out_of_memory,
                                        load_average, machine_is_busy, measure_point)
from tokenmix.bench.store import ResultsStore, run_id
from tokenmix.errors import MixerInputError, unknown_name

MODES = ("fwd", "fwdbwd", "step")
DEFAULT_MIXERS = ("attention", "linear_attention", "gla")
DEFAULT_LENGTHS = "256..4k"
DEFAULT_SIZES = "16..64"


# --- lengths ------------------------------------------------------------------------------------------------
def parse_count(text: str) -> int:
    """`"512"` → 512, `"1k"` → 1024, `"16K"` → 16384, `"1m"` → 1048576."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", text)
    if not match or int(match.group(1)) <= 0:
        raise MixerInputError(f"a length or size must be a positive integer such as 512, 1k or 16k, got {text!r}")
    return int(match.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20}[match.group(2).lower()]


def parse_lengths(text: str) -> tuple[int, ...]:
    """`"512..16k"`: 512, 1024, ..., 16384 (doubling from the first up to the last); `"1k,3000,4k"`: the list."""
    if ".." in text:
        first_text, _, last_text = text.partition("..")
        first, last = parse_count(first_text), parse_count(last_text)
        if last < first:
            raise MixerInputError(f"a range must go up, got {text!r}")
        lengths = []
        while first <= last:
            lengths.append(first)
            first *= 2
        return tuple(lengths)
    lengths = tuple(sorted({parse_count(part) for part in text.split(",") if part.strip()}))
    if not lengths:
        raise MixerInputError(f"no lengths in {text!r}; give a range such as 512..16k or a list such as 1k,2k")
    return lengths


# --- what to measure ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeedSettings:
    """A sweep: mixers × lengths (grid mixers × sizes) in one setting."""

    mixers: tuple[str, ...] = DEFAULT_MIXERS  # ("all",): every registered mixer
    lengths: tuple[int, ...] = parse_lengths(DEFAULT_LENGTHS)
    sizes: tuple[int, ...] = parse_lengths(DEFAULT_SIZES)
    dim: int = 256
    heads: int | None = 4  # passed as num_heads to the mixers that have that option
    mode: str = "fwd"
    dtype: str = "float32"
    batch: int = 1
    device: str = "auto"
    threads: int | None = None  # None: torch's current setting
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra options per mixer name
    min_run_time: float = 0.2  # seconds of timed calls per point (torch.utils.benchmark's blocked_autorange)
    max_seconds: float = 60.0  # one call slower than this (measured or predicted) fails the point
    memory_fraction: float = 0.8  # a point predicted to need more than this share of free memory fails

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise unknown_name("mode", self.mode, MODES)
        if self.dtype not in DTYPES:
            raise unknown_name("dtype", self.dtype, DTYPES)
        for name, value in (("dim", self.dim), ("batch", self.batch), ("heads", self.heads or 1),
                            ("threads", self.threads or 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MixerInputError(f"speed: {name} must be a positive integer, got {value!r}")
        if not self.mixers:
            raise MixerInputError("speed: no mixers given")
        if not self.lengths or not self.sizes:
            raise MixerInputError("speed: no lengths or sizes given")
        if self.min_run_time <= 0 or self.max_seconds <= 0:
            raise MixerInputError("speed: min_run_time and max_seconds must be positive")


@dataclass(frozen=True)
class SpeedPoint:
    """One measurement: its dict form (`config`) is what the database stores and hashes."""

    mixer: str
    options: dict[str, Any]
    dim: int
    heads: int | None
    length: int  # tokens: the sequence length, or the number of grid points
    size: int | None  # grid mixers: points per spatial side
    spatial_dims: int | None
    mode: str
    dtype: str
    batch: int
    device: str
    device_name: str
    threads: int

    def config(self) -> dict[str, Any]:
        return {"kind": "speed", "mixer": self.mixer, "options": dict(self.options), "dim": self.dim,
                "heads": self.heads, "length": self.length, "size": self.size, "spatial_dims": self.spatial_dims,
                "mode": self.mode, "dtype": self.dtype, "batch": self.batch, "device": self.device,
                "device_name": self.device_name, "threads": self.threads}

    @property
    def label(self) -> str:
        where = f"{self.size}^{self.spatial_dims}" if self.size is not None else f"L={self.length}"
        return f"{self.mixer} {where}"


def mixer_options(name: str, settings: SpeedSettings, length: int, size: int | None = None) -> dict[str, Any]:
    """What the sweep passes to `tokenmix.create`: `num_heads` where the mixer has it, `max_length` = the length
    for mixers sized by their length (a token MLP), `resolution` = the grid's side for grid mixers built for one
    resolution (MLP-Mixer, gMLP, LeViT's bias table), then the user's own options for this mixer."""
    spec = tokenmix.spec(name)
    accepted = spec.options
    options: dict[str, Any] = {}
    if settings.heads is not None and "num_heads" in accepted:
        options["num_heads"] = settings.heads
    if "max_length" in accepted:
        options["max_length"] = length
    if spec.layout == "grid" and "resolution" in accepted and size is not None:
        options["resolution"] = size
    options.update(settings.options.get(name, {}))
    return options


def plan(settings: SpeedSettings, device: torch.device, threads: int) -> tuple[list[SpeedPoint], list[str]]:
    """The points of a sweep, mixer by mixer and shortest first, and notes on what cannot be measured. Unknown
    mixers and bad options fail here, before anything is timed."""
    points, notes = [], []
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    names = tokenmix.available() if settings.mixers == ("all",) else settings.mixers
    for name in dict.fromkeys(names):
        spec = tokenmix.spec(name)
        first = settings.lengths[0] if spec.layout == "sequence" else settings.sizes[0]
        probe = tokenmix.create(name, settings.dim, **mixer_options(name, settings, first, first))  # bad options fail
        if settings.mode == "step" and not spec.streams:
            notes.append(f"{name}: skipped, it is non-causal and cannot stream (mode 'step')")
            continue
        if spec.layout == "grid":
            spatial_dims = probe.spatial_dims
            grid = [(size ** spatial_dims, size) for size in settings.sizes]
        else:
            spatial_dims, grid = None, [(length, None) for length in settings.lengths]
        for length, size in grid:
            points.append(SpeedPoint(name, mixer_options(name, settings, length, size), settings.dim, settings.heads,
                                     length, size, spatial_dims, settings.mode, settings.dtype, settings.batch,
                                     str(device), device_name, threads))
    return points, notes


# --- one point ----------------------------------------------------------------------------------------------
class _Predictor:
    """Extrapolates a mixer's call time and peak memory from its last two points, so a length that would take
    far too long, or more memory than is free, is stopped before it starts."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float, float]]] = {}
        self.exhausted: dict[str, str] = {}

    def record(self, point: SpeedPoint, metrics: dict[str, Any]) -> None:
        seconds = metrics["time_median_s"]  # not the first call: it also pays one-time costs and flop counting
        self.history.setdefault(point.mixer, []).append((point.length, seconds, metrics["peak_memory_bytes"]))

    def predict(self, point: SpeedPoint) -> tuple[float, float] | None:
        past = sorted(self.history.get(point.mixer, []))
        if not past:
            return None
        length, seconds, memory = past[-1]
        ratio = point.length / length
        if ratio <= 1:
            return None

        def exponent(index: int) -> float:  # the local growth, at least linear: a cost never shrinks with L
            if len(past) < 2 or past[-2][index] <= 0 or past[-1][index] <= 0 or past[-2][0] == length:
                return 1.0
            return max(1.0, math.log(past[-1][index] / past[-2][index]) / math.log(length / past[-2][0]))

        return seconds * ratio ** exponent(1), memory * ratio ** exponent(2)


# --- the sweep ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepOutcome:
    """The run ids of the sweep's points (finished, skipped as finished, or failed) and the machine's limits."""

    run_ids: list[str]
    machine: MachineLimits | None
    measured: int
    skipped: int
    failed: int
    notes: list[str]


def sweep(settings: SpeedSettings, store: ResultsStore, *, console: Console | None = None,
          progress: bool | None = None) -> SweepOutcome:
    """Measure every point of `settings` not yet finished in `store`, recording each as a row."""
    console = console or Console()
    device = resolve_device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MixerInputError("speed: device 'cuda' asked for, but this torch build sees no CUDA device")
    previous_threads = torch.get_num_threads()
    threads = settings.threads or previous_threads
    torch.set_num_threads(threads)
    try:
        return _sweep(settings, store, console, progress, device, threads)
    finally:
        torch.set_num_threads(previous_threads)


def _sweep(settings: SpeedSettings, store: ResultsStore, console: Console, progress: bool | None,
           device: torch.device, threads: int) -> SweepOutcome:
    points, notes = plan(settings, device, threads)
    busy = machine_is_busy(threads) if device.type == "cpu" else None
    if busy:
        notes.append(busy)
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    dtype = DTYPES[settings.dtype]
    machine: MachineLimits | None = None
    predictor = _Predictor()
    run_ids: list[str] = []
    measured = skipped = failed = 0
    show = console.is_terminal if progress is None else progress
    bar = Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not show)
    with bar:
        task = bar.add_task("speed", total=len(points))
        for point in points:
            config = point.config()
            key = run_id(config)
            run_ids.append(key)
            bar.update(task, description=point.label)
            existing = store.get(key)
            if existing is not None and existing["status"] == "finished":
                predictor.record(point, existing["metrics"])
                skipped += 1
                bar.advance(task)
                continue
            if machine is None:  # measured once, only when something is left to measure
                bar.update(task, description="machine: matmul and bandwidth")
                dtypes = (torch.float32, dtype) if dtype != torch.float32 else (torch.float32,)
                machine = measure_machine(device, dtypes, threads=threads)
                bar.update(task, description=point.label)
            store.start(config, environment(device, dtype))
            try:
                reason = predictor.exhausted.get(point.mixer) or _predicted_failure(point, predictor, settings, device)
                if reason:
                    raise PointFailed(reason)
                load = load_average()
                metrics = measure_point(point, machine, min_run_time=settings.min_run_time,
                                        max_seconds=settings.max_seconds)
                metrics["load_average"] = load
            except KeyboardInterrupt:
                store.fail(key, "interrupted")
                raise
            except Exception as error:  # noqa: BLE001 - every failure is recorded and the sweep goes on
                failed += 1
                message = failure_reason(error)
                store.fail(key, message)
                if isinstance(error, PointFailed) or is_out_of_memory(error):
                    predictor.exhausted.setdefault(
                        point.mixer, f"not run: a shorter point ({point.label}) failed: {message}")
                console.print(f"[red]{point.label}: failed[/red] ({message})")
            else:
                store.finish(key, metrics)
                predictor.record(point, metrics)
                measured += 1
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            bar.advance(task)
    return SweepOutcome(run_ids, machine, measured, skipped, failed, notes)


def _predicted_failure(point: SpeedPoint, predictor: _Predictor, settings: SpeedSettings,
                       device: torch.device) -> str | None:
    predicted = predictor.predict(point)
    if predicted is None:
        return None
    seconds, memory = predicted
    if seconds > settings.max_seconds:
        return f"out of time: predicted {seconds:.0f} s per call from shorter lengths, over the limit of " \
               f"{settings.max_seconds:g} s"
    free = free_memory(device)
    if free is not None and memory > settings.memory_fraction * free:
        return f"out of memory: predicted peak {memory / 2**30:.1f} GiB from shorter lengths, " \
               f"{free / 2**30:.1f} GiB free"
    return None
