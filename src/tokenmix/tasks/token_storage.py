"""Shared plumbing of the generated token tasks: their cache file (through `tasks.generated`, with token ids stored
as int16), per-split seeds and right padding."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from tokenmix.tasks import generated
from tokenmix.tasks.base import IGNORE_INDEX

PAD_TOKEN = 0  # the input token after the end of an example shorter than its split (its targets are ignored)


class GeneratedTask(Protocol):
    vocab_size: int

    def generate(self) -> dict[str, Tensor]: ...


def cache_file(folder: str, format_version: int, params: dict[str, Any]) -> Path:
    """`<cache>/tasks/<folder>/<hash>.safetensors`, the hash over the format version and the parameters."""
    return generated.cache_path_for(folder, {"format": format_version, **params})


def seed_for(*parts: object) -> int:
    """A stable 63-bit seed from `parts` (e.g. task name, seed, split, setting), so every split and setting gets
    an independent random stream from one user seed, the same on every machine and Python version."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def split_counts(total: int, parts: int) -> list[int]:
    """`total` examples spread as evenly as possible over `parts` (the first ones get the remainder)."""
    return [total // parts + (index < total % parts) for index in range(parts)]


def pad_right(inputs: Tensor, targets: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Right-pad `(N, l)` inputs with `PAD_TOKEN` and targets with `IGNORE_INDEX` to `(N, length)`.

    With right padding a causal model's output at a real position never depends on the padding; a non-causal
    mixer does see the trailing run of `PAD_TOKEN`, which tells it the example's length and nothing about any
    answer (every padded target is ignored).
    """
    missing = length - inputs.shape[1]
    if missing == 0:
        return inputs, targets
    return (torch.nn.functional.pad(inputs, (0, missing), value=PAD_TOKEN),
            torch.nn.functional.pad(targets, (0, missing), value=IGNORE_INDEX))


def _narrowed(vocab_size: int) -> Callable[[dict[str, Tensor]], dict[str, Tensor]]:
    """Token ids and -100 fit in int16 for any vocabulary below 32768: a quarter of the disk of int64. Group
    labels (e.g. 1000·length + pairs) can be large and are few: kept as int64."""
    token_storage = torch.int16 if vocab_size <= torch.iinfo(torch.int16).max else torch.int32
    return lambda tensors: {name: tensor.to(torch.int64 if name.endswith("groups") else token_storage)
                            for name, tensor in tensors.items()}


def load_or_generate(task: GeneratedTask, path: Path) -> dict[str, Tensor]:
    """The task's tensors from `path` (int64), generating and writing them (narrowed) first when it is missing."""
    return generated.load_or_generate(path, task.generate, stored=_narrowed(task.vocab_size),
                                      loaded=lambda tensors: {name: t.long() for name, t in tensors.items()})
