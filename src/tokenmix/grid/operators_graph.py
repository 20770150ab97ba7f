"""Graph kernel operator (GNO / graph kernel network) as a grid mixer: message passing over the radius graph of the
sample points with a learned, position-dependent matrix kernel.

"Neural Operator: Graph Kernel Network for Partial Differential Equations", Li et al. 2020, arXiv:2003.03485,
eq. (5):

    v'(x) = W v(x) + b + (1 / |N(x)|) Σ_{y ∈ N(x)} κ_φ(x, y) v(y),     N(x) = {y : |x − y| ≤ r},

a Monte Carlo / quadrature estimate of ∫_{B(x, r)} κ(x, y) v(y) dy over the ball (normalized by its measure),
κ_φ: R^{2s} → R^{d × d} a neural network (Linear, GELU, Linear, GELU, Linear) of the two positions (the paper's edge
features are (x, y, a(x), a(y)); in a mixer a(x) is part of v, so the kernel sees the positions). The activation is
the backbone's. The sample points are the grid points x_a = i_a / n_a (as `OperatorModel`'s coordinates), the ball
Euclidean and not periodic, and x is its own neighbour. r is a physical radius, so a finer grid samples the same
ball with more points: the same weights give the same operator up to the quadrature error (`resolution_invariant`).

`reference` evaluates κ for every pair of grid points and masks the pairs farther than r (O(N² d²)); `edges`
builds the radius graph's edge list from the grid's stencil of offsets within r, evaluates κ on the edges only,
gathers v at the sources and scatters the messages with `index_add` (O(E d²), E the number of edges). The kernel
does not depend on the batch, so it is evaluated once per call. With a fixed physical radius a ball holds a fixed
fraction of the N points, so E grows like N² (the spec's complexity); the constant is the ball's volume r^s.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from tokenmix.mixer import GridMixer
from tokenmix.registry import register


def grid_positions(sizes: tuple[int, ...], *, device=None, dtype=None) -> Tensor:
    """`(N, s)`: the position x_a = i_a / n_a of every grid point, raster order."""
    axes = [torch.arange(n, device=device, dtype=dtype) / n for n in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))


def _within(offsets: Tensor, sizes: tuple[int, ...], radius: float) -> Tensor:
    """Whether integer index offsets `(..., s)` are within `radius` in the unit-cube metric (one formula, so the
    reference and the edge list agree on ties)."""
    scale = torch.tensor(sizes, dtype=torch.float64, device=offsets.device)
    return ((offsets.to(torch.float64) / scale) ** 2).sum(-1) <= radius**2


def radius_graph(sizes: tuple[int, ...], radius: float, *, device=None) -> tuple[Tensor, Tensor]:
    """`(source, target)` index tensors of the grid's radius graph (every ordered pair within `radius`, self loops
    included), grouped by offset."""
    reach = [min(n - 1, math.floor(radius * n)) for n in sizes]
    stencil = torch.tensor(list(itertools.product(*[range(-k, k + 1) for k in reach])), dtype=torch.long,
                           device=device).view(-1, len(sizes))
    stencil = stencil[_within(stencil, sizes, radius)]
    index = torch.stack(torch.meshgrid(*[torch.arange(n, device=device) for n in sizes], indexing="ij"),
                        dim=-1).reshape(-1, len(sizes))
    strides = torch.tensor([math.prod(sizes[a + 1:]) for a in range(len(sizes))], device=device)
    limits = torch.tensor(sizes, device=device)
    sources, targets = [], []
    for offset in stencil:
        neighbour = index + offset
        inside = ((neighbour >= 0) & (neighbour < limits)).all(-1)
        targets.append((index[inside] * strides).sum(-1))
        sources.append((neighbour[inside] * strides).sum(-1))
    return torch.cat(sources), torch.cat(targets)


@register(
    name="gno",
    family="neural-operator",
    layout="grid",
    paper="Neural Operator: Graph Kernel Network for Partial Differential Equations",
    arxiv="2003.03485",
    impls=("reference", "edges"),
    causal="never",
    state="none",
    time_complexity="N^2 d^2 h",   # E = N · (points per ball) edges, and a fixed radius holds ∝ N points
    memory_complexity="N^2 d^2",
    spatial_dims=(1, 2, 3),
    resolution_invariant=True,
    summary="Graph kernel layer W v + mean over the r-ball of κ_φ(x, y) v(y), κ an MLP of the two positions.",
)
class GraphKernelLayer(GridMixer):
    """v'(x) = W v(x) + b + mean_{|y − x| ≤ radius} κ_φ(x, y) v(y) (module docstring); κ_φ has `kernel_width`
    hidden units. The default radius suits grids of ~20-100 points per axis (a few to a few dozen neighbours)."""

    def __init__(self, dim: int, *, radius: float = 0.1, kernel_width: int = 32, spatial_dims: int = 2,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal, spatial_dims=spatial_dims)
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
            raise self._fail(f"radius must be a positive number, got {radius!r}")
        self.radius = float(radius)
        width = self._positive_int("kernel_width", kernel_width)
        self.kernel = nn.Sequential(nn.Linear(2 * self.spatial_dims, width), nn.GELU(), nn.Linear(width, width),
                                    nn.GELU(), nn.Linear(width, dim * dim))
        with torch.no_grad():  # κ v sums d terms per neighbour: scale the kernel like a d × d linear layer
            self.kernel[-1].weight.mul_(dim**-0.5)
            self.kernel[-1].bias.mul_(dim**-0.5)
        self.skip = nn.Linear(dim, dim)
        self._graphs: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def _kernel(self, x: Tensor, y: Tensor) -> Tensor:
        """κ_φ(x, y) for positions `(..., s)` → `(..., d, d)` (output index first)."""
        return self.kernel(torch.cat([x, y], dim=-1)).unflatten(-1, (self.dim, self.dim))

    def _mix(self, x: Tensor) -> Tensor:
        batch, sizes = x.shape[0], tuple(x.shape[2:])
        v = x.flatten(2).transpose(1, 2)                                       # (B, N, d)
        positions = grid_positions(sizes, device=x.device, dtype=x.dtype)
        if self.impl == "reference":
            n = positions.shape[0]
            index = torch.stack(torch.meshgrid(*[torch.arange(s, device=x.device) for s in sizes], indexing="ij"),
                                dim=-1).reshape(n, -1)
            mask = _within(index[:, None, :] - index[None, :, :], sizes, self.radius).to(x.dtype)   # (x, y)
            kernel = self._kernel(positions[:, None].expand(n, n, -1), positions[None, :].expand(n, n, -1))
            summed = torch.einsum("xy,xyoi,byi->bxo", mask, kernel, v)
            integral = summed / mask.sum(1)[None, :, None]
        else:
            source, target, degree = self._graph(sizes, x.device)
            kernel = self._kernel(positions[target], positions[source])          # (E, d, d)
            messages = torch.einsum("eoi,bei->beo", kernel, v[:, source])
            integral = torch.zeros_like(v).index_add_(1, target, messages) / degree.to(x.dtype)[None, :, None]
        y = self.skip(v) + integral
        return y.transpose(1, 2).reshape(batch, self.dim, *sizes)

    def _graph(self, sizes: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        key = (sizes, str(device))
        if key not in self._graphs:
            source, target = radius_graph(sizes, self.radius, device=device)
            degree = torch.bincount(target, minlength=math.prod(sizes))
            self._graphs[key] = (source, target, degree)
        return self._graphs[key]
