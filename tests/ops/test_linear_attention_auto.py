"""`impl="auto"` of the linear-attention op: the documented rule, and that the op follows it."""

from __future__ import annotations

import torch

from tokenmix.ops.linear_attention import RECURRENT_INFERENCE_MAX_LENGTH, auto_impl, linear_attention


def test_rule():
    cpu = dict(device_type="cpu")
    assert auto_impl(2, vector_decay=False, needs_grad=True, **cpu) == "recurrent"          # too short to chunk
    assert auto_impl(1024, vector_decay=True, needs_grad=False, **cpu) == "recurrent"       # GLA inference
    assert auto_impl(RECURRENT_INFERENCE_MAX_LENGTH, vector_decay=True, needs_grad=False, **cpu) == "recurrent"
    assert auto_impl(RECURRENT_INFERENCE_MAX_LENGTH + 1, vector_decay=True, needs_grad=False, **cpu) == "chunk"
    assert auto_impl(1024, vector_decay=True, needs_grad=True, **cpu) == "chunk"            # training
    assert auto_impl(1024, vector_decay=False, needs_grad=False, **cpu) == "chunk"          # scalar decays
    assert auto_impl(1024, vector_decay=True, needs_grad=False, device_type="cuda") == "chunk"


def test_op_follows_the_rule():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 37, 8) for _ in range(3))
    vector, scalar = -torch.rand(1, 2, 37, 8), -torch.rand(1, 2, 37)
    run = lambda g, impl: linear_attention(q, k, v, g, impl=impl, chunk_size=8)  # noqa: E731
    with torch.no_grad():
        assert torch.equal(run(vector, "auto"), run(vector, "recurrent"))
        assert torch.equal(run(scalar, "auto"), run(scalar, "chunk"))
    # a gradient is needed: chunk, whose backward is the fast one
    needs_grad = vector.clone().requires_grad_()
    assert torch.equal(run(needs_grad, "auto"), run(needs_grad, "chunk"))
    # grad mode on but nothing requires grad: inference
    assert torch.equal(run(vector, "auto"), run(vector, "recurrent"))
