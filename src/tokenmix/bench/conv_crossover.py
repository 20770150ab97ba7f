"""Where the FFT overtakes direct convolution: depthwise 'same' conv timed over kernel sizes and resolutions.

    python -m tokenmix.bench.conv_crossover [--threads 1] [--channels 32] [--repeats 3] [--remeasure] [--cost-model]

prints direct and FFT times (best of `repeats`, float32) per resolution and kernel size, the form `impl="auto"` picks
there and its time over the faster form's, then the crossover (the smallest kernel size from which the FFT is faster
at every resolution measured) and the worst `auto` ratio over the grid (issue 7 asks for ≤ 1.1). The two forms of a
point are timed alternately, `repeats` times each, so load that comes and goes hits both alike. `auto` picks the form
`tokenmix.ops.conv_autotune` measured faster for the point on this machine (its own timings, taken before and apart
from the table's, or kept from an earlier process; `--remeasure` forgets those first). With `--cost-model` the
`auto` column is the cost model's pick instead (`tokenmix.ops.conv.prefers_fft`, what `auto` does with autotuning
off), whose `FFT_COST_RATIO` was fitted to this measurement on the development machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from tokenmix.ops import conv_autotune
from tokenmix.ops.conv import conv, prefers_fft

KERNELS = (3, 7, 11, 15, 19, 23, 31, 41, 51)
SIZES = (32, 64, 128, 256)


def _best_time(call, repeats: int) -> float:
    call()  # warm-up (plans, allocations)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def measure(sizes: Sequence[int] = SIZES, kernels: Sequence[int] = KERNELS, channels: int = 32,
            repeats: int = 3, device: str = "cpu", cost_model: bool = False) -> list[dict]:
    """One row per (size, kernel): seconds for `direct` and `fft` on a (1, channels, size, size) input, and the
    form `auto` takes there (the autotuner's, or with `cost_model` the cost model's)."""
    rows = []
    for size in sizes:
        x = torch.randn(1, channels, size, size, device=device)
        for k in kernels:
            w = torch.randn(channels, 1, k, k, device=device)
            if cost_model:
                auto = "fft" if prefers_fft((size, size), (k, k)) else "direct"
            else:
                with conv_autotune.on():
                    conv(x, w, groups=channels, impl="auto")
                auto = conv_autotune.choices()[conv_autotune.problem_key(x, w, channels, 1)]
            times = {"direct": float("inf"), "fft": float("inf")}
            for _ in range(repeats):
                for impl in times:
                    def call(impl=impl):
                        conv(x, w, groups=channels, impl=impl)
                        if device != "cpu":
                            torch.cuda.synchronize()
                    times[impl] = min(times[impl], _best_time(call, 1))
            rows.append({"size": size, "kernel": k, **times, "auto": auto,
                         "auto_ratio": times[auto] / min(times.values())})
    return rows


def crossover(rows: list[dict]) -> int | None:
    """The smallest kernel size from which `fft` beats `direct` at every size and every larger kernel."""
    kernels = sorted({r["kernel"] for r in rows})
    for k in kernels:
        if all(r["fft"] < r["direct"] for r in rows if r["kernel"] >= k):
            return k
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--remeasure", action="store_true",
                        help="forget this machine's kept choices first, so the autotuner measures every point now")
    parser.add_argument("--cost-model", action="store_true",
                        help="auto = the cost model's pick (autotuning off) instead of the measured one")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.remeasure:
        conv_autotune.forget()
    rows = measure(channels=args.channels, repeats=args.repeats, device=args.device, cost_model=args.cost_model)
    print(f"{'size':>5} {'kernel':>6} {'direct ms':>10} {'fft ms':>8} {'auto':>6} {'auto/best':>9}")
    for r in rows:
        print(f"{r['size']:>5} {r['kernel']:>6} {1e3 * r['direct']:>10.2f} {1e3 * r['fft']:>8.2f} {r['auto']:>6} "
              f"{r['auto_ratio']:>9.2f}")
    print(f"crossover kernel size: {crossover(rows)}")
    worst = max(rows, key=lambda r: r["auto_ratio"])
    print(f"worst auto / best: {worst['auto_ratio']:.2f} at {worst['size']} px, kernel {worst['kernel']}")


if __name__ == "__main__":
    main()
