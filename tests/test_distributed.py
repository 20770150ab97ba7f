"""Data-parallel training under torchrun: 2 CPU processes (gloo) keep identical parameters and end where one
process with the same global batch ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tokenmix.bench import ResultsStore
from tokenmix.bench.checkpoint import final_weights_path
from tokenmix.bench.distributed import World, loss_scale
from tokenmix.bench.train import train
from tokenmix.tasks import IGNORE_INDEX

from test_train import tiny_config

TESTS = Path(__file__).parent


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    environment = {**os.environ, "TOKENMIX_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(TESTS / "distributed_worker.py"), str(tmp_path / "ddp.sqlite"), str(TESTS)]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]  # includes the trainer's check that replicas agree
    assert finished.stdout.count("rank done") == 2

    (row,) = ResultsStore(tmp_path / "ddp.sqlite").rows()  # only rank 0 wrote
    assert row["status"] == "finished" and row["environment"]["processes"] == 2
    parallel = load_file(str(tmp_path / "cache" / "models" / f"{row['run_id']}.safetensors"))

    single = train(tiny_config(mixer="gla", steps=8), ResultsStore(tmp_path / "one.sqlite"), progress=False)
    assert single.run_id == row["run_id"]  # the same run: the process count is not part of the config
    alone = load_file(str(final_weights_path(single.run_id)))
    assert alone.keys() == parallel.keys()
    # Equal up to float32 summation order: the gradient is summed per rank and then across ranks instead of over
    # one batch, a relative difference of ~1e-7 per step that AdamW carries through 8 steps.
    for name in alone:
        torch.testing.assert_close(parallel[name], alone[name], rtol=1e-4, atol=1e-5, msg=name)
    assert row["metrics"]["steps"] == 8 and abs(row["metrics"]["train_loss"] - single.metrics["train_loss"]) < 1e-4


def test_the_loss_scale_gives_each_rank_its_share_of_the_global_mean():
    targets = torch.tensor([[1, IGNORE_INDEX, 2], [IGNORE_INDEX, IGNORE_INDEX, 3], [4, 5, 6], [7, IGNORE_INDEX, 8]])
    world = World(rank=0, size=2)
    local = world.shard(torch.arange(4))  # examples 0 and 2: 5 of the 8 scored positions
    assert local.tolist() == [0, 2]
    assert loss_scale(targets[local], targets, world, IGNORE_INDEX) == 2 * 5 / 8
    other = World(rank=1, size=2).shard(torch.arange(4))
    # the two scaled means average (as DDP averages gradients) to the global mean: (2·5/8·m0 + 2·3/8·m1) / 2
    assert loss_scale(targets[other], targets, World(1, 2), IGNORE_INDEX) == 2 * 3 / 8
    assert loss_scale(targets, targets, World(), IGNORE_INDEX) == 1.0
