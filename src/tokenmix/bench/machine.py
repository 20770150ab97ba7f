"""The machine's limits, measured in the same run as the mixers: matmul FLOP/s and memory bandwidth.

A mixer's *useful FLOPs* are counted with `torch.utils.flop_counter`'s formulas, which count the matrix
products (mm, bmm, addmm, baddbmm, convolutions, scaled-dot-product attention and their backward) and nothing
else: element-wise work, reductions, FFTs and scans count 0. The fused attention kernels get formulas of their own
here: a causal attention counts its lower triangle, the work a causal kernel must do (PyTorch's formulas count the
full square, and leave the CPU flash kernel out). Chunked and masked forms written with matmuls count what they
multiply, masked zeros included. FLOPs / time / the device's matmul FLOP/s is then the
fraction of the machine's matmul limit the mixer reaches; memory-bound mixers sit far below it by nature, which is
why the bandwidth is reported beside it.
"""

from __future__ import annotations

import math

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import benchmark
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass(frozen=True)
class MachineLimits:
    """Matmul FLOP/s per dtype (keyed by its name, e.g. "float32") and copy bandwidth in bytes/s."""

    device: str
    threads: int
    matmul_flops: dict[str, float] = field(default_factory=dict)
    bandwidth: float = float("nan")
    matmul_size: int = 0
    copy_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "threads": self.threads, "matmul_flops": dict(self.matmul_flops),
                "bandwidth": self.bandwidth, "matmul_size": self.matmul_size, "copy_bytes": self.copy_bytes}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def measure_machine(device: torch.device | str = "cpu", dtypes: Iterable[torch.dtype] = (torch.float32,), *,
                    threads: int | None = None, min_run_time: float = 0.3, matmul_size: int | None = None,
                    copy_bytes: int | None = None) -> MachineLimits:
    """Time an n×n matmul per dtype (2n³ FLOPs) and a large copy (reads and writes its bytes once each).

    Defaults: n = 2048 and 128 MiB on a CPU (past the last-level cache of common server CPUs), n = 8192 and 1 GiB
    on a GPU. The numbers are what PyTorch reaches with its own kernels on this machine, not the vendor's peak.
    """
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    on_gpu = device.type == "cuda"
    n = matmul_size or (8192 if on_gpu else 2048)
    copy_bytes = copy_bytes or ((1 << 30) if on_gpu else (128 << 20))
    flops: dict[str, float] = {}
    for dtype in dict.fromkeys(dtypes):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        seconds = _median_seconds(lambda: torch.mm(a, b), threads, min_run_time)
        flops[dtype_name(dtype)] = 2 * n ** 3 / seconds
        del a, b
    elements = copy_bytes // 4
    source = torch.ones(elements, device=device)
    target = torch.empty_like(source)
    seconds = _median_seconds(lambda: target.copy_(source), threads, min_run_time)
    bandwidth = 2 * elements * 4 / seconds
    return MachineLimits(str(device), threads, flops, bandwidth, n, elements * 4)


def _median_seconds(call: Callable[[], Any], threads: int, min_run_time: float) -> float:
    call()  # first use: kernel selection, page faults of fresh buffers
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def count_flops(call: Callable[[], Any]) -> int:
    """The matmul-type FLOPs of one `call()` (forward, and backward when the call runs it)."""
    counter = _FlopCounter()
    with counter:
        call()
    return counter.total


class _FlopCounter(TorchDispatchMode):
    """`torch.utils.flop_counter`'s formulas (and ours for attention) summed over every op a call dispatches.

    `FlopCounterMode` itself also attributes FLOPs to modules, with hooks that fail on a module whose output is a
    leaf tensor that requires grad under `torch.no_grad()` (a module returning its parameters); the total is all
    the sweep needs, so this counts it without the hooks.
    """

    def __init__(self) -> None:
        super().__init__()
        from torch.utils.flop_counter import flop_registry, shape_wrapper

        ours = {**_attention_formulas(), torch.ops.aten.linalg_solve_triangular: _triangular_solve_flops}
        self.formulas = {**flop_registry, **{op: shape_wrapper(f) for op, f in ours.items()}}
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def _triangular_solve_flops(a_shape: Any, b_shape: Any, *args: Any, left: bool = True, out_shape: Any = None,
                            **kwargs: Any) -> int:
    """`linalg_solve_triangular` (trsm, a BLAS-3 op like matmul): n(n − 1)/2 multiply-adds per right-hand side by
    substitution with an n × n triangle (the delta rule's chunk form solves one per chunk); PyTorch has no formula."""
    if len(args) >= 2:  # positional (upper, left)
        left = args[1]
    n = a_shape[-1]
    right_hand_sides = b_shape[-1] if left else b_shape[-2]
    batch = math.prod(torch.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2])))
    return batch * n * (n - 1) * right_hand_sides


_ATTENTION_KERNELS = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                      "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")


def _attention_formulas() -> dict[Any, Callable[..., int]]:
    """Formulas for the fused attention kernels behind `scaled_dot_product_attention`, forward and backward, that
    count a causal square attention as its lower triangle, (L + 1) / 2L of the square: the work a causal kernel
    has to do. PyTorch's own formulas count the full square, and leave the CPU flash kernel out."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    formulas: dict[Any, Callable[..., int]] = {}
    for name in _ATTENTION_KERNELS:
        for suffix, count, tensors in (("", sdpa_flop_count, 3), ("_backward", sdpa_backward_flop_count, 4)):
            packet = getattr(aten, name + suffix, None)
            if packet is None:
                continue
            formulas[packet] = _causal_formula(count, tensors, _argument_index(packet.default, "is_causal"))
    return formulas


def _argument_index(overload: Any, name: str) -> int | None:
    for index, argument in enumerate(overload._schema.arguments):
        if argument.name == name:
            return index
    return None


def _causal_formula(count: Callable[..., int], tensors: int, causal_index: int | None) -> Callable[..., int]:
    def formula(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        flops = count(*args[:tensors])
        causal = kwargs.get("is_causal", False)
        if causal_index is not None and causal_index < len(args):
            causal = args[causal_index]
        query_shape, key_shape = args[tensors - 3], args[tensors - 2]
        length = query_shape[-2]
        if causal and length == key_shape[-2]:
            flops = flops * (length + 1) // (2 * length)
        return flops

    return formula
