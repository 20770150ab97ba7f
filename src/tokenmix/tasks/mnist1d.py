"""MNIST-1D: ten 1-D digit templates, randomly padded, translated, scaled, sheared and noised to length 40.

"Scaling Down Deep Learning with MNIST-1D", Greydanus & Kobak 2020/2024, arXiv:2011.14439.

Generated here with the `mnist1d` package's own procedural generator (`mnist1d.data.make_dataset`) with its
default arguments (5000 examples, an 80/20 train/test split: 4000 / 1000, final length 40) except the seed —
never with its download function: nothing is fetched at run time. With `seed=42` (the package's default seed)
the arrays equal those of the package's `make_dataset()` with all its defaults; the default here is the
project-wide 0.

The generator standardizes the whole set to mean 0 and standard deviation 1, so the inputs are a length-40
sequence of 1 real channel (`input_kind` "values"); the label is the digit (10 classes), and `groups` is the
digit as well (`accuracy_by_digit`). `num_train_examples` and `num_test_examples` change the generator's
`num_samples` and `train_split` (their sum must be a multiple of 10: the generator draws the same number of
examples of each digit).
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
from tokenmix.tasks.generated import load_or_generate
from tokenmix.tasks.token_storage import cache_file

FORMAT_VERSION = 1  # bump when the generator call or the file layout changes
LENGTH = 40  # the generator's default final_seq_length


def generate_mnist1d(num_train: int, num_test: int, seed: int) -> dict[str, Tensor]:
    """Train and test `(inputs (N, 40) float32, labels (N,) int64)` from `mnist1d.data.make_dataset`.

    The package seeds and draws from the global `random` and `numpy.random` states; they are saved and restored
    around the call so generating a task leaves the caller's random streams untouched.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # imported here: only this task needs mnist1d

    args = get_dataset_args()
    args.num_samples = num_train + num_test
    # the generator cuts at int(num_samples · train_split); half an example of slack keeps float rounding from
    # moving the cut (4000 / 5000 and 4000.5 / 5000 both cut at 4000)
    args.train_split = (num_train + 0.5) / (num_train + num_test)
    args.seed = seed
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return {"train_inputs": torch.as_tensor(data["x"], dtype=torch.float32),
            "train_labels": torch.as_tensor(data["y"], dtype=torch.int64),
            "test_inputs": torch.as_tensor(data["x_test"], dtype=torch.float32),
            "test_labels": torch.as_tensor(data["y_test"], dtype=torch.int64)}


@register_task("mnist1d")
@dataclass(frozen=True)
class MNIST1D(Task):
    """MNIST-1D as a length-40 sequence of one real channel, 10 classes (see the module)."""

    num_train_examples: int = 4000
    num_test_examples: int = 1000
    seed: int = 0

    input_kind = "values"
    target_kind = "per_example"
    group_name = "digit"
    loss_name = "cross-entropy of the digit"
    metric_name = "accuracy: the share of test sequences whose digit is predicted right"

    def __post_init__(self) -> None:
        for field in ("num_train_examples", "num_test_examples", "seed"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if field == "seed" else 1):
                raise MixerInputError(f"mnist1d: {field} must be a {'non-negative' if field == 'seed' else 'positive'}"
                                      f" integer, got {value!r}")
        total = self.num_train_examples + self.num_test_examples
        if total % 10:
            raise MixerInputError(f"mnist1d: num_train_examples + num_test_examples must be a multiple of 10 (the "
                                  f"generator makes as many examples of each digit), got {total}")
        if self.seed >= 2**32:
            raise MixerInputError(f"mnist1d: seed must be below 2**32 (numpy's seed range), got {self.seed}")

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return 1  # real-valued inputs: no vocabulary

    @property
    def sequence_length(self) -> int:  # type: ignore[override]
        return LENGTH

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def input_channels(self) -> int:
        return 1

    def setting(self) -> str:
        return f"n={self.num_train_examples}/{self.num_test_examples} seed={self.seed}"

    @property
    def cache_path(self) -> Path:
        return cache_file("mnist1d", FORMAT_VERSION, self.params())

    def generate(self) -> dict[str, Tensor]:
        """Both splits, freshly generated (no cache)."""
        return generate_mnist1d(self.num_train_examples, self.num_test_examples, self.seed)

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"mnist1d: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self.cache_path, self.generate)
        labels = tensors[f"{name}_labels"]
        return Split(tensors[f"{name}_inputs"].unsqueeze(-1), labels.clone(), labels.clone())
