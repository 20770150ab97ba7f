"""The Navier–Stokes vorticity generator against exact solutions (single Fourier shells), its invariants, the
initial field's covariance, and the task's seeding, caching, subsampling and `.mat` loader."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmix import MixerInputError
from tokenmix.tasks import available_tasks, create_task
from tokenmix.tasks.navier_stokes import (load_navier_stokes_mat, paper_forcing, sample_vorticity,
                                          solve_navier_stokes, wavenumbers)


def grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, dtype=torch.float64) / n
    return torch.meshgrid(x, x, indexing="ij")


def test_single_shell_decays_at_the_viscous_rate():
    # A field on one shell |k|² = 5 has u ∥ ∇^⊥w, so u·∇w = 0 and w(t) = e^{−ν 4π²|k|² t} w₀ exactly.
    x, y = grid(16)
    w0 = torch.cos(2 * math.pi * (2 * x + y)) + 0.5 * torch.sin(2 * math.pi * (x - 2 * y))
    nu, dt, steps = 0.01, 1e-2, 100
    w = solve_navier_stokes(w0, None, viscosity=nu, final_time=1.0, record_steps=2, time_step=dt)
    rate = nu * 4 * math.pi**2 * 5
    # Crank–Nicolson's own amplification factor, to rounding: the advection term is exactly zero on the grid
    discrete = ((1 - rate * dt / 2) / (1 + rate * dt / 2)) ** (steps // 2)
    torch.testing.assert_close(w[..., 0], discrete * w0, rtol=0, atol=1e-12)
    # and the exact decay to CN's O(dt²) error: (νλ)³ dt² t / 12 ≈ 6e-5 relative here
    for j, t in enumerate((0.5, 1.0)):
        assert (w[..., j] - math.exp(-rate * t) * w0).abs().max() < 1e-4 * math.exp(-rate * t)


def test_paper_forcing_drives_its_shell_to_the_steady_state():
    # f lies on the shell k = ±(1, 1) (|k|² = 2), so from w₀ = 0: w(t) = f (1 − e^{−νλt}) / (νλ), λ = 8π².
    n, nu, t = 16, 1e-2, 2.0
    f = paper_forcing(n)
    w = solve_navier_stokes(torch.zeros(n, n, dtype=torch.float64), f, viscosity=nu, final_time=t, record_steps=1,
                            time_step=1e-3)[..., 0]
    rate = nu * 8 * math.pi**2
    exact = f * (1 - math.exp(-rate * t)) / rate
    # forcing is explicit (forward Euler in the forcing, CN in diffusion): O(dt · rate) = 1e-3 relative
    assert (w - exact).abs().max() < 2e-3 * exact.abs().max()


def test_mean_vorticity_stays_zero_and_time_step_converges():
    n = 32
    w0 = sample_vorticity(2, n, torch.Generator().manual_seed(0))
    f = paper_forcing(n)
    assert w0.mean(dim=(-2, -1)).abs().max() < 1e-15
    coarse = solve_navier_stokes(w0, f, viscosity=1e-3, final_time=2.0, record_steps=2, time_step=4e-2)
    fine = solve_navier_stokes(w0, f, viscosity=1e-3, final_time=2.0, record_steps=2, time_step=2e-2)
    finest = solve_navier_stokes(w0, f, viscosity=1e-3, final_time=2.0, record_steps=2, time_step=1e-2)
    for w in (coarse, fine, finest):
        assert w.mean(dim=(1, 2)).abs().max() < 1e-14  # u·∇w and f have zero mean on the grid, exactly
    # first order in time (explicit advection): halving dt halves the difference (measured ratio 2.0)
    ratio = (coarse - fine).norm() / (fine - finest).norm()
    assert 1.8 < ratio < 2.2


def test_initial_vorticity_covariance():
    n, num = 16, 3000
    w0 = sample_vorticity(num, n, torch.Generator().manual_seed(0))
    k1, k2 = wavenumbers(n)
    eigenvalues = 7**3 * (4 * math.pi**2 * (k1**2 + k2**2) + 49) ** -2.5
    eigenvalues[0, 0] = 0
    # Var w(x) = Σ_k λ_k over the full grid spectrum (the rfft half counts the k₂ > 0, k₂ < n/2 columns twice)
    weight = torch.full((n // 2 + 1,), 2.0, dtype=torch.float64)
    weight[0] = weight[-1] = 1.0
    variance = (eigenvalues * weight).sum()
    assert abs(w0.var(dim=0).mean() / variance - 1) < 0.05  # std error ≈ 2.6% per node, less on the average
    spectrum = torch.fft.rfft2(w0).abs().pow(2).mean(dim=0) / n**4  # ŵ = n √λ FFT(W), E|FFT(W)_k|² = n²
    for k in ((1, 0), (0, 1), (1, 1), (2, 3)):
        assert abs(spectrum[k] / eigenvalues[k] - 1) < 0.1, k


def test_task_is_seeded_cached_and_subsampled():
    assert "navier_stokes" in available_tasks()
    params = dict(resolution=8, solver_resolution=16, record_steps=4, input_steps=2, num_train_examples=3,
                  num_test_examples=2, time_step=0.05)
    task = create_task("navier_stokes", **params)
    train = task.split("train")
    assert train.inputs.shape == (3, 2, 8, 8) and train.targets.shape == (3, 2, 8, 8)
    assert task.in_channels == 2 and task.out_channels == 2 and task.cache_path.exists()
    full = task.split("train", resolution=16)
    torch.testing.assert_close(full.inputs[..., ::2, ::2], train.inputs)
    again = create_task("navier_stokes", **params).generate(device="cpu")
    torch.testing.assert_close(again["train_vorticity"].movedim(-1, 1)[:, :2], full.inputs)
    torch.testing.assert_close(again["train_vorticity"].movedim(-1, 1)[:, 2:], full.targets)
    # the trajectory is the solution from the stored initial vorticity
    w = solve_navier_stokes(again["train_initial"].double(), paper_forcing(16), final_time=4.0, record_steps=4,
                            time_step=0.05)
    torch.testing.assert_close(w.float(), again["train_vorticity"], rtol=1e-5, atol=1e-6)
    assert not torch.equal(create_task("navier_stokes", **{**params, "seed": 1}).split("train").inputs, train.inputs)
    assert not torch.equal(task.split("test").inputs, train.inputs[:2])


def test_bad_parameters_raise():
    with pytest.raises(MixerInputError):
        create_task("navier_stokes", resolution=24, solver_resolution=64)
    with pytest.raises(MixerInputError):
        create_task("navier_stokes", record_steps=10, input_steps=10)
    with pytest.raises(MixerInputError):
        solve_navier_stokes(torch.zeros(4, 5), None)


def test_loader_reads_the_fno_mat_format(tmp_path):
    from scipy.io import savemat

    u = torch.randn(2, 8, 8, 6, dtype=torch.float64)
    path = tmp_path / "ns_V1e-3_N5000_T50.mat"
    savemat(path, {"a": u[..., 0].numpy(), "u": u.numpy()})
    inputs, targets = load_navier_stokes_mat(path, input_steps=2, output_steps=3, resolution=4)
    assert inputs.shape == (2, 2, 4, 4) and targets.shape == (2, 3, 4, 4)
    torch.testing.assert_close(inputs, u[:, ::2, ::2, :2].movedim(-1, 1).float())
    torch.testing.assert_close(targets, u[:, ::2, ::2, 2:5].movedim(-1, 1).float())
    with pytest.raises(MixerInputError):
        load_navier_stokes_mat(path, input_steps=4, output_steps=3)
