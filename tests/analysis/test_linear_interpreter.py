"""LinearScope: A(x) x + b(x) is the network's output, to float64 round-off, for ReLU / max-pool networks."""

import pytest
import torch
from torch import nn

from tokenmix.analysis.linear_interpreter import is_piecewise_linear, linearize, plot_linear_system


def _network():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(4, 6, 3), nn.LeakyReLU(0.1)), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 1 * 1, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    norm = model[1]
    norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    return model.eval()


def test_exact_linear_system_reproduces_the_output():
    model = _network()
    for seed in range(3):
        x = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        system = linearize(model, x)
        assert system.exact and system.matrix.shape == (3, 128) and system.offset.shape == (3,)
        torch.testing.assert_close(system(x), model(x[None])[0], rtol=0, atol=1e-10)


def test_matrix_is_the_jacobian_and_the_offset_is_not_zero():
    model = _network()
    x = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    system = linearize(model, x)
    jacobian = torch.func.jacrev(lambda v: model(v[None])[0])(x).reshape(3, -1)
    torch.testing.assert_close(system.matrix, jacobian, rtol=0, atol=1e-12)
    assert system.offset.abs().max() > 1e-3   # biases and BN shifts pass through the gates


def test_hand_case_relu_gates():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU()).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -4.0]]))
        model[0].bias.copy_(torch.tensor([0.5, -10.0]))
    system = linearize(model, torch.tensor([1.0, 1.0], dtype=torch.float64))
    # pre-activations (3.5, -11): the first unit passes, the second is gated off
    torch.testing.assert_close(system.matrix, torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(system.offset, torch.tensor([0.5, 0.0], dtype=torch.float64))


def test_other_nonlinearities_fall_back_to_the_jacobian(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.GELU(), nn.Conv2d(2, 1, 1)).double()
    assert not is_piecewise_linear(model)
    x = torch.randn(1, 6, 6, dtype=torch.float64)
    system = linearize(model, x)
    assert not system.exact
    torch.testing.assert_close(system(x), model(x[None])[0], rtol=0, atol=1e-12)   # exact at x only
    x2 = x + 0.5 * torch.randn_like(x)
    assert (system(x2) - model(x2[None])[0]).abs().max() > 1e-4                  # a tangent, not the network
    path = plot_linear_system(system, tmp_path / "system.png", rows=[0, 14], columns=[7])
    assert path.stat().st_size > 1000


def test_plot_of_an_exact_system(tmp_path):
    model = _network()
    system = linearize(model, torch.randn(2, 8, 8, dtype=torch.float64))
    assert plot_linear_system(system, tmp_path / "rows.png", rows=[0, 1, 2]).stat().st_size > 1000
