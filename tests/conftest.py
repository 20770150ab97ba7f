import os

import pytest
import torch

# The suite runs as `pytest -n 2` on 2 cores: one thread per worker. More threads per worker oversubscribe the
# cores, and small float64 ops (conv, layer_norm) then spend 10-100x their work in thread hand-offs.
torch.set_num_threads(1)

# Tests never touch the user's cache or results database.
os.environ.setdefault("TOKENMIX_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), "tokenmix-test-cache"))


@pytest.fixture(autouse=True)
def _seed_and_isolate(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("TOKENMIX_DB", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
