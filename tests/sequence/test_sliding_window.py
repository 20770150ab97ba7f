"""Sliding-window attention with windows shorter than the sequence (the conformance suite's window is wider)."""

from __future__ import annotations

import pytest
import torch

import tokenmix
from tokenmix.ops.rotary import rotary
from tokenmix.sequence._heads import merge_heads, split_heads


@pytest.mark.parametrize("window", [1, 3, 5])
def test_blocked_equals_banded_softmax(window):
    mixer = tokenmix.create("sliding_window", 8, num_heads=2, window=window, impl="blocked").double()
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    q, k, v = (split_heads(t, 2) for t in mixer.qkv(x).chunk(3, dim=-1))
    positions = torch.arange(13)
    q, k = rotary(q, positions), rotary(k, positions)
    i, j = positions[:, None], positions[None, :]
    band = (j <= i) & (j > i - window)
    scores = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~band, float("-inf"))
    expected = mixer.out(merge_heads(torch.softmax(scores, -1) @ v))
    torch.testing.assert_close(mixer(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["reference", "blocked"])
def test_streaming_with_a_short_window_keeps_a_bounded_cache(impl):
    mixer = tokenmix.create("sliding_window", 8, num_heads=2, window=4, impl=impl).double()
    x = torch.randn(2, 15, 8, dtype=torch.float64)
    full = mixer(x)
    y1, state = mixer(x[:, :6], return_state=True)
    assert state["key"].shape[2] == 3
    steps = []
    for t in range(6, 15):
        y_t, state = mixer.step(x[:, t], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.cat([y1, torch.stack(steps, 1)], 1), full, rtol=1e-10, atol=1e-10)
