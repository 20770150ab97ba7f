"""Burgers 1D, regenerated as in the FNO paper: learn the map u0 ↦ u(·, 1).

"Fourier Neural Operator for Parametric Partial Differential Equations", Li et al. 2020, arXiv:2010.08895, §5.1:

    ∂_t u + ∂_x (u² / 2) = ν ∂_xx u   on the periodic unit interval x ∈ [0, 1), t ∈ (0, 1],   ν = 0.1,
    u0 ~ μ = N(0, 625 (−Δ + 25 I)^−2),

solved on 8192 points and subsampled (2^13 / s) to the training resolution s.

Sampling: −Δ has eigenfunctions 1, √2 cos(2πkx), √2 sin(2πkx) with eigenvalues (2πk)², so the Karhunen–Loève
expansion u0 = √λ_0 ξ_0 + Σ_{k≥1} √(2 λ_k) (ξ_k cos 2πkx + η_k sin 2πkx), λ_k = 625 ((2πk)² + 25)^−2, with
independent standard normals ξ, η, draws from μ truncated at the grid's Nyquist frequency.

The constant mode: μ gives it variance λ_0 = 1, but the generator behind the paper's public files (GRF1 called with
m = 0) sets it to 0, and so do we by default (`random_mean=False`). It matters: the mean is conserved and every other
mode decays by at least e^{−ν(2π)²} ≈ 0.02 by t = 1, so with a random mean u(·, 1) is 99.99% its mean (measured over
1000 draws); a model that outputs the input's mean scores ~1% relative L2, and local operators (GNO, MgNO), which
cannot compute a global mean, do not train at all. `random_mean=True` gives the literal μ.

The field (`initial_field`): `"paper"` is the text's μ above. `"released"` is the field of the generator script that
circulates with the paper's data files, `GRF1(s/2, 0, 2.5, 7, 7^2, "periodic")`: the same expansion with
`λ_k = 49² ((2πk)² + 49)^−2.5`, N(0, 2401 (−Δ + 49 I)^−2.5) (smoother: its spectrum falls as k^−5, not k^−4),
for comparing with numbers measured on those files.

Solver: pseudo-spectral in x (the 2/3 rule removes aliasing from u²) and the integrating-factor RK4 in t: the
diffusion e^{−ν(2πk)² t} is integrated exactly, the advection −i πk · F(u²) explicitly. The data are stored at
the solver's resolution (float32), so one cached file serves every evaluation resolution that divides it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.tasks import register_task
from tokenmix.tasks.base import Split, SplitName, Task
from tokenmix.tasks import progress
from tokenmix.tasks.generated import cache_path_for, load_or_generate

FORMAT_VERSION = 2  # bump when the generator or the file layout changes (2: the constant mode is 0 by default)
# σ, τ and the exponent γ of u0 ~ N(0, σ² (−Δ + τ² I)^−γ) (module docstring)
INITIAL_FIELDS = {"paper": (25.0, 5.0, 2.0), "released": (49.0, 7.0, 2.5)}


def sample_initial_conditions(num: int, resolution: int, generator: torch.Generator, *, sigma: float = 25.0,
                              tau: float = 5.0, exponent: float = 2.0, random_mean: bool = False,
                              dtype: torch.dtype = torch.float64) -> Tensor:
    """`num` draws of u0 ~ N(0, σ² (−Δ + τ² I)^−γ) (γ = `exponent`) on `resolution` points of [0, 1), shape
    `(num, resolution)`; the constant mode is 0 unless `random_mean` (see the module docstring)."""
    k = torch.arange(resolution // 2 + 1, dtype=dtype)
    eigenvalues = sigma**2 * ((2 * math.pi * k) ** 2 + tau**2) ** -exponent
    xi = torch.randn(num, k.numel(), generator=generator, dtype=dtype)
    eta = torch.randn(num, k.numel(), generator=generator, dtype=dtype)
    # u_j = Σ_k U_k e^{2πikj/N} over the Hermitian spectrum: U_0 = √λ_0 ξ_0, U_k = √(λ_k / 2) (ξ_k − i η_k).
    coefficients = torch.complex(xi, -eta) * torch.sqrt(eigenvalues / 2)
    coefficients[:, 0] = xi[:, 0] * torch.sqrt(eigenvalues[0]) if random_mean else 0
    if resolution % 2 == 0:
        coefficients[:, -1] = 0  # the Nyquist mode has no sine partner on the grid
    return torch.fft.irfft(coefficients, n=resolution, norm="forward")


def solve_burgers(u0: Tensor, *, viscosity: float = 0.1, final_time: float = 1.0, time_step: float = 1e-3) -> Tensor:
    """u(·, final_time) for periodic u0 `(..., N)` on [0, 1) (pseudo-spectral, 2/3 dealiasing, integrating-factor
    RK4 with `ceil(final_time / time_step)` equal steps). Computed in float64 on u0's device."""
    u0 = u0.to(torch.float64)
    n = u0.shape[-1]
    steps = max(1, math.ceil(final_time / time_step - 1e-9))
    dt = final_time / steps
    k = torch.fft.rfftfreq(n, d=1.0 / n, device=u0.device, dtype=torch.float64)  # 0, 1, ..., n // 2
    wavenumber = 2 * math.pi * k
    half = torch.exp(-viscosity * wavenumber**2 * dt / 2)  # e^{L dt / 2}
    full = half * half
    dealias = (k <= n / 3).to(torch.float64)
    advection = -0.5j * wavenumber * dealias  # ∂_x(u²/2) → i 2πk F(u²) / 2, with the sign of −∂_x

    def nonlinear(spectrum: Tensor) -> Tensor:
        u = torch.fft.irfft(spectrum * dealias, n=n)
        return advection * torch.fft.rfft(u * u)

    spectrum = torch.fft.rfft(u0)
    for _ in range(steps):
        a = nonlinear(spectrum)
        b = nonlinear(half * (spectrum + dt / 2 * a))
        c = nonlinear(half * spectrum + dt / 2 * b)
        d = nonlinear(full * spectrum + dt * half * c)
        spectrum = full * spectrum + dt / 6 * (full * a + 2 * half * (b + c) + d)
    return torch.fft.irfft(spectrum, n=n)


