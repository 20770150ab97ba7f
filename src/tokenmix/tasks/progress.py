"""Progress lines for long data generation (a PDE solved for every example), on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

EVERY_SECONDS = 15.0  # at most one line this often, and one when the work is done, if it took longer than this


def solved(label: str, items: Iterable[Item], solve: Callable[[Item], Result], *, total: int,
           count: Callable[[Item], int] = lambda item: 1) -> list[Result]:
    """`[solve(item) for item in items]`, saying on stderr how many of `total` examples are done, with the elapsed
    time and an estimate of the rest, at most every EVERY_SECONDS (quick work prints nothing)."""
    return list(_reporting(label, items, solve, total, count))


def _reporting(label: str, items: Iterable[Item], solve: Callable[[Item], Result], total: int,
               count: Callable[[Item], int]) -> Iterator[Result]:
    start = last = time.perf_counter()
    done = 0
    for item in items:
        yield solve(item)
        done += count(item)
        now = time.perf_counter()
        if now - last >= EVERY_SECONDS or (done >= total and now - start >= EVERY_SECONDS):
            last = now
            left = (now - start) / done * (total - done)
            print(f"{label}: {done}/{total} examples solved, {now - start:.0f} s, about {left:.0f} s left",
                  file=sys.stderr, flush=True)
