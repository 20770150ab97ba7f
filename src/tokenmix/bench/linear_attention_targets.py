"""Issue 3's speed targets for the linear-attention family, measured in one run and printed as a Markdown table.

    python -m tokenmix.bench.linear_attention_targets [--threads N] [--quick]

Setting (the issue's): CPU, fp32, B = 2, D = 512 as 8 heads of 64, all ratios taken in one process. Members, at
the op level with their mixers' parameterization (the projections, equal in every form, are left out):

* linear_attention: `linear_attention(elu+1(q), elu+1(k), v, normalize=True, scale=1)`, K = V = 64;
* gla: `linear_attention(q, k, v, logsigmoid(a) / 16)`, a per-channel (vector) decay, K = 32 (expand_k = 0.5), V = 64;
* deltanet: `delta_rule(q, l2norm(k), v, sigmoid(b))`, K = V = 64.

Targets (goal in brackets):
1. `chunk` forward + backward against `recurrent` at L = 4096, per member, `chunk` at its fastest chunk size of
   16 .. 256 (a user picks the size; C = 64, the default, is shown beside it) [≥ 20×];
2. forward (`impl="auto"`, no autograd) against causal SDPA (`softmax_attention(impl="sdpa")`, same B, H, K = 64)
   over L = 256 .. 16384: the smallest speed-up at L ≥ 2048 [> 1, i.e. faster from L ≤ 2048], and the speed-up
   at L = 16384 [≥ 10×];
3. the mixers' `step` (one token, `torch.no_grad`) after a prefill to position 16384 against position 1024 [≤ 1.2];
4. the arithmetic efficiency of `chunk` forward + backward at L = 4096 for chunk sizes 16 .. 256: matmul FLOPs
   (`torch.utils.flop_counter`'s formulas, what the form multiplies) / time / the fp32 matmul FLOP/s measured in
   the same run (`bench.machine.measure_machine`), best chunk size per member [≥ 30%]; beside it, the rate of the
   batched `(C×K)·(K×C)` product that forms the chunks' scores, the ceiling BLAS gives at the form's own shapes.

`--quick` shrinks every size (for a check that the command works, seconds; its pass/fail says nothing about the
issue's targets). Times are medians of `torch.utils.benchmark` (one call when a call takes longer than
`--min-run-time`). Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils import benchmark

import tokenmix
from tokenmix.bench.machine import count_flops, measure_machine
from tokenmix.bench.speed_point import load_average
from tokenmix.ops.attention import softmax_attention
from tokenmix.ops.delta_rule import delta_rule
from tokenmix.ops.feature_maps import elu_plus_one
from tokenmix.ops.linear_attention import linear_attention

MEMBERS = ("linear_attention", "gla", "deltanet")
GLA_TEMPERATURE = 16.0  # the GLA mixer's default gate temperature


@dataclass(frozen=True)
class Sizes:
    """What one run measures; `full()` is the issue's setting, `quick()` a small one."""

    batch: int
    dim: int
    heads: int
    ratio_length: int
    forward_lengths: tuple[int, ...]
    crossover_length: int
    long_length: int
    step_positions: tuple[int, int]
    efficiency_length: int
    chunk_sizes: tuple[int, ...]
    matmul_size: int  # n of the n×n fp32 matmul that measures the machine's limit

    @staticmethod
    def full(batch: int = 2, dim: int = 512, heads: int = 8) -> Sizes:
        return Sizes(batch, dim, heads, 4096, (256, 512, 1024, 2048, 4096, 8192, 16384), 2048, 16384,
                     (1024, 16384), 4096, (16, 32, 64, 128, 256), 2048)

    @staticmethod
    def quick(batch: int = 2, dim: int = 512, heads: int = 8) -> Sizes:
        return Sizes(batch, dim, heads, 256, (64, 128, 256), 128, 256, (32, 256), 256, (16, 32), 512)


# --- the members at the op level ----------------------------------------------------------------------------------
def member_inputs(member: str, sizes: Sizes, length: int, *, requires_grad: bool, seed: int = 0) -> list[Tensor]:
    """Leaf tensors of one member's op call, `(B, H, L, *)`."""
    generator = torch.Generator().manual_seed(seed)
    head_dim, key_dim = sizes.dim // sizes.heads, _key_dim(member, sizes)
    shape = (sizes.batch, sizes.heads, length)
    tensors = [torch.randn(*shape, key_dim, generator=generator), torch.randn(*shape, key_dim, generator=generator),
               torch.randn(*shape, head_dim, generator=generator)]
    if member == "gla":
        tensors.append(torch.randn(*shape, key_dim, generator=generator))     # decay pre-activation
    elif member == "deltanet":
        tensors.append(torch.randn(*shape, generator=generator))              # β pre-activation
    return [t.requires_grad_(requires_grad) for t in tensors]


