"""DeepONet: an operator as a sum of products of a branch network of the input function and a trunk network of the
output coordinate.

"Learning nonlinear operators via DeepONet based on the universal approximation theorem of operators", Lu, Jin,
Pang, Zhang, Karniadakis 2019, arXiv:1910.03193, eq. (2) (the unstacked DeepONet with a bias):

    G(u)(y) ≈ Σ_{k=1}^{p} b_k(u(x_1), …, u(x_m)) · t_k(y) + b_0,

b = (b_1 … b_p) the branch MLP of the input function at m fixed sensors, t = (t_1 … t_p) the trunk MLP of the query
coordinate y (its last layer activated too, as in the paper). With several output channels the branch gives p values
per channel and the trunk basis is shared: G_c(u)(y) = Σ_k b_{c,k}(u) t_k(y) + b_{0,c}.

Not a grid mixer: the branch reads the whole input function as one vector at its m sensors, so the input must be
sampled on the sensor grid it was built for (a mixer maps features at every point to features at every point on any
grid); the output side is continuous: G(u) can be evaluated at any query points (`forward(u, queries)`), e.g. a
finer grid than the input's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.models.operator import grid_coordinates


def _mlp(sizes: list[int], activate_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if index < len(sizes) - 2 or activate_last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class DeepONet(nn.Module):
    """`DeepONet(sensor_shape, ...)`: `forward(u)` with `u: (B, in_channels, *sensor_shape)` returns G(u) on the
    sensor grid `(B, out_channels, *sensor_shape)`; `forward(u, queries)` with `queries: (Q, len(sensor_shape))`
    coordinates in [0, 1) returns `(B, out_channels, Q)`. Sensors and default queries are the grid points
    x_a = i_a / n_a (as in `OperatorModel`)."""

    def __init__(self, sensor_shape: tuple[int, ...], *, in_channels: int = 1, out_channels: int = 1,
                 basis_size: int = 64, branch_widths: tuple[int, ...] = (128, 128),
                 trunk_widths: tuple[int, ...] = (128, 128)) -> None:
        super().__init__()
        sensor_shape = tuple(sensor_shape)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("basis_size", basis_size), *[("sensor_shape", n) for n in sensor_shape],
                            *[("branch_widths", w) for w in branch_widths], *[("trunk_widths", w) for w in trunk_widths]):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MixerInputError(f"deeponet: {name} must be positive integers, got {value!r}")
        if len(sensor_shape) not in (1, 2, 3):
            raise MixerInputError(f"deeponet: sensor_shape must have 1-3 axes, got {sensor_shape!r}")
        self.sensor_shape = sensor_shape
        self.in_channels, self.out_channels, self.basis_size = in_channels, out_channels, basis_size
        sensors = in_channels * math.prod(sensor_shape)
        self.branch = _mlp([sensors, *branch_widths, out_channels * basis_size], activate_last=False)
        self.trunk = _mlp([len(sensor_shape), *trunk_widths, basis_size], activate_last=True)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, u: Tensor, queries: Tensor | None = None) -> Tensor:
        if u.ndim != 2 + len(self.sensor_shape) or u.shape[1] != self.in_channels \
                or tuple(u.shape[2:]) != self.sensor_shape:
            raise MixerInputError(f"deeponet: expected input (batch, {self.in_channels}, "
                                  f"{', '.join(map(str, self.sensor_shape))}) on the sensor grid, got {tuple(u.shape)}")
        on_grid = queries is None
        if on_grid:
            queries = grid_coordinates(self.sensor_shape, device=u.device, dtype=u.dtype).flatten(1).T
        elif queries.ndim != 2 or queries.shape[1] != len(self.sensor_shape):
            raise MixerInputError(f"deeponet: queries must be (count, {len(self.sensor_shape)}) coordinates, got "
                                  f"{tuple(queries.shape)}")
        coefficients = self.branch(u.flatten(1)).view(u.shape[0], self.out_channels, self.basis_size)  # b_{c,k}(u)
        basis = self.trunk(queries.to(u.dtype))                                                        # t_k(y)
        out = torch.einsum("bck,qk->bcq", coefficients, basis) + self.bias[:, None]
        return out.view(u.shape[0], self.out_channels, *self.sensor_shape) if on_grid else out


class DeepONetOnGrid(nn.Module):
    """DeepONet as a grid-to-grid model (`(B, in_channels, *sizes)` → `(B, out_channels, *sizes)`), so the operator
    trainers can train it like `OperatorModel`. The branch reads the input at its sensor grid: an input on a finer
    grid of the same points is subsampled to it (stride r with n = r·s points for `coordinates="periodic"`,
    n − 1 = r·(s − 1) for `"nodes"`); the trunk evaluates G(u) at the input grid's own points (coordinates of that
    kind), so a finer grid gives the same branch coefficients and a finer output."""

    def __init__(self, sensor_shape: tuple[int, ...], *, coordinates: str = "periodic", **options) -> None:
        super().__init__()
        self.deeponet = DeepONet(sensor_shape, **options)
        self.coordinates = coordinates

    def forward(self, a: Tensor) -> Tensor:
        sensors = self.deeponet.sensor_shape
        sizes = tuple(a.shape[2:])
        if len(sizes) != len(sensors):
            raise MixerInputError(f"deeponet: expected {len(sensors)} spatial axes, got input {tuple(a.shape)}")
        strides = []
        for n, s in zip(sizes, sensors):
            points, sensor_points = (n, s) if self.coordinates == "periodic" else (n - 1, s - 1)
            if sensor_points <= 0 or points % sensor_points:
                raise MixerInputError(f"deeponet: a grid of {n} points does not contain the {s} sensors "
                                      f"({self.coordinates} coordinates)")
            strides.append(points // sensor_points)
        u = a[(..., *[slice(None, None, r) for r in strides])]
        queries = grid_coordinates(sizes, kind=self.coordinates, device=a.device, dtype=a.dtype).flatten(1).T
        return self.deeponet(u, queries).view(a.shape[0], self.deeponet.out_channels, *sizes)
