"""ListOps: evaluate a nested prefix expression of list operators on the digits 0-9; the answer is one digit.

"ListOps: A Diagnostic Dataset for Latent Tree Learning", Nangia & Bowman 2018, arXiv:1804.06028, with the
parameters of "Long Range Arena: A Benchmark for Efficient Transformers", Tay et al. 2020, arXiv:2011.04006:
operators MIN, MAX, MED (median) and SUM_MOD (sum modulo 10); trees of depth at most 10; 2 to 10 arguments per
operator; sequences of 500 to 2000 tokens; 10 classes. Regenerated here with a seed (the LRA files were drawn
unseeded). Example, 13 tokens, answer 5:  `[MAX 2 9 [MIN 4 7 ] 0 ]` is 9;  `[SM 3 [MED 1 8 5 6 ] ]` is
(3 + MED(1, 5, 6, 8)) mod 10 = (3 + 5) mod 10 = 8.

**Generation** (the LRA process): a node at depth d (the root has depth 1) is an operator with probability 1/4
when d < `max_depth`, otherwise a digit drawn uniformly; an operator draws its operator uniformly and its number
of arguments uniformly from 2..`max_args`, each argument a node at depth d + 1. A tree is kept when its length
in tokens is within [`min_length`, `max_length`] (both inclusive) and drawn again otherwise. The root is always
an operator here (a lone digit is one token long, never kept; forcing it skips those draws and leaves the
distribution of kept trees unchanged), and a tree is abandoned as soon as it passes `max_length` (same kept
distribution, far less work). LRA also drops duplicate trees; at these lengths a repeat is vanishingly rare and
is not checked.

**Conventions**: MED of an even count is the mean of the two middle values rounded down, LRA's
`int(numpy.median(...))` (`[MED 1 2 ]` is 1, `[MED 3 4 6 9 ]` is 5); SUM_MOD is the sum modulo 10; the answer
of the whole expression is the class.

**Tokens** (LRA's vocabulary: the opening bracket is part of the operator token, as in LRA's `[MAX`): 0 is the
padding, digits d = 0..9 are tokens d + 1, `[MIN` `[MAX` `[MED` `[SM` are 11..14 and `]` is 15
(`vocab_size` 16). **What the model sees**: the expression's tokens from position 0, then padding tokens up to
`sequence_length` = `max_length` (right padding). The trainer mean-pools the last layer over *all* positions,
padding included, so a causal mixer's outputs at the padded positions — which have read the whole expression —
can carry the answer into the pool; a padded position tells only the expression's length, nothing about the
answer. `groups` is each expression's operator nesting depth (1 for a flat list; at most `max_depth` - 1), so
`accuracy_by_depth` shows how accuracy falls with nesting.

Two registered tasks: `listops` (the LRA setting above; 96 000 / 2 000 examples as in LRA — generating them takes
minutes once, then they are read from the cache) and `listops_short`, the same generator at lengths 20-100 and
depth at most 4 for quick runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.tasks import register_task
from tokenmix.tasks.base import Split, SplitName, Task
from tokenmix.tasks.token_storage import PAD_TOKEN, cache_file, load_or_generate, seed_for

FORMAT_VERSION = 1  # bump when the generator or the file layout changes
OPERATOR_PROBABILITY = 0.25  # LRA's VALUE_P: a node below max_depth is an operator with this probability
DIGIT_OFFSET = 1  # digit d is token d + 1 (0 is the padding)
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
MIN_TOKEN, MAX_TOKEN, MED_TOKEN, SUM_MOD_TOKEN = 11, 12, 13, 14
END_TOKEN = 15
VOCAB_SIZE = 16
TOKEN_NAMES = ("<pad>", *map(str, range(10)), *OPERATORS, "]")


def apply_operator(operator: int, arguments: list[int]) -> int:
    """The value of one operator token (`MIN_TOKEN` ...) on its argument digits."""
    if operator == MIN_TOKEN:
        return min(arguments)
    if operator == MAX_TOKEN:
        return max(arguments)
    if operator == MED_TOKEN:
        ordered = sorted(arguments)
        middle = len(ordered) // 2
        # an even count: the mean of the two middle values, rounded down (LRA: int(numpy.median(...)))
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2
    if operator == SUM_MOD_TOKEN:
        return sum(arguments) % 10
    raise ValueError(f"not an operator token: {operator}")


def encode(expression: str) -> list[int]:
    """Tokens of a written expression, e.g. `"[MAX 2 9 [MIN 4 7 ] 0 ]"` (tokens separated by spaces)."""
    names = {name: index for index, name in enumerate(TOKEN_NAMES)}
    try:
        return [names[word] for word in expression.split()]
    except KeyError as error:
        raise MixerInputError(f"listops: unknown token {error.args[0]!r} in {expression!r}") from error


def decode(tokens: Tensor | list[int]) -> str:
    """The written form of a token sequence, padding dropped."""
    return " ".join(TOKEN_NAMES[int(token)] for token in tokens if int(token) != PAD_TOKEN)


def evaluate_expression(tokens: Tensor | list[int]) -> int:
    """The value of a token sequence (padding ignored), by a stack machine independent of the generator;
    malformed sequences raise `MixerInputError`."""
    stack: list[list[int]] = []  # per open operator: [operator, argument values...]
    result: int | None = None
    for token in (int(t) for t in tokens):
        if token == PAD_TOKEN:
            continue
        if result is not None:
            raise MixerInputError("listops: tokens after the end of the expression")
        if DIGIT_OFFSET <= token < DIGIT_OFFSET + 10:
            if not stack:
                result = token - DIGIT_OFFSET
            else:
                stack[-1].append(token - DIGIT_OFFSET)
        elif token in (MIN_TOKEN, MAX_TOKEN, MED_TOKEN, SUM_MOD_TOKEN):
            stack.append([token])
        elif token == END_TOKEN:
            if not stack or len(stack[-1]) < 2:
                raise MixerInputError("listops: ']' without an open operator that has an argument")
            operator, *arguments = stack.pop()
            value = apply_operator(operator, arguments)
            if stack:
                stack[-1].append(value)
            else:
                result = value
        else:
            raise MixerInputError(f"listops: unknown token {token}")
    if stack or result is None:
        raise MixerInputError("listops: unterminated or empty expression")
    return result


class _TooLong(Exception):
    """Raised inside the generator when a tree passes the length limit (it is abandoned)."""


def _generate_node(rng: random.Random, depth: int, max_depth: int, max_args: int, limit: int,
                   out: list[int]) -> int:
    """Append the tokens of a random subtree at `depth` to `out` and return its value (LRA's process)."""
    if depth == 1 or (depth < max_depth and rng.random() < OPERATOR_PROBABILITY):
        operator = MIN_TOKEN + rng.randrange(4)
        out.append(operator)
        arguments = [_generate_node(rng, depth + 1, max_depth, max_args, limit, out)
                     for _ in range(rng.randint(2, max_args))]
        out.append(END_TOKEN)
        if len(out) > limit:
            raise _TooLong
        return apply_operator(operator, arguments)
    digit = rng.randrange(10)
    out.append(digit + DIGIT_OFFSET)
    return digit


def generate_expression(rng: random.Random, min_length: int, max_length: int, max_depth: int,
                        max_args: int) -> tuple[list[int], int]:
    """One kept tree: `(tokens, value)` with `min_length <= len(tokens) <= max_length`."""
    while True:
        tokens: list[int] = []
        try:
            value = _generate_node(rng, 1, max_depth, max_args, max_length, tokens)
        except _TooLong:
            continue
        if min_length <= len(tokens) <= max_length:
            return tokens, value


def nesting_depth(tokens: Tensor) -> Tensor:
    """Per row of `(N, L)` tokens, the deepest operator nesting (1 for a flat list)."""
    opens = (tokens >= MIN_TOKEN) & (tokens <= SUM_MOD_TOKEN)
    step = opens.long() - (tokens == END_TOKEN).long()
    return torch.cumsum(step, dim=1).amax(dim=1)


@register_task("listops")
@dataclass(frozen=True)
class ListOps(Task):
    """ListOps with the Long Range Arena parameters (see the module for the process, tokens and padding)."""

    min_length: int = 500
    max_length: int = 2000
    max_depth: int = 10
    max_args: int = 10
    num_train_examples: int = 96_000
    num_test_examples: int = 2_000
    seed: int = 0

    target_kind = "per_example"
    group_name = "depth"
    loss_name = "cross-entropy of the expression's value"
    metric_name = "accuracy: the share of test expressions whose value is predicted right"

    def __post_init__(self) -> None:
        name = self.name
        for field in ("min_length", "max_length", "max_depth", "max_args", "num_train_examples",
                      "num_test_examples", "seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if field == "seed" else 1):
                raise MixerInputError(f"{name}: {field} must be a {'non-negative' if field == 'seed' else 'positive'}"
                                      f" integer, got {value!r}")
        if self.max_depth < 2:
            raise MixerInputError(f"{name}: max_depth must be at least 2 (the root operator and its digits), "
                                  f"got {self.max_depth}")
        if self.max_args < 2:
            raise MixerInputError(f"{name}: max_args must be at least 2, got {self.max_args}")
        if self.min_length > self.max_length:
            raise MixerInputError(f"{name}: min_length ({self.min_length}) exceeds max_length ({self.max_length})")
        # the shortest tree is [OP d d ] (4 tokens); the longest possible tree must reach min_length
        longest = _longest_tree(self.max_depth, self.max_args)
        if self.max_length < 4 or self.min_length > longest:
            raise MixerInputError(f"{name}: no tree of depth <= {self.max_depth} with <= {self.max_args} arguments "
                                  f"has a length in [{self.min_length}, {self.max_length}] (lengths run from 4 to "
                                  f"{longest})")
        if self.max_length >= torch.iinfo(torch.int16).max:
            raise MixerInputError(f"{name}: max_length must be below 32767, got {self.max_length}")

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return VOCAB_SIZE

    @property
    def sequence_length(self) -> int:  # type: ignore[override]
        return self.max_length

    @property
    def num_classes(self) -> int:
        return 10

    def setting(self) -> str:
        return (f"L={self.min_length}-{self.max_length} depth<={self.max_depth} args<={self.max_args} "
                f"n={self.num_train_examples}")

    @property
    def cache_path(self) -> Path:
        return cache_file(self.name, FORMAT_VERSION, self.params())

    def generate(self) -> dict[str, Tensor]:
        """Both splits, freshly generated (no cache): inputs `(N, max_length)` right-padded, targets, depths."""
        tensors: dict[str, Tensor] = {}
        for split, count in (("train", self.num_train_examples), ("test", self.num_test_examples)):
            rng = random.Random(seed_for(self.name, self.seed, split))
            inputs = np.full((count, self.max_length), PAD_TOKEN, dtype=np.int64)
            targets = np.empty(count, dtype=np.int64)
            for index in range(count):
                tokens, value = generate_expression(rng, self.min_length, self.max_length, self.max_depth,
                                                    self.max_args)
                inputs[index, :len(tokens)] = tokens
                targets[index] = value
            tensors[f"{split}_inputs"] = torch.from_numpy(inputs)
            tensors[f"{split}_targets"] = torch.from_numpy(targets)
            tensors[f"{split}_groups"] = nesting_depth(tensors[f"{split}_inputs"])
        return tensors

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"{self.name}: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self, self.cache_path)
        return Split(tensors[f"{name}_inputs"], tensors[f"{name}_targets"], tensors[f"{name}_groups"])


def _longest_tree(max_depth: int, max_args: int) -> int:
    """Tokens of the longest possible tree: every node above the last level an operator with `max_args`."""
    length = 1  # a digit at depth max_depth
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


@register_task("listops_short")
@dataclass(frozen=True)
class ListOpsShort(ListOps):
    """ListOps for quick runs: the same generator at lengths 20-100 and depth at most 4."""

    min_length: int = 20
    max_length: int = 100
    max_depth: int = 4
    max_args: int = 10
    num_train_examples: int = 20_000
    num_test_examples: int = 1_000
    seed: int = 0
