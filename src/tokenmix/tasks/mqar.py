"""Multi-query associative recall (MQAR), the recall benchmark of the Zoology paper.

"Zoology: Measuring and Improving Recall in Efficient Language Models", Arora et al. 2023, arXiv:2312.04927.

An example of length L starts with `num_kv_pairs` key-value pairs `k_1 v_1 k_2 v_2 ...`: distinct keys from the
lower half of the vocabulary, distinct values from the upper half. After the context every key is queried once,
at positions `context + 2 g` where the gaps `g` are drawn without replacement from a power law
`p(g) ∝ (g + 1) ** (power_a - 1)` (short gaps are likelier, as in natural text). The target at a query position
is the value that followed that key in the context; every other target is ignored (-100). Other positions hold
random tokens from the whole vocabulary, so the model cannot tell a query by the token alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.paths import cache_dir
from tokenmix.tasks import register_task
from tokenmix.tasks.base import IGNORE_INDEX, Split, SplitName, Task

FORMAT_VERSION = 2  # bump when the generator or the file layout changes, so older cached files are not reused


def generate_mqar(num_examples: int, sequence_length: int, vocab_size: int, num_kv_pairs: int, power_a: float,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`(inputs, targets)`, both `(num_examples, sequence_length)` int64, drawn with `generator`."""
    context = 2 * num_kv_pairs
    key_vocab = vocab_size // 2
    # Token 0 is never a key, as in Zoology (which uses it to mark empty slots before filling them with noise).
    keys = _distinct_samples(num_examples, key_vocab - 1, num_kv_pairs, generator) + 1
    values = _distinct_samples(num_examples, vocab_size - key_vocab, num_kv_pairs, generator) + key_vocab

    slots = (sequence_length - context) // 2
    gap_weights = power_a * torch.arange(1, slots + 1, dtype=torch.float64) ** (power_a - 1)
    gaps = torch.multinomial(gap_weights.expand(num_examples, slots), num_kv_pairs, replacement=False,
                             generator=generator)
    query_positions = context + 2 * gaps

    inputs = torch.randint(vocab_size, (num_examples, sequence_length), generator=generator)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    inputs.scatter_(1, query_positions, keys)
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets.scatter_(1, query_positions, values)
    return inputs, targets


def _distinct_samples(num_examples: int, population: int, count: int, generator: torch.Generator) -> Tensor:
    """Per row, `count` distinct integers from `range(population)` in random order."""
    return torch.rand(num_examples, population, generator=generator).argsort(dim=1)[:, :count]


