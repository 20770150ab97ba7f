"""Forward throughput of a trained model: examples per second on one batch of the test split, in eval mode.

Measured at the end of a training run on an image task (`bench/train.py`), so the accuracy and the speed of one
row come from the same model, batch shape and process. The clock is the process's CPU time on a CPU (with one
thread, the compute time, which other jobs on a shared machine disturb far less than the wall clock) and the wall
clock on CUDA (synchronized); the best of `repeats` timed calls is kept, after one warm-up call.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def forward_throughput(model: nn.Module, inputs: Tensor, *, repeats: int = 5) -> dict[str, Any]:
    """`{"forward_images_per_second", "throughput_batch", "throughput_clock"}` of `model(inputs)`."""
    was_training = model.training
    model.eval()
    cuda = inputs.device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time

    def timed_call() -> float:
        if cuda:
            torch.cuda.synchronize(inputs.device)
        start = clock()
        model(inputs)
        if cuda:
            torch.cuda.synchronize(inputs.device)
        return clock() - start

    timed_call()  # warm-up: first-call allocations and kernel choices
    best = min(timed_call() for _ in range(repeats))
    model.train(was_training)
    # process_time ticks coarsely on some systems; a zero reading says "faster than the clock", not infinite speed
    best = max(best, 1e-6)
    return {"forward_images_per_second": round(len(inputs) / best, 1), "throughput_batch": len(inputs),
            "throughput_clock": "wall" if cuda else "process cpu"}
