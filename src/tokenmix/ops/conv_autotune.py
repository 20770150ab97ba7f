"""Measured choice between the `direct` and `fft` convolutions: `conv(impl="auto")` with autotuning on.

    import tokenmix.ops.conv_autotune as conv_autotune
    conv_autotune.enable()              # or TOKENMIX_CONV_AUTOTUNE=1 in the environment; `with conv_autotune.on():`

With autotuning on, the first `auto` call of each problem (device, dtype, threads, input shape, weight shape,
groups, dilation) times both forms on that call's own tensors and remembers the faster one for the process, as
`torch.backends.cudnn.benchmark` does for cuDNN's algorithms. The two forms are timed alternately, `ROUNDS` rounds
after a warm-up each, and the best time of each counts, so load that comes and goes hits both alike. Off (the
default), `auto` follows the cost model `conv.prefers_fft`, which needs no measurement and picks the same form in
every process: the two forms round differently, so a measured choice can differ from run to run where they are
close, and a run that needs bitwise reproducibility should leave autotuning off (or name `impl` itself).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

ROUNDS = 3
_ENVIRONMENT = "TOKENMIX_CONV_AUTOTUNE"
_enabled: bool | None = None      # None: read the environment on first use
_choices: dict[tuple, str] = {}


def enabled() -> bool:
    global _enabled
    if _enabled is None:
        _enabled = os.environ.get(_ENVIRONMENT, "") not in ("", "0")
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
    """Drop every remembered choice (the next call of each problem measures again)."""
    _choices.clear()


def choices() -> dict[tuple, str]:
    """The remembered choices, by problem key (a copy)."""
    return dict(_choices)


def problem_key(x: Tensor, weight: Tensor, groups: int, dilation: int) -> tuple:
    return (x.device.type, x.device.index, x.dtype, torch.get_num_threads(), tuple(x.shape), tuple(weight.shape),
            groups, dilation)


def choose(key: tuple, forms: dict[str, Callable[[], object]], device: torch.device) -> str:
    """The remembered form for `key`, or the faster of `forms` (name → call) timed now and remembered."""
    if key not in _choices:
        _choices[key] = _fastest(forms, device)
    return _choices[key]


def _fastest(forms: dict[str, Callable[[], object]], device: torch.device) -> str:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = dict.fromkeys(forms, float("inf"))
    with torch.no_grad():
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
