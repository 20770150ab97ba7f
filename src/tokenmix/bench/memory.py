"""Peak memory of one call: how far above its starting point the allocated tensor memory rose while it ran.

Two methods, one per device type:

- **CUDA** (`cuda-allocator`): the caching allocator's statistics. The peak counter is reset, the call runs, and
  the peak is `max_memory_allocated() - memory_allocated()` taken before the call. Exact for tensors (it counts the
  bytes the allocator handed out, not the blocks it reserved); memory that cuBLAS / cuDNN take outside the
  allocator (workspaces created on first use) is not in it.
- **CPU** (`cpu-profiler`): the PyTorch profiler with `profile_memory=True` records every allocation and free that
  goes through PyTorch's CPU allocator, with its size and time. Replaying them in order gives the running total
  of live tensor bytes; its maximum is the peak. Exact in bytes requested for every tensor the call's thread (and
  autograd, which runs backward on the calling thread for CPU tensors) allocates, since the CPU allocator has no
  cache that could hide a free. Not seen: memory that a library allocates on its own (oneDNN / MKL scratch
  buffers, OpenMP thread stacks) and allocations made by intra-op worker threads, which in PyTorch's CPU kernels
  are small per-thread buffers. `tests/test_memory.py` checks it on tensors of known size (within 10%).

Neither counts memory that was already allocated when the call began (parameters, inputs, a prefilled state);
both count the call's output while it is alive, because the output is part of what the call costs. One edge
differs: a call that frees memory allocated before it lowers the CUDA count, while the profiler does not report
such frees (it knows the sizes of the allocations it saw), so the CPU count is the peak of the call's own tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

CPU_METHOD = "cpu-profiler"
CUDA_METHOD = "cuda-allocator"


@dataclass(frozen=True)
class MemoryMeasurement:
    """The peak of one call above its starting point, in bytes, and how it was measured."""

    peak_bytes: int
    method: str


def peak_memory(call: Callable[[], Any], device: torch.device | str = "cpu") -> MemoryMeasurement:
    """Run `call()` once on `device` and return the peak of its tensor allocations above the memory in use before."""
    device = torch.device(device)
    if device.type == "cuda":
        return MemoryMeasurement(_cuda_peak(call, device), CUDA_METHOD)
    if device.type == "cpu":
        return MemoryMeasurement(_cpu_peak(call), CPU_METHOD)
    raise ValueError(f"peak memory is measured on 'cpu' or 'cuda' devices, not {device.type!r}")


def _cuda_peak(call: Callable[[], Any], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return max(0, int(peak))


def _cpu_peak(call: Callable[[], Any]) -> int:
    from torch.profiler import ProfilerActivity, profile

    # Kineto logs two lines to stderr on every start and stop, which would break the sweep's progress bar. Its
    # level is read once, at the profiler's first use; 6 is above all its levels. A user's own setting wins.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        result = call()
        del result  # freed inside the profile, so the output counts while alive and not after
    return replay_peak(_allocation_events(profiler))


def _allocation_events(profiler: Any) -> list[tuple[int, int]]:
    """(time in ns, signed bytes) of every CPU allocation (+) and free (-) the profiler saw, in time order."""
    from torch.autograd import DeviceType

    events = profiler.profiler.kineto_results.events()
    changes = [(event.start_ns(), event.nbytes()) for event in events
               if event.name() == "[memory]" and event.device_type() == DeviceType.CPU]
    return sorted(changes, key=lambda change: change[0])


def replay_peak(changes: list[tuple[int, int]]) -> int:
    """The maximum of the running total of signed byte changes, which starts at 0 (and a peak is never below 0)."""
    total = peak = 0
    for _, change in changes:
        total += change
        peak = max(peak, total)
    return peak
