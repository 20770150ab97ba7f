"""Kernelized-attention mixers against their quadratic (attention-matrix) forms."""

from __future__ import annotations

import math

import torch

import tokenmix
from tokenmix.sequence._heads import merge_heads, split_heads


def test_cosformer_equals_its_quadratic_form():
    for causal in (True, False):
        mixer = tokenmix.create("cosformer", 8, num_heads=2, max_length=16, causal=causal).double()
        x = torch.randn(2, 7, 8, dtype=torch.float64)
        q, k, v = (split_heads(t, 2) for t in mixer.qkv(x).chunk(3, dim=-1))
        i = torch.arange(7, dtype=torch.float64)
        period = 16 if causal else 7
        weights = (q.relu() @ k.relu().transpose(-1, -2)) * torch.cos(math.pi * (i[:, None] - i) / (2 * period))
        if causal:
            weights = weights.tril()
        o = weights @ v / (weights.sum(-1, keepdim=True) + 1e-6)  # the op's eps
        torch.testing.assert_close(mixer(x), mixer.out(merge_heads(o)), rtol=1e-8, atol=1e-10)


def test_transnormer_has_no_denominator_and_a_normalized_output():
    mixer = tokenmix.create("transnormer", 8, num_heads=2, impl="chunk", chunk_size=4).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    q, k, v = (split_heads(t, 2) for t in mixer.qkv(x).chunk(3, dim=-1))
    phi = torch.nn.functional.elu
    o = ((phi(q) + 1) @ (phi(k) + 1).transpose(-1, -2)).tril() @ v
    torch.testing.assert_close(mixer(x), mixer.out(mixer.norm(o)), rtol=1e-10, atol=1e-10)
