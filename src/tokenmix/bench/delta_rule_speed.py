"""Time the delta-rule op's `chunk` (WY/UT) form against its `recurrent` loop, forward + backward.

    python -m tokenmix.bench.delta_rule_speed [--lengths 1024,4096] [--chunk-sizes 32,64,128] [--threads 2]

Issue 3's setting: B = 2, D = 512 as 8 heads of K = V = 64, fp32, per-token scalar decay. Prints a Markdown table
of milliseconds (torch.utils.benchmark) and the ratio recurrent / chunk, all taken in one run.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from tokenmix.ops.delta_rule import delta_rule


def _forward_backward(impl: str, chunk_size: int, *leaves: torch.Tensor) -> None:
    q, k, v, beta, g = leaves
    o = delta_rule(q, F.normalize(k, dim=-1), v, beta.sigmoid(), g, impl=impl, chunk_size=chunk_size)
    # a dense output gradient, as in training (a stride-0 one from `.sum()` slows CPU batched matmuls)
    o.backward(torch.randn(o.shape, generator=torch.Generator().manual_seed(1), dtype=o.dtype))


def _time(runs: int, *args) -> float:
    timer = benchmark.Timer(stmt="f(*args)", globals={"f": _forward_backward, "args": args})
    return timer.timeit(runs).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,4096")
    parser.add_argument("--chunk-sizes", default="32,64,128")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    sizes = [int(c) for c in a.chunk_sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={a.batch}, H={a.heads}, "
          f"K=V={a.head_dim}, fp32, forward+backward; milliseconds\n")
    print("| L | recurrent | " + " | ".join(f"chunk C={c}" for c in sizes) + " | recurrent / best chunk |")
    print("|---|---|" + "---|" * len(sizes) + "---|")
    for length in (int(n) for n in a.lengths.split(",")):
        shape = (a.batch, a.heads, length)
        leaves = [torch.randn(*shape, a.head_dim), torch.randn(*shape, a.head_dim), torch.randn(*shape, a.head_dim),
                  torch.randn(*shape), -0.1 * torch.rand(*shape)]
        leaves = [t.requires_grad_() for t in leaves]
        recurrent = _time(1, "recurrent", 64, *leaves)
        chunks = [_time(3, "chunk", c, *leaves) for c in sizes]
        cells = [f"{t * 1e3:.0f}" for t in (recurrent, *chunks)]
        print(f"| {length} | " + " | ".join(cells) + f" | {recurrent / min(chunks):.1f}× |")


if __name__ == "__main__":
    main()
