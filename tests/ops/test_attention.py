"""Softmax attention: a hand-checked case, then `sdpa` against `reference` at awkward shapes."""

from __future__ import annotations

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.ops.attention import softmax_attention


def test_hand_checked_case():
    # Two keys with scores 0 and log 3 (scale 1): weights 1/4, 3/4.
    q = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    k = torch.tensor([0.0, 3.0], dtype=torch.float64).view(1, 1, 2, 1)
    k[0, 0, 1, 0] = torch.log(k[0, 0, 1, 0])
    v = torch.tensor([4.0, 8.0], dtype=torch.float64).view(1, 1, 2, 1)
    for impl in ("reference", "sdpa"):
        o = softmax_attention(q, k, v, causal=False, scale=1.0, impl=impl)
        torch.testing.assert_close(o.flatten(), torch.tensor([4 * 0.25 + 8 * 0.75], dtype=torch.float64))
        # causal with one query sees both keys (bottom-right alignment: it is the last position)
        torch.testing.assert_close(softmax_attention(q, k, v, causal=True, scale=1.0, impl=impl), o)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("query_length,key_length", [(1, 1), (7, 7), (13, 13), (5, 19), (1, 9)])
@pytest.mark.parametrize("head_dim", [3, 8])
def test_sdpa_equals_reference(causal, query_length, key_length, head_dim):
    q = torch.randn(2, 3, query_length, head_dim, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, key_length, head_dim, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, key_length, 5, dtype=torch.float64, requires_grad=True)
    outputs = {impl: softmax_attention(q, k, v, causal=causal, impl=impl) for impl in ("reference", "sdpa")}
    torch.testing.assert_close(outputs["sdpa"], outputs["reference"], rtol=1e-10, atol=1e-12)
    grads = {impl: torch.autograd.grad(o.sin().sum(), (q, k, v)) for impl, o in outputs.items()}
    for got, want in zip(grads["sdpa"], grads["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_causal_prefix_matches_full():
    q, k, v = (torch.randn(1, 2, 10, 4, dtype=torch.float64) for _ in range(3))
    full = softmax_attention(q, k, v, causal=True, impl="reference")
    tail = softmax_attention(q[:, :, 6:], k, v, causal=True, impl="sdpa")
    torch.testing.assert_close(tail, full[:, :, 6:])


def test_bad_arguments_raise():
    q = torch.randn(1, 1, 4, 3)
    with pytest.raises(MixerInputError, match="impl"):
        softmax_attention(q, q, q, impl="flash3")
    with pytest.raises(MixerInputError, match="queries"):
        softmax_attention(q, q[:, :, :2], q[:, :, :2], causal=True)
    with pytest.raises(MixerInputError, match="shape"):
        softmax_attention(q[0], q, q)
    with pytest.raises(MixerInputError, match="agree"):
        softmax_attention(q, q[..., :2], q)


def test_sdpa_gets_a_unit_stride_head_dimension(monkeypatch):
    # Heads split from a channels-first grid are views with stride N on the head dimension; PyTorch's SDPA falls
    # back to its (N, N)-score math path on such inputs, so the op hands it contiguous copies (same values).
    import torch.nn.functional as F

    from tokenmix.ops import attention as module

    seen = []
    original = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        seen.append([t.stride(-1) for t in (q, k, v)])
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(module.F, "scaled_dot_product_attention", recording)
    grid = torch.randn(2, 4 * 8, 37, dtype=torch.float64)          # (B, heads·d, N), channels-first
    q = grid.view(2, 4, 8, 37).transpose(-1, -2)                   # (B, H, N, d), stride 37 on d
    assert q.stride(-1) == 37
    out = softmax_attention(q, q, q, causal=False, impl="sdpa")
    assert seen == [[1, 1, 1]]
    torch.testing.assert_close(out, softmax_attention(q, q, q, causal=False, impl="reference"), rtol=1e-10, atol=1e-10)
