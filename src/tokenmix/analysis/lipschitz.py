"""Spectral norm and Lipschitz bounds of convolution layers.

A stride-1 convolution with C_in → C_out channels, kernel `w: (C_out, C_in, k, k)` on an n×n grid is a linear
map x ↦ W x. Its spectral norm σ₁(W) is the layer's Lipschitz constant (in ℓ₂). Four ways to get it:

* **exact, circular padding** — the 2D DFT block-diagonalizes a circular convolution (Sedghi, Gupta & Long, "The
  Singular Values of Convolutional Layers", arXiv 1805.10408): for each of the n² frequencies f the layer acts as
  the C_out×C_in matrix of kernel DFTs  D_f[o, c] = Σ_p w[o, c, p] e^{-2πi⟨f, p⟩/n}, so
  σ(W) = ∪_f σ(D_f) and σ₁(W) = max_f σ₁(D_f). A 'same' zero-padded convolution on n×n is a restriction of the
  circular one on (n + k - 1)² (embed, convolve, crop; both of norm ≤ 1), so the circular value at that size
  bounds it from above.
* **Gram iteration** (Delattre, Barthélemy, Araujo & Allauzen, "Efficient Bound of Lipschitz Constant for
  Convolutional Layers by Gram Iteration", arXiv 2305.16173, Algorithms 1-2): G₁ = D, G_{t+1} = G_tᴴ G_t; since
  σ₁(G_t) = σ₁(D)^{2^{t-1}} ≤ ‖G_t‖_F, σ₁(D) ≤ ‖G_t‖_F^{1/2^{t-1}}, an upper bound at every t that decreases
  to σ₁ superlinearly. Applied to the block-diagonal matrix of all D_f (its Frobenius norm over every block),
  with the rescaling G ← G/‖G‖_F at each step to stay in floating-point range (the scales re-enter in log space).
* **power iteration** on WᵀW, with W the convolution and Wᵀ its adjoint (the transposed convolution, obtained
  exactly by a vector-Jacobian product): converges to σ₁ from below, for any padding or stride.
* **naive bounds** from the kernel reshaped into matrices (Singla & Feizi, "Fantastic Four: Differentiable Bounds
  on Singular Values of Convolution Layers", arXiv 1911.10258): σ₁ ≤ √(h w) ‖R‖₂ for each of the four reshapes
  R of w into (h C_out) × (w C_in), (w C_out) × (h C_in), C_out × (h w C_in) and (h w C_out) × C_in; and the
  triangle inequality over taps, σ₁ ≤ Σ_p ‖w[:, :, p]‖₂ (each tap is a shift, of norm ≤ 1, times a matrix).

Grouped / depthwise kernels are first expanded to the dense block-diagonal kernel. `network_lipschitz` lists
every convolution and linear layer of a model (its input size found by one forward pass) with these numbers and
their product: the product over layers is an upper bound of a plain feed-forward chain; residual connections and
normalizations are not modelled, so for a MetaFormer it is a per-layer summary, not a certificate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.ops.conv import dilate_kernel


def dense_kernel(weight: Tensor, groups: int = 1, dilation: int = 1) -> Tensor:
    """`(C_out, C_in / groups, *k)` → the equivalent dense `(C_out, C_in, *k')` kernel (zeros off the groups;
    a dilated kernel spread out to its span k' = d (k - 1) + 1 with zeros between taps)."""
    c_out, c_per_group, *kernel = weight.shape
    if c_out % groups:
        raise MixerInputError(f"dense_kernel: {c_out} output channels do not split into {groups} groups")
    dense = weight.new_zeros(c_out, c_per_group * groups, *kernel)
    per_group_out = c_out // groups
    for g in range(groups):
        rows = slice(g * per_group_out, (g + 1) * per_group_out)
        dense[rows, g * c_per_group:(g + 1) * c_per_group] = weight[rows]
    return dilate_kernel(dense, dilation)


def frequency_matrices(weight: Tensor, size: int | tuple[int, ...]) -> Tensor:
    """The kernel DFTs D_f: `(*size, C_out, C_in)` complex, one matrix per frequency of an n×n (or n) torus."""
    kernel = weight.shape[2:]
    size = (size,) * len(kernel) if isinstance(size, int) else tuple(size)
    if len(size) != len(kernel) or any(n < k for n, k in zip(size, kernel)):
        raise MixerInputError(f"the grid {size} must have one size per kernel axis, each ≥ the kernel {tuple(kernel)}")
    spectrum = torch.fft.fftn(weight.to(torch.float64 if weight.dtype == torch.float64 else torch.float32),
                              s=size, dim=tuple(range(2, weight.ndim)))
    return spectrum.permute(*range(2, weight.ndim), 0, 1)


def circular_singular_values(weight: Tensor, size: int | tuple[int, ...]) -> Tensor:
    """Every singular value of the circular convolution on the torus `size`: `(*size, min(C_out, C_in))`."""
    return torch.linalg.svdvals(frequency_matrices(weight, size))


def exact_spectral_norm(weight: Tensor, size: int | tuple[int, ...]) -> float:
    """σ₁ of the stride-1 circular convolution with dense `weight` on the torus `size` (exact)."""
    return float(circular_singular_values(weight, size).max())


def gram_iteration_bound(weight: Tensor, size: int | tuple[int, ...], iterations: int = 6) -> float:
    """Delattre et al.'s upper bound on σ₁ of the circular convolution: `iterations` Gram steps on the
    block-diagonal matrix of kernel DFTs, ‖G_t‖_F^{1/2^{t-1}} with the rescalings folded back in log space."""
    if iterations < 0:
        raise MixerInputError(f"gram_iteration_bound: iterations must be ≥ 0, got {iterations}")
    gram = frequency_matrices(weight, size).to(torch.complex128)
    log_scale = torch.zeros((), dtype=torch.float64)        # log σ₁(D) ≤ log ‖G_t‖_F / 2^{t-1} + log_scale
    for t in range(iterations):
        norm = torch.linalg.vector_norm(gram)
        gram = gram / norm
        log_scale = log_scale + torch.log(norm) / 2 ** t     # G ← G/r: σ₁(D)^{2^t} scales by 1/r
        gram = gram.mH @ gram
    return float(torch.exp(torch.log(torch.linalg.vector_norm(gram)) / 2 ** iterations + log_scale))


def power_iteration(linear: Callable[[Tensor], Tensor], input_shape: tuple[int, ...], iterations: int = 100,
                    *, dtype: torch.dtype = torch.float64, seed: int = 0, tolerance: float = 0.0) -> float:
    """σ₁ of the linear map `linear` by power iteration on AᵀA (Aᵀ by a vector-Jacobian product, i.e. the exact
    adjoint: for a convolution, the transposed convolution). A lower bound that converges to σ₁."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(input_shape, generator=generator, dtype=dtype)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(iterations):
        u, adjoint = torch.func.vjp(linear, v)
        sigma_next = float(u.norm())
        (v,) = adjoint(u)
        v = v / v.norm().clamp_min(1e-300)
        if tolerance and abs(sigma_next - sigma) <= tolerance * sigma_next:
            return sigma_next
        sigma = sigma_next
    return float(linear(v).norm())


def conv_operator(weight: Tensor, size: int | tuple[int, ...], padding: str = "circular", stride: int = 1,
                  groups: int = 1, dilation: int = 1) -> Callable[[Tensor], Tensor]:
    """x: (C_in, *size) ↦ the convolution's output, 'same' padded (`circular` or `zeros`), bias-free."""
    kernel = weight.shape[2:]
    size = (size,) * len(kernel) if isinstance(size, int) else tuple(size)
    convolve = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(kernel)]
    pads: list[int] = []
    for k in reversed(kernel):
        total = dilation * (k - 1)
        pads += [total // 2, total - total // 2]

    def apply(x: Tensor) -> Tensor:
        x = F.pad(x[None], pads, mode="circular" if padding == "circular" else "constant")
        return convolve(x, weight.to(x.dtype), stride=stride, groups=groups, dilation=dilation)[0]

    return apply


def naive_bounds(weight: Tensor) -> dict[str, float]:
    """The reshaped-kernel bounds (Singla & Feizi) and the sum over taps, for a dense 2D kernel (1D: h = 1)."""
    if weight.ndim == 3:
        weight = weight[:, :, None, :]
    c_out, c_in, h, w = weight.shape
    root = math.sqrt(h * w)
    reshapes = {
        "reshape_hCout_wCin": weight.permute(2, 0, 3, 1).reshape(h * c_out, w * c_in),
        "reshape_wCout_hCin": weight.permute(3, 0, 2, 1).reshape(w * c_out, h * c_in),
        "reshape_Cout_hwCin": weight.reshape(c_out, c_in * h * w),
        "reshape_hwCout_Cin": weight.permute(2, 3, 0, 1).reshape(h * w * c_out, c_in),
    }
    bounds = {name: root * float(torch.linalg.matrix_norm(matrix.double(), ord=2)) for name, matrix in reshapes.items()}
    taps = weight.permute(2, 3, 0, 1).reshape(h * w, c_out, c_in).double()
    bounds["tap_sum"] = float(torch.linalg.matrix_norm(taps, ord=2).sum())
    bounds["naive_min"] = min(bounds.values())
    return bounds


@dataclass
class LayerBound:
    """The numbers of one layer; `exact` is exact for circular padding at `size`, an upper bound for zeros."""

    name: str
    kind: str
    size: tuple[int, ...]
    exact: float
    gram: float
    power: float
    naive: float
    details: dict[str, float] = field(default_factory=dict)


def conv_layer_bounds(name: str, weight: Tensor, size: tuple[int, ...], *, groups: int = 1, dilation: int = 1,
                      stride: int = 1, padding: int | str = "same", gram_iterations: int = 6,
                      power_iterations: int = 50) -> LayerBound:
    """All bounds of one convolution with input grid `size`. A patchify conv (stride = kernel, no padding) is a
    dense matrix on non-overlapping patches: its σ₁ is that of the C_out × (C_in k²) reshape, exactly."""
    weight = weight.detach().double()
    kernel = tuple(weight.shape[2:])
    dense = dense_kernel(weight, groups, dilation)
    if stride > 1 and all(k == stride for k in kernel) and padding in (0, (0,) * len(kernel), "valid") \
            and dilation == 1:
        value = float(torch.linalg.matrix_norm(dense.reshape(dense.shape[0], -1), ord=2))
        return LayerBound(name, "patchify", size, value, value, value, value)
    # zero 'same' padding: the circular convolution on the grid grown by the kernel span bounds it (see top)
    span = tuple(n + k - 1 for n, k in zip(size, dense.shape[2:]))
    exact = exact_spectral_norm(dense, span)
    gram = gram_iteration_bound(dense, span, gram_iterations)
    # float32: the power iteration is an estimate (a lower bound), and float64 convolutions are ~50× slower on CPU
    power = power_iteration(conv_operator(weight.float(), size, "zeros", stride, groups, dilation),
                            (weight.shape[1] * groups, *size), power_iterations, dtype=torch.float32)
    bounds = naive_bounds(dense)
    return LayerBound(name, "conv", size, exact, gram, power, bounds["naive_min"], bounds)


def _linear_bound(name: str, weight: Tensor) -> LayerBound:
    value = float(torch.linalg.matrix_norm(weight.detach().double(), ord=2))
    return LayerBound(name, "linear", (), value, value, value, float(weight.detach().double().norm()))


def _conv_like(module: nn.Module) -> dict | None:
    """Convolution parameters of an nn.ConvNd, or of a mixer holding one `weight` applied by tokenmix.ops.conv
    (depthwise_conv, dense_conv, replknet after `reparameterize()`): groups from the weight's shape."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return {"weight": module.weight, "groups": module.groups, "dilation": module.dilation[0],
                "stride": module.stride[0], "padding": module.padding}
    weight = getattr(module, "weight", None)
    dim = getattr(module, "dim", None)
    if isinstance(weight, Tensor) and isinstance(dim, int) and weight.ndim in (3, 4) and weight.shape[0] == dim \
            and dim % weight.shape[1] == 0 and len([p for p in module.parameters(recurse=False)]) <= 2 \
            and not list(module.children()):
        return {"weight": weight, "groups": dim // weight.shape[1], "dilation": getattr(module, "dilation", 1),
                "stride": 1, "padding": "same"}
    return None


def network_lipschitz(model: nn.Module, example: Tensor, **options) -> tuple[list[LayerBound], dict[str, float]]:
    """Per-layer bounds of every convolution (nn.Conv1d/2d or a single-kernel conv mixer) and nn.Linear in
    `model`, input sizes taken from one forward pass on `example`; returns (layers, products of each column)."""
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, module in model.named_modules():
        if _conv_like(module) is not None:
            hooks.append(module.register_forward_pre_hook(
                lambda m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[2:]))))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for hook in hooks:
            hook.remove()
    layers: list[LayerBound] = []
    for name, module in model.named_modules():
        conv = _conv_like(module)
        if conv is not None and name in sizes:
            layers.append(conv_layer_bounds(name or type(module).__name__, conv["weight"], sizes[name],
                                            groups=conv["groups"], dilation=conv["dilation"],
                                            stride=conv["stride"], padding=conv["padding"], **options))
        elif isinstance(module, nn.Linear):
            layers.append(_linear_bound(name, module.weight))
    products = {column: math.prod(getattr(layer, column) for layer in layers)
                for column in ("exact", "gram", "power", "naive")}
    return layers, products
