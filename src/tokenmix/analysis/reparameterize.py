"""Structural re-parameterization: train a wide, multi-branch or deep *linear* form, infer one convolution.

Every rule below is exact because each piece is linear (affine) in eval mode:

* **BatchNorm folding** (eval mode, running statistics μ, σ², affine γ, β):
      BN(W ∗ x + b) = W' ∗ x + b',   W'_o = W_o · γ_o / √(σ²_o + ε),   b'_o = (b_o - μ_o) γ_o / √(σ²_o + ε) + β_o.
* **Parallel branches** with 'same' padding and one centre: Σ_i (W_i ∗_{r_i} x + b_i) = W ∗ x + Σ b_i with
  W = Σ_i pad(dilate(W_i, r_i)) — each kernel spread by its dilation (zeros between taps) and zero-padded
  around its centre to the largest span. This covers RepLKNet's large + small kernel (Ding et al., "Scaling Up
  Your Kernels to 31x31", arXiv 2203.06717), ACNet's 3×3 + 1×3 + 3×1 (Ding et al., "ACNet: Strengthening the
  Kernel Skeletons for Powerful CNN via Asymmetric Convolution Blocks", arXiv 1908.03930) and UniRepLKNet's
  dilated branches (Ding et al., arXiv 2311.15599), each branch followed by its own BatchNorm as in the papers.
* **Collapsing a chain** of linear convolutions (SESR, Bhardwaj et al., "Collapsible Linear Blocks for
  Super-Efficient Super Resolution", arXiv 2103.09404): a k×k conv C_in → P followed by a 1×1 conv P → C_out,
  with no nonlinearity between, is the single k×k conv W[o, c] = Σ_m V[o, m] U[m, c] with bias V b_U + b_V
  (plus the identity kernel when the block has a short residual). For two spatial kernels the composition is
  the full convolution of the kernels (size k₁ + k₂ - 1); that is exact for 'valid' (unpadded) layers and in
  the interior of 'same' zero-padded ones (at the border the intermediate map's zero padding differs), so
  `collapse_chain` is stated for valid convolutions.

The mixers of tokenmix.grid.large_kernel (replknet, unireplknet, slak) carry their own `reparameterize()`;
`reparameterize_model` calls it on every module that has one, and folds Conv → BatchNorm pairs of nn.Sequential
containers. `speedup` times a module before and after with torch.utils.benchmark (a measurement, not a test).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.grid.large_kernel import UNIREPLK_BRANCHES
from tokenmix.ops.conv import dilate_kernel


# --- the rules, on tensors ----------------------------------------------------------------------------------
def fold_batchnorm(weight: Tensor, bias: Tensor | None, norm: nn.modules.batchnorm._BatchNorm
                   ) -> tuple[Tensor, Tensor]:
    """(W, b) of a convolution followed by `norm` in eval mode → the (W', b') of the single equivalent conv."""
    mean, variance = norm.running_mean, norm.running_var
    if mean is None or variance is None:
        raise MixerInputError("fold_batchnorm: the BatchNorm tracks no running statistics; it cannot be folded")
    gamma = norm.weight if norm.affine else torch.ones_like(mean)
    beta = norm.bias if norm.affine else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(variance + norm.eps)
    bias = torch.zeros_like(mean) if bias is None else bias
    return weight * scale.view(-1, *([1] * (weight.ndim - 1))), (bias - mean) * scale + beta


def center_pad(weight: Tensor, size: Sequence[int]) -> Tensor:
    """Zero-pad the kernel axes of `weight` around their centre to `size` (odd growth per axis)."""
    pad: list[int] = []
    for k, target in zip(reversed(weight.shape[2:]), reversed(tuple(size))):
        if (target - k) % 2 or target < k:
            raise MixerInputError(f"center_pad: kernel {tuple(weight.shape[2:])} cannot be centred in {tuple(size)}")
        pad += [(target - k) // 2] * 2
    return F.pad(weight, pad)


def merge_parallel_kernels(weights: Sequence[Tensor], biases: Sequence[Tensor | None],
                           dilations: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Σ_i (W_i ∗_{r_i} x + b_i) → one (W, b): each kernel dilated, centred in the largest span, summed."""
    dilations = [1] * len(weights) if dilations is None else list(dilations)
    spread = [dilate_kernel(w, r) for w, r in zip(weights, dilations)]
    size = [max(w.shape[2 + axis] for w in spread) for axis in range(spread[0].ndim - 2)]
    weight = sum(center_pad(w, size) for w in spread)
    bias = sum(b if b is not None else torch.zeros(weights[0].shape[0], dtype=weights[0].dtype)
               for b in biases)
    return weight, bias


