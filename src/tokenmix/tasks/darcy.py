"""Darcy flow 2D, regenerated as in the FNO paper: learn the map a ↦ u from the coefficient to the solution.

"Fourier Neural Operator for Parametric Partial Differential Equations", Li et al. 2020, arXiv:2010.08895, §5.2:

    −∇ · (a(x) ∇u(x)) = f(x),  x ∈ (0, 1)²,     u = 0 on ∂(0, 1)²,     f = 1,
    a = ψ(z),  ψ = 12 where z ≥ 0 and 3 where z < 0,   z ~ N(0, (−Δ + 9 I)^−2) with zero Neumann boundary,

solved by finite differences on a 421 × 421 grid (boundary included) and subsampled to s = (421 − 1) / r + 1
(211, 141, 106, 85, ...).

Sampling: the Neumann Laplacian on the unit square has eigenfunctions φ_kl(x, y) = c_k c_l cos(πkx) cos(πly)
(c_0 = 1, c_k = √2: orthonormal) with eigenvalues π²(k² + l²), so z = Σ_kl (π²(k² + l²) + τ²)^{−α/2} ξ_kl φ_kl with
independent standard normals ξ (τ = 3, α = 2; truncated at k, l < grid size). The threshold makes the scale of z
irrelevant. `constant_mode=False` (default) drops the k = l = 0 term, as the generator behind the paper's public
files does (so each a mixes both values); `True` keeps it, as the covariance operator alone would.

Solver: the 5-point scheme for the divergence form on nodes x_i = i h, h = 1 / (s − 1),

    −[a_{i+½,j}(u_{i+1,j} − u_ij) − a_{i−½,j}(u_ij − u_{i−1,j}) + a_{i,j+½}(u_{i,j+1} − u_ij) − a_{i,j−½}(u_ij − u_{i,j−1})] / h²
        = f_ij,    a_{i±½,j} = (a_ij + a_{i±1,j}) / 2,

on the (s − 2)² interior nodes (symmetric positive definite), solved with scipy's sparse LU. Second order for
smooth a (tested on manufactured solutions); the data are stored at the solver's grid (float32) so every
s = (solver − 1) / r + 1 is served from one cached file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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


def cosine_basis(resolution: int, num_modes: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """`(resolution, num_modes)`: the orthonormal Neumann eigenfunctions c_k cos(πkx) at the nodes x_i = i/(s−1)."""
    x = torch.arange(resolution, dtype=dtype) / (resolution - 1)
    k = torch.arange(num_modes, dtype=dtype)
    scale = torch.full((num_modes,), math.sqrt(2.0), dtype=dtype)
    scale[0] = 1.0
    return torch.cos(math.pi * x[:, None] * k[None, :]) * scale


def field_spectrum(num_modes: int, *, tau: float = 3.0, alpha: float = 2.0,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """`(num_modes, num_modes)`: the covariance eigenvalues (π²(k² + l²) + τ²)^−α of the field's cosine modes."""
    k = torch.arange(num_modes, dtype=dtype)
    return (math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2) ** -alpha


def sample_gaussian_field(num: int, resolution: int, generator: torch.Generator, *, tau: float = 3.0,
                          alpha: float = 2.0, constant_mode: bool = False,
                          dtype: torch.dtype = torch.float64) -> Tensor:
    """`num` draws of z ~ N(0, (−Δ + τ² I)^−α) (zero Neumann boundary) at the `resolution²` nodes of [0, 1]²,
    shape `(num, resolution, resolution)`; `constant_mode=False` leaves out the k = l = 0 term."""
    basis = cosine_basis(resolution, resolution, dtype=dtype)
    coefficients = torch.randn(num, resolution, resolution, generator=generator, dtype=dtype)
    coefficients = coefficients * field_spectrum(resolution, tau=tau, alpha=alpha, dtype=dtype).sqrt()
    if not constant_mode:
        coefficients[:, 0, 0] = 0
    return basis @ coefficients @ basis.T  # z(x_i, y_j) = Σ_kl φ_k(x_i) ξ_kl √λ_kl φ_l(y_j)


def threshold(z: Tensor, *, high: float = 12.0, low: float = 3.0) -> Tensor:
    """ψ(z) = high where z ≥ 0 and low where z < 0."""
    return torch.where(z >= 0, torch.as_tensor(high, dtype=z.dtype), torch.as_tensor(low, dtype=z.dtype))