def member_forward(member: str, inputs: Sequence[Tensor], impl: str, chunk_size: int = 64) -> Tensor:
    """One member's op call, features and gates included (as its mixer computes them)."""
    if member == "linear_attention":
        q, k, v = inputs
        return linear_attention(elu_plus_one(q), elu_plus_one(k), v, normalize=True, scale=1.0, impl=impl,
                                chunk_size=chunk_size)
    if member == "gla":
        q, k, v, a = inputs
        return linear_attention(q, k, v, F.logsigmoid(a) / GLA_TEMPERATURE, impl=impl, chunk_size=chunk_size)
    if member == "deltanet":
        q, k, v, b = inputs
        return delta_rule(q, F.normalize(k, dim=-1), v, b.sigmoid(), impl=impl, chunk_size=chunk_size)
    raise ValueError(f"unknown member {member!r}; expected one of {MEMBERS}")


def forward_backward(member: str, inputs: Sequence[Tensor], impl: str, chunk_size: int = 64) -> Callable[[], None]:
    """One forward and backward, with a fixed dense output gradient as in training (`.sum().backward()` would pass
    a stride-0 gradient, which sends CPU batched matmuls to a per-matrix loop that copies every operand)."""
    output_grad: list[Tensor] = []

    def call() -> None:
        for t in inputs:
            t.grad = None
        o = member_forward(member, inputs, impl, chunk_size)
        if not output_grad:
            output_grad.append(torch.randn(o.shape, generator=torch.Generator().manual_seed(1), dtype=o.dtype))
        o.backward(output_grad[0])
    return call


