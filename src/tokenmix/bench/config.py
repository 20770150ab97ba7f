"""The full description of a training run. Its dict form is what the database stores and hashes into `run_id`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import tokenmix
from tokenmix.errors import MixerInputError
from tokenmix.tasks import create_task


def _require_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise MixerInputError(f"{owner}: {name} must be positive, got {value!r}")


@dataclass(frozen=True)
class ModelSettings:
    """The backbone around the mixer (see `tokenmix.models.SequenceModel`)."""

    dim: int = 64
    depth: int = 2
    mlp_ratio: float = 4.0
    # Learned absolute positions, shared by every mixer: MQAR needs to know where the context ends (see suites.py).
    position_embedding: bool = True
    patch_size: int = 1  # image tasks: the stem's patch size (each patch is one position of the mixer)

    def __post_init__(self) -> None:
        _require_positive("model", dim=self.dim, depth=self.depth, patch_size=self.patch_size)
        if self.mlp_ratio < 0:
            raise MixerInputError(f"model: mlp_ratio must be >= 0, got {self.mlp_ratio}")


@dataclass(frozen=True)
class TrainingSettings:
    """Optimizer and schedule: AdamW, linear warm-up then cosine decay to zero, gradient clipping."""

    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    gradient_clip: float = 1.0
    seed: int = 0
    eval_batch_size: int = 250
    eval_every: int = 200  # steps between evaluations of the test split; 0: at the end of every epoch
    target_accuracy: float | None = None  # early stopping: stop at the first evaluation reaching it
    precision: str = "auto"  # autocast dtype: "auto" (bfloat16 on CUDA that supports it, else float32), ...

    def __post_init__(self) -> None:
        _require_positive("training", steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                          gradient_clip=self.gradient_clip, eval_batch_size=self.eval_batch_size)
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.eval_every < 0:
            raise MixerInputError("training: warmup_steps, weight_decay and eval_every must be >= 0")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise MixerInputError(f"training: target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise MixerInputError(f"training: precision must be auto, float32 or bfloat16, got {self.precision!r}")


@dataclass
class RunConfig:
    """One training run: a task and its parameters, a mixer and its options, the backbone and the training."""

    task: str
    mixer: str
    task_params: dict[str, Any] = field(default_factory=dict)
    mixer_options: dict[str, Any] = field(default_factory=dict)
    model: ModelSettings = ModelSettings()
    training: TrainingSettings = TrainingSettings()

    def as_dict(self) -> dict[str, Any]:
        """The stored form: task parameters completed with their defaults, so equal runs hash equally; the mixer's
        option defaults are stored beside the options given, so a run made before a default changed is not served
        as the run of the new default (the options given alone label the run in reports)."""
        return {
            "kind": "train",
            "task": self.task,
            "task_params": create_task(self.task, **self.task_params).params(),
            "mixer": self.mixer,
            "mixer_options": dict(self.mixer_options),
            "mixer_defaults": dict(tokenmix.spec(self.mixer).options),
            "model": dataclasses.asdict(self.model),
            "training": dataclasses.asdict(self.training),
        }
