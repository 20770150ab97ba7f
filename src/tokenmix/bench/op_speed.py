"""Time the forms of the family ops against each other (ratios taken in one run).

    python -m tokenmix.bench.op_speed [--lengths 256,1024,4096] [--threads 2]

Prints a Markdown table; `docs/performance.md` records its output with the machine it ran on.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils import benchmark

from tokenmix.ops.attention import softmax_attention
from tokenmix.ops.linear_attention import linear_attention


def _time(function, *args, **kwargs) -> float:
    timer = benchmark.Timer(stmt="function(*args, **kwargs)",
                            globals={"function": function, "args": args, "kwargs": kwargs})
    return timer.blocked_autorange(min_run_time=0.5).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,1024,4096")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    heads, head_dim = arguments.heads, arguments.head_dim
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B=1, H={heads}, K=V={head_dim}, fp32, "
          "forward; milliseconds (median of torch.utils.benchmark)\n")
    print("| L | sdpa causal | attention reference | LA chunk (vector decay) | LA recurrent (vector decay) "
          "| LA reference (vector decay) | LA chunk (head decay) |")
    print("|---|---|---|---|---|---|---|")
    for length in (int(n) for n in arguments.lengths.split(",")):
        q, k, v = (torch.randn(1, heads, length, head_dim) for _ in range(3))
        vector = -torch.rand(1, heads, length, head_dim) * 0.1
        head = -torch.rand(heads) * 0.1
        row = [
            _time(softmax_attention, q, k, v, impl="sdpa"),
            _time(softmax_attention, q, k, v, impl="reference") if length <= 4096 else float("nan"),
            _time(linear_attention, q, k, v, vector, impl="chunk"),
            _time(linear_attention, q, k, v, vector, impl="recurrent"),
            _time(linear_attention, q, k, v, vector, impl="reference") if length <= 1024 else float("nan"),
            _time(linear_attention, q, k, v, head, impl="chunk"),
        ]
        print(f"| {length} | " + " | ".join("–" if t != t else f"{t * 1e3:.2f}" for t in row) + " |")


if __name__ == "__main__":
    main()
