"""Multi-query associative recall (MQAR), the recall benchmark of the Zoology paper.

"Zoology: Measuring and Improving Recall in Efficient Language Models", Arora et al. 2023, arXiv:2312.04927.

An example of length L starts with `num_kv_pairs` key-value pairs `k_1 v_1 k_2 v_2 ...`: distinct keys from the
lower half of the vocabulary, distinct values from the upper half. After the context every key is queried once,
at positions `context + 2 g` where the gaps `g` are drawn without replacement from a power law
`p(g) ∝ (g + 1) ** (power_a - 1)` (short gaps are likelier, as in natural text). The target at a query position
is the value that followed that key in the context; every other target is ignored (-100). Other positions hold
random tokens from the whole vocabulary, so the model cannot tell a query by the token alone.

Two registered tasks: `mqar` (one sequence length, a mix of numbers of pairs) and `mqar_grid` (Zoology's grid of
(sequence length, pairs) settings: training on a mix, evaluation per setting, extrapolation settings included).
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
        return cache_file("mqar", FORMAT_VERSION, self.params())

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"mqar: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self, self.cache_path)
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
    return seed_for("mqar", seed, split, pairs)




Setting = tuple[int, int]  # (sequence length, number of key-value pairs)
GROUP_STRIDE = 1000  # group label of a setting: length · 1000 + pairs, e.g. 256016 for (256, 16)
ZOOLOGY_GRID: tuple[Setting, ...] = ((64, 4), (128, 8), (256, 16), (512, 64))


@register_task("mqar_grid")
@dataclass(frozen=True)
class MQARGrid(Task):
    """MQAR over a grid of (sequence length, number of key-value pairs) settings, as in the Zoology paper
    (arXiv:2312.04927): train on a mix of `train_settings`, evaluate each of `test_settings` separately.

    The default trains on Zoology's grid (64, 4), (128, 8), (256, 16), (512, 64) and tests on it plus two
    extrapolations beyond training: more pairs at a trained length, (512, 128), and a longer sequence with more
    pairs, (1024, 128). Every example is generated exactly as by the `mqar` task at its own length (the same
    `generate_mqar`), then **right-padded** to the longest length of its split: padded inputs are `PAD_TOKEN`
    (0), padded targets are ignored. A causal mixer's outputs at real positions therefore never see the padding;
    a non-causal one sees a trailing run of zeros, which reveals the example's length (known from its setting
    anyway) and nothing about the answers. The train split is padded to the longest *train* length only, so
    extrapolation settings cost nothing during training.

    `groups` label each example's setting as `length · 1000 + pairs` (256016 is (256, 16); `describe_group`
    spells it out), so `accuracy_by_setting` gives the accuracy per setting. `sequence_length` is the longest
    length of either split: the size a learned position table needs (positions past the longest *train* length
    are never trained, so with learned absolute positions length extrapolation is expected to fail; train with
    `--no-position-embedding` to measure a mixer's own extrapolation). Zoology uses a vocabulary of 8192; the
    default 512 keeps the output layer small on a CPU and leaves room for 128 pairs (keys come from the lower
    half of the vocabulary).
    """

    vocab_size: int = 512
    train_settings: tuple[Setting, ...] = ZOOLOGY_GRID
    test_settings: tuple[Setting, ...] | None = (*ZOOLOGY_GRID, (512, 128), (1024, 128))  # None: train_settings
    num_train_examples: int = 40_000  # spread evenly over the train settings
    num_test_examples: int = 3_000  # spread evenly over the test settings
    power_a: float = 0.01
    seed: int = 0

    group_name = "setting"
    loss_name = "cross-entropy at query positions"
    metric_name = "accuracy: an example counts when every query is answered right (per setting: length·1000+pairs)"

    def __post_init__(self) -> None:
        train = _as_settings(self.train_settings, "train_settings")
        test = train if self.test_settings is None else _as_settings(self.test_settings, "test_settings")
        object.__setattr__(self, "train_settings", train)
        object.__setattr__(self, "test_settings", test)
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 4:
            raise MixerInputError(f"mqar_grid: vocab_size must be an integer of at least 4, got {self.vocab_size!r}")
        for length, pairs in (*train, *test):
            if pairs < 1 or 4 * pairs > length:
                raise MixerInputError(f"mqar_grid: setting ({length}, {pairs}) needs 1 <= 4 * pairs <= length")
            if pairs >= GROUP_STRIDE:
                raise MixerInputError(f"mqar_grid: setting ({length}, {pairs}): pairs must be below {GROUP_STRIDE} "
                                      "(the group label is length · 1000 + pairs)")
            if pairs > self.vocab_size // 2 - 1:
                raise MixerInputError(f"mqar_grid: setting ({length}, {pairs}) needs {pairs} distinct keys, the "
                                      f"lower half of vocab_size={self.vocab_size} has {self.vocab_size // 2 - 1}")
        if self.num_train_examples < len(train) or self.num_test_examples < len(test):
            raise MixerInputError("mqar_grid: need at least one train and one test example per setting")
        if not 0 < self.power_a <= 1:
            raise MixerInputError(f"mqar_grid: power_a must be in (0, 1], got {self.power_a}")

    @property
    def sequence_length(self) -> int:  # type: ignore[override]
        """The longest length of either split (every split's examples are padded to its own longest)."""
        return max(length for length, _ in (*self.train_settings, *self.test_settings))

    @property
    def max_sequence_length(self) -> int:
        """The longest length of either split (the same as `sequence_length` here)."""
        return self.sequence_length

    def split_length(self, name: SplitName) -> int:
        """The padded length of split `name`."""
        return max(length for length, _ in self._settings(name))

    def setting(self) -> str:
        train = ",".join(f"{length}x{pairs}" for length, pairs in self.train_settings)
        test = ",".join(f"{length}x{pairs}" for length, pairs in self.test_settings)
        tested = "" if self.test_settings == self.train_settings else f" test L×kv={test}"
        return f"V={self.vocab_size} L×kv={train}{tested} n={self.num_train_examples}"

    @staticmethod
    def group_of(length: int, pairs: int) -> int:
        return length * GROUP_STRIDE + pairs

    @staticmethod
    def describe_group(group: int | str) -> str:
        """`256016` → `"L=256 kv=16"`."""
        length, pairs = divmod(int(group), GROUP_STRIDE)
        return f"L={length} kv={pairs}"

    @property
    def cache_path(self) -> Path:
        return cache_file("mqar_grid", FORMAT_VERSION, self.params())

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"mqar_grid: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self, self.cache_path)
        return Split(tensors[f"{name}_inputs"], tensors[f"{name}_targets"], tensors[f"{name}_groups"])

    def generate(self) -> dict[str, Tensor]:
        """Both splits, freshly generated (no cache)."""
        tensors: dict[str, Tensor] = {}
        for split, total in (("train", self.num_train_examples), ("test", self.num_test_examples)):
            settings = self._settings(split)  # type: ignore[arg-type]
            longest = self.split_length(split)  # type: ignore[arg-type]
            inputs, targets, groups = [], [], []
            for (length, pairs), count in zip(settings, split_counts(total, len(settings))):
                generator = torch.Generator().manual_seed(seed_for("mqar_grid", self.seed, split, length, pairs))
                setting_inputs, setting_targets = generate_mqar(count, length, self.vocab_size, pairs,
                                                                self.power_a, generator)
                setting_inputs, setting_targets = pad_right(setting_inputs, setting_targets, longest)
                inputs.append(setting_inputs)
                targets.append(setting_targets)
                groups.append(torch.full((count,), self.group_of(length, pairs), dtype=torch.int64))
            tensors[f"{split}_inputs"] = torch.cat(inputs)
            tensors[f"{split}_targets"] = torch.cat(targets)
            tensors[f"{split}_groups"] = torch.cat(groups)
        return tensors

    def _settings(self, name: SplitName) -> tuple[Setting, ...]:
        return self.train_settings if name == "train" else self.test_settings  # type: ignore[return-value]


def _as_settings(value: object, field: str) -> tuple[Setting, ...]:
    """Settings from tuples, JSON lists (`[[64, 4], [128, 8]]`) or one flat pair (`[64, 4]`, `64,4` on the CLI)."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        value = [value]  # one setting given flat
    if not isinstance(value, (list, tuple)) or not value:
        raise MixerInputError(f"mqar_grid: {field} must be a non-empty list of (length, pairs), got {value!r}")
    settings = []
    for item in value:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise MixerInputError(f"mqar_grid: each entry of {field} must be a pair of integers (length, pairs), "
                                  f"got {item!r}")
        settings.append((int(item[0]), int(item[1])))
    if len(set(settings)) != len(settings):
        raise MixerInputError(f"mqar_grid: {field} lists a setting twice: {settings}")
    return tuple(settings)
