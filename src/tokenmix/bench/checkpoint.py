"""Checkpoints of a training run in safetensors: the model, the optimizer, the schedule and the data order.

A run that is killed resumes from its last checkpoint and ends exactly where the uninterrupted run would have (the
model, AdamW's moments, the learning-rate schedule, the current epoch's data order and the random generators are all
restored). Files live in the cache folder, one per run id; a finished run's checkpoint is replaced by its final
weights (`final_weights_path`), which `load_weights` reads back into a model.

Layout of a checkpoint file: tensors `model.<name>`, `optimizer.<index>.<key>` (per-parameter AdamW state),
`order` (this epoch's permutation), `generator.order` and `generator.torch` (RNG states); metadata `progress` (JSON:
step, history, smoothed loss, the optimizer's param groups, the schedule's state) and `format`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.paths import cache_dir

FORMAT = "1"


def checkpoint_path(run_id: str) -> Path:
    """Where the in-progress checkpoint of run `run_id` is kept."""
    return cache_dir() / "checkpoints" / f"{run_id}.safetensors"


def final_weights_path(run_id: str) -> Path:
    """Where the weights of finished run `run_id` are kept."""
    return cache_dir() / "models" / f"{run_id}.safetensors"


@dataclass
class RunProgress:
    """Where a run stands: the next step to take, the evaluations so far and the smoothed training loss."""

    step: int
    history: list[dict[str, Any]]
    smoothed_loss: float


def _model_tensors(model: nn.Module) -> dict[str, Tensor]:
    # Each tensor copied on its own: safetensors refuses tensors that share memory (e.g. tied weights).
    return {f"model.{name}": value.detach().cpu().contiguous().clone() for name, value in model.state_dict().items()}


def write_atomically(tensors: dict[str, Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, path)  # a reader sees the old file or the new one, never half of one
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def training_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict]]:
    """The model's tensors (`model.<name>`) and the optimizer's per-parameter state (`optimizer.<index>.<key>`),
    as a checkpoint stores them, and the optimizer's param groups (which go into the JSON metadata)."""
    tensors = _model_tensors(model)
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    return tensors, optimizer_state["param_groups"]


def read_training_checkpoint(path: Path, expected_format: str, kind: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The `progress` record (JSON metadata) and the tensors of a checkpoint of format `expected_format`."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != expected_format:
        raise MixerInputError(f"{path} is not {kind} of format {expected_format}")
    return json.loads(metadata["progress"]), load_file(str(path))


def restore_training_tensors(tensors: dict[str, Tensor], model: nn.Module, optimizer: torch.optim.Optimizer,
                             param_groups: list[dict]) -> None:
    """Load what `training_tensors` stored back into `model` and `optimizer` (the state on the model's device)."""
    device = next(model.parameters()).device
    model.load_state_dict({name[len("model."):]: value for name, value in tensors.items()
                           if name.startswith("model.")})
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value if key == "step" else value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LRScheduler, progress: RunProgress, order: Tensor,
                    order_generator: torch.Generator) -> None:
    """Write everything needed to continue the run at `progress.step`."""
    tensors, param_groups = training_tensors(model, optimizer)
    tensors["order"] = order.cpu().contiguous()
    tensors["generator.order"] = order_generator.get_state()
    tensors["generator.torch"] = torch.get_rng_state()
    record = {"step": progress.step, "history": progress.history, "smoothed_loss": progress.smoothed_loss,
              "param_groups": param_groups, "schedule": schedule.state_dict()}
    write_atomically(tensors, {"format": FORMAT, "progress": json.dumps(record)}, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: torch.optim.lr_scheduler.LRScheduler,
                    order_generator: torch.Generator) -> tuple[RunProgress, Tensor]:
    """Restore the run saved at `path` into the given objects; returns its progress and this epoch's order."""
    record, tensors = read_training_checkpoint(path, FORMAT, "a tokenmix checkpoint")
    restore_training_tensors(tensors, model, optimizer, record["param_groups"])
    schedule.load_state_dict(record["schedule"])
    order_generator.set_state(tensors["generator.order"])
    torch.set_rng_state(tensors["generator.torch"])
    progress = RunProgress(step=record["step"], history=record["history"], smoothed_loss=record["smoothed_loss"])
    return progress, tensors["order"]


def save_weights(path: Path, model: nn.Module, config: dict[str, Any]) -> None:
    """The trained model's weights with the run's config (JSON metadata) beside them."""
    write_atomically(_model_tensors(model), {"format": FORMAT, "config": json.dumps(config)}, path)


def load_weights(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load weights written by `save_weights` into `model`; returns the run's config."""
    path = Path(path)
    if not path.is_file():
        raise MixerInputError(f"no weights file at {path}")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "config" not in metadata:
        raise MixerInputError(f"{path} holds no tokenmix run config; was it written by tokenmix?")
    tensors = load_file(str(path))
    model.load_state_dict({name[len("model."):]: value for name, value in tensors.items()})
    return json.loads(metadata["config"])
