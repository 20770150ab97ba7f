"""Run by `torchrun` in tests/test_distributed.py: trains the tiny MQAR config of test_train.py, recording it in
the database named by argv[1] (rank 0 writes; the trainer checks the replicas stayed identical)."""

import sys

import torch

from tokenmix.bench import ResultsStore
from tokenmix.bench.train import train

sys.path.insert(0, sys.argv[2])  # the tests folder, for test_train's tiny config
from test_train import tiny_config  # noqa: E402

torch.set_num_threads(1)
outcome = train(tiny_config(mixer="gla", steps=8), ResultsStore(sys.argv[1]), progress=False)
print(f"rank done: {outcome.run_id}")
