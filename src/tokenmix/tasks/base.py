"""What every task provides: seeded splits, the model's input and output sizes, a loss and a metric.

A task is a frozen dataclass whose fields are its parameters, so `dataclasses.asdict(task)` is the exact,
hashable description of the data a run trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

SplitName = Literal["train", "test"]
IGNORE_INDEX = -100  # targets at positions that are not scored (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class Split:
    """One split of a task: `inputs` and `targets` shaped as the task's `input_kind` and `target_kind` say
    (`Task`); `groups` `(N,)` labels each example (e.g. its number of key-value pairs) so metrics can be reported
    per group."""

    inputs: Tensor
    targets: Tensor
    groups: Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]


class Task:
    """Base of the classification tasks: targets scored only where they are not `IGNORE_INDEX`.

    A subclass is a frozen dataclass whose fields are its parameters. It declares:

    - `input_kind`: "tokens" (inputs int64 `(N, L)` below `vocab_size`), "values" (inputs float32
      `(N, L, input_channels)`) or "image" (inputs float32 `(N, input_channels, H, W)`);
    - `target_kind`: "per_position" (targets int64 `(N, L)`, a class per position, e.g. next-token recall) or
      "per_example" (targets int64 `(N,)`, one class per example: the model pools over positions);
    - `num_classes` (defaults to `vocab_size`), and `input_channels` for "values" and "image".
    Other kinds (e.g. the PDE tasks' "field") are trained by their own trainers.
    """

    name: ClassVar[str]
    vocab_size: int
    sequence_length: int
    input_kind: ClassVar[str] = "tokens"
    target_kind: ClassVar[str] = "per_position"
    loss_name: ClassVar[str] = "cross-entropy on scored positions"
    metric_name: ClassVar[str] = "accuracy (an example counts when all its scored positions are right)"
    group_name: ClassVar[str] = "group"

    # --- what a task implements ---------------------------------------------------------------------------
    def split(self, name: SplitName) -> Split:
        raise NotImplementedError

    def setting(self) -> str:
        """A short label of the parameters that matter, for reports."""
        return ", ".join(f"{key}={value}" for key, value in self.params().items())

    # --- shared behaviour ------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.vocab_size

    @property
    def input_channels(self) -> int:
        """Channels of a "values" or "image" input; token inputs have none."""
        raise NotImplementedError(f"task {self.name} has token inputs, which have no channels")

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy over the scored positions only."""
        return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE_INDEX)

    @staticmethod
    def count_correct(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Per example: how many scored positions the argmax gets right, and how many are scored.

        Per-example targets `(N,)` count as one scored position each."""
        scored = targets != IGNORE_INDEX
        right = (logits.argmax(-1) == targets) & scored
        if targets.ndim == 1:
            return right.long(), scored.long()
        return right.sum(-1), scored.sum(-1)

    def summarize(self, correct: Tensor, scored: Tensor, groups: Tensor) -> dict[str, Any]:
        """Metrics from per-example counts: example accuracy, token accuracy and example accuracy per group."""
        solved = (correct == scored).double()
        by_group = {str(int(group)): float(solved[groups == group].mean()) for group in torch.unique(groups)}
        return {
            "accuracy": float(solved.mean()),
            "token_accuracy": float(correct.sum() / scored.sum().clamp(min=1)),
            f"accuracy_by_{self.group_name}": by_group,
            "num_examples": int(len(solved)),
        }
