"""Induction heads: recall the token that followed a trigger, the task of the H3 and Mamba papers.

"In-context Learning and Induction Heads", Olsson et al. 2022, arXiv:2209.11895 (the mechanism: find the earlier
occurrence of the current token and copy what followed it); as a synthetic task in "Hungry Hungry Hippos: Towards
Language Modeling with State Space Models", Fu et al. 2022, arXiv:2212.14052, and "Mamba: Linear-Time Sequence
Modeling with Selective State Spaces", Gu & Dao 2023, arXiv:2312.00752, §4.1.2 (vocabulary 16, trained at length
256, tested at lengths up to 2^20 to measure extrapolation).

An example of length L is uniformly random tokens from 0 … vocab_size − 2; the trigger token `vocab_size − 1`
appears exactly twice: once at a uniformly random position p ∈ [0, L − 3], followed by the *answer* token at
p + 1, and again at the last position L − 1, where the model must output the answer:

    inputs  = [x_0 … x_{p−1}  T  a  x_{p+2} … x_{L−2}  T]
    targets = [ignored …                            a]

Only the last position is scored. `test_sequence_length` lists the test lengths (default: the training length);
a test split with several lengths is right-padded to its longest with token 0 and ignored targets (a causal
model never sees the padding at the scored position). `groups` hold each example's length, so the metrics
report the accuracy per test length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.tasks import register_task
from tokenmix.tasks.base import IGNORE_INDEX, Split, SplitName, Task
from tokenmix.tasks.token_storage import cache_file, load_or_generate, pad_right, seed_for, split_counts

FORMAT_VERSION = 1  # bump when the generator or the file layout changes, so older cached files are not reused


def generate_induction_heads(num_examples: int, sequence_length: int, vocab_size: int,
                             generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`(inputs, targets)`, both `(num_examples, sequence_length)` int64, drawn with `generator`."""
    trigger = vocab_size - 1
    inputs = torch.randint(vocab_size - 1, (num_examples, sequence_length), generator=generator)
    positions = torch.randint(sequence_length - 2, (num_examples, 1), generator=generator)
    inputs.scatter_(1, positions, trigger)
    inputs[:, -1] = trigger
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -1] = inputs.gather(1, positions + 1).squeeze(1)
    return inputs, targets


@register_task("induction_heads")
@dataclass(frozen=True)
class InductionHeads(Task):
    """Induction heads (H3 arXiv:2212.14052; Mamba arXiv:2312.00752 §4.1.2). `sequence_length` is the training
    length; `test_sequence_length` one test length or several (None: the training length), the test examples
    spread evenly over them.

    A model with learned absolute positions has none past `sequence_length` (the trainer sizes its table by
    `sequence_length`), so test lengths beyond it need a model without them (`--no-position-embedding`), which is
    also what the length-extrapolation question is about. `max_sequence_length` is the longest length of either
    split.
    """

    vocab_size: int = 16
    sequence_length: int = 256
    test_sequence_length: tuple[int, ...] | None = None  # None: the training length
    num_train_examples: int = 20_000
    num_test_examples: int = 1_000
    seed: int = 0

    group_name = "sequence_length"
    loss_name = "cross-entropy at the last position"
    metric_name = "accuracy: the answer token predicted at the final trigger"

    def __post_init__(self) -> None:
        test_lengths = self.test_sequence_length
        if test_lengths is None:
            test_lengths = (self.sequence_length,)
        elif isinstance(test_lengths, int) and not isinstance(test_lengths, bool):
            test_lengths = (test_lengths,)
        elif isinstance(test_lengths, (list, tuple)) and test_lengths:
            test_lengths = tuple(test_lengths)
        else:
            raise MixerInputError(f"induction_heads: test_sequence_length must be a length or a non-empty list of "
                                  f"lengths, got {test_lengths!r}")
        object.__setattr__(self, "test_sequence_length", test_lengths)
        for field in ("vocab_size", "sequence_length", "num_train_examples", "num_test_examples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MixerInputError(f"induction_heads: {field} must be a positive integer, got {value!r}")
        if self.vocab_size < 3:
            raise MixerInputError(f"induction_heads: vocab_size must be at least 3 (the trigger and at least two "
                                  f"tokens to tell apart), got {self.vocab_size}")
        for length in (self.sequence_length, *test_lengths):
            if isinstance(length, bool) or not isinstance(length, int) or length < 3:
                raise MixerInputError(f"induction_heads: every sequence length must be an integer of at least 3 "
                                      f"(trigger, answer, final trigger), got {length!r}")
        if len(set(test_lengths)) != len(test_lengths):
            raise MixerInputError(f"induction_heads: test_sequence_length lists a length twice: {test_lengths}")
        if self.num_test_examples < len(test_lengths):
            raise MixerInputError("induction_heads: need at least one test example per test length")

    @property
    def max_sequence_length(self) -> int:
        """The longest length of either split."""
        return max(self.sequence_length, *self.test_sequence_length)  # type: ignore[misc]

    def setting(self) -> str:
        test = ",".join(map(str, self.test_sequence_length))  # type: ignore[arg-type]
        tested = "" if self.test_sequence_length == (self.sequence_length,) else f" test L={test}"
        return f"L={self.sequence_length}{tested} V={self.vocab_size} n={self.num_train_examples}"

    @property
    def cache_path(self) -> Path:
        return cache_file("induction_heads", FORMAT_VERSION, self.params())

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"induction_heads: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self, self.cache_path)
        return Split(tensors[f"{name}_inputs"], tensors[f"{name}_targets"], tensors[f"{name}_groups"])

    def generate(self) -> dict[str, Tensor]:
        """Both splits, freshly generated (no cache)."""
        tensors: dict[str, Tensor] = {}
        test_lengths: tuple[int, ...] = self.test_sequence_length  # type: ignore[assignment]
        for split, lengths, total in (("train", (self.sequence_length,), self.num_train_examples),
                                      ("test", test_lengths, self.num_test_examples)):
            inputs, targets, groups = [], [], []
            for length, count in zip(lengths, split_counts(total, len(lengths))):
                generator = torch.Generator().manual_seed(seed_for("induction_heads", self.seed, split, length))
                length_inputs, length_targets = generate_induction_heads(count, length, self.vocab_size, generator)
                length_inputs, length_targets = pad_right(length_inputs, length_targets, max(lengths))
                inputs.append(length_inputs)
                targets.append(length_targets)
                groups.append(torch.full((count,), length, dtype=torch.int64))
            tensors[f"{split}_inputs"] = torch.cat(inputs)
            tensors[f"{split}_targets"] = torch.cat(targets)
            tensors[f"{split}_groups"] = torch.cat(groups)
        return tensors
