"""Effective receptive field (ERF) of a mixer or a backbone (Luo, Li, Urtasun & Zemel, "Understanding the
Effective Receptive Field in Deep Convolutional Neural Networks", arXiv 1701.04128):

    ERF(p) = E_x | Σ_c ∂y_c(center) / ∂x(p) |_summed over input channels

the gradient of the output at the centre position (summed over output channels: the backward pass seeded with
ones at the centre, zeros elsewhere) with respect to every input position p, its absolute value summed over the
input channels and averaged over random inputs x ~ N(0, 1). For a linear convolution this is the kernel's
footprint; for data-dependent mixers it depends on x, hence the average. The mass radius r(s) is the smallest
Euclidean distance from the centre such that the positions within it hold a share s of the total ERF mass.

Layouts: grid mixers `(B, D, *spatial)`, sequence mixers `(B, L, D)` (the ERF is a function of the position;
a causal mixer's ERF is zero after the centre), and any module mapping images to feature maps (a backbone's
`forward_features`), where the centre output is the centre of the feature map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

import tokenmix
from tokenmix.errors import MixerInputError

# An ERF entry counts as reached when above this many machine epsilons (of the map's dtype) times the peak: the
# round-off of an FFT convolution leaks a few epsilons of the peak into positions a causal mixer never reads.
SUPPORT_EPSILONS = 100.0


def effective_receptive_field(module: nn.Module | Callable[[Tensor], Tensor], input_shape: tuple[int, ...], *,
                              layout: str = "grid", samples: int = 4, seed: int = 0,
                              dtype: torch.dtype | None = None) -> Tensor:
    """The ERF map of `module` for inputs of `input_shape` (without the batch axis): `(*spatial)` for
    `layout="grid"` (input `(C, *spatial)`, output `(C', *spatial')`, channels first) or `(L,)` for
    `layout="sequence"` (input `(L, D)`, output `(L, D')`). Inputs in `dtype`, by default the module's own."""
    if layout not in ("grid", "sequence"):
        raise MixerInputError(f"effective_receptive_field: layout must be 'grid' or 'sequence', got {layout!r}")
    owner = getattr(module, "__self__", module)          # a bound method such as model.forward_features
    if dtype is None:
        first = next(owner.parameters(), None) if isinstance(owner, nn.Module) else None
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, *input_shape, generator=generator, dtype=dtype).requires_grad_(True)
    if isinstance(module, nn.Module):
        module.eval()
    y = module(x)
    seed_gradient = torch.zeros_like(y)
    if layout == "grid":
        center = tuple(n // 2 for n in y.shape[2:])
        seed_gradient[(slice(None), slice(None), *center)] = 1.0
    else:
        seed_gradient[:, y.shape[1] // 2, :] = 1.0
    (gradient,) = torch.autograd.grad(y, x, seed_gradient)
    channel_axis = 1 if layout == "grid" else 2
    return gradient.detach().abs().sum(channel_axis).mean(0)


def mixer_receptive_field(name: str, *, dim: int = 16, size: int = 32, samples: int = 4, seed: int = 0,
                          **options) -> Tensor:
    """ERF of the registered mixer `name` (freshly initialized with `seed`): a `size`×`size` grid for 2D grid
    mixers (1D-only grid mixers: a line of `size`), a sequence of `size`² positions for sequence mixers."""
    from tokenmix.analysis.cost import fit_size_options

    spec = tokenmix.spec(name)
    torch.manual_seed(seed)
    if spec.layout == "sequence":
        shape = (size * size, dim)
    else:
        shape = (dim, *([size] * (2 if 2 in spec.spatial_dims else spec.spatial_dims[0])))
    # float64: the support is then exact up to round-off ~1e-16 (float32 FFT convolutions leak ~1e-9 of the
    # peak into positions a causal mixer never reads, the size of true far-field values of deep stacks)
    mixer = tokenmix.create(name, dim, **fit_size_options(name, (1, *shape), options)).double()
    return effective_receptive_field(mixer, shape, layout=spec.layout, samples=samples, seed=seed)


def mass_radius(erf: Tensor, share: float) -> float:
    """Smallest Euclidean distance r from the centre (n // 2 per axis) with ≥ `share` of the ERF mass within r."""
    if not 0 < share <= 1:
        raise MixerInputError(f"mass_radius: share must be in (0, 1], got {share}")
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) - n // 2 for n in erf.shape], indexing="ij")
    distance = torch.sqrt(sum(g ** 2 for g in grids)).flatten()
    order = torch.argsort(distance, stable=True)
    mass = erf.double().flatten()[order]
    cumulative = torch.cumsum(mass, 0) / mass.sum().clamp_min(1e-300)
    index = int(torch.searchsorted(cumulative, torch.tensor([share - 1e-12], dtype=torch.float64)))
    return float(distance[order][min(index, distance.numel() - 1)])


def support(erf: Tensor, threshold: float | None = None) -> Tensor:
    """Boolean map of the positions whose ERF exceeds `threshold` × its maximum (default: 100 machine epsilons of
    the map's dtype, i.e. above round-off)."""
    if threshold is None:
        threshold = SUPPORT_EPSILONS * torch.finfo(erf.dtype).eps
    return erf > threshold * erf.max()


def erf_rows(names: list[str], *, dim: int = 16, size: int = 32, samples: int = 4,
             shares: tuple[float, ...] = (0.5, 0.9)) -> list[dict]:
    """One row per mixer: layout, the mass radius for each share, and the share of the positions reached."""
    rows = []
    for name in names:
        erf = mixer_receptive_field(name, dim=dim, size=size, samples=samples)
        row = {"mixer": name, "layout": tokenmix.spec(name).layout, "positions": erf.numel(),
               "reached": float(support(erf).double().mean())}
        row.update({f"radius_{round(100 * s)}": mass_radius(erf, s) for s in shares})
        rows.append(row)
    return rows


def erf_table(rows: list[dict]) -> str:
    """The rows of `erf_rows` as a Markdown table."""
    radius_keys = [key for key in rows[0] if key.startswith("radius_")] if rows else []
    lines = ["| mixer | layout | positions | reached | " + " | ".join(f"r({k[7:]}%)" for k in radius_keys) + " |",
             "|---|---|---|---|" + "---|" * len(radius_keys)]
    for row in rows:
        lines.append(f"| {row['mixer']} | {row['layout']} | {row['positions']} | {100 * row['reached']:.1f}% | "
                     + " | ".join(f"{row[k]:.2f}" for k in radius_keys) + " |")
    return "\n".join(lines) + "\n"


def plot_erf(erf: Tensor, path: str | Path, title: str = "effective receptive field",
             shares: tuple[float, ...] = (0.5, 0.9)) -> Path:
    """Save the ERF as a heat map (2D, log colour scale, mass-radius circles) or a curve (1D) to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    path = Path(path)
    values = erf.detach().double().cpu()
    figure, axes = plt.subplots(figsize=(5.2, 4.2) if values.ndim == 2 else (6, 3.2))
    if values.ndim == 2:
        positive = values[values > 0]
        low = float(positive.min()) if positive.numel() else 1e-12
        high = float(values.max()) if float(values.max()) > low else low * 10
        image = axes.imshow(values.clamp_min(low).numpy(), cmap="magma", origin="upper",
                            norm=LogNorm(vmin=max(low, high * 1e-8), vmax=high))
        figure.colorbar(image, ax=axes, label="mean |∂y(centre) / ∂x|")
        cy, cx = values.shape[0] // 2, values.shape[1] // 2
        for share, colour in zip(shares, ("cyan", "white", "lime")):
            radius = mass_radius(values, share)
            axes.add_patch(plt.Circle((cx, cy), max(radius, 0.3), fill=False, color=colour, linewidth=1,
                                      label=f"{100 * share:.0f}% of the mass (r = {radius:.1f})"))
        axes.legend(loc="lower right", fontsize=7)
        axes.set_xlabel("input column")
        axes.set_ylabel("input row")
    elif values.ndim == 1:
        axes.plot(values.numpy(), linewidth=1)
        axes.axvline(values.shape[0] // 2, color="grey", linestyle=":", label="centre output")
        axes.set_yscale("symlog", linthresh=max(float(values.max()) * 1e-6, 1e-30))
        axes.set_xlabel("input position")
        axes.set_ylabel("mean |∂y(centre) / ∂x|")
        axes.legend(fontsize=7)
    else:
        plt.close(figure)
        raise MixerInputError(f"plot_erf: a 1D or 2D map is needed, got shape {tuple(values.shape)}")
    axes.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def radius_summary(erf: Tensor, shares: tuple[float, ...] = (0.5, 0.9)) -> dict[str, float]:
    """{'radius_50': ..., 'radius_90': ..., 'reached': share of positions in the support}."""
    out = {f"radius_{round(100 * s)}": mass_radius(erf, s) for s in shares}
    out["reached"] = float(support(erf).double().mean())
    out["diameter_of_support"] = float(max(
        (int(idx.max() - idx.min()) + 1 for idx in support(erf).nonzero().T), default=0)) if erf.ndim else 0.0
    return out
