"""`impl="auto"` of the linear-attention op: the documented rule, and that the op follows it."""

from __future__ import annotations

import torch

from tokenmix.ops.linear_attention import auto_impl, linear_attention


def test_rule():
    assert auto_impl(2) == "recurrent"   # too short to chunk
    assert auto_impl(3) == "chunk"
    assert auto_impl(1024) == "chunk"


def test_op_follows_the_rule():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 37, 8) for _ in range(3))
    vector, scalar = -torch.rand(1, 2, 37, 8), -torch.rand(1, 2, 37)
    run = lambda g, impl, length=37: linear_attention(q[:, :, :length], k[:, :, :length], v[:, :, :length],  # noqa: E731
                                                     g[:, :, :length], impl=impl, chunk_size=8)
    with torch.no_grad():  # inference and training take the same form
        assert torch.equal(run(vector, "auto"), run(vector, "chunk"))
        assert torch.equal(run(scalar, "auto"), run(scalar, "chunk"))
        assert torch.equal(run(vector, "auto", 2), run(vector, "recurrent", 2))
    needs_grad = vector.clone().requires_grad_()
    assert torch.equal(run(needs_grad, "auto"), run(needs_grad, "chunk"))
