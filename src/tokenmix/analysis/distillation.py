"""Conv → recurrence distillation, error against order: how many modes a long filter needs.

Reuses the library's fit (no second implementation): `tokenmix.ops.modal_fit.fit_modal` — the modal fit of
"Laughing Hyena Distillery: Extracting Compact Recurrences From Convolutions" (Massaroli et al., arXiv
2310.18780), ĥ_0 = h_0, ĥ_t = Re Σ_{k<d} R_k λ_k^{t-1} — and, for Hyena, `Hyena.to_recurrent(order)`, which
builds the `laughing_hyena` mixer streaming at O(order) per token.

For each order d the curve reports the relative L2 error of the fitted filters ‖h − ĥ‖ / ‖h‖ (median and
maximum over the filters) and, for a Hyena, the relative error of the distilled mixer's output on random
inputs, ‖y_rec − y‖ / ‖y‖.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from tokenmix.errors import MixerInputError
from tokenmix.ops.modal_fit import fit_modal
from tokenmix.sequence.long_convolution import with_skip


def long_filters(mixer: nn.Module, length: int) -> Tensor:
    """The long filters of a long-convolution mixer at taps 0..length-1 (skip folded into tap 0), `(..., L)`:
    Hyena's `filters(length)` or a kernel-generator mixer's `kernel(length)` (sgconv, ckconv, flexconv, ...)."""
    with torch.no_grad():
        if callable(getattr(mixer, "filters", None)):
            return torch.stack([with_skip(h, s) for h, s in zip(mixer.filters(length), mixer.skip)])
        kernel = getattr(mixer, "kernel", None)
        if isinstance(kernel, nn.Module):
            return with_skip(kernel(length), mixer.skip)
    raise MixerInputError(f"{type(mixer).__name__} has no long filters (filters(length) or a kernel generator)")


def distillation_curve(mixer: nn.Module, orders: list[int], length: int = 256, *, batch: int = 2,
                       seed: int = 0) -> list[dict]:
    """One row per order: filter error (median, max) and, when the mixer has `to_recurrent`, output error."""
    filters = long_filters(mixer, length)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, mixer.dim, generator=generator)
    with torch.no_grad():
        reference = mixer(x) if callable(getattr(mixer, "to_recurrent", None)) else None
    rows = []
    for order in orders:
        row: dict = {"order": order}
        if reference is not None:
            distilled = mixer.to_recurrent(order, length)
            error = distilled.filter_error
            with torch.no_grad():
                row["output_error"] = float((distilled(x) - reference).norm() / reference.norm())
        else:
            error = fit_modal(filters, order)[3]
        row["filter_error_median"] = float(error.median())
        row["filter_error_max"] = float(error.max())
        rows.append(row)
    return rows


def plot_distillation(rows: list[dict], path: str | Path, title: str = "conv → recurrence distillation") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    orders = [row["order"] for row in rows]
    for key, label in (("filter_error_median", "filter error (median)"), ("filter_error_max", "filter error (max)"),
                       ("output_error", "output error")):
        if key in rows[0]:
            axes.semilogy(orders, [max(row[key], 1e-16) for row in rows], "o-", label=label)
    axes.set_xlabel("state size per channel (modes d)")
    axes.set_ylabel("relative L2 error")
    axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
