"""LinearScope: a ReLU / max-pool network as the input-dependent linear system it computes at x.

A network built of linear (affine) layers — convolutions, fully connected layers, average pooling, BatchNorm in
eval mode, flattening — and of *gating* nonlinearities — ReLU (and leaky ReLU), max pooling — is piecewise
affine: at a given input x every gate is fixed (which units pass, which position each pooling window selects),
and the network is exactly

    y = A(x) x + b(x).

(The view of "Neural networks as linear systems": e.g. Balestriero & Baraniuk, "A Spline Theory of Deep
Networks", and the LinearScope construction of representing a ReLU CNN by its input-dependent linear map.)

A(x) and b(x) are computed by running two copies of the network in parallel, not by differentiating output by
output: the original pass records each gate (the ReLU masks 1[z > 0], the leaky slope, the argmax index of
every max-pool window); then the *gated linear* copy — each affine layer without its bias, each ReLU replaced by
multiplication with its recorded mask, each max-pool by gathering at its recorded indices — is applied to a
batch of identity basis vectors e_1..e_n shaped as x: its outputs are the columns of A(x). The *gated affine*
copy (biases kept) applied to the zero input gives b(x). The test is exactness: A x + b = network(x).

For networks with other nonlinearities (GELU, softmax, attention, data-dependent mixers...) `linearize` falls
back to the Jacobian J(x) (torch.func.jacrev) and b = f(x) - J x: the tangent (first-order) model, exact at x
but only an approximation around it; the result says so (`exact=False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.errors import MixerInputError

LINEAR_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Flatten, nn.Identity,
                 nn.Dropout)
GATING_LAYERS = (nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d)
BASIS_CHUNK = 1024  # basis vectors pushed through the gated copy at once


@dataclass
class LinearSystem:
    """y = A x + b at the input x: `A: (numel(y), numel(x))`, `b: (numel(y),)`; `exact` False when A is the
    Jacobian of a network with non-gating nonlinearities (a tangent model, not the network)."""

    matrix: Tensor
    offset: Tensor
    exact: bool
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    def __call__(self, x: Tensor) -> Tensor:
        """A x + b for one input of `input_shape` (no batch axis), shaped as the output."""
        return (self.matrix @ x.reshape(-1) + self.offset).reshape(self.output_shape)


def _layers(model: nn.Module) -> list[nn.Module] | None:
    """The flat list of layers of a (nested) nn.Sequential of supported layers, else None."""
    if isinstance(model, nn.Sequential):
        flat: list[nn.Module] = []
        for child in model:
            inner = _layers(child)
            if inner is None:
                return None
            flat += inner
        return flat
    if isinstance(model, LINEAR_LAYERS + GATING_LAYERS):
        return [model]
    return None


def is_piecewise_linear(model: nn.Module) -> bool:
    """Whether `linearize` is exact for `model` (a nn.Sequential of linear and gating layers)."""
    return _layers(model) is not None


def _gates(layers: list[nn.Module], x: Tensor) -> list[Tensor | None]:
    """The original pass: one recorded gate per layer (mask, slope map or max-pool indices; None if linear)."""
    gates: list[Tensor | None] = []
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            gates.append((x > 0).to(x.dtype))
        elif isinstance(layer, nn.LeakyReLU):
            gates.append(torch.where(x > 0, torch.ones_like(x), torch.full_like(x, layer.negative_slope)))
        elif isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d)):
            pool = F.max_pool1d_with_indices if isinstance(layer, nn.MaxPool1d) else F.max_pool2d_with_indices
            _, indices = pool(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode,
                              return_indices=True)
            gates.append(indices)
        else:
            gates.append(None)
        x = layer(x)
    return gates


def _gated(layers: list[nn.Module], gates: list[Tensor | None], z: Tensor, affine: bool) -> Tensor:
    """The gated copy on a batch z: affine layers with (affine=True) or without their constant terms."""
    for layer, gate in zip(layers, gates):
        if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
            z = z * gate
        elif isinstance(layer, (nn.MaxPool1d, nn.MaxPool2d)):
            index = gate.expand(z.shape[0], *gate.shape[1:])
            z = z.flatten(2).gather(2, index.flatten(2)).reshape(index.shape)
        elif isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            bias = layer.bias if affine else None
            if isinstance(layer, nn.Linear):
                z = F.linear(z, layer.weight, bias)
            else:
                z = layer._conv_forward(z, layer.weight, bias)
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            if layer.running_mean is None:
                raise MixerInputError("linearize: BatchNorm without running statistics is not affine per sample")
            scale = torch.rsqrt(layer.running_var + layer.eps)
            shift = -layer.running_mean * scale
            if layer.affine:
                scale, shift = scale * layer.weight, shift * layer.weight + layer.bias
            view = (1, -1) + (1,) * (z.ndim - 2)
            z = z * scale.view(view) + (shift.view(view) if affine else 0)
        else:   # pooling, flatten, identity, dropout (eval): linear without constant term
            z = layer(z)
    return z


@torch.no_grad()
def linearize(model: nn.Module, x: Tensor) -> LinearSystem:
    """The linear system of `model` at the single input `x` (no batch axis). Exact (gated copies) for a
    nn.Sequential of linear / gating layers; otherwise the Jacobian, flagged `exact=False`."""
    model.eval()
    layers = _layers(model)
    if layers is None:
        return jacobian_system(model, x)
    gates = _gates(layers, x[None])
    output_shape = tuple(_gated(layers, gates, torch.zeros_like(x[None]), affine=True).shape[1:])
    n = x.numel()
    columns = []
    for start in range(0, n, BASIS_CHUNK):
        count = min(BASIS_CHUNK, n - start)
        basis = torch.zeros(count, n, dtype=x.dtype, device=x.device)
        basis[torch.arange(count), torch.arange(start, start + count)] = 1.0
        columns.append(_gated(layers, gates, basis.reshape(count, *x.shape), affine=False).reshape(count, -1))
    matrix = torch.cat(columns).T
    offset = _gated(layers, gates, torch.zeros_like(x[None]), affine=True).reshape(-1)
    return LinearSystem(matrix, offset, True, tuple(x.shape), output_shape)


def jacobian_system(model: nn.Module, x: Tensor) -> LinearSystem:
    """The tangent model at x: A = ∂f/∂x (torch.func.jacrev), b = f(x) - A x. An approximation away from x."""
    model.eval()

    def single(v: Tensor) -> Tensor:
        return model(v[None])[0]

    with torch.enable_grad():
        jacobian = torch.func.jacrev(single)(x)
    output = single(x).detach()
    matrix = jacobian.reshape(output.numel(), x.numel()).detach()
    offset = output.reshape(-1) - matrix @ x.reshape(-1)
    return LinearSystem(matrix, offset, False, tuple(x.shape), tuple(output.shape))


def plot_linear_system(system: LinearSystem, path: str | Path, *, rows: list[int] | None = None,
                       columns: list[int] | None = None) -> Path:
    """Rows of A (what each output reads: an image shaped as the input, channels summed) and columns of A (where
    each input pixel goes: shaped as the output when it is a grid), on a symmetric diverging colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [0] if rows is None else rows
    columns = [] if columns is None else columns
    panels = [(f"row {i}: ∂y[{i}]/∂x", system.matrix[i].reshape(system.input_shape)) for i in rows]
    panels += [(f"column {j}: ∂y/∂x[{j}]", system.matrix[:, j].reshape(system.output_shape)) for j in columns]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for axis, (title, values) in zip(axes[0], panels):
        image = values.detach().double().cpu()
        if image.ndim == 3:                        # (C, H, W): sum the channels
            image = image.sum(0)
        if image.ndim == 1:
            image = image[None]
        limit = float(image.abs().max()) or 1.0
        shown = axis.imshow(image.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        figure.colorbar(shown, ax=axis, fraction=0.046, label="weight")
        axis.set_title(title, fontsize=8)
        axis.set_xlabel("column")
        axis.set_ylabel("row")
    kind = "exact A(x)" if system.exact else "Jacobian (approximation)"
    figure.suptitle(f"linear system y = A x + b at x: {kind}", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
