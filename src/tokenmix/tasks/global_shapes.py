"""Global shapes: is the square left of the cross? An image task that only a global receptive field solves.

Each `size × size` image holds two 3×3 shapes on a black background: a filled square and a plus-shaped cross, at
random rows and columns whose horizontal distance is at least `min_separation` pixels. The label is 1 when the
square is left of the cross. Either shape alone looks the same wherever it is, so a translation-equivariant
local mixer followed by global average pooling sees only "one square, one cross" and scores chance unless its
receptive field spans both shapes; a global convolution (GFNet, FNO, a large kernel) or attention with positions
can relate them. `noise` adds Gaussian pixel noise so the shapes must be detected, not read off single pixels.

Views: "image" `(1, size, size)` for the vision backbone, "sequence" the pixels in row-major order as a length
`size²` sequence of 1 channel. Seeded; cached on disk by parameters. `groups` is the horizontal distance
bucket (0: the nearer half of the possible distances, 1: the farther half), so the report shows whether the far
pairs are the hard ones.
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

FORMAT_VERSION = 1
SQUARE = torch.ones(3, 3)
CROSS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
VIEWS = ("image", "sequence")


def draw_examples(count: int, size: int, min_separation: int, noise: float,
                  generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """`(images (count, size, size), labels (count,), square and cross top-left corners (count, 2, 2))`."""
    span = size - 3  # top-left corners 0..span
    labels = torch.randint(2, (count,), generator=generator)
    # the left shape's column, then the right one at least `min_separation` further
    left = (torch.rand(count, generator=generator) * (span - min_separation + 1)).long()
    right = left + min_separation + (torch.rand(count, generator=generator) * (span - min_separation - left + 1)).long()
    rows = torch.randint(span + 1, (count, 2), generator=generator)
    square_column = torch.where(labels == 1, left, right)
    cross_column = torch.where(labels == 1, right, left)
    corners = torch.stack([torch.stack([rows[:, 0], square_column], 1), torch.stack([rows[:, 1], cross_column], 1)],
                          1)
    images = torch.zeros(count, size, size)
    offsets = torch.arange(3)
    for shape_index, shape in enumerate((SQUARE, CROSS)):
        r = corners[:, shape_index, 0, None, None] + offsets[None, :, None]
        c = corners[:, shape_index, 1, None, None] + offsets[None, None, :]
        index = torch.arange(count)[:, None, None].expand(count, 3, 3)
        images[index, r.expand(count, 3, 3), c.expand(count, 3, 3)] = shape.expand(count, 3, 3)
    if noise:
        images = images + noise * torch.randn(images.shape, generator=generator)
    return images, labels, corners


@register_task("global_shapes")
@dataclass(frozen=True)
class GlobalShapes(Task):
    """Is the square left of the cross (see the module)?"""

    size: int = 32
    min_separation: int = 12
    noise: float = 0.1
    view: str = "image"
    num_train_examples: int = 8_000
    num_test_examples: int = 1_000
    seed: int = 0

    target_kind = "per_example"
    group_name = "distance"
    loss_name = "cross-entropy of the label"
    metric_name = "accuracy: the share of test images whose relation is predicted right"

    def __post_init__(self) -> None:
        for name in ("size", "min_separation", "num_train_examples", "num_test_examples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MixerInputError(f"global_shapes: {name} must be a positive integer, got {value!r}")
        if self.size < 8 or self.min_separation > self.size - 3:
            raise MixerInputError(f"global_shapes: need size >= 8 and min_separation <= size - 3, got size "
                                  f"{self.size} and min_separation {self.min_separation}")
        if self.min_separation < 3:
            raise MixerInputError("global_shapes: min_separation must be at least 3, so the shapes never overlap")
        if not isinstance(self.noise, (int, float)) or self.noise < 0:
            raise MixerInputError(f"global_shapes: noise must be >= 0, got {self.noise!r}")
        if self.view not in VIEWS:
            raise MixerInputError(f"global_shapes: view must be one of {', '.join(VIEWS)}; got {self.view!r}")

    @property
    def input_kind(self) -> str:  # type: ignore[override]
        return "image" if self.view == "image" else "values"

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return 1  # no vocabulary: the inputs are pixel values

    @property
    def sequence_length(self) -> int:  # type: ignore[override]
        return self.size * self.size

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def input_channels(self) -> int:
        return 1

    def setting(self) -> str:
        return f"{self.size}×{self.size}, separation ≥ {self.min_separation}, noise {self.noise}, view={self.view}"

    @property
    def cache_path(self) -> Path:
        params = {key: value for key, value in self.params().items() if key != "view"}
        return cache_file("global_shapes", FORMAT_VERSION, params)

    def generate(self) -> dict[str, Tensor]:
        tensors = {}
        for name, count in (("train", self.num_train_examples), ("test", self.num_test_examples)):
            generator = torch.Generator().manual_seed(seed_for("global_shapes", self.seed, name))
            images, labels, corners = draw_examples(count, self.size, self.min_separation, self.noise, generator)
            tensors |= {f"{name}_images": images, f"{name}_labels": labels, f"{name}_corners": corners}
        return tensors

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"global_shapes: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self.cache_path, self.generate)
        images, labels, corners = (tensors[f"{name}_{key}"] for key in ("images", "labels", "corners"))
        distance = (corners[:, 0, 1] - corners[:, 1, 1]).abs()
        groups = (distance >= (self.min_separation + self.size - 3 + 1) // 2).long()
        inputs = images.unsqueeze(1) if self.view == "image" else images.reshape(len(images), -1, 1)
        return Split(inputs.clone(), labels.clone(), groups)
