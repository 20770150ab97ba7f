"""A neural-operator backbone around any grid mixer, as the FNO paper builds its model (arXiv:2010.08895, §4):

    a(x) ⊕ x  →  P (pointwise lift to `width`)  →  depth × [v ← σ(mixer(v))]  →  Q (pointwise MLP)  →  u(x)

The grid coordinates are appended to the input channels, so a translation-equivariant mixer can still tell
positions apart (the paper appends x for Burgers, (x, y) for Darcy). Which coordinates depends on where the data's
points are: `coordinates="periodic"` gives x_i = i / n (a periodic grid: Burgers, Navier–Stokes), `"nodes"` gives
x_i = i / (n − 1) (nodes of [0, 1] with both boundaries included: Darcy), so that a subsampled grid sees the same
coordinate at the same physical point. Tasks declare theirs (`task.coordinates`). σ = GELU after every layer but
the last, as in the paper.

With `pointwise_skip` each layer becomes v ← σ(mixer(v) + W v + b), W a learned pointwise linear map: the layer of
the neural-operator framework (Kovachki et al. 2021, arXiv:2108.08481, §3: v_{t+1} = σ(W v_t + K v_t + b)), which
the FNO, LNO and GNO mixers already contain. It gives mixers without a pointwise path of their own (the attention
operators, whose papers add a residual instead) a way to carry each point's features forward.

Every layer is `tokenmix.create(mixer, width, spatial_dims=..., **mixer_options)`, so an image mixer can be tried as
a neural operator by changing one name. Sequence mixers run over the flattened grid (channels last), in the raster
order of the points.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tokenmix
from tokenmix.errors import MixerInputError


COORDINATES = ("periodic", "nodes")


def grid_coordinates(sizes: tuple[int, ...], *, kind: str = "periodic", device=None, dtype=None) -> Tensor:
    """`(len(sizes), *sizes)`: the coordinate of every point, per axis: x_a = i_a / n_a for `kind="periodic"` (a
    periodic unit grid), x_a = i_a / (n_a − 1) for `kind="nodes"` (the nodes of [0, 1], ends included; 0 when
    n_a = 1)."""
    if kind not in COORDINATES:
        raise MixerInputError(f"operator model: coordinates must be one of {COORDINATES}, got {kind!r}")
    denominators = [n if kind == "periodic" else max(n - 1, 1) for n in sizes]
    axes = [torch.arange(n, device=device, dtype=dtype) / d for n, d in zip(sizes, denominators)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


class _SequenceOnGrid(nn.Module):
    """A sequence mixer applied to the raster-ordered grid points: (B, D, *spatial) → (B, n, D) → back."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        return self.mixer(tokens).transpose(1, 2).reshape(x.shape)


class OperatorModel(nn.Module):
    """Lifting (with appended coordinates of kind `coordinates`), `depth` mixer layers (each with a pointwise linear
    skip if `pointwise_skip`) with GELU between them, projection MLP.

    `forward(a)` with `a: (B, in_channels, *spatial)` returns `(B, out_channels, *spatial)` at the input's resolution.
    """

    def __init__(self, mixer: str, *, in_channels: int = 1, out_channels: int = 1, spatial_dims: int = 1,
                 width: int = 64, depth: int = 4, projection_width: int = 128,
                 mixer_options: dict[str, Any] | None = None, coordinates: str = "periodic",
                 pointwise_skip: bool = False) -> None:
        super().__init__()
        if coordinates not in COORDINATES:
            raise MixerInputError(f"operator model: coordinates must be one of {COORDINATES}, got {coordinates!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width),
                            ("depth", depth), ("projection_width", projection_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MixerInputError(f"operator model: {name} must be a positive integer, got {value!r}")
        if spatial_dims not in (1, 2, 3):
            raise MixerInputError(f"operator model: spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        if not isinstance(pointwise_skip, bool):
            raise MixerInputError(f"operator model: pointwise_skip must be true or false, got {pointwise_skip!r}")
        spec = tokenmix.spec(mixer)
        options = dict(mixer_options or {})
        if spec.layout == "grid":
            if spatial_dims not in spec.spatial_dims:
                raise MixerInputError(f"operator model: mixer {mixer} supports spatial_dims {spec.spatial_dims}, "
                                      f"not {spatial_dims}")
            options.setdefault("spatial_dims", spatial_dims)
            build = lambda: tokenmix.create(mixer, width, **options)  # noqa: E731
        else:
            if spec.causal != "always":
                options.setdefault("causal", False)  # an operator sees the whole domain
            build = lambda: _SequenceOnGrid(tokenmix.create(mixer, width, **options))  # noqa: E731
        self.mixer_name = mixer
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.coordinates = coordinates
        self.lift = nn.Linear(in_channels + spatial_dims, width)
        self.layers = nn.ModuleList(build() for _ in range(depth))
        self.skips = nn.ModuleList(nn.Linear(width, width) for _ in range(depth)) if pointwise_skip else None
        self.project = nn.Sequential(nn.Linear(width, projection_width), nn.GELU(),
                                     nn.Linear(projection_width, out_channels))

    def forward(self, a: Tensor) -> Tensor:
        if a.ndim != 2 + self.spatial_dims or a.shape[1] != self.in_channels:
            raise MixerInputError(f"operator model: expected input (batch, {self.in_channels}"
                                  f"{', size' * self.spatial_dims}), got {tuple(a.shape)}")
        coordinates = grid_coordinates(tuple(a.shape[2:]), kind=self.coordinates, device=a.device, dtype=a.dtype)
        x = torch.cat([a, coordinates.expand(a.shape[0], *coordinates.shape)], dim=1)
        v = self.lift(x.movedim(1, -1)).movedim(-1, 1)
        for index, layer in enumerate(self.layers):
            mixed = layer(v)
            if self.skips is not None:
                mixed = mixed + self.skips[index](v.movedim(1, -1)).movedim(-1, 1)
            v = mixed
            if index < len(self.layers) - 1:
                v = F.gelu(v)
        return self.project(v.movedim(1, -1)).movedim(-1, 1)
