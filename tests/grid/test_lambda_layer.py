"""Lambda layer and Kronecker attention against their equations, position by position."""

from __future__ import annotations

import pytest
import torch

import tokenmix

D = 8


def _tokens(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """1×1 conv of a (C, H, W) grid as (N, out) row-major tokens."""
    t = x.flatten(1).T @ conv.weight[:, :, 0, 0].T
    return t if conv.bias is None else t + conv.bias


@pytest.mark.parametrize("impl", ["reference", "conv"])
def test_lambda_layer_is_eq_1_to_3_position_by_position(impl):
    mixer = tokenmix.create("lambda_layer", D, num_heads=2, key_dim=3, context_size=3, impl=impl).double()
    h, w = 3, 4
    x = torch.randn(1, D, h, w, dtype=torch.float64)
    q = _tokens(mixer.query, x[0]).view(h * w, 2, 3)     # (N, heads, k)
    keys = torch.softmax(_tokens(mixer.key, x[0]), dim=0)  # softmax over the N positions
    v = _tokens(mixer.value, x[0])                         # (N, v = 4)
    content = keys.T @ v                                    # λ^c: (k, v)
    y = torch.empty(1, D, h, w, dtype=torch.float64)
    for n in range(h * w):
        r, c = divmod(n, w)
        position = torch.zeros(3, 4, dtype=torch.float64)   # λ^p_n = Σ_m E_nm v_mᵀ over the 3×3 context
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if 0 <= r + dr < h and 0 <= c + dc < w:
                    e = mixer.position_embedding[:, dr + 1, dc + 1]
                    position += torch.outer(e, v[(r + dr) * w + c + dc])
        for head in range(2):
            y[0, head * 4:(head + 1) * 4, r, c] = (content + position).T @ q[n, head]
    torch.testing.assert_close(mixer(x), y)


@pytest.mark.parametrize("context_size,height,width", [(3, 5, 6), (5, 2, 7), (7, 4, 4), (1, 3, 3)])
def test_lambda_conv_equals_reference_with_gradients(context_size, height, width):
    reference = tokenmix.create("lambda_layer", D, num_heads=2, context_size=context_size, impl="reference").double()
    fast = tokenmix.create("lambda_layer", D, num_heads=2, context_size=context_size, impl="conv").double()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, D, height, width, dtype=torch.float64, requires_grad=True)
    y, y_fast = reference(x), fast(x)
    torch.testing.assert_close(y_fast, y, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(y)
    grads = torch.autograd.grad((y * weights).sum(), [x, *reference.parameters()])
    grads_fast = torch.autograd.grad((y_fast * weights).sum(), [x, *fast.parameters()])
    for got, want in zip(grads_fast, grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _heads_attention(q, k, v, heads=2):
    outs = [torch.softmax(qh @ kh.T / qh.shape[1] ** 0.5, dim=-1) @ vh
            for qh, kh, vh in zip(q.tensor_split(heads, 1), k.tensor_split(heads, 1), v.tensor_split(heads, 1))]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
@pytest.mark.parametrize("queries", ["full", "summary"])
def test_kronecker_attention_attends_to_row_and_column_means(queries, impl):
    mixer = tokenmix.create("kronecker_attention", D, num_heads=2, queries=queries, impl=impl).double()
    h, w = 3, 5
    x = torch.randn(1, D, h, w, dtype=torch.float64)
    rows = x[0].mean(2).T                                    # (H, C): the mean of each row
    cols = x[0].mean(1).T                                    # (W, C): the mean of each column
    s = torch.cat([rows, cols])                              # H + W summary tokens
    weight, bias = mixer.qkv.weight[:, :, 0, 0], mixer.qkv.bias
    _, k, v = (s @ weight.T + bias).chunk(3, dim=1)
    out_weight, out_bias = mixer.out.weight[:, :, 0, 0], mixer.out.bias
    if queries == "full":
        q = x[0].flatten(1).T @ weight[:D].T + bias[:D]
        y = (_heads_attention(q, k, v) @ out_weight.T + out_bias).T.reshape(1, D, h, w)
    else:
        q = (s @ weight.T + bias)[:, :D]
        o = _heads_attention(q, k, v)
        y = torch.empty(1, D, h, w, dtype=torch.float64)
        for r in range(h):
            for c in range(w):
                y[0, :, r, c] = out_weight @ (o[r] + o[h + c]) + out_bias
    torch.testing.assert_close(mixer(x), y)


def test_kronecker_summary_queries_sdpa_equals_reference_with_gradients():
    reference = tokenmix.create("kronecker_attention", D, num_heads=2, queries="summary", impl="reference").double()
    fast = tokenmix.create("kronecker_attention", D, num_heads=2, queries="summary", impl="sdpa").double()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(2, D, 4, 7, dtype=torch.float64, requires_grad=True)
    y, y_fast = reference(x), fast(x)
    torch.testing.assert_close(y_fast, y, rtol=1e-10, atol=1e-12)
    g, g_fast = torch.autograd.grad(y.sin().sum(), x), torch.autograd.grad(y_fast.sin().sum(), x)
    torch.testing.assert_close(g_fast, g, rtol=1e-10, atol=1e-12)


def test_bad_options_raise():
    with pytest.raises(tokenmix.MixerInputError, match="context_size"):
        tokenmix.create("lambda_layer", D, context_size=4)
    with pytest.raises(tokenmix.MixerInputError, match="queries"):
        tokenmix.create("kronecker_attention", D, queries="rows")


def test_lambda_with_a_context_covering_the_grid_is_global_relative():
    # m = 2·4 − 1: every pair (n, m) of a 4×4 grid has its own relative embedding R[pos(m) − pos(n)]
    mixer = tokenmix.create("lambda_layer", D, num_heads=2, key_dim=3, context_size=7).double()
    e = mixer._dense_embeddings(4, 4)
    assert (e.abs().sum(-1) > 0).all()
    torch.testing.assert_close(e[0, 15], mixer.position_embedding[:, 6, 6])   # (0,0) -> (3,3): Δ = (3, 3)
    torch.testing.assert_close(e[15, 0], mixer.position_embedding[:, 0, 0])   # Δ = (−3, −3)
    torch.testing.assert_close(e[5, 6], e[9, 10])                            # same offset, same embedding