def darcy_matrix(a: np.ndarray):
    """The scheme's sparse matrix (CSC) over the interior nodes of an `(s, s)` nodal coefficient `a`, row-major
    order (index (i − 1)(s − 2) + (j − 1) for node (i, j)); the right-hand side is f at the interior nodes."""
    from scipy import sparse

    a = np.asarray(a, dtype=np.float64)
    s = a.shape[0]
    if a.ndim != 2 or a.shape[1] != s or s < 3:
        raise MixerInputError(f"darcy: the coefficient must be a square grid of at least 3×3 nodes, got {a.shape}")
    m = s - 2
    inverse_h2 = float(s - 1) ** 2
    along_x = (a[1:, :] + a[:-1, :]) / 2  # (s−1, s): a_{i+½, j} at [i, j]
    along_y = (a[:, 1:] + a[:, :-1]) / 2  # (s, s−1): a_{i, j+½} at [i, j]
    i, j = np.meshgrid(np.arange(1, s - 1), np.arange(1, s - 1), indexing="ij")
    east, west = along_x[i, j], along_x[i - 1, j]
    north, south = along_y[i, j], along_y[i, j - 1]
    index = (i - 1) * m + (j - 1)
    rows, cols, values = [index.ravel()], [index.ravel()], [(east + west + north + south).ravel()]
    for coefficient, di, dj in ((east, 1, 0), (west, -1, 0), (north, 0, 1), (south, 0, -1)):
        inside = (i + di >= 1) & (i + di <= m) & (j + dj >= 1) & (j + dj <= m)  # boundary neighbours are u = 0
        rows.append(index[inside])
        cols.append(((i + di - 1) * m + (j + dj - 1))[inside])
        values.append(-coefficient[inside])
    matrix = sparse.coo_matrix((np.concatenate(values) * inverse_h2, (np.concatenate(rows), np.concatenate(cols))),
                               shape=(m * m, m * m))
    return matrix.tocsc()


def solve_darcy(a: np.ndarray | Tensor, forcing: float | np.ndarray = 1.0) -> np.ndarray:
    """u on the `(s, s)` nodes (zero on the boundary) of −∇·(a∇u) = f, u = 0 on ∂(0, 1)², for a nodal coefficient
    `a` and a forcing `f` (a number, or nodal values `(s, s)`); the 5-point scheme of the module docstring."""
    from scipy.sparse.linalg import spsolve

    a = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    s = a.shape[0]
    matrix = darcy_matrix(a)
    rhs = np.broadcast_to(np.asarray(forcing, dtype=np.float64), (s, s))[1:-1, 1:-1].ravel()
    u = np.zeros((s, s))
    u[1:-1, 1:-1] = spsolve(matrix, rhs).reshape(s - 2, s - 2)
    return u