@register_task("burgers")
@dataclass(frozen=True)
class Burgers(Task):
    """Burgers 1D (FNO paper): inputs u0 and targets u(·, 1) as `(N, 1, resolution)` float32 grids."""

    resolution: int = 1024
    solver_resolution: int = 8192
    viscosity: float = 0.1
    final_time: float = 1.0
    time_step: float = 1e-3  # halving it changes u(·, 1) by ~2e-11 at 8192 points (see tests)
    random_mean: bool = False  # the constant mode of u0: 0 as in the paper's generator, or random (module docstring)
    initial_field: str = "paper"  # "paper" (the text's μ) or "released" (the data files' generator): INITIAL_FIELDS
    num_train_examples: int = 1000
    num_test_examples: int = 200
    seed: int = 0

    input_kind = "grid"
    coordinates = "periodic"  # the points i / n of the periodic unit interval (OperatorModel's coordinates)
    spatial_dims = 1
    in_channels = 1
    out_channels = 1
    group_name = "none"
    loss_name = "relative L2 (mean over examples)"
    metric_name = "relative L2 error ‖ŷ − y‖ / ‖y‖, mean over test examples"

    def __post_init__(self) -> None:
        for field in ("resolution", "solver_resolution", "num_train_examples", "num_test_examples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MixerInputError(f"burgers: {field} must be a positive integer, got {value!r}")
        if self.solver_resolution % self.resolution:
            raise MixerInputError(f"burgers: resolution {self.resolution} must divide solver_resolution "
                                  f"{self.solver_resolution} (the data are subsampled, not interpolated)")
        if not isinstance(self.random_mean, bool):
            raise MixerInputError(f"burgers: random_mean must be true or false, got {self.random_mean!r}")
        if self.initial_field not in INITIAL_FIELDS:
            raise MixerInputError(f"burgers: initial_field must be one of {sorted(INITIAL_FIELDS)}, "
                                  f"got {self.initial_field!r}")
        if not (self.viscosity > 0 and self.final_time > 0 and self.time_step > 0):
            raise MixerInputError("burgers: viscosity, final_time and time_step must be positive")

    def setting(self) -> str:
        return f"s={self.resolution} ν={self.viscosity} n={self.num_train_examples}"

    def generator_params(self) -> dict[str, Any]:
        """The parameters that shape the stored data (`resolution` only subsamples it)."""
        params = self.params()
        params.pop("resolution")
        if params["initial_field"] == "paper":  # the field every file stored before the option had
            params.pop("initial_field")
        return params

    @property
    def cache_path(self) -> Path:
        return cache_path_for("burgers", {"format": FORMAT_VERSION, **self.generator_params()})

    def split(self, name: SplitName, resolution: int | None = None) -> Split:
        """`inputs` u0 and `targets` u(·, T) as `(N, 1, resolution)` float32 (default: the task's resolution;
        any divisor of `solver_resolution`, for evaluation at other resolutions)."""
        if name not in ("train", "test"):
            raise MixerInputError(f"burgers: unknown split {name!r}; valid: test, train")
        resolution = self.resolution if resolution is None else resolution
        if self.solver_resolution % resolution:
            raise MixerInputError(f"burgers: resolution {resolution} must divide {self.solver_resolution}")
        stride = self.solver_resolution // resolution
        tensors = _load_or_generate(self, self.cache_path)
        inputs = tensors[f"{name}_inputs"][:, None, ::stride].contiguous()
        targets = tensors[f"{name}_targets"][:, None, ::stride].contiguous()
        return Split(inputs, targets, torch.zeros(len(inputs), dtype=torch.int64))

    def generate(self, device: torch.device | str | None = None, batch_size: int = 256) -> dict[str, Tensor]:
        """Both splits at `solver_resolution`, freshly solved (no cache); float32 on the CPU."""
        tensors: dict[str, Tensor] = {}
        for split, count in (("train", self.num_train_examples), ("test", self.num_test_examples)):
            generator = torch.Generator().manual_seed(_seed_for(self.seed, split))
            sigma, tau, exponent = INITIAL_FIELDS[self.initial_field]
            u0 = sample_initial_conditions(count, self.solver_resolution, generator, sigma=sigma, tau=tau,
                                           exponent=exponent, random_mean=self.random_mean)
            solutions = progress.solved(
                f"burgers {split} data at {self.solver_resolution} points", u0.split(batch_size),
                lambda chunk: solve_burgers(chunk.to(device), viscosity=self.viscosity, final_time=self.final_time,
                                            time_step=self.time_step).cpu(),
                total=count, count=len)
            tensors[f"{split}_inputs"] = u0.float()
            tensors[f"{split}_targets"] = torch.cat(solutions).float()
        return tensors

    # --- loss and metric on grids -------------------------------------------------------------------------
    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        return relative_l2(prediction, target).mean()

    def summarize_errors(self, errors: Tensor) -> dict[str, Any]:
        return {"relative_l2": float(errors.mean()), "num_examples": int(errors.numel())}


def load_burgers_mat(path: str | Path, resolution: int | None = None) -> tuple[Tensor, Tensor]:
    """`(inputs, targets)` as `(N, 1, resolution)` float32 from a FNO-paper Burgers file (`burgers_data_R10.mat`:
    keys `a` = u0 and `u` = u(·, 1), `(N, 8192)`), subsampled to `resolution` (a divisor of the file's). MATLAB v5
    files are read with scipy; v7.3 files (HDF5) need h5py and are stored transposed (column-major)."""
    path = Path(path)
    try:
        from scipy.io import loadmat

        data = loadmat(path, variable_names=("a", "u"))
        a, u = data["a"], data["u"]
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        try:
            import h5py
        except ImportError as error:
            raise MixerInputError(f"burgers: {path} is a MATLAB v7.3 (HDF5) file; install h5py to read it") from error
        with h5py.File(path, "r") as file:
            a, u = file["a"][()].T, file["u"][()].T
    a, u = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(u, dtype=torch.float32)
    if a.ndim != 2 or a.shape != u.shape:
        raise MixerInputError(f"burgers: expected 2D arrays a and u of one shape in {path}, got {tuple(a.shape)} "
                              f"and {tuple(u.shape)}")
    size = a.shape[1]
    resolution = size if resolution is None else resolution
    if size % resolution:
        raise MixerInputError(f"burgers: resolution {resolution} must divide the file's {size} points")
    stride = size // resolution
    return a[:, None, ::stride].contiguous(), u[:, None, ::stride].contiguous()


def relative_l2(prediction: Tensor, target: Tensor) -> Tensor:
    """Per example ‖prediction − target‖₂ / ‖target‖₂ over every non-batch dimension (the FNO papers' metric)."""
    difference = (prediction - target).flatten(1).norm(dim=1)
    return difference / target.flatten(1).norm(dim=1)


def _seed_for(seed: int, split: str) -> int:
    digest = hashlib.sha256(f"burgers/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _load_or_generate(task: Burgers, path: Path) -> dict[str, Tensor]:
    device = "cuda" if torch.cuda.is_available() else None  # the solve is 8 FFTs per step: much faster on a GPU
    return load_or_generate(path, lambda: task.generate(device=device))
