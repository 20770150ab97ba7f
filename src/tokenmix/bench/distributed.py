"""Data-parallel training under `torchrun`: the process group, each rank's share of a batch, and a final check.

`torchrun --nproc-per-node N tokenmix train ...` starts N processes with `RANK`, `WORLD_SIZE` and `LOCAL_RANK` set.
Each builds the same model from the same seed, takes every N-th example of each global batch, and wraps the model
in `DistributedDataParallel` (gloo on CPU, NCCL on CUDA), which averages the gradients. The loss is scaled so that
the averaged gradient is that of the global batch's mean loss, exactly as one process with the whole batch would
compute it (even when ranks hold different numbers of scored positions). Only rank 0 writes the database, the
checkpoints and the progress display.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tokenmix.errors import MixerInputError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Tensor) -> Tensor:
        """This rank's share of a global batch of example indices: every `size`-th, from `rank`."""
        return batch[self.rank::self.size]


def world_from_environment() -> World:
    """The world `torchrun` describes in the environment; a single process when it is not set."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(rank=int(os.environ.get("RANK", "0")), size=size)


def setup(world: World, device: torch.device, batch_size: int) -> None:
    """Join the process group (once per process) after checking the batch divides among the ranks."""
    if world.size == 1:
        return
    if batch_size % world.size:
        raise MixerInputError(f"batch_size {batch_size} must be a multiple of the number of processes {world.size}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def local_device(device: torch.device, world: World) -> torch.device:
    """On CUDA each process of a node takes its own GPU (`LOCAL_RANK`)."""
    if world.size > 1 and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The model as trained: `DistributedDataParallel` around it when there are several processes."""
    if world.size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def loss_scale(local_targets: Tensor, global_targets: Tensor, world: World, ignore_index: int) -> float:
    """Factor turning this rank's mean loss into its share of the global mean, given that DDP averages gradients
    over ranks: `world.size × (scored here) / (scored in the global batch)` (1 for a single process)."""
    if world.size == 1:
        return 1.0
    local = int((local_targets != ignore_index).sum())
    total = int((global_targets != ignore_index).sum())
    return world.size * local / max(total, 1)


def global_loss(scaled_loss: Tensor, world: World) -> float:
    """The global batch's mean loss from each rank's scaled loss (their average, as for the gradients)."""
    value = scaled_loss.detach().clone()
    if world.size > 1:
        dist.all_reduce(value)
        value /= world.size
    return value.item()


def check_replicas_agree(model: nn.Module, world: World) -> None:
    """Raise if any rank's parameters differ from rank 0's (they must stay bit-identical under DDP)."""
    if world.size == 1:
        return
    flat = torch.cat([parameter.detach().flatten() for parameter in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    differs = torch.tensor([float(not torch.equal(flat, reference))], device=flat.device)
    dist.all_reduce(differs)
    if differs.item():
        raise RuntimeError("the data-parallel replicas' parameters diverged")


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