@register_task("darcy")
@dataclass(frozen=True)
class Darcy(Task):
    """Darcy 2D (FNO paper): inputs a and targets u as `(N, 1, s, s)` float32 grids. The paper's setting is
    `solver_resolution=421` with `resolution` 85 … 421; the defaults are a small grid for quick runs."""

    resolution: int = 43
    solver_resolution: int = 85
    num_train_examples: int = 1000
    num_test_examples: int = 100
    high: float = 12.0
    low: float = 3.0
    tau: float = 3.0
    alpha: float = 2.0
    forcing: float = 1.0
    constant_mode: bool = False
    seed: int = 0

    input_kind = "grid"
    coordinates = "nodes"  # the points i / (s − 1): nodes of [0, 1]² with the boundary (OperatorModel's coordinates)
    spatial_dims = 2
    in_channels = 1
    out_channels = 1
    group_name = "none"
    loss_name = "relative L2 (mean over examples)"
    metric_name = "relative L2 error ‖ŷ − y‖ / ‖y‖, mean over test examples"

    def __post_init__(self) -> None:
        for field in ("resolution", "solver_resolution", "num_train_examples", "num_test_examples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MixerInputError(f"darcy: {field} must be a positive integer, got {value!r}")
        if self.solver_resolution < 3:
            raise MixerInputError(f"darcy: solver_resolution must be at least 3, got {self.solver_resolution}")
        _stride(self.solver_resolution, self.resolution)
        if not (self.high > 0 and self.low > 0 and self.tau > 0 and self.alpha > 0):
            raise MixerInputError("darcy: high, low, tau and alpha must be positive")

    def setting(self) -> str:
        return f"s={self.resolution} (solved at {self.solver_resolution}) n={self.num_train_examples}"

    def generator_params(self) -> dict[str, Any]:
        """The parameters that shape the stored data (`resolution` only subsamples it)."""
        params = self.params()
        params.pop("resolution")
        return params

    @property
    def cache_path(self) -> Path:
        return cache_path_for("darcy", {"format": FORMAT_VERSION, **self.generator_params()})

    def split(self, name: SplitName, resolution: int | None = None) -> Split:
        """`inputs` a and `targets` u as `(N, 1, s, s)` float32, s the task's resolution unless given (any
        s = (solver_resolution − 1) / r + 1)."""
        if name not in ("train", "test"):
            raise MixerInputError(f"darcy: unknown split {name!r}; valid: test, train")
        stride = _stride(self.solver_resolution, self.resolution if resolution is None else resolution)
        tensors = load_or_generate(self.cache_path, self.generate)
        inputs = tensors[f"{name}_inputs"][:, None, ::stride, ::stride].contiguous()
        targets = tensors[f"{name}_targets"][:, None, ::stride, ::stride].contiguous()
        return Split(inputs, targets, torch.zeros(len(inputs), dtype=torch.int64))

    def generate(self) -> dict[str, Tensor]:
        """Both splits at `solver_resolution`, freshly solved (no cache); float32."""
        tensors: dict[str, Tensor] = {}
        for split, count in (("train", self.num_train_examples), ("test", self.num_test_examples)):
            generator = torch.Generator().manual_seed(_seed_for(self.seed, split))
            z = sample_gaussian_field(count, self.solver_resolution, generator, tau=self.tau, alpha=self.alpha,
                                      constant_mode=self.constant_mode)
            a = threshold(z, high=self.high, low=self.low)
            u = np.stack(progress.solved(f"darcy {split} data at {self.solver_resolution}²", a,
                                         lambda sample: solve_darcy(sample.numpy(), self.forcing), total=count))
            tensors[f"{split}_inputs"] = a.float()
            tensors[f"{split}_targets"] = torch.from_numpy(u).float()
        return tensors

    # --- loss and metric on grids -------------------------------------------------------------------------
    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:  # type: ignore[override]
        return relative_l2(prediction, target).mean()

    def summarize_errors(self, errors: Tensor) -> dict[str, Any]:
        return {"relative_l2": float(errors.mean()), "num_examples": int(errors.numel())}


def load_darcy_mat(path: str | Path, resolution: int | None = None) -> tuple[Tensor, Tensor]:
    """`(inputs, targets)` as `(N, 1, s, s)` float32 from a FNO-paper Darcy file (`piececonst_r421_N1024_smooth1.mat`:
    keys `coeff` = a and `sol` = u, `(N, 421, 421)`), subsampled to s = (size − 1) / r + 1."""
    arrays = read_mat_arrays(path, ("coeff", "sol"), owner="darcy")
    a = torch.as_tensor(arrays["coeff"], dtype=torch.float32)
    u = torch.as_tensor(arrays["sol"], dtype=torch.float32)
    if a.ndim != 3 or a.shape != u.shape or a.shape[1] != a.shape[2]:
        raise MixerInputError(f"darcy: expected arrays coeff and sol of one shape (N, s, s) in {path}, got "
                              f"{tuple(a.shape)} and {tuple(u.shape)}")
    size = a.shape[1]
    stride = _stride(size, size if resolution is None else resolution)
    return a[:, None, ::stride, ::stride].contiguous(), u[:, None, ::stride, ::stride].contiguous()


def _stride(size: int, resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2 \
            or (size - 1) % (resolution - 1):
        raise MixerInputError(f"darcy: resolution {resolution!r} must be (size − 1) / r + 1 for an integer r, with "
                              f"size {size} (e.g. {', '.join(str((size - 1) // r + 1) for r in (1, 2, 4) if (size - 1) % r == 0)})")
    return (size - 1) // (resolution - 1)


def _seed_for(seed: int, split: str) -> int:
    import hashlib

    digest = hashlib.sha256(f"darcy/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