# --- timing --------------------------------------------------------------------------------------------------------
def seconds(call: Callable[[], object], min_run_time: float) -> float:
    """Median seconds per call: a first call (warm-up and probe), then `torch.utils.benchmark` unless that first
    call alone already took `min_run_time` (the slow token loops: then its own time, one call)."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    if first >= min_run_time:
        return first
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the targets -------------------------------------------------------------------------------------------------
@dataclass
class Row:
    target: str
    value: float
    unit: str        # "×" or "%"
    goal: str
    passed: bool
    detail: str

    def markdown(self) -> str:
        value = f"{self.value:.2f}" if self.value >= 0.01 else f"{self.value:.2e}"  # tiny --quick sizes
        result = "pass" if self.passed else "fail"
        return f"| {self.target} | {value}{self.unit} | {self.goal} | {result} | {self.detail} |"


def chunk_against_recurrent(sizes: Sizes, min_run_time: float) -> list[Row]:
    """The token loop against the chunk form at its fastest chunk size among `sizes.chunk_sizes` (C = 64, the
    default, is shown too)."""
    rows = []
    for member in MEMBERS:
        inputs = member_inputs(member, sizes, sizes.ratio_length, requires_grad=True)
        _progress(f"{member}: recurrent forward+backward at L={sizes.ratio_length}")
        recurrent = seconds(forward_backward(member, inputs, "recurrent"), min_run_time)
        chunk = {}
        for chunk_size in sorted({*sizes.chunk_sizes, 64}):
            _progress(f"{member}: chunk C={chunk_size} forward+backward at L={sizes.ratio_length}")
            chunk[chunk_size] = seconds(forward_backward(member, inputs, "chunk", chunk_size), min_run_time)
        best = min(chunk, key=chunk.get)
        ratio = recurrent / chunk[best]
        rows.append(Row(f"chunk vs recurrent, fwd+bwd, L={sizes.ratio_length}: {member}", ratio, "×", "≥ 20×",
                        ratio >= 20, f"recurrent {_time(recurrent)}, chunk C={best} {_time(chunk[best])} "
                        f"(C=64 {_time(chunk[64])})"))
    return rows


def forward_against_sdpa(sizes: Sizes, min_run_time: float) -> tuple[list[Row], list[str]]:
    head_dim = sizes.dim // sizes.heads
    times: dict[str, dict[int, float]] = {name: {} for name in ("sdpa", *MEMBERS)}
    with torch.no_grad():
        for length in sizes.forward_lengths:
            generator = torch.Generator().manual_seed(length)
            q, k, v = (torch.randn(sizes.batch, sizes.heads, length, head_dim, generator=generator)
                       for _ in range(3))
            _progress(f"causal SDPA forward at L={length}")
            times["sdpa"][length] = seconds(lambda: softmax_attention(q, k, v, impl="sdpa"), min_run_time)
            for member in MEMBERS:
                inputs = member_inputs(member, sizes, length, requires_grad=False)
                _progress(f"{member}: forward (auto) at L={length}")
                times[member][length] = seconds(lambda: member_forward(member, inputs, "auto"), min_run_time)
    rows = []
    for member in MEMBERS:
        speedups = {n: times["sdpa"][n] / times[member][n] for n in sizes.forward_lengths}
        from_length = [n for n in sizes.forward_lengths if n >= sizes.crossover_length]
        worst = min(speedups[n] for n in from_length)
        faster_from = _faster_from(speedups, sizes.forward_lengths)
        rows.append(Row(f"forward vs causal SDPA, every L ≥ {sizes.crossover_length}: {member}", worst, "×",
                        "> 1×", worst > 1,
                        f"smallest speed-up at L ≥ {sizes.crossover_length}; faster from L = {faster_from}"))
        long = sizes.long_length
        rows.append(Row(f"forward vs causal SDPA, L={long}: {member}", speedups[long], "×", "≥ 10×",
                        speedups[long] >= 10,
                        f"SDPA {_time(times['sdpa'][long])}, {member} {_time(times[member][long])}"))
    table = ["| forward, ms | " + " | ".join(str(n) for n in sizes.forward_lengths) + " |",
             "|---|" + "---:|" * len(sizes.forward_lengths)]
    for name, by_length in times.items():
        label = "causal SDPA" if name == "sdpa" else f"{name} (auto)"
        table.append(f"| {label} | " + " | ".join(f"{by_length[n] * 1e3:.2f}" for n in sizes.forward_lengths) + " |")
    return rows, table


def _faster_from(speedups: dict[int, float], lengths: Sequence[int]) -> str:
    """The smallest swept L from which the member is faster at every longer swept L ("never" if not at the last)."""
    start = None
    for length in reversed(lengths):
        if speedups[length] <= 1:
            break
        start = length
    return "never (in range)" if start is None else str(start)


def streaming_step(sizes: Sizes, min_run_time: float) -> list[Row]:
    near, far = sizes.step_positions
    rows = []
    for member in MEMBERS:
        mixer = tokenmix.create(member, sizes.dim, num_heads=sizes.heads).eval()
        states, step_times = {}, {near: float("inf"), far: float("inf")}
        with torch.no_grad():
            for position in (near, far):
                generator = torch.Generator().manual_seed(position)
                prompt = torch.randn(sizes.batch, position, sizes.dim, generator=generator)
                _progress(f"{member}: prefill to position {position}")
                _, states[position] = mixer(prompt, mixer.init_state(sizes.batch), return_state=True)
            token = torch.randn(sizes.batch, sizes.dim, generator=torch.Generator().manual_seed(0))
            # Both positions timed in alternation, best of 3 rounds: timed one after the other (the near one
            # first, the far one after its long prefill) they differed by up to 1.35x from the order alone.
            for _ in range(3):
                for position in (near, far):
                    state = states[position]
                    step_times[position] = min(step_times[position],
                                               seconds(lambda: mixer.step(token, state), min_run_time))
        ratio = step_times[far] / step_times[near]
        rows.append(Row(f"step at position {far} / at {near}: {member}", ratio, "×", "≤ 1.2×", ratio <= 1.2,
                        f"{_time(step_times[near])} → {_time(step_times[far])} per token (mixer, B={sizes.batch})"))
    return rows


def chunk_efficiency(sizes: Sizes, min_run_time: float, matmul_flops: float) -> tuple[list[Row], list[str]]:
    efficiency: dict[str, dict[int, float]] = {}
    for member in MEMBERS:
        efficiency[member] = {}
        inputs = member_inputs(member, sizes, sizes.efficiency_length, requires_grad=True)
        for chunk_size in sizes.chunk_sizes:
            call = forward_backward(member, inputs, "chunk", chunk_size)
            _progress(f"{member}: chunk C={chunk_size} forward+backward at L={sizes.efficiency_length}")
            flops = count_flops(call)
            efficiency[member][chunk_size] = flops / seconds(call, min_run_time) / matmul_flops
    _progress("batched score products at each chunk size (the BLAS ceiling)")
    ceiling = {member: {c: score_matmul_rate(member, sizes, c, min_run_time) / matmul_flops
                        for c in sizes.chunk_sizes} for member in MEMBERS}
    rows = []
    for member, by_size in efficiency.items():
        best = max(by_size, key=by_size.get)
        rows.append(Row(f"chunk arithmetic efficiency, fwd+bwd, L={sizes.efficiency_length}: {member}",
                        100 * by_size[best], "%", "≥ 30%", by_size[best] >= 0.30,
                        f"best chunk size C={best}; {by_size[best] * matmul_flops / 1e9:.1f} of "
                        f"{matmul_flops / 1e9:.1f} GFLOP/s"))
    table = ["| chunk efficiency (% of fp32 matmul) | " + " | ".join(f"C={c}" for c in sizes.chunk_sizes) + " |",
             "|---|" + "---:|" * len(sizes.chunk_sizes)]
    for member, by_size in efficiency.items():
        table.append(f"| {member} | " + " | ".join(f"{100 * by_size[c]:.1f}" for c in sizes.chunk_sizes) + " |")
    table += ["", "| batched matmul at the chunk's score shape (% of fp32 matmul) | "
              + " | ".join(f"C={c}" for c in sizes.chunk_sizes) + " |", "|---|" + "---:|" * len(sizes.chunk_sizes)]
    for member, by_size in ceiling.items():
        table.append(f"| {member}: (C×K)·(K×C), K={_key_dim(member, sizes)} | "
                     + " | ".join(f"{100 * by_size[c]:.1f}" for c in sizes.chunk_sizes) + " |")
    return rows, table


def _key_dim(member: str, sizes: Sizes) -> int:
    head_dim = sizes.dim // sizes.heads
    return head_dim // 2 if member == "gla" else head_dim


def score_matmul_rate(member: str, sizes: Sizes, chunk_size: int, min_run_time: float) -> float:
    """FLOP/s of the batched product that forms every chunk's scores, `(C×K)·(K×C)` over B·H·L/C chunks: the rate
    CPU BLAS reaches at the chunk form's own matmul shapes, a ceiling for its efficiency that the n×n matmul of
    the machine's limit does not show (small batched products run well below it)."""
    key_dim = _key_dim(member, sizes)
    count = sizes.batch * sizes.heads * (sizes.efficiency_length // chunk_size)
    generator = torch.Generator().manual_seed(chunk_size)
    a = torch.randn(count, chunk_size, key_dim, generator=generator)
    b = torch.randn(count, key_dim, chunk_size, generator=generator)
    return 2 * count * chunk_size * key_dim * chunk_size / seconds(lambda: a @ b, min_run_time)


def _time(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1e3:.2f} ms"


# --- the command -------------------------------------------------------------------------------------------------
def run(sizes: Sizes, *, threads: int, min_run_time: float) -> str:
    """Measure every target and return the Markdown report."""
    torch.set_num_threads(threads)
    if sizes.dim % sizes.heads:
        raise tokenmix.MixerInputError(f"linear_attention_targets: dim {sizes.dim} is not a multiple of heads "
                                       f"{sizes.heads}")
    load_before = load_average()
    _progress("fp32 matmul FLOP/s of this machine")
    machine = measure_machine("cpu", (torch.float32,), threads=threads, min_run_time=min_run_time,
                              matmul_size=sizes.matmul_size, copy_bytes=1 << 20)
    matmul_flops = machine.matmul_flops["float32"]
    rows = chunk_against_recurrent(sizes, min_run_time)
    forward_rows, forward_table = forward_against_sdpa(sizes, min_run_time)
    step_rows = streaming_step(sizes, min_run_time)
    efficiency_rows, efficiency_table = chunk_efficiency(sizes, min_run_time, matmul_flops)
    rows += forward_rows + step_rows + efficiency_rows
    load_after = load_average()
    lines = [f"torch {torch.__version__}, CPU, {threads} threads, fp32, B={sizes.batch}, D={sizes.dim} as "
             f"{sizes.heads} heads; fp32 matmul {matmul_flops / 1e9:.1f} GFLOP/s (n = {machine.matmul_size}); "
             f"load average {load_before} before, {load_after} after", "",
             "| target | measured | goal | result | detail |", "|---|---:|---|---|---|",
             *(row.markdown() for row in rows), "", *forward_table, "", *efficiency_table]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that the command works")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds per timing (default 1.0, 0.05 with --quick)")
    a = parser.parse_args(argv)
    sizes = (Sizes.quick if a.quick else Sizes.full)(a.batch, a.dim, a.heads)
    min_run_time = a.min_run_time if a.min_run_time is not None else (0.05 if a.quick else 1.0)
    print(run(sizes, threads=a.threads, min_run_time=min_run_time), end="")


if __name__ == "__main__":
    main()
