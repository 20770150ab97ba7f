import os

import pytest
import torch

# Tests never touch the user's cache or results database.
os.environ.setdefault("TOKENMIX_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), "tokenmix-test-cache"))


@pytest.fixture(autouse=True)
def _seed_and_isolate(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("TOKENMIX_DB", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path / "cache"))
