"""The handwritten digits that ship with scikit-learn: 1797 grayscale images of 8×8 pixels, 10 classes.

The UCI "Optical Recognition of Handwritten Digits" set (Alpaydin & Kaynak 1998) as bundled in
`sklearn.datasets.load_digits` (no download): each pixel counts the set pixels of a 4×4 block of a 32×32
bitmap, an integer 0..16.

Three views of the same split (`view`):
- "sequence": the 64 pixels in row-major (raster) order as a length-64 sequence of 1 channel, scaled to [0, 1]
  (`input_kind` "values") — the sequential-classification setting of the quality benchmark;
- "tokens": the same sequence as tokens 0..16 (`vocab_size` 17);
- "image": `(1, 8, 8)` images scaled to [0, 1] for the vision backbone.
The label is the digit; `groups` is the digit as well, so `accuracy_by_digit` is the per-class accuracy.

The train/test split is stratified and seeded: each digit gives the test split its share of
`num_test_examples` (largest remainder), drawn at random with `seed`; the rest is the train split. The default
360 test examples leave 1437 for training (an 80/20 split).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.tasks import register_task
from tokenmix.tasks.base import Split, SplitName, Task
from tokenmix.tasks.generated import load_or_generate
from tokenmix.tasks.token_storage import cache_file, seed_for

FORMAT_VERSION = 1  # bump when the split or the file layout changes, so older cached files are not reused
NUM_IMAGES = 1797
SIDE = 8
MAX_PIXEL = 16  # pixel values are integers 0..16
VIEWS = ("sequence", "tokens", "image")


def stratified_test_mask(labels: Tensor, num_test: int, generator: torch.Generator) -> Tensor:
    """A boolean `(N,)` mask choosing `num_test` examples, each class in proportion to its size.

    Class c gets `floor(num_test · n_c / N)` test examples, and the classes with the largest remainders one more
    each (ties to the smaller class label), so the total is exactly `num_test`; within a class the examples are
    a uniform random choice drawn with `generator`.
    """
    classes, counts = torch.unique(labels, return_counts=True)
    exact = num_test * counts.double() / len(labels)
    quota = exact.floor().long()
    remainder = exact - quota
    leftover = num_test - int(quota.sum())
    # stable sort by descending remainder: equal remainders keep class order
    order = torch.sort(-remainder, stable=True).indices
    quota[order[:leftover]] += 1
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for label, count in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == label).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:count]]
        mask[chosen] = True
    return mask


@register_task("digits")
@dataclass(frozen=True)
class Digits(Task):
    """scikit-learn's 8×8 handwritten digits as a pixel sequence, a token sequence or an image (see the module)."""

    view: str = "sequence"
    num_test_examples: int = 360
    seed: int = 0

    target_kind = "per_example"
    group_name = "digit"
    loss_name = "cross-entropy of the digit"
    metric_name = "accuracy: the share of test images whose digit is predicted right"

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise MixerInputError(f"digits: view must be one of {', '.join(VIEWS)}; got {self.view!r}")
        if isinstance(self.num_test_examples, bool) or not isinstance(self.num_test_examples, int):
            raise MixerInputError(f"digits: num_test_examples must be an integer, got {self.num_test_examples!r}")
        # at least one test and one train example of every digit (the smallest class has 174 images)
        if not 10 <= self.num_test_examples <= NUM_IMAGES - 10:
            raise MixerInputError(f"digits: num_test_examples must be in [10, {NUM_IMAGES - 10}], "
                                  f"got {self.num_test_examples}")

    # --- the shape of the view ---------------------------------------------------------------------------------
    @property
    def input_kind(self) -> str:  # type: ignore[override]
        """'values' for the pixel sequence, 'tokens' for the token view, 'image' for the image view."""
        return {"sequence": "values", "tokens": "tokens", "image": "image"}[self.view]

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        """17 pixel tokens (0..16) in the token view; the other views have no vocabulary (1, unused)."""
        return MAX_PIXEL + 1 if self.view == "tokens" else 1

    @property
    def sequence_length(self) -> int:  # type: ignore[override]
        return SIDE * SIDE

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def input_channels(self) -> int:
        if self.view == "tokens":
            raise NotImplementedError("digits with view='tokens' has token inputs, which have no channels")
        return 1

    def setting(self) -> str:
        return f"view={self.view} test={self.num_test_examples} seed={self.seed}"

    # --- data ---------------------------------------------------------------------------------------------------
    @property
    def cache_path(self) -> Path:
        """The split (raw pixels 0..16 and labels), shared by the three views: the view is not in the key."""
        params = {key: value for key, value in self.params().items() if key != "view"}
        return cache_file("digits", FORMAT_VERSION, params)

    def generate(self) -> dict[str, Tensor]:
        """Both splits as raw pixels `(N, 64)` uint8 0..16 and labels int64 (no cache)."""
        from sklearn.datasets import load_digits  # imported here: only this task needs scikit-learn

        bunch = load_digits()
        pixels = torch.as_tensor(bunch.data).to(torch.uint8)
        labels = torch.as_tensor(bunch.target).long()
        generator = torch.Generator().manual_seed(seed_for("digits", self.seed, "split"))
        test = stratified_test_mask(labels, self.num_test_examples, generator)
        return {"train_pixels": pixels[~test], "train_labels": labels[~test],
                "test_pixels": pixels[test], "test_labels": labels[test]}

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"digits: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self.cache_path, self.generate)
        pixels, labels = tensors[f"{name}_pixels"], tensors[f"{name}_labels"]
        if self.view == "tokens":
            inputs = pixels.long()
        elif self.view == "sequence":
            inputs = (pixels.float() / MAX_PIXEL).unsqueeze(-1)
        else:
            inputs = (pixels.float() / MAX_PIXEL).reshape(-1, 1, SIDE, SIDE)
        return Split(inputs, labels.clone(), labels.clone())
