"""Time and peak memory of the selective scan (S6) in the `mamba` and `ss2d` mixers, per form of the op.

    python -m tokenmix.bench.selective_scan_speed [--impls scan,blocked] [--dims 256,1024,2048] [--length 2048]
        [--sides 32,64,128] [--grid-dim 64] [--threads 1] [--max-gib 4] [--min-run-time 1]
        [--mixers mamba,ss2d,vig] [--vig-impls chunk,blocked]

`mamba` at width D (expand 2, state 16: D·2·16 state values per token), B = 1, length L; `ss2d` at a side² grid,
B = 1, `--grid-dim` channels (the Vision-mixers-II sweep used 64), default options; `vig` (GLA both ways, not a
selective scan, but the same op) likewise with `--vig-impls`. Every mixer is built with the
same seed for every impl, so the rows compare the same layer. Per row: forward under `no_grad`, and forward +
backward (`(y * w).sum().backward()`); the time is the median of repeated calls (as many as fit in
`--min-run-time`; a single call when the warm-up call alone outlasts it), the peak memory is `tokenmix.bench.memory.peak_memory` (CPU: the profiler's
allocation replay; parameters and inputs not counted). The `scan` form stores its per-token states
(B, heads, L, N) once per doubling level under autograd: a row whose predicted peak exceeds `--max-gib` is skipped
(shown as "skipped") instead of risking the shared machine. For ss2d the exponent of time in pixels is the log-log
slope over the sides. Prints Markdown tables; all ratios come from this one process.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import torch

import tokenmix
from tokenmix.bench.memory import peak_memory


def _median_seconds(call: Callable[[], object], min_run_time: float) -> float:
    times: list[float] = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < min_run_time and len(times) < 50):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    times.sort()
    return times[len(times) // 2]


def _scan_predicted_bytes(heads: int, length: int, state_size: int, backward: bool) -> float:
    """The doubling scan's per-token states: six alive at once forward, 2.5 per level under autograd (measured at
    mamba D = 256, L = 2048: 404 MiB and 1,824 MiB)."""
    states = 4.0 * heads * length * state_size
    return states * (2.5 * math.ceil(math.log2(max(length, 2))) if backward else 6)


def _measure(mixer: torch.nn.Module, x: torch.Tensor, *, backward: bool, min_run_time: float):
    weights = torch.randn_like(mixer(x.detach())) if backward else None

    def call():
        if not backward:
            with torch.no_grad():
                return mixer(x)
        mixer.zero_grad(set_to_none=True)
        leaf = x.detach().requires_grad_()
        (mixer(leaf) * weights).sum().backward()
        return None

    began = time.perf_counter()
    call()  # warm-up, and the time itself when one call outlasts the budget
    seconds = time.perf_counter() - began
    if seconds < min_run_time:
        seconds = _median_seconds(call, min_run_time)
    peak = peak_memory(call).peak_bytes
    return seconds, peak


def _build(name: str, dim: int, impl: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tokenmix.create(name, dim, impl=impl)


def _row(name: str, dim: int, x: torch.Tensor, impl: str, predicted: Callable[[bool], float], a) -> list[str]:
    cells = []
    for backward in (False, True):
        if impl == "scan" and predicted(backward) > a.max_gib * 2 ** 30:
            cells += ["skipped", f"(~{predicted(backward) / 2 ** 30:.0f} GiB predicted)"]
            continue
        seconds, peak = _measure(_build(name, dim, impl), x, backward=backward, min_run_time=a.min_run_time)
        cells += [_seconds(seconds), f"{peak / 2 ** 20:,.0f} MiB"]
    return cells


def _seconds(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def _mamba(a, impls: list[str]) -> None:
    print(f"\n### mamba, B = 1, L = {a.length}, expand 2, state 16, fp32\n")
    print("| D | impl | fwd | fwd peak | fwd+bwd | fwd+bwd peak |")
    print("|---:|---|---:|---:|---:|---:|")
    for dim in a.dims:
        torch.manual_seed(1)
        x = torch.randn(1, a.length, dim)
        for impl in impls:
            cells = _row("mamba", dim, x, impl, lambda b: _scan_predicted_bytes(2 * dim, a.length, 16, b), a)
            print(f"| {dim} | {impl} | " + " | ".join(cells) + " |", flush=True)


def _grid(a, name: str, impls: list[str]) -> None:
    title = "4 directions, expand 2, state 16" if name == "ss2d" else "4 heads, both directions"
    print(f"\n### {name}, B = 1, {a.grid_dim} channels, {title}, fp32\n")
    print("| side | pixels | impl | fwd | fwd peak | fwd+bwd | fwd+bwd peak |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    forward: dict[str, list[tuple[int, float]]] = {impl: [] for impl in impls}
    for side in a.sides:
        torch.manual_seed(1)
        x = torch.randn(1, a.grid_dim, side, side)
        for impl in impls:
            heads = 4 * 2 * a.grid_dim
            cells = _row(name, a.grid_dim, x, impl, lambda b: _scan_predicted_bytes(heads, side * side, 16, b), a)
            if cells[0] != "skipped":
                forward[impl].append((side * side, _parse_seconds(cells[0])))
            print(f"| {side} | {side * side} | {impl} | " + " | ".join(cells) + " |", flush=True)
    print("\nExponent of forward time in pixels (log-log slope, first to last side):")
    for impl, points in forward.items():
        if len(points) >= 2:
            (n0, t0), (n1, t1) = points[0], points[-1]
            print(f"- {impl}: {math.log(t1 / t0) / math.log(n1 / n0):.2f} over {n0}..{n1} pixels")


def _parse_seconds(cell: str) -> float:
    value, unit = cell.split()
    return float(value) * (1e-3 if unit == "ms" else 1.0)


def _warm_up(mixers: list[str], impls: list[str], vig_impls: list[str]) -> None:
    """One tiny forward + backward per mixer and impl, so that no row pays the process's one-time costs."""
    for name in mixers:
        x = torch.randn(1, 64, 16) if name == "mamba" else torch.randn(1, 16, 8, 8)
        for impl in vig_impls if name == "vig" else impls:
            _build(name, 16, impl)(x.requires_grad_()).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixers", default="mamba,ss2d,vig")
    parser.add_argument("--impls", default="scan,blocked")
    parser.add_argument("--dims", default="256,1024,2048")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--sides", default="32,64,128")
    parser.add_argument("--grid-dim", type=int, default=64)
    parser.add_argument("--vig-impls", default="chunk,blocked")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-gib", type=float, default=4.0, help="skip scan rows predicted above this peak")
    parser.add_argument("--min-run-time", type=float, default=1.0)
    a = parser.parse_args()
    a.dims = [int(d) for d in a.dims.split(",")]
    a.sides = [int(s) for s in a.sides.split(",")]
    torch.set_num_threads(a.threads)
    impls = a.impls.split(",")
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; impls {', '.join(impls)}")
    mixers = a.mixers.split(",")
    _warm_up(mixers, impls, a.vig_impls.split(","))
    if "mamba" in mixers:
        _mamba(a, impls)
    if "ss2d" in mixers:
        _grid(a, "ss2d", impls)
    if "vig" in mixers:
        _grid(a, "vig", a.vig_impls.split(","))


if __name__ == "__main__":
    main()