def collapse_pointwise(first: tuple[Tensor, Tensor | None], second: tuple[Tensor, Tensor | None],
                       residual: bool = False) -> tuple[Tensor, Tensor]:
    """A k×k conv (U, b_U) then a 1×1 conv (V, b_V) [+ x] → one k×k conv (SESR's collapse)."""
    (u, u_bias), (v, v_bias) = first, second
    v2 = v.reshape(v.shape[0], v.shape[1])
    weight = torch.einsum("om,mc...->oc...", v2, u)
    bias = torch.zeros(v.shape[0], dtype=u.dtype) if v_bias is None else v_bias.clone()
    if u_bias is not None:
        bias = bias + v2 @ u_bias
    if residual:
        if weight.shape[0] != weight.shape[1]:
            raise MixerInputError("collapse_pointwise: a residual needs as many output as input channels")
        centre = tuple(k // 2 for k in weight.shape[2:])
        weight = weight.clone()
        weight[(torch.arange(weight.shape[0]), torch.arange(weight.shape[0]), *centre)] += 1
    return weight, bias


def collapse_chain(layers: Sequence[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor]:
    """Valid (unpadded) dense convolutions applied in order → one valid conv of kernel Σ k_i - (n - 1):
    W = the full convolution of the kernels (channels contracted), b propagated through the later kernels."""
    weight, bias = layers[0]
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if bias is None else bias
    for next_weight, next_bias in layers[1:]:
        spatial = weight.ndim - 2
        convolve = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
        # W_new[o, c, s] = Σ_m Σ_{p+q=s} W2[o, m, q] W1[m, c, p]: the full *convolution* of the kernels, i.e.
        # a cross-correlation (F.conv) of the zero-padded W1, as a batch of C_in images, with the flipped W2
        axes = tuple(range(2, next_weight.ndim))
        padded = F.pad(weight.transpose(0, 1), [k - 1 for k in reversed(next_weight.shape[2:]) for _ in (0, 1)])
        weight = convolve(padded, next_weight.flip(axes)).transpose(0, 1)
        bias = next_weight.sum(tuple(range(2, next_weight.ndim))) @ bias
        bias = bias + (0 if next_bias is None else next_bias)
    return weight, bias


# --- training-time blocks that collapse at inference ----------------------------------------------------------
class ParallelConvBranches(nn.Module):
    """y = Σ_i BN_i(Conv_i(x)): branches of kernel (h_i, w_i) and dilation r_i, all 'same' padded and sharing
    one centre, `groups` as nn.Conv2d (depthwise: groups = channels). `reparameterize()` → one nn.Conv2d."""

    def __init__(self, channels: int, branches: Sequence[tuple[int, int, int]], *, groups: int = 1,
                 batchnorm: bool = True) -> None:
        super().__init__()
        self.channels, self.groups = channels, groups
        self.branches = nn.ModuleList()
        for height, width, dilation in branches:
            if height % 2 == 0 or width % 2 == 0:
                raise MixerInputError(f"ParallelConvBranches: odd kernels only, got {height}×{width}")
            conv = nn.Conv2d(channels, channels, (height, width), groups=groups, dilation=dilation,
                             padding=(dilation * (height - 1) // 2, dilation * (width - 1) // 2), bias=not batchnorm)
            self.branches.append(nn.Sequential(conv, nn.BatchNorm2d(channels)) if batchnorm else nn.Sequential(conv))
        self.merged: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.merged is not None:
            return self.merged(x)
        return sum(branch(x) for branch in self.branches)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold each BatchNorm (eval statistics) into its conv and merge the branches (in place)."""
        if self.merged is not None:
            return
        weights, biases, dilations = [], [], []
        for branch in self.branches:
            conv = branch[0]
            weight, bias = conv.weight, conv.bias
            if len(branch) > 1 and isinstance(branch[1], nn.modules.batchnorm._BatchNorm):  # else already folded
                weight, bias = fold_batchnorm(weight, bias, branch[1])
            weights.append(weight), biases.append(bias), dilations.append(conv.dilation[0])
        weight, bias = merge_parallel_kernels(weights, biases, dilations)
        merged = nn.Conv2d(self.channels, self.channels, tuple(weight.shape[2:]), groups=self.groups,
                           padding=tuple(k // 2 for k in weight.shape[2:])).to(weight)
        merged.weight.copy_(weight)
        merged.bias.copy_(bias)
        self.merged = merged
        self.branches = nn.ModuleList()


def replknet_branches(channels: int, kernel_size: int = 31, small_kernel_size: int = 5) -> ParallelConvBranches:
    """RepLKNet: depthwise K×K + k×k, each with BatchNorm."""
    return ParallelConvBranches(channels, [(kernel_size, kernel_size, 1), (small_kernel_size, small_kernel_size, 1)],
                                groups=channels)


def acnet_branches(in_out_channels: int, kernel_size: int = 3, groups: int = 1) -> ParallelConvBranches:
    """ACNet's asymmetric convolution block: k×k + 1×k + k×1, each with BatchNorm."""
    k = kernel_size
    return ParallelConvBranches(in_out_channels, [(k, k, 1), (1, k, 1), (k, 1, 1)], groups=groups)


def dilated_branches(channels: int, kernel_size: int = 13) -> ParallelConvBranches:
    """UniRepLKNet's dilated reparam block (branch sizes and dilations of tokenmix.grid.large_kernel)."""
    if kernel_size not in UNIREPLK_BRANCHES:
        raise MixerInputError(f"dilated_branches: kernel_size must be one of {sorted(UNIREPLK_BRANCHES)}")
    sizes, dilations = UNIREPLK_BRANCHES[kernel_size]
    return ParallelConvBranches(channels, [(kernel_size, kernel_size, 1)] + [(k, k, r) for k, r in
                                                                             zip(sizes, dilations)], groups=channels)


class CollapsibleLinearBlock(nn.Module):
    """SESR's collapsible linear block: k×k conv C → P (expanded, P ≫ C), 1×1 conv P → C, plus a short residual;
    no nonlinearity inside, so `reparameterize()` collapses it into one k×k C → C conv."""

    def __init__(self, channels: int, expanded: int, kernel_size: int = 3, residual: bool = True) -> None:
        super().__init__()
        self.expand = nn.Conv2d(channels, expanded, kernel_size, padding=kernel_size // 2)
        self.project = nn.Conv2d(expanded, channels, 1)
        self.residual = residual
        self.collapsed: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.collapsed is not None:
            return self.collapsed(x)
        y = self.project(self.expand(x))
        return y + x if self.residual else y

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.collapsed is not None:
            return
        weight, bias = collapse_pointwise((self.expand.weight, self.expand.bias),
                                          (self.project.weight, self.project.bias), self.residual)
        collapsed = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]),
                              padding=self.expand.padding).to(weight)
        collapsed.weight.copy_(weight)
        collapsed.bias.copy_(bias)
        self.collapsed = collapsed
        self.expand = self.project = None  # type: ignore[assignment]


# --- whole models ---------------------------------------------------------------------------------------------
@torch.no_grad()
def fold_sequential_batchnorms(model: nn.Module) -> int:
    """Fold every nn.Conv{1,2,3}d → nn.BatchNorm{1,2,3}d pair of consecutive nn.Sequential entries (the BN
    becomes nn.Identity); returns how many were folded. Eval mode only: the model is put in eval mode."""
    model.eval()
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, nn.modules.conv._ConvNd) and isinstance(norm, nn.modules.batchnorm._BatchNorm) \
                    and not conv.transposed:
                weight, bias = fold_batchnorm(conv.weight, conv.bias, norm)
                conv.weight.copy_(weight)
                if conv.bias is None:
                    conv.bias = nn.Parameter(bias)
                else:
                    conv.bias.copy_(bias)
                module[i + 1] = nn.Identity()
                folded += 1
    return folded


@torch.no_grad()
def reparameterize_model(model: nn.Module) -> int:
    """Fold Conv → BN pairs, then call `reparameterize()` on every module that has one (`model` included: this
    module's blocks and the large-kernel mixers); returns the number of modules changed. Puts the model in eval
    mode."""
    changed = fold_sequential_batchnorms(model)
    for module in list(model.modules()):
        if callable(getattr(module, "reparameterize", None)):
            module.reparameterize()
            changed += 1
    return changed


def speedup(module: nn.Module, example: Tensor, *, min_run_time: float = 0.5) -> dict[str, float]:
    """Median eval-mode time of `module` and of a reparameterized copy on `example` (torch.utils.benchmark),
    and the largest absolute difference of their outputs."""
    from torch.utils import benchmark

    module = module.eval()
    fast = copy.deepcopy(module)
    reparameterize_model(fast)
    times = {}
    with torch.no_grad():
        for label, candidate in (("before", module), ("after", fast)):
            timer = benchmark.Timer(stmt="m(x)", globals={"m": candidate, "x": example})
            times[label] = timer.blocked_autorange(min_run_time=min_run_time).median
        difference = float((module(example) - fast(example)).abs().max())
    return {"before_s": times["before"], "after_s": times["after"], "speedup": times["before"] / times["after"],
            "max_abs_difference": difference}


def benchmark_blocks(channels: int = 64, size: int = 56, batch: int = 1, *, min_run_time: float = 0.5,
                     seed: int = 0) -> list[dict]:
    """Time each re-parameterizable block before and after (eval mode, float32, this machine's threads):
    RepLKNet 31+5 depthwise, ACNet 3×3+1×3+3×1 dense, UniRepLKNet K=13 dilated, SESR block (expansion 4),
    a replknet mixer. A measurement for reports (`tokenmix analyze reparam`), not a test."""
    import tokenmix

    torch.manual_seed(seed)
    blocks = {
        "RepLKNet 31×31 + 5×5 (depthwise, BN)": replknet_branches(channels, 31, 5),
        "ACNet 3×3 + 1×3 + 3×1 (dense, BN)": acnet_branches(channels, 3),
        "UniRepLKNet 13×13 + 4 dilated (depthwise, BN)": dilated_branches(channels, 13),
        f"SESR 3×3 → {4 * channels} → 1×1 + residual": CollapsibleLinearBlock(channels, 4 * channels, 3),
        "replknet mixer (31 + 5)": tokenmix.create("replknet", channels),
    }
    x = torch.randn(batch, channels, size, size)
    rows = []
    for label, block in blocks.items():
        for module in block.modules():   # non-trivial statistics, so the folds are checked on real numbers
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 1.5)
        rows.append({"block": label, **speedup(block, x, min_run_time=min_run_time)})
    return rows
