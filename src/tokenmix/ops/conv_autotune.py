"""Measured choice between the `direct` and `fft` convolutions behind `conv(impl="auto")`.

    import tokenmix.ops.conv_autotune as conv_autotune
    conv_autotune.enable(False)         # or TOKENMIX_CONV_AUTOTUNE=0 in the environment: the cost model instead
    with conv_autotune.on(): ...        # measured inside the block (the default), as it was after

On (the default), the first `auto` call of each problem (device, dtype, threads, input shape, weight shape,
groups, dilation) times both forms on that call's own tensors and keeps the faster one, as
`torch.backends.cudnn.benchmark` does for cuDNN's algorithms. The two forms are timed alternately, `ROUNDS` rounds
after a warm-up each, and the best time of each counts, so load that comes and goes hits both alike. The choices
are kept per machine (the device's name, the number of cores, the torch version) in `conv_autotune.json` in the
cache folder (`tokenmix.paths.cache_dir`), as FFTW keeps its wisdom: each problem is measured once per machine, and
every later process on that machine picks the same form, so runs repeat bitwise. `forget()` drops this machine's
choices, in memory and on disk.

Why measure: where the FFT overtakes the direct form depends on the machine. The cost model `conv.prefers_fft` was
fitted on one 2-core Intel Xeon (worst pick 1.18× the faster form there); on a 2-core AMD EPYC its worst pick was
1.78×, where the measured choice was the faster form at every point of its own run, and within 1.15× in a later
process, at a point where the two forms trade places between runs (docs/performance.md, issue 7). Off, `auto` follows that
cost model: no measurement and the same form on every machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils._python_dispatch import _disable_current_modes  # private, but what torch itself uses for this

from tokenmix.paths import cache_dir

ROUNDS = 3
FILE_NAME = "conv_autotune.json"
_ENVIRONMENT = "TOKENMIX_CONV_AUTOTUNE"
_enabled: bool | None = None      # None: read the environment on first use
_choices: dict[tuple, str] = {}


def enabled() -> bool:
    global _enabled
    if _enabled is None:
        _enabled = os.environ.get(_ENVIRONMENT, "1").strip().lower() not in ("0", "false", "no", "off")
    return _enabled


def enable(flag: bool = True) -> None:
    """Turn autotuning on (or off with `flag=False`) for this process."""
    global _enabled
    _enabled = bool(flag)


@contextlib.contextmanager
def on() -> Iterator[None]:
    """Autotuning on inside the block, as it was after."""
    before = enabled()
    enable(True)
    try:
        yield
    finally:
        enable(before)


def forget() -> None:
    """Drop this machine's choices, in memory and in the cache folder (the next call of each problem measures)."""
    _choices.clear()
    stored = _read()
    devices = [None] + [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    prefixes = tuple(_machine_prefix(device) for device in devices)
    kept = {key: form for key, form in stored.items() if not key.startswith(prefixes)}
    if kept != stored:
        _write(kept)


def choices() -> dict[tuple, str]:
    """This process's choices, by problem key (a copy)."""
    return dict(_choices)


def problem_key(x: Tensor, weight: Tensor, groups: int, dilation: int) -> tuple:
    return (x.device.type, x.device.index, x.dtype, torch.get_num_threads(), tuple(x.shape), tuple(weight.shape),
            groups, dilation)


def choose(key: tuple, forms: dict[str, Callable[[], object]], device: torch.device) -> str | None:
    """The form kept for `key` on this machine, or the faster of `forms` (name → call) timed now and kept.

    None where timing means nothing (while torch.compile or the JIT traces, and on the meta device): nothing is
    measured or kept, and the caller picks by other means."""
    if key not in _choices:
        stored = _read()
        stored_key = _machine_prefix(device) + repr(key)
        if stored.get(stored_key) in forms:
            _choices[key] = stored[stored_key]
        elif _cannot_time(device):
            return None
        else:
            _choices[key] = _fastest(forms, device)
            _write({**stored, stored_key: _choices[key]})
    return _choices[key]


def _cannot_time(device: torch.device) -> bool:
    return device.type == "meta" or torch.compiler.is_compiling() or torch.jit.is_tracing()


def _fastest(forms: dict[str, Callable[[], object]], device: torch.device) -> str:
    """The fastest form, timed outside any active dispatch mode (a FLOP counter or a profiler around the first
    call sees the chosen form run once, not the measurement)."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = dict.fromkeys(forms, float("inf"))
    with torch.no_grad(), _disable_current_modes():
        for call in forms.values():  # warm-up: FFT plans, oneDNN primitives, allocations
            call()
        synchronize()
        for _ in range(ROUNDS):
            for name, call in forms.items():
                start = time.perf_counter()
                call()
                synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=best.get)


def _machine_prefix(device: torch.device | None = None) -> str:
    """What a stored choice is only valid on: the device's name, the cores, the torch version."""
    if device is not None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return f"{name} | {os.cpu_count()} cores | torch {torch.__version__} | "


@functools.cache
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _path() -> Path:
    return cache_dir() / FILE_NAME


def _read() -> dict[str, str]:
    try:
        stored = json.loads(_path().read_text())
    except (OSError, ValueError):  # no file yet, or one cut short: measure again
        return {}
    return stored if isinstance(stored, dict) else {}


def _write(stored: dict[str, str]) -> None:
    """Replace the file in one step (a reader never sees half of it); a cache folder that cannot be written keeps
    the choices in this process only."""
    path = _path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(stored, indent=0, sort_keys=True))
        partial.replace(path)
    except OSError:
        pass
