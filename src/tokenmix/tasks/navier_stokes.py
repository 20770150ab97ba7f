"""Navier–Stokes 2D in vorticity form on the unit torus, regenerated as in the FNO paper: learn the map from the
vorticity at the first 10 recorded times to the following ones.

"Fourier Neural Operator for Parametric Partial Differential Equations", Li et al. 2020, arXiv:2010.08895, §5.3:

    ∂_t w + u · ∇w = ν Δw + f,   ∇ · u = 0,   w = ∇ × u,   on (0, 1)² periodic,  t ∈ (0, T],
    f(x) = 0.1 (sin 2π(x₁ + x₂) + cos 2π(x₁ + x₂)),
    w₀ ~ N(0, 7^{3/2} (−Δ + 49 I)^−2.5)  (periodic; the mean mode is zero, as a vorticity's must be),

where, as in the generator behind the paper's files, the factor 7^{3/2} scales the field (its standard deviation),
so the covariance eigenvalues are λ_k = 7³ (4π²|k|² + 49)^−2.5 (the task's `initial_scale`),

ν = 1e-3 with T = 50 in the paper (also 1e-4, 1e-5), solved at 256² with time step 1e-4, recorded every time unit,
subsampled to 64². The task maps w(·, 1 … 10) to w(·, 11 … T).

Sampling: e_k(x) = e^{2πi k·x} are the eigenfunctions of −Δ (eigenvalues 4π²|k|²), so filtering real white noise
W on the n × n grid, z = n · IFFT(√λ_k · FFT(W)), draws exactly the discretized field with covariance eigenvalues
λ_k = σ² (4π²|k|² + 49)^−2.5, σ = 7^{3/2} (E|FFT(W)_k|² = n²).

Solver: pseudo-spectral. The stream function solves −Δψ = w, the velocity is u = (∂₂ψ, −∂₁ψ); u · ∇w is formed on
the grid from spectral derivatives and its spectrum truncated by the 2/3 rule. Each step treats diffusion by
Crank–Nicolson and advection and forcing explicitly (forward Euler), as the paper's scheme does:

    ŵ^{n+1} = [(1 − ½ Δt ν 4π²|k|²) ŵ^n + Δt (f̂ − (u·∇w)^^n)] / (1 + ½ Δt ν 4π²|k|²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.tasks import register_task
from tokenmix.tasks.base import Split, SplitName, Task
from tokenmix.tasks.burgers import relative_l2
from tokenmix.tasks import progress
from tokenmix.tasks.generated import cache_path_for, load_or_generate
from tokenmix.tasks.mat_files import read_mat_arrays

FORMAT_VERSION = 1  # bump when the generator or the file layout changes


def wavenumbers(n: int, *, device=None, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """`(k₁, k₂)` broadcastable to the `(n, n // 2 + 1)` layout of `rfft2`: integer frequencies per axis."""
    k1 = torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype)[:, None]
    k2 = torch.fft.rfftfreq(n, d=1.0 / n, device=device, dtype=dtype)[None, :]
    return k1, k2


def sample_vorticity(num: int, resolution: int, generator: torch.Generator, *, sigma: float = 7 ** 1.5,
                     tau: float = 7.0, alpha: float = 2.5, dtype: torch.dtype = torch.float64) -> Tensor:
    """`num` draws of w₀ ~ N(0, σ² (−Δ + τ² I)^−α) with zero mean mode on the `resolution²` periodic grid of [0, 1)²,
    shape `(num, resolution, resolution)` (see the module docstring)."""
    n = resolution
    noise = torch.randn(num, n, n, generator=generator, dtype=dtype)
    k1, k2 = wavenumbers(n, dtype=dtype)
    eigenvalues = sigma**2 * (4 * math.pi**2 * (k1**2 + k2**2) + tau**2) ** -alpha
    eigenvalues[0, 0] = 0
    return n * torch.fft.irfft2(eigenvalues.sqrt() * torch.fft.rfft2(noise), s=(n, n))


def paper_forcing(resolution: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """f(x) = 0.1 (sin 2π(x₁ + x₂) + cos 2π(x₁ + x₂)) on the `resolution²` grid x = i / resolution."""
    x = torch.arange(resolution, dtype=dtype) / resolution
    total = x[:, None] + x[None, :]
    return 0.1 * (torch.sin(2 * math.pi * total) + torch.cos(2 * math.pi * total))


def solve_navier_stokes(w0: Tensor, forcing: Tensor | None, *, viscosity: float = 1e-3, final_time: float = 50.0,
                        record_steps: int = 50, time_step: float = 1e-4) -> Tensor:
    """The vorticity at times `final_time · j / record_steps`, j = 1 … record_steps, for `w0: (..., n, n)` on the
    unit torus; returns `(..., n, n, record_steps)` (the FNO files' layout). `forcing` `(n, n)` or None (f = 0).
    Each record interval is split into `ceil(interval / time_step)` equal steps. Computed in float64 on w0's device."""
    w0 = w0.to(torch.float64)
    n = w0.shape[-1]
    if w0.ndim < 2 or w0.shape[-2] != n:
        raise MixerInputError(f"navier_stokes: w0 must be (..., n, n), got {tuple(w0.shape)}")
    interval = final_time / record_steps
    steps = max(1, math.ceil(interval / time_step - 1e-9))
    dt = interval / steps
    k1, k2 = wavenumbers(n, device=w0.device)
    two_pi = 2 * math.pi
    laplacian = two_pi**2 * (k1**2 + k2**2)           # the symbol of −Δ
    inverse_laplacian = torch.where(laplacian > 0, 1 / laplacian.clamp(min=1e-300), torch.zeros_like(laplacian))
    dealias = ((k1.abs() <= n / 3) & (k2 <= n / 3)).to(torch.float64)
    explicit = 1 - 0.5 * dt * viscosity * laplacian
    implicit = 1 + 0.5 * dt * viscosity * laplacian
    forcing_hat = torch.zeros_like(laplacian, dtype=torch.complex128) if forcing is None \
        else torch.fft.rfft2(forcing.to(device=w0.device, dtype=torch.float64))
    size = (n, n)
    w_hat = torch.fft.rfft2(w0)
    records = []
    for _ in range(record_steps):
        for _ in range(steps):
            psi_hat = w_hat * inverse_laplacian
            u1 = torch.fft.irfft2(1j * two_pi * k2 * psi_hat, s=size)   # ∂₂ψ
            u2 = torch.fft.irfft2(-1j * two_pi * k1 * psi_hat, s=size)  # −∂₁ψ
            w1 = torch.fft.irfft2(1j * two_pi * k1 * w_hat, s=size)
            w2 = torch.fft.irfft2(1j * two_pi * k2 * w_hat, s=size)
            advection_hat = dealias * torch.fft.rfft2(u1 * w1 + u2 * w2)
            w_hat = (explicit * w_hat + dt * (forcing_hat - advection_hat)) / implicit
        records.append(torch.fft.irfft2(w_hat, s=size))
    return torch.stack(records, dim=-1)


@register_task("navier_stokes")
@dataclass(frozen=True)
class NavierStokes(Task):
    """Navier–Stokes 2D vorticity (FNO paper): inputs w(·, 1 … input_steps) `(N, input_steps, s, s)` and targets
    w(·, input_steps + 1 … record_steps) `(N, record_steps − input_steps, s, s)`, float32, one channel per time.
    The paper's ν = 1e-3 setting is `solver_resolution=256, resolution=64, record_steps=50, time_step=1e-4,
    num_train_examples=1000, num_test_examples=200`; the defaults are a small, quick version of it (see docs/quality.md for its accuracy)."""

    resolution: int = 32
    solver_resolution: int = 64
    viscosity: float = 1e-3
    record_steps: int = 20
    input_steps: int = 10
    time_unit: float = 1.0  # time between records
    time_step: float = 1e-2  # the paper: 1e-4; 1e-2 is 7e-4 (relative) from 1e-3 at 64², see docs/quality.md
    initial_scale: float = 7**1.5
    num_train_examples: int = 100
    num_test_examples: int = 20
    seed: int = 0

    input_kind = "grid"
    coordinates = "periodic"  # the points i / n of the torus (OperatorModel's coordinates)
    spatial_dims = 2
    group_name = "none"
    loss_name = "relative L2 (mean over examples)"
    metric_name = "relative L2 error ‖ŷ − y‖ / ‖y‖ over all predicted times, mean over test examples"

    def __post_init__(self) -> None:
        for field in ("resolution", "solver_resolution", "record_steps", "input_steps", "num_train_examples",
                      "num_test_examples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MixerInputError(f"navier_stokes: {field} must be a positive integer, got {value!r}")
        if self.input_steps >= self.record_steps:
            raise MixerInputError(f"navier_stokes: input_steps {self.input_steps} must be below record_steps "
                                  f"{self.record_steps} (the rest are the targets)")
        if self.solver_resolution % self.resolution:
            raise MixerInputError(f"navier_stokes: resolution {self.resolution} must divide solver_resolution "
                                  f"{self.solver_resolution} (the data are subsampled, not interpolated)")
        if not (self.viscosity > 0 and self.time_unit > 0 and self.time_step > 0):
            raise MixerInputError("navier_stokes: viscosity, time_unit and time_step must be positive")

    @property
    def in_channels(self) -> int:
        return self.input_steps

    @property
    def out_channels(self) -> int:
        return self.record_steps - self.input_steps

    def setting(self) -> str:
        return (f"s={self.resolution} ν={self.viscosity} T={self.record_steps} ({self.input_steps} in) "
                f"n={self.num_train_examples}")

    def generator_params(self) -> dict[str, Any]:
        params = self.params()
        for key in ("resolution", "input_steps"):  # these only select from the stored trajectories
            params.pop(key)
        return params

    @property
    def cache_path(self) -> Path:
        return cache_path_for("navier_stokes", {"format": FORMAT_VERSION, **self.generator_params()})

    def split(self, name: SplitName, resolution: int | None = None) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"navier_stokes: unknown split {name!r}; valid: test, train")
        resolution = self.resolution if resolution is None else resolution
        if self.solver_resolution % resolution:
            raise MixerInputError(f"navier_stokes: resolution {resolution} must divide {self.solver_resolution}")
        stride = self.solver_resolution // resolution
        trajectories = load_or_generate(self.cache_path, self.generate)[f"{name}_vorticity"]
        trajectories = trajectories[:, ::stride, ::stride].movedim(-1, 1)  # (N, T, s, s)
        inputs = trajectories[:, :self.input_steps].contiguous()
        targets = trajectories[:, self.input_steps:].contiguous()
        return Split(inputs, targets, torch.zeros(len(inputs), dtype=torch.int64))

    def generate(self, device: torch.device | str | None = None, batch_size: int = 64) -> dict[str, Tensor]:
        """Both splits' trajectories `(N, n, n, record_steps)` and initial vorticities at `solver_resolution`,
        freshly solved (no cache); float32 on the CPU."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        forcing = paper_forcing(self.solver_resolution)
        tensors: dict[str, Tensor] = {}
        for split, count in (("train", self.num_train_examples), ("test", self.num_test_examples)):
            generator = torch.Generator().manual_seed(_seed_for(self.seed, split))
            w0 = sample_vorticity(count, self.solver_resolution, generator, sigma=self.initial_scale)
            trajectories = progress.solved(
                f"navier_stokes {split} data at {self.solver_resolution}²", w0.split(batch_size),
                lambda chunk: solve_navier_stokes(chunk.to(device), forcing, viscosity=self.viscosity,
                                                  final_time=self.time_unit * self.record_steps,
                                                  record_steps=self.record_steps, time_step=self.time_step).cpu(),
                total=count, count=len)
            tensors[f"{split}_initial"] = w0.float()
            tensors[f"{split}_vorticity"] = torch.cat(trajectories).float()
        return tensors

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        return relative_l2(prediction, target).mean()

    def summarize_errors(self, errors: Tensor) -> dict[str, Any]:
        return {"relative_l2": float(errors.mean()), "num_examples": int(errors.numel())}


def load_navier_stokes_mat(path: str | Path, *, input_steps: int = 10, output_steps: int | None = None,
                           resolution: int | None = None) -> tuple[Tensor, Tensor]:
    """`(inputs, targets)` `(N, input_steps, s, s)` and `(N, output_steps, s, s)` float32 from a FNO-paper file
    (`ns_V1e-3_N5000_T50.mat`: key `u` the vorticity `(N, n, n, T)`), subsampled to `resolution` (a divisor of n)."""
    u = torch.as_tensor(read_mat_arrays(path, ("u",), owner="navier_stokes")["u"], dtype=torch.float32)
    if u.ndim != 4 or u.shape[1] != u.shape[2]:
        raise MixerInputError(f"navier_stokes: expected u of shape (N, n, n, T) in {path}, got {tuple(u.shape)}")
    n, steps = u.shape[1], u.shape[3]
    output_steps = steps - input_steps if output_steps is None else output_steps
    if input_steps <= 0 or output_steps <= 0 or input_steps + output_steps > steps:
        raise MixerInputError(f"navier_stokes: {input_steps} input and {output_steps} output steps do not fit the "
                              f"file's {steps}")
    resolution = n if resolution is None else resolution
    if n % resolution:
        raise MixerInputError(f"navier_stokes: resolution {resolution} must divide the file's {n} points")
    stride = n // resolution
    u = u[:, ::stride, ::stride].movedim(-1, 1)
    return u[:, :input_steps].contiguous(), u[:, input_steps:input_steps + output_steps].contiguous()


def _seed_for(seed: int, split: str) -> int:
    import hashlib

    digest = hashlib.sha256(f"navier_stokes/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
