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
from safetensors.torch import load_file
from torch import nn

from tokenmix.bench.checkpoint import _model_tensors, _write_atomically
from tokenmix.errors import MixerInputError
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
    tensors = _model_tensors(model)
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    tensors["generator.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["generator.cuda"] = torch.cuda.get_rng_state()
    progress = {"epoch": epoch, "history": history, "param_groups": optimizer_state["param_groups"],
                "schedule": schedule.state_dict()}
    metadata = {"format": FORMAT, "progress": json.dumps(progress)}
    if result is not None:
        metadata["result"] = json.dumps(result)
    _write_atomically(tensors, metadata, path)


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
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise MixerInputError(f"{path} is not an operator-training checkpoint of format {FORMAT}")
    progress = json.loads(metadata["progress"])
    tensors = load_file(str(path))
    device = next(model.parameters()).device
    model.load_state_dict({name[len("model."):]: value for name, value in tensors.items()
                           if name.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value if key == "step" else value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": progress["param_groups"]})
    schedule.load_state_dict(progress["schedule"])
    torch.set_rng_state(tensors["generator.torch"])
    if "generator.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["generator.cuda"])
    return progress["epoch"], progress["history"]
