"""Re-parameterizations: every folded / merged / collapsed form equals the training form in eval mode."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tokenmix
from tokenmix.analysis.reparameterize import (
    CollapsibleLinearBlock, acnet_branches, collapse_chain, dilated_branches, fold_batchnorm,
    fold_sequential_batchnorms, merge_parallel_kernels, reparameterize_model, replknet_branches)

ATOL = 1e-11  # float64: sums of a few hundred products reordered


def _randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.randn(n, generator=generator))
                module.bias.copy_(torch.randn(n, generator=generator))
    return model.double().eval()


def test_fold_batchnorm_hand_case():
    norm = nn.BatchNorm2d(1, eps=0.0).eval()
    norm.running_mean.fill_(1.0), norm.running_var.fill_(4.0)
    with torch.no_grad():
        norm.weight.fill_(3.0), norm.bias.fill_(0.5)
    weight, bias = fold_batchnorm(torch.full((1, 1, 1, 1), 2.0), torch.tensor([5.0]), norm)
    # 3 (2x + 5 - 1) / 2 + 0.5 = 3x + 6.5
    assert weight.item() == 3.0 and bias.item() == 6.5


def test_fold_sequential_batchnorms_keeps_the_output():
    torch.manual_seed(0)
    model = _randomize_batchnorms(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                                nn.Conv2d(4, 2, 3, bias=False), nn.BatchNorm2d(2)))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    expected = model(x)
    assert fold_sequential_batchnorms(model) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("build", [lambda: replknet_branches(4, 9, 3), lambda: acnet_branches(4, 3),
                                   lambda: acnet_branches(4, 5, groups=2), lambda: dilated_branches(4, 7)])
def test_parallel_branches_merge_into_one_convolution(build):
    torch.manual_seed(1)
    block = _randomize_batchnorms(build())
    x = torch.randn(2, 4, 16, 16, dtype=torch.float64)
    expected = block(x)
    block.reparameterize()
    assert len(block.branches) == 0 and isinstance(block.merged, nn.Conv2d)
    torch.testing.assert_close(block(x), expected, rtol=0, atol=ATOL)


def test_merge_agrees_with_the_mixers_own_reparameterize():
    torch.manual_seed(2)
    mixer = tokenmix.create("unireplknet", 3, kernel_size=7).double()
    with torch.no_grad():
        mixer.branch_biases.normal_()
    weights = [mixer.weight] + list(mixer.branch_weights)
    biases = [mixer.bias] + list(mixer.branch_biases)
    weight, bias = merge_parallel_kernels(weights, biases, (1, *mixer.branch_dilations))
    mixer.reparameterize()
    torch.testing.assert_close(weight, mixer.weight.detach(), rtol=0, atol=1e-15)
    torch.testing.assert_close(bias, mixer.bias.detach(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("residual", [True, False])
def test_collapsible_linear_block_collapses(residual):
    torch.manual_seed(3)
    block = CollapsibleLinearBlock(3, 16, 5, residual=residual).double().eval()
    x = torch.randn(2, 3, 11, 11, dtype=torch.float64)
    expected = block(x)
    block.reparameterize()
    assert block.collapsed.weight.shape == (3, 3, 5, 5)
    torch.testing.assert_close(block(x), expected, rtol=0, atol=ATOL)


def test_chain_of_valid_convolutions_collapses_into_one():
    torch.manual_seed(4)
    layers = [(torch.randn(5, 2, 3, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)),
              (torch.randn(4, 5, 3, 1, dtype=torch.float64), torch.randn(4, dtype=torch.float64)),
              (torch.randn(3, 4, 1, 1, dtype=torch.float64), None)]
    x = torch.randn(2, 2, 10, 12, dtype=torch.float64)
    y = x
    for weight, bias in layers:
        y = F.conv2d(y, weight, bias)
    weight, bias = collapse_chain(layers)
    assert weight.shape == (3, 2, 5, 3)
    torch.testing.assert_close(F.conv2d(x, weight, bias), y, rtol=0, atol=ATOL)


def test_reparameterize_model_reaches_the_large_kernel_mixers():
    from tokenmix.models.vision import VisionModel

    torch.manual_seed(5)
    model = VisionModel(["replknet", "unireplknet"], depths=(1, 1), dims=(4, 8), num_classes=3,
                        mixer_options=[{"kernel_size": 7, "small_kernel_size": 3}, {"kernel_size": 5}]).double()
    for module in model.modules():   # non-zero small branches, so the merge is visible
        for name in ("small_weight", "branch_weights"):
            if getattr(module, name, None) is not None:
                with torch.no_grad():
                    for p in ([getattr(module, name)] if name == "small_weight" else module.branch_weights):
                        p.normal_()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    expected = model.eval()(x)
    assert reparameterize_model(model) == 2
    assert all(m.reparameterized for m in model.modules() if hasattr(m, "reparameterized"))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("build", [lambda: acnet_branches(3, 3), lambda: CollapsibleLinearBlock(3, 8, 3)])
def test_reparameterize_model_on_a_block_itself(build):
    torch.manual_seed(6)
    block = _randomize_batchnorms(build())
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    expected = block(x)
    reparameterize_model(block)
    assert sum(isinstance(m, nn.Conv2d) for m in block.modules()) == 1
    torch.testing.assert_close(block(x), expected, rtol=0, atol=ATOL)
