"""Time the long-convolution op and mixers (issue 4's speed targets), forward only, fp32, B = 1.

    python -m tokenmix.bench.long_convolution_speed op      [--lengths 4096,16384,65536] [--threads 2]
    python -m tokenmix.bench.long_convolution_speed hyena   [--lengths 1024,4096,16384,65536]
    python -m tokenmix.bench.long_convolution_speed scaling [--lengths 4096,16384,65536] [--mixers hyena,s4d]
    python -m tokenmix.bench.long_convolution_speed distill [--lengths 16384] [--orders 16,32,64]

* `op`: `fft_conv(impl="fft")` against the bare transforms (one `rfft` of the input and one `irfft` of the product
  with the kernel spectrum computed beforehand; and the same plus the kernel's `rfft`, which a kernel generated
  per call needs), D = 256, same sizes, same run;
* `hyena`: the Hyena mixer (order 2, D = 256; filters generated and transformed in each call, and both reused
  across calls as at inference with fixed weights) against the attention mixer (4 heads of 64, causal, SDPA) and the bare causal
  SDPA op on (1, 4, L, 64); the ratios use the per-call-filter time;
* `scaling`: every long-conv mixer at D = 256; the fitted exponent of time in L (least squares on log-log);
* `distill`: a Hyena (D = 256, `kernel_length` = L) distilled by `to_recurrent(order)`: filter and output relative
  errors on a random input of length L, and one `step` at position L of the exact (cached-input) mixer against
  the distilled (modal recurrence) one.

Prints Markdown tables of milliseconds (torch.utils.benchmark, median), all numbers of a table from one run.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch.utils import benchmark

import tokenmix
from tokenmix.ops.fftconv import fast_size, fft_conv

DIM = 256
LONG_CONV_MIXERS = ("hyena", "multi_head_hyena", "h3", "s4d", "sgconv", "ckconv", "flexconv")
OPTIONS = {"multi_head_hyena": {"num_heads": 64}, "h3": {"num_heads": None}}  # head sizes 4 and 1 at D = 256


def _time(stmt, *args, min_run_time: float = 1.0) -> float:
    timer = benchmark.Timer(stmt="f(*args)", globals={"f": stmt, "args": args})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def _bare(x: torch.Tensor, spectrum: torch.Tensor, size: int) -> torch.Tensor:
    return torch.fft.irfft(torch.fft.rfft(x, n=size) * spectrum, n=size)


def _bare_with_kernel(x: torch.Tensor, kernel: torch.Tensor, size: int) -> torch.Tensor:
    return torch.fft.irfft(torch.fft.rfft(x, n=size) * torch.fft.rfft(kernel, n=size), n=size)


def op(lengths: list[int]) -> None:
    print("| L | fft_conv (ms) | rfft(x) + irfft (ms) | ratio | rfft(x) + rfft(k) + irfft (ms) | ratio |\n"
          "|---|---|---|---|---|---|")
    for length in lengths:
        x, k = torch.randn(1, DIM, length), torch.randn(DIM, length)
        size = fast_size(2 * length - 1)
        spectrum = torch.fft.rfft(k, n=size)
        t_op = _time(lambda a, b: fft_conv(a, b, impl="fft"), x, k)
        t_bare = _time(_bare, x, spectrum, size)
        t_three = _time(_bare_with_kernel, x, k, size)
        print(f"| {length} | {t_op * 1e3:.2f} | {t_bare * 1e3:.2f} | {t_op / t_bare:.2f}× | {t_three * 1e3:.2f} | "
              f"{t_op / t_three:.2f}× |")


def _mixer(name: str, **options):
    mixer = tokenmix.create(name, DIM, **options).eval()
    return lambda x: mixer(x)


def hyena(lengths: list[int]) -> None:
    model = tokenmix.create("hyena", DIM, impl="fft").eval()
    attention = _mixer("attention", num_heads=4, impl="sdpa")

    def fresh(x: torch.Tensor) -> torch.Tensor:  # filters generated and transformed in the call, as in training
        model.filter.__dict__.pop("_cached_filter", None)
        model.clear_kernel_spectra()
        return model(x)

    print("| L | hyena (ms) | hyena, cached filters (ms) | attention mixer (ms) | bare SDPA (ms) | "
          "attention / hyena | SDPA / hyena |\n|---|---|---|---|---|---|---|")
    for length in lengths:
        x, q = torch.randn(1, length, DIM), torch.randn(1, 4, length, 64)
        t_hyena = _time(fresh, x)
        t_cached = _time(model, x)
        t_attention = _time(attention, x)
        t_sdpa = _time(lambda a: F.scaled_dot_product_attention(a, a, a, is_causal=True), q)
        print(f"| {length} | {t_hyena * 1e3:.1f} | {t_cached * 1e3:.1f} | {t_attention * 1e3:.1f} | "
              f"{t_sdpa * 1e3:.1f} | {t_attention / t_hyena:.1f}× | {t_sdpa / t_hyena:.1f}× |")


def scaling(lengths: list[int], mixers: list[str]) -> None:
    print("| mixer | " + " | ".join(f"L={n} (ms)" for n in lengths) + " | exponent |\n"
          "|---|" + "---|" * len(lengths) + "---|")
    for name in mixers:
        mixer = _mixer(name, **OPTIONS.get(name, {}))
        times = [_time(mixer, torch.randn(1, n, DIM), min_run_time=0.5) for n in lengths]
        logs = [(math.log(n), math.log(t)) for n, t in zip(lengths, times)]
        mean_x, mean_y = (sum(v) / len(v) for v in zip(*logs))
        slope = sum((a - mean_x) * (b - mean_y) for a, b in logs) / sum((a - mean_x) ** 2 for a, _ in logs)
        print(f"| {name} | " + " | ".join(f"{t * 1e3:.1f}" for t in times) + f" | {slope:.2f} |")


def distill(lengths: list[int], orders: list[int]) -> None:
    print("| L | order | filter error (median / max) | output error | exact step (ms) | distilled step (ms) "
          "| speed-up |\n|---|---|---|---|---|---|---|")
    for length in lengths:
        torch.manual_seed(0)
        exact = tokenmix.create("hyena", DIM, kernel_length=length).eval()
        x = torch.randn(1, length + 1, DIM)
        y = exact(x[:, :length])
        _, state = exact(x[:, :length], return_state=True)
        t_exact = _time(lambda s: exact.step(x[:, length], s), state, min_run_time=2.0)
        for order in orders:
            fast = exact.to_recurrent(order)
            error = fast.filter_error
            output_error = ((fast(x[:, :length]) - y).norm() / y.norm()).item()
            _, fast_state = fast(x[:, :length], return_state=True)
            t_fast = _time(lambda s: fast.step(x[:, length], s), fast_state)
            print(f"| {length} | {order} | {error.median().item():.2e} / {error.max().item():.2e} | "
                  f"{output_error:.2e} | {t_exact * 1e3:.2f} | {t_fast * 1e3:.3f} | {t_exact / t_fast:.0f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("op", "hyena", "scaling", "distill"))
    parser.add_argument("--orders", default="16,32,64")
    parser.add_argument("--lengths", default=None)
    parser.add_argument("--mixers", default=",".join(LONG_CONV_MIXERS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    default = {"hyena": "1024,4096,16384,65536", "distill": "16384"}.get(a.part, "4096,16384,65536")
    lengths = [int(n) for n in (a.lengths or default).split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B=1, D={DIM}, fp32, forward, no grad\n")
    with torch.no_grad():
        if a.part == "op":
            op(lengths)
        elif a.part == "hyena":
            hyena(lengths)
        elif a.part == "distill":
            distill(lengths, [int(o) for o in a.orders.split(",")])
        else:
            scaling(lengths, a.mixers.split(","))


if __name__ == "__main__":
    main()
