"""Selective copying, the synthetic task of the Mamba paper that needs content-aware (selective) memory.

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces", Gu & Dao 2023, arXiv:2312.00752, §3.1 and
Fig. 2 (with the setup of its appendix E.1: vocabulary 16, 16 tokens to memorize, length 4096).

The copying task with the data scattered: an example of length L holds `num_tokens_to_copy` data tokens at random
distinct positions of its first `L - num_tokens_to_copy` positions (the *region*); every other region position holds
the noise token. Then come `num_tokens_to_copy` marker tokens, and at the i-th marker the model must output the
i-th data token of the region (in order of position):

    inputs  = [region: noise 0 except d_1 … d_n at positions p_1 < … < p_n] [marker × n]
    targets = [ignored × (L − n)]                                            [d_1 … d_n]

Tokens: 0 is the noise token, `vocab_size − 1` the marker, data tokens are drawn uniformly (with repetition) from
1 … vocab_size − 2. Because the data positions vary, a time-invariant filter (an LTI convolution or SSM) cannot
solve it with a fixed delay; the model must select by content. Every target outside the markers is ignored.
The inputs at the marker positions are all the same marker, so a non-causal mixer learns nothing about the
answers from positions at or after the one it predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.tasks import register_task
from tokenmix.tasks.base import IGNORE_INDEX, Split, SplitName, Task
from tokenmix.tasks.token_storage import cache_file, load_or_generate, seed_for

FORMAT_VERSION = 1  # bump when the generator or the file layout changes, so older cached files are not reused
NOISE_TOKEN = 0


def generate_selective_copying(num_examples: int, sequence_length: int, vocab_size: int, num_tokens_to_copy: int,
                               generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`(inputs, targets)`, both `(num_examples, sequence_length)` int64, drawn with `generator`."""
    region = sequence_length - num_tokens_to_copy
    marker = vocab_size - 1
    # Per row, `num_tokens_to_copy` distinct positions of the region, in increasing order.
    positions = torch.rand(num_examples, region, generator=generator).argsort(dim=1)[:, :num_tokens_to_copy]
    positions = positions.sort(dim=1).values
    data = torch.randint(1, vocab_size - 1, (num_examples, num_tokens_to_copy), generator=generator)
    inputs = torch.full((num_examples, sequence_length), NOISE_TOKEN, dtype=torch.int64)
    inputs.scatter_(1, positions, data)
    inputs[:, region:] = marker
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, region:] = data
    return inputs, targets


@register_task("selective_copying")
@dataclass(frozen=True)
class SelectiveCopying(Task):
    """Selective copying (Mamba, arXiv:2312.00752 §3.1). `sequence_length` counts the markers: the region of data
    and noise is `sequence_length − num_tokens_to_copy` long. The Mamba paper uses length 4096; the default 256
    keeps a CPU run short. `groups` hold the sequence length (one group)."""

    vocab_size: int = 16
    sequence_length: int = 256
    num_tokens_to_copy: int = 16
    num_train_examples: int = 20_000
    num_test_examples: int = 1_000
    seed: int = 0

    group_name = "sequence_length"
    loss_name = "cross-entropy at the marker positions"
    metric_name = "accuracy: an example counts when every data token is copied right"

    def __post_init__(self) -> None:
        for field in ("vocab_size", "sequence_length", "num_tokens_to_copy", "num_train_examples",
                      "num_test_examples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MixerInputError(f"selective_copying: {field} must be a positive integer, got {value!r}")
        if self.vocab_size < 3:
            raise MixerInputError(f"selective_copying: vocab_size must be at least 3 (noise, marker and at least one "
                                  f"data token), got {self.vocab_size}")
        if self.sequence_length < 2 * self.num_tokens_to_copy:
            raise MixerInputError(
                f"selective_copying: sequence_length={self.sequence_length} must be at least 2 * num_tokens_to_copy "
                f"({2 * self.num_tokens_to_copy}): the region before the markers holds the {self.num_tokens_to_copy} "
                "data tokens")

    def setting(self) -> str:
        return (f"L={self.sequence_length} V={self.vocab_size} copy={self.num_tokens_to_copy} "
                f"n={self.num_train_examples}")

    @property
    def cache_path(self) -> Path:
        return cache_file("selective_copying", FORMAT_VERSION, self.params())

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"selective_copying: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self, self.cache_path)
        return Split(tensors[f"{name}_inputs"], tensors[f"{name}_targets"], tensors[f"{name}_groups"])

    def generate(self) -> dict[str, Tensor]:
        """Both splits, freshly generated (no cache)."""
        tensors: dict[str, Tensor] = {}
        for split, count in (("train", self.num_train_examples), ("test", self.num_test_examples)):
            generator = torch.Generator().manual_seed(seed_for("selective_copying", self.seed, split))
            inputs, targets = generate_selective_copying(count, self.sequence_length, self.vocab_size,
                                                         self.num_tokens_to_copy, generator)
            tensors[f"{split}_inputs"] = inputs
            tensors[f"{split}_targets"] = targets
            tensors[f"{split}_groups"] = torch.full((count,), self.sequence_length, dtype=torch.int64)
        return tensors
