"""The Burgers data generator against analytic solutions, and the task's seeding, caching and subsampling."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.tasks import available_tasks, create_task
from tokenmix.tasks.burgers import _seed_for, relative_l2, sample_initial_conditions, solve_burgers

NU = 0.1


def test_tiny_amplitude_follows_the_heat_equation():
    # With u = O(ε) the advection term is O(ε²): u(x, t) = Σ_k û_k e^{−ν (2πk)² t} e^{2πikx} to relative O(ε).
    n, eps, t = 64, 1e-7, 0.3
    x = torch.arange(n, dtype=torch.float64) / n
    modes = {1: (1.0, 0.5), 2: (-0.7, 0.2), 5: (0.3, -0.4)}
    u0 = eps * sum(a * torch.cos(2 * math.pi * k * x) + b * torch.sin(2 * math.pi * k * x) for k, (a, b) in modes.items())
    exact = eps * sum(math.exp(-NU * (2 * math.pi * k) ** 2 * t)
                      * (a * torch.cos(2 * math.pi * k * x) + b * torch.sin(2 * math.pi * k * x))
                      for k, (a, b) in modes.items())
    u = solve_burgers(u0[None], viscosity=NU, final_time=t, time_step=1e-2)[0]
    assert (u - exact).abs().max() <= 1e-6 * exact.abs().max()


@pytest.mark.parametrize("final_time", [0.1, 1.0])
def test_cole_hopf_solution(final_time):
    # u = −2ν φ_x / φ with φ = b + e^{−4π²νt} cos 2πx solving the heat equation is an exact, O(1), nonlinear solution.
    n, b = 128, 1.2
    x = torch.arange(n, dtype=torch.float64) / n

    def exact(t):
        decay = math.exp(-4 * math.pi**2 * NU * t)
        return 4 * math.pi * NU * decay * torch.sin(2 * math.pi * x) / (b + decay * torch.cos(2 * math.pi * x))

    u = solve_burgers(exact(0.0)[None], viscosity=NU, final_time=final_time, time_step=1e-3)[0]
    assert (u - exact(final_time)).abs().max() <= 1e-9 * exact(0.0).abs().max()


def test_initial_conditions_have_the_papers_covariance():
    # Var u0(x) = Σ_k λ_k over the Hermitian spectrum = λ_0 + 2 Σ_{k≥1} 625 ((2πk)² + 25)^−2.
    n = 64
    u0 = sample_initial_conditions(4000, n, torch.Generator().manual_seed(0), random_mean=True)
    k = torch.arange(1, n // 2, dtype=torch.float64)
    variance = 1.0 + 2 * (625 * ((2 * math.pi * k) ** 2 + 25) ** -2).sum()
    assert abs(u0.var(dim=0).mean() - variance) < 0.05 * variance
    # the mean mode has variance 625 / 25² = 1
    assert abs(u0.mean(dim=1).var() - 1.0) < 0.1


def test_initial_conditions_have_zero_mean_by_default():
    # The paper's generator (GRF1 with m = 0) leaves the constant mode out; the other modes keep their variances.
    n = 64
    u0 = sample_initial_conditions(4000, n, torch.Generator().manual_seed(0))
    assert u0.mean(dim=1).abs().max() < 1e-12
    k = torch.arange(1, n // 2, dtype=torch.float64)
    variance = 2 * (625 * ((2 * math.pi * k) ** 2 + 25) ** -2).sum()
    assert abs(u0.var(dim=0).mean() - variance) < 0.05 * variance


def test_released_field_has_the_generator_scripts_covariance():
    # GRF1(s/2, 0, 2.5, 7, 7^2): cos and sin coefficients of mode k with variance 2 · 49² ((2πk)² + 49)^−2.5.
    n = 64
    generator = torch.Generator().manual_seed(0)
    u0 = sample_initial_conditions(4000, n, generator, sigma=49.0, tau=7.0, exponent=2.5)
    k = torch.arange(1, n // 2, dtype=torch.float64)
    per_mode = 2 * 49.0**2 * ((2 * math.pi * k) ** 2 + 49) ** -2.5
    assert abs(u0.var(dim=0).mean() - per_mode.sum()) < 0.05 * per_mode.sum()
    # mode 1 alone: its cosine coefficient 2/n Σ_j u_j cos(2πj/n)
    x = torch.arange(n, dtype=torch.float64) / n
    cosine = 2 / n * (u0 * torch.cos(2 * math.pi * x)).sum(dim=1)
    assert abs(cosine.var() - per_mode[0]) < 0.1 * per_mode[0]


def test_task_draws_the_released_field_and_keeps_the_papers_cache_key():
    params = dict(resolution=32, solver_resolution=64, num_train_examples=2, num_test_examples=2, time_step=1e-2)
    paper = create_task("burgers", **params)
    assert "initial_field" not in paper.generator_params()  # files stored before the option keep their key
    released = create_task("burgers", **params, initial_field="released")
    assert released.cache_path != paper.cache_path
    generator = torch.Generator().manual_seed(_seed_for(0, "train"))
    expected = sample_initial_conditions(2, 64, generator, sigma=49.0, tau=7.0, exponent=2.5).float()
    torch.testing.assert_close(released.generate()["train_inputs"], expected, rtol=0, atol=0)
    with pytest.raises(MixerInputError, match="initial_field"):
        create_task("burgers", initial_field="literal")


def test_burgers_task_checks_random_mean():
    with pytest.raises(MixerInputError, match="random_mean"):
        create_task("burgers", random_mean="yes")


def test_time_step_converged():
    u0 = sample_initial_conditions(2, 256, torch.Generator().manual_seed(1))
    coarse = solve_burgers(u0, time_step=1e-3)
    fine = solve_burgers(u0, time_step=5e-4)
    assert (coarse - fine).abs().max() < 1e-9


def test_task_is_seeded_cached_and_subsampled():
    assert "burgers" in available_tasks()
    params = dict(resolution=32, solver_resolution=128, num_train_examples=6, num_test_examples=3, time_step=1e-2)
    task = create_task("burgers", **params)
    train = task.split("train")
    assert train.inputs.shape == (6, 1, 32) and train.targets.shape == (6, 1, 32)
    assert train.inputs.dtype == torch.float32
    assert task.cache_path.exists()
    full = task.split("test", resolution=128)
    torch.testing.assert_close(full.inputs[..., ::4], task.split("test").inputs)
    again = create_task("burgers", **params).generate()
    torch.testing.assert_close(again["train_inputs"][:, ::4], train.inputs[:, 0])
    torch.testing.assert_close(again["train_targets"][:, ::4], train.targets[:, 0])
    other_seed = create_task("burgers", **{**params, "seed": 1}).split("train")
    assert not torch.allclose(other_seed.inputs, train.inputs)
    assert not torch.allclose(train.inputs[:3], task.split("test").inputs)  # train and test are independent
    # the target is the time-1 solution of the stored input
    torch.testing.assert_close(solve_burgers(full.inputs[:, 0].double(), time_step=1e-2).float(), full.targets[:, 0],
                               rtol=1e-5, atol=1e-5)


def test_bad_parameters_raise():
    with pytest.raises(MixerInputError):
        create_task("burgers", resolution=100, solver_resolution=8192)
    with pytest.raises(MixerInputError):
        create_task("burgers", viscosity=-1.0)
    with pytest.raises(MixerInputError):
        create_task("burgers", resolution=32, solver_resolution=128).split("test", resolution=48)


def test_relative_l2():
    y = torch.randn(3, 1, 16)
    assert torch.allclose(relative_l2(1.1 * y, y), torch.full((3,), 0.1), atol=1e-6)


def test_loader_reads_the_fno_mat_format(tmp_path):
    from scipy.io import savemat

    from tokenmix.tasks.burgers import load_burgers_mat

    a = torch.randn(3, 16, dtype=torch.float64)
    u = torch.randn(3, 16, dtype=torch.float64)
    path = tmp_path / "burgers_data_R10.mat"
    savemat(path, {"a": a.numpy(), "u": u.numpy()})
    inputs, targets = load_burgers_mat(path, resolution=8)
    assert inputs.shape == (3, 1, 8) and inputs.dtype == torch.float32
    torch.testing.assert_close(inputs[:, 0], a[:, ::2].float())
    torch.testing.assert_close(targets[:, 0], u[:, ::2].float())
    with pytest.raises(MixerInputError):
        load_burgers_mat(path, resolution=5)
