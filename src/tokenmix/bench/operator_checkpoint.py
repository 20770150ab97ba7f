"""Checkpoints of an operator training run (`bench.operator_train`) in safetensors, taken at epoch ends.

A file holds the model (`model.<name>`), the optimizer's per-parameter state (`optimizer.<index>.<key>`) and the
random generators (`generator.torch`, and `generator.cuda` on a GPU: the next epoch's data order is drawn from them);
its metadata holds `progress` (JSON: the epochs done, the training-loss history, the optimizer's param groups, the
schedule's state) and, once the run has finished, `result` (the run's JSON result). A run restored from it continues
exactly as the uninterrupted run would have. Files are named by a hash of the run's settings, in the cache folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from tokenmix.bench.checkpoint import (read_training_checkpoint, restore_training_tensors, training_tensors,
                                      write_atomically)
from tokenmix.paths import cache_dir

FORMAT = "operator-1"


def operator_checkpoint_path(settings: dict[str, Any], folder: Path | None = None) -> Path:
    """Where the run with these settings keeps its checkpoint (a hash of the settings, sorted)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return (folder or cache_dir() / "checkpoints") / f"operator-{digest}.safetensors"


def save_operator_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                             schedule: torch.optim.lr_scheduler.LRScheduler, epoch: int, history: list[float],
                             result: dict[str, Any] | None = None) -> None:
    """Everything needed to continue after `epoch` epochs (and the final result, once there is one)."""
    tensors, param_groups = training_tensors(model, optimizer)
    tensors["generator.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["generator.cuda"] = torch.cuda.get_rng_state()
    progress = {"epoch": epoch, "history": history, "param_groups": param_groups,
                "schedule": schedule.state_dict()}
    metadata = {"format": FORMAT, "progress": json.dumps(progress)}
    if result is not None:
        metadata["result"] = json.dumps(result)
    write_atomically(tensors, metadata, path)


def read_finished_result(path: Path) -> dict[str, Any] | None:
    """The stored result if the run at `path` finished, else None (also when there is no file)."""
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return json.loads(metadata["result"]) if "result" in metadata else None


def load_operator_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                             schedule: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[float]]:
    """Restore the run saved at `path` into the given objects and the random generators; returns (epochs done,
    training-loss history)."""
    progress, tensors = read_training_checkpoint(path, FORMAT, "an operator-training checkpoint")
    restore_training_tensors(tensors, model, optimizer, progress["param_groups"])
    schedule.load_state_dict(progress["schedule"])
    torch.set_rng_state(tensors["generator.torch"])
    if "generator.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["generator.cuda"])
    return progress["epoch"], progress["history"]
