"""The Darcy data generator: the finite-difference solver on manufactured solutions, the Gaussian field's
covariance, and the task's seeding, caching, subsampling and `.mat` loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.tasks import available_tasks, create_task
from tokenmix.tasks.darcy import (cosine_basis, field_spectrum, load_darcy_mat, sample_gaussian_field, solve_darcy,
                                  threshold)


def manufactured(s: int, variable: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, f, u) with u = sin(πx) sin(πy) and f = −∇·(a∇u): a = 1, or the smooth a = 1 + x² + y."""
    x = np.linspace(0, 1, s)
    X, Y = np.meshgrid(x, x, indexing="ij")
    u = np.sin(np.pi * X) * np.sin(np.pi * Y)
    if not variable:
        return np.ones((s, s)), 2 * np.pi**2 * u, u
    a = 1 + X**2 + Y
    ux = np.pi * np.cos(np.pi * X) * np.sin(np.pi * Y)
    uy = np.pi * np.sin(np.pi * X) * np.cos(np.pi * Y)
    f = -(2 * X * ux + uy) + a * 2 * np.pi**2 * u  # −(∇a·∇u + a Δu), Δu = −2π² u
    return a, f, u


@pytest.mark.parametrize("variable", [False, True])
def test_solver_is_second_order_on_a_manufactured_solution(variable):
    errors = []
    for s in (17, 33, 65):
        a, f, u = manufactured(s, variable)
        errors.append(np.abs(solve_darcy(a, f) - u).max())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    # the 5-point scheme's truncation error is O(h²); measured orders 1.997-2.002 (h = 1/16 … 1/64)
    assert all(1.9 < order < 2.1 for order in orders), orders
    assert errors[-1] < 3e-4


def test_solver_constant_forcing_is_symmetric_and_positive():
    s = 33
    u = solve_darcy(np.full((s, s), 3.0))
    assert np.all(u[1:-1, 1:-1] > 0) and np.all(u[[0, -1], :] == 0) and np.all(u[:, [0, -1]] == 0)
    np.testing.assert_allclose(u, u.T, atol=1e-14)
    # −3Δu = 1 on the unit square: the centre value of −Δw = 1 is 0.0736713...; FD at h = 1/32 is within 1e-4
    assert abs(3 * u[16, 16] - 0.0736713) < 1e-4


def test_gaussian_field_covariance():
    n, num = 9, 4000
    z = sample_gaussian_field(num, n, torch.Generator().manual_seed(0))
    assert z.shape == (num, n, n)
    spectrum = field_spectrum(n)
    spectrum[0, 0] = 0  # the default leaves out the constant mode
    basis = cosine_basis(n, n)
    # pointwise variance Var z(x_i, y_j) = Σ_kl λ_kl φ_k(x_i)² φ_l(y_j)²
    variance = (basis**2) @ spectrum @ (basis**2).T
    assert ((z.var(dim=0) / variance - 1).abs().max()) < 0.1  # 4000 draws: std error of a variance ≈ 2.2%
    # the mean is zero: within 4 standard errors at every node
    assert (z.mean(dim=0).abs() <= 4 * (variance / num).sqrt()).all()
    # the cosine coefficients (the n×n basis is invertible) have variance λ_kl, which decays like |k|^−4
    coefficients = torch.linalg.solve(basis, torch.linalg.solve(basis, z).transpose(1, 2)).transpose(1, 2)
    ratio = coefficients.var(dim=0) / field_spectrum(n)
    for k, l in ((1, 0), (0, 1), (1, 1), (2, 3), (4, 4)):
        assert abs(ratio[k, l] - 1) < 0.1, (k, l, ratio[k, l])
    assert coefficients[:, 0, 0].abs().max() < 1e-10
    with_constant = sample_gaussian_field(num, n, torch.Generator().manual_seed(0), constant_mode=True)
    constant = torch.linalg.solve(basis, torch.linalg.solve(basis, with_constant).transpose(1, 2))[:, 0, 0]
    assert abs(constant.var() / field_spectrum(n)[0, 0] - 1) < 0.1


def test_threshold():
    z = torch.tensor([-1.0, 0.0, 2.0])
    torch.testing.assert_close(threshold(z), torch.tensor([3.0, 12.0, 12.0]))


def test_task_is_seeded_cached_and_subsampled():
    assert "darcy" in available_tasks()
    params = dict(resolution=9, solver_resolution=17, num_train_examples=4, num_test_examples=2)
    task = create_task("darcy", **params)
    train = task.split("train")
    assert train.inputs.shape == (4, 1, 9, 9) and train.targets.shape == (4, 1, 9, 9)
    assert train.inputs.dtype == torch.float32 and task.cache_path.exists()
    assert set(torch.unique(train.inputs).tolist()) == {3.0, 12.0}
    full = task.split("train", resolution=17)
    torch.testing.assert_close(full.inputs[..., ::2, ::2], train.inputs)
    torch.testing.assert_close(full.targets[..., ::2, ::2], train.targets)
    again = create_task("darcy", **params).generate()
    torch.testing.assert_close(again["train_inputs"], full.inputs[:, 0])
    torch.testing.assert_close(again["train_targets"], full.targets[:, 0])
    assert not torch.equal(create_task("darcy", **{**params, "seed": 1}).split("train").inputs, train.inputs)
    assert not torch.equal(task.split("test").inputs, train.inputs[:2])
    # the target is the solution for the stored coefficient
    u = solve_darcy(full.inputs[1, 0].double().numpy())
    np.testing.assert_allclose(full.targets[1, 0].numpy(), u, rtol=1e-5, atol=1e-7)
    assert task.loss(1.1 * train.targets, train.targets).item() == pytest.approx(0.1, rel=1e-5)


def test_bad_parameters_raise():
    with pytest.raises(MixerInputError):
        create_task("darcy", resolution=30, solver_resolution=85)
    with pytest.raises(MixerInputError):
        create_task("darcy", tau=-1.0)
    with pytest.raises(MixerInputError):
        create_task("darcy", resolution=9, solver_resolution=17, num_train_examples=2).split("train", resolution=6)
    with pytest.raises(MixerInputError):
        solve_darcy(np.ones((3, 4)))


def test_loader_reads_the_fno_mat_format(tmp_path):
    from scipy.io import savemat

    a = torch.randn(3, 9, 9, dtype=torch.float64)
    u = torch.randn(3, 9, 9, dtype=torch.float64)
    path = tmp_path / "piececonst_r421_N1024_smooth1.mat"
    savemat(path, {"coeff": a.numpy(), "sol": u.numpy()})
    inputs, targets = load_darcy_mat(path, resolution=5)
    assert inputs.shape == (3, 1, 5, 5) and inputs.dtype == torch.float32
    torch.testing.assert_close(inputs[:, 0], a[:, ::2, ::2].float())
    torch.testing.assert_close(targets[:, 0], u[:, ::2, ::2].float())
    with pytest.raises(MixerInputError):
        load_darcy_mat(path, resolution=4)
    savemat(tmp_path / "wrong.mat", {"coeff": a.numpy()})
    with pytest.raises(MixerInputError):
        load_darcy_mat(tmp_path / "wrong.mat")