@register_task("mqar")
@dataclass(frozen=True)
class MQAR(Task):
    """Multi-query associative recall. Train and test examples are split evenly over the numbers of pairs."""

    vocab_size: int = 64
    sequence_length: int = 64
    num_kv_pairs: tuple[int, ...] = (4, 8)
    test_num_kv_pairs: tuple[int, ...] | None = None  # None: the same as num_kv_pairs
    num_train_examples: int = 64_000
    num_test_examples: int = 1_000
    power_a: float = 0.01
    seed: int = 0

    group_name = "num_kv_pairs"
    loss_name = "cross-entropy at query positions"
    metric_name = "accuracy: an example counts when every query is answered right"

    def __post_init__(self) -> None:
        # JSON and the CLI give lists or single numbers; store tuples so the task stays hashable and comparable.
        object.__setattr__(self, "num_kv_pairs", _as_tuple(self.num_kv_pairs))
        test_pairs = self.num_kv_pairs if self.test_num_kv_pairs is None else _as_tuple(self.test_num_kv_pairs)
        object.__setattr__(self, "test_num_kv_pairs", test_pairs)
        if self.vocab_size < 4:
            raise MixerInputError(f"mqar: vocab_size must be at least 4, got {self.vocab_size}")
        for pairs in (*self.num_kv_pairs, *test_pairs):
            if pairs < 1 or 4 * pairs > self.sequence_length:
                raise MixerInputError(f"mqar: num_kv_pairs={pairs} needs 1 <= 4 * pairs <= sequence_length "
                                      f"({self.sequence_length})")
            if pairs > self.vocab_size // 2 - 1:
                raise MixerInputError(f"mqar: num_kv_pairs={pairs} needs at least {pairs} distinct keys, the lower "
                                      f"half of vocab_size={self.vocab_size} has {self.vocab_size // 2 - 1}")
        if self.num_train_examples < len(self.num_kv_pairs) or self.num_test_examples < len(test_pairs):
            raise MixerInputError("mqar: need at least one train and one test example per number of pairs")
        if not 0 < self.power_a <= 1:
            raise MixerInputError(f"mqar: power_a must be in (0, 1], got {self.power_a}")

    def setting(self) -> str:
        pairs = ",".join(map(str, self.num_kv_pairs))
        test_pairs = ",".join(map(str, self.test_num_kv_pairs))
        test = "" if self.test_num_kv_pairs == self.num_kv_pairs else f" test kv={test_pairs}"
        return f"L={self.sequence_length} V={self.vocab_size} kv={pairs}{test} n={self.num_train_examples}"

    @property
    def cache_path(self) -> Path:
        """The file holding both splits, named by a hash of every parameter that shapes the data."""
        description = json.dumps({"format": FORMAT_VERSION, **self.params()}, sort_keys=True)
        digest = hashlib.sha256(description.encode()).hexdigest()[:20]
        return cache_dir() / "tasks" / "mqar" / f"{digest}.safetensors"

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"mqar: unknown split {name!r}; valid: test, train")
        tensors = _load_or_generate(self, self.cache_path)
        return Split(tensors[f"{name}_inputs"], tensors[f"{name}_targets"], tensors[f"{name}_groups"])

    def generate(self) -> dict[str, Tensor]:
        """Both splits, freshly generated (no cache)."""
        tensors: dict[str, Tensor] = {}
        for split, pair_counts, total in (("train", self.num_kv_pairs, self.num_train_examples),
                                          ("test", self.test_num_kv_pairs, self.num_test_examples)):
            inputs, targets, groups = [], [], []
            for index, pairs in enumerate(pair_counts):
                count = total // len(pair_counts) + (index < total % len(pair_counts))
                generator = torch.Generator().manual_seed(_seed_for(self.seed, split, pairs))
                split_inputs, split_targets = generate_mqar(count, self.sequence_length, self.vocab_size, pairs,
                                                            self.power_a, generator)
                inputs.append(split_inputs)
                targets.append(split_targets)
                groups.append(torch.full((count,), pairs, dtype=torch.int64))
            tensors[f"{split}_inputs"] = torch.cat(inputs)
            tensors[f"{split}_targets"] = torch.cat(targets)
            tensors[f"{split}_groups"] = torch.cat(groups)
        return tensors


def _as_tuple(value: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)


def _seed_for(seed: int, split: str, pairs: int) -> int:
    # A stable hash, so train and test (and each number of pairs) get independent streams from one seed.
    digest = hashlib.sha256(f"mqar/{seed}/{split}/{pairs}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@functools.lru_cache(maxsize=4)
def _load_or_generate(task: MQAR, path: Path) -> dict[str, Tensor]:
    # `path` is part of the memo key, so pointing TOKENMIX_CACHE elsewhere reads (or writes) that folder.
    if path.exists():
        return {name: tensor.long() for name, tensor in load_file(path).items()}
    tensors = task.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Token ids and -100 fit in int16 for any vocabulary below 32768: a quarter of the disk of int64.
    storage = torch.int16 if task.vocab_size <= torch.iinfo(torch.int16).max else torch.int32
    # Write to a temporary file and rename, so a reader never sees a half-written cache file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file({name: tensor.to(storage) for name, tensor in tensors.items()}, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return tensors
