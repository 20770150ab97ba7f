"""One point of `tokenmix speed`: its measured call built, then timed, its peak memory and FLOPs taken; the
failures a point can have (out of time or memory) and the machine's state (free memory, load) that predicts them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils import benchmark

import tokenmix
from tokenmix.bench.machine import MachineLimits, count_flops
from tokenmix.bench.memory import peak_memory

if TYPE_CHECKING:
    from tokenmix.bench.speed import SpeedPoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


class PointFailed(Exception):
    """A point that cannot be measured here (out of time or memory); the reason goes to the database."""


def build_call(point: SpeedPoint, device: torch.device) -> Callable[[], Any]:
    """The measured call of `point`, with its mixer, inputs and (for `step`) prefilled state made beforehand."""
    torch.manual_seed(0)
    dtype = DTYPES[point.dtype]
    mixer = tokenmix.create(point.mixer, point.dim, **point.options).to(device=device, dtype=dtype)
    if point.size is not None:
        x = torch.randn(point.batch, point.dim, *[point.size] * point.spatial_dims, device=device, dtype=dtype)
    else:
        x = torch.randn(point.batch, point.length, point.dim, device=device, dtype=dtype)

    if point.mode == "fwd":
        mixer.eval()

        def forward() -> Any:
            with torch.no_grad():
                return mixer(x)

        return forward

    if point.mode == "fwdbwd":
        mixer.train()
        x.requires_grad_(True)
        output_grad = torch.randn_like(x)
        parameters = [p for p in mixer.parameters() if p.requires_grad]

        def forward_backward() -> None:
            mixer(x).backward(output_grad)
            # Gradients are dropped inside the call, so each call allocates them afresh (no accumulation) and
            # their memory is part of the call's peak.
            x.grad = None
            for parameter in parameters:
                parameter.grad = None

        return forward_backward

    mixer.eval()
    with torch.no_grad():
        if point.length > 1:
            _, state = mixer(x[:, :-1], return_state=True)
        else:
            state = mixer.init_state(point.batch, device=device, dtype=dtype)
    token = x[:, -1].contiguous()

    def step() -> Any:
        with torch.no_grad():
            return mixer.step(token, state)  # states are functional: the prefilled one is reused each call

    return step


def measure_point(point: SpeedPoint, machine: MachineLimits | None, *, min_run_time: float,
                  max_seconds: float) -> dict[str, Any]:
    """Time, peak memory and FLOPs of one point, as the metrics its database row stores."""
    device = torch.device(point.device)
    call = build_call(point, device)
    start = time.perf_counter()
    flops = count_flops(call)  # doubles as the warm-up call
    _synchronize(device)
    first_call = time.perf_counter() - start
    if first_call > max_seconds:
        raise PointFailed(f"out of time: one call took {first_call:.1f} s, over the limit of {max_seconds:g} s")
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=point.threads,
                            label="tokenmix speed", sub_label=point.label, description=point.mode)
    # at least three calls where a call is long (up to 10 s of them), so the median and IQR mean something
    measurement = timer.blocked_autorange(min_run_time=max(min_run_time, min(3 * first_call, 10.0)))
    memory = peak_memory(call, device)
    median = measurement.median
    metrics: dict[str, Any] = {
        "time_median_s": median,
        "time_iqr_s": measurement.iqr,
        "time_mean_s": measurement.mean,
        "measurements": len(measurement.times),
        "calls_per_measurement": measurement.number_per_run,
        "first_call_s": first_call,
        "peak_memory_bytes": memory.peak_bytes,
        "memory_method": memory.method,
        "flops": flops,
        "flops_per_s": flops / median,
        "tokens_per_s": point.batch * (1 if point.mode == "step" else point.length) / median,
    }
    if machine is not None:
        peak = machine.matmul_flops.get(point.dtype)
        metrics["matmul_fraction"] = flops / median / peak if peak else None
        metrics["machine"] = machine.as_dict()
    return metrics


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError) or isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory(device: torch.device) -> int | None:
    """Bytes that a new allocation can take now: CUDA's free memory, or MemAvailable of /proc/meminfo."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> float | None:
    """The 1-minute load average (processes running or waiting for a CPU), where the system reports one."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_is_busy(threads: int) -> str | None:
    """A warning when other processes already use the CPUs the sweep's threads need: each thread then waits for
    a time slice, at every parallel region of every op, and times grow by whole scheduler quanta."""
    load, cpus = load_average(), os.cpu_count()
    if load is None or not cpus or load + threads <= cpus + 0.5:
        return None
    return (f"the machine is busy: load average {load:.1f} on {cpus} CPUs, and this sweep adds {threads} threads; "
            f"times will be noisy and too long (fewer --threads, or a quiet machine, give cleaner numbers)")


def failure_reason(error: BaseException) -> str:
    if isinstance(error, PointFailed):
        return str(error)
    first_line = " ".join(str(error).split())[:300]
    if is_out_of_memory(error):
        return f"out of memory: {first_line}"
    return f"{type(error).__name__}: {first_line}"
