"""LSM: the neural spectral block against a hand computation, patches, ragged grids, and its resolution behaviour."""

from __future__ import annotations

import math

import pytest
import torch

import tokenmix
from tokenmix.grid.operators_latent_spectral import NeuralSpectralBlock


def test_latent_solve_is_the_trigonometric_expansion():
    block = NeuralSpectralBlock(1, 2, patch_size=4, num_tokens=1, num_basis=2, num_heads=1).double()
    with torch.no_grad():
        block.basis_weight.copy_(torch.tensor([[0.3, -0.7, 0.5, 0.2], [1.0, 2.0, -1.0, 0.25]], dtype=torch.float64))
    tokens = torch.tensor([[[[0.4, -1.3]]]], dtype=torch.float64)         # (P, h, M, d) = (1, 1, 1, 2)
    out = block.solve(tokens)[0, 0, 0]
    # ω = (0, π/2): T' = T + w_sin0·sin 0 + w_sin1·sin(πT/2) + w_cos0·cos 0 + w_cos1·cos(πT/2)
    for channel, (t, (s0, s1, c0, c1)) in enumerate(zip((0.4, -1.3), ((0.3, -0.7, 0.5, 0.2), (1.0, 2.0, -1.0, 0.25)))):
        expected = t + s0 * 0 + s1 * math.sin(math.pi * t / 2) + c0 * 1 + c1 * math.cos(math.pi * t / 2)
        assert abs(out[channel].item() - expected) < 1e-14


@pytest.mark.parametrize("impl", ["reference", "patched"])
def test_block_on_one_patch_matches_a_hand_computation(impl):
    # one channel, one head (scale 1), two latent tokens, one patch of three points; K = 1 (only cos 0 = 1)
    block = NeuralSpectralBlock(1, 1, patch_size=3, num_tokens=2, num_basis=1, num_heads=1).double()
    a_k, b_k, a_v, b_v, a_q, b_q = 0.8, 0.1, -0.5, 0.3, 1.2, -0.2
    t0, bias = (0.7, -0.4), 0.25
    with torch.no_grad():
        block.key_value.weight.copy_(torch.tensor([[[a_k]], [[a_v]]], dtype=torch.float64))
        block.key_value.bias.copy_(torch.tensor([b_k, b_v], dtype=torch.float64))
        block.query.weight.fill_(a_q)
        block.query.bias.fill_(b_q)
        block.latent.copy_(torch.tensor(t0, dtype=torch.float64).view(1, 2, 1))
        block.basis_weight.copy_(torch.tensor([[0.0, bias]], dtype=torch.float64))            # (sin 0, cos 0) weights
    xs = (0.5, -1.0, 2.0)
    out = block(torch.tensor(xs, dtype=torch.float64).view(1, 1, 3), impl)[0, 0]

    def softmax(scores):
        top = max(scores)
        e = [math.exp(s - top) for s in scores]
        return [v / sum(e) for v in e]

    keys, values = [a_k * x + b_k for x in xs], [a_v * x + b_v for x in xs]
    tokens = []
    for t in t0:
        weights = softmax([t * k for k in keys])
        tokens.append(t + sum(w * v for w, v in zip(weights, values)) + bias)   # encoder, residual, solve
    for x, y in zip(xs, out.tolist()):
        q = a_q * x + b_q
        weights = softmax([q * t for t in tokens])
        assert abs(y - (x + sum(w * t for w, t in zip(weights, tokens)))) < 1e-13


@pytest.mark.parametrize("impl", ["reference", "patched"])
def test_block_acts_on_each_patch_alone(impl):
    torch.manual_seed(0)
    block = NeuralSpectralBlock(2, 4, patch_size=3, num_tokens=2, num_basis=3, num_heads=2).double()
    x = torch.randn(1, 4, 7, 5, dtype=torch.float64)                       # patches [0:3, 3:6, 6:7] × [0:3, 3:5]
    changed = x.clone()
    changed[..., 4, 1] += 1.0                                               # inside patch (1, 0)
    difference = (block(changed, impl) - block(x, impl)).abs().sum(1)[0]
    outside = torch.ones_like(difference, dtype=torch.bool)
    outside[3:6, 0:3] = False
    assert difference[outside].max() == 0 and difference[~outside].min() > 0


@pytest.mark.parametrize("sizes,patch_size,levels", [((11,), 4, 3), ((7, 9), 2, 3), ((5, 6), 4, 4), ((1, 3), 2, 2),
                                                     ((4, 3, 5), 2, 2)])
def test_patched_equals_reference_on_ragged_grids(sizes, patch_size, levels):
    torch.manual_seed(0)
    options = dict(spatial_dims=len(sizes), patch_size=patch_size, levels=levels, num_heads=2, num_tokens=3,
                   num_basis=4)
    reference = tokenmix.create("lsm", 8, impl="reference", **options).double()
    patched = tokenmix.create("lsm", 8, impl="patched", **options).double()
    patched.load_state_dict(reference.state_dict())
    x = torch.randn(2, 8, *sizes, dtype=torch.float64, requires_grad=True)
    y, y_patched = reference(x), patched(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y_patched, y, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(y)
    grads = [torch.autograd.grad((out * weights).sum(), [x, *model.parameters()])
             for out, model in ((y, reference), (y_patched, patched))]
    for g_patched, g in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_patched, g, rtol=1e-10, atol=1e-12)


def test_channels_double_down_the_u_and_options_are_checked():
    mixer = tokenmix.create("lsm", 8, levels=4, num_heads=2)
    assert [block.key_value.in_channels for block in mixer.blocks] == [8, 16, 32, 32]
    with pytest.raises(tokenmix.MixerInputError, match="lsm"):
        tokenmix.create("lsm", 10, num_heads=4)
    with pytest.raises(tokenmix.MixerInputError, match="lsm"):
        tokenmix.create("lsm", 8, num_heads=2, patch_size=0)


def test_not_resolution_invariant_as_declared():
    # Patches of a fixed number of points and 3-point stencils: the same smooth function sampled at twice the
    # resolution gives a different output at the shared points (by more than a rounding error), so the spec says
    # resolution_invariant=False; the finer grid still runs and gives finite values.
    assert tokenmix.spec("lsm").resolution_invariant is False
    torch.manual_seed(0)
    mixer = tokenmix.create("lsm", 4, spatial_dims=1, num_heads=2, levels=3, patch_size=4).double()
    grid = lambda n: torch.arange(n, dtype=torch.float64) / n  # noqa: E731
    f = lambda x: torch.stack([torch.sin(2 * math.pi * (c + 1) * x) for c in range(4)])[None]  # noqa: E731
    coarse, fine = mixer(f(grid(32))), mixer(f(grid(64)))
    assert torch.isfinite(fine).all()
    assert (fine[..., ::2] - coarse).norm() / coarse.norm() > 1e-2
