"""Modal fit of long filters: the distillation step of "Laughing Hyena Distillery: Extracting Compact Recurrences
From Convolutions" (Massaroli et al. 2023, arXiv:2310.18780).

A filter h_0, h_1, ..., h_{L-1} is approximated by a direct term and d complex modes,

    ĥ_0 = h_0,   ĥ_t = Re Σ_{k<d} R_k λ_k^{t-1}   (t ≥ 1),

so the convolution with ĥ runs as a diagonal recurrence of d states per channel: x_t = λ x_{t-1} + u_t,
y_t = h_0 u_t + Re Σ_k R_k x_{t-1,k} — O(d) per token instead of O(t).

The poles come from the matrix-pencil method (a shift-invariance fit on the dominant singular subspace of the
filter's Hankel matrix, the model-order reduction view of the paper), the residues from least squares on the
Vandermonde matrix of those poles. Poles outside the unit circle are pulled inside (|λ| ≤ `max_radius`) so the
recurrence is stable. Fitting runs in float64.

`refine=n` then runs n L-BFGS iterations on the relative L2 error ‖h − ĥ‖²/‖h‖² of each filter over the poles
(as λ = max_radius · exp(−exp(a) + iθ), so they stay inside the circle) and residues jointly — the gradient
fitting the paper also uses. The pencil fit is a good start but not the least-squares optimum over poles,
notably where poles were pulled onto the circle; a filter keeps the refined modes only if its error fell.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tokenmix.errors import MixerInputError


FIT_BATCH = 16        # filters fitted at once: bounds the Vandermonde matrix to (16, L, 2d)
MAX_HANKEL_ROWS = 4096  # the poles are read from the first ~4K taps; residues use every tap
RCOND = 1e-6          # relative singular-value cutoff of the residue fit


def fit_modal(filters: Tensor, order: int, *, pencil: int | None = None, max_radius: float = 1.0 - 1e-6,
              refine: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fit `filters: (..., L)` with `order` modes each (L ≥ 2·order + 1), then `refine` L-BFGS iterations.

    Returns `(poles, residues, direct, error)`: complex `(..., order)` λ and R, real `(...)` h_0, and the relative
    L2 error ‖h - ĥ‖ / ‖h‖ per filter `(...)` (float64)."""
    if isinstance(order, bool) or not isinstance(order, int) or order <= 0:
        raise MixerInputError(f"fit_modal: order must be a positive integer, got {order!r}")
    length = filters.shape[-1]
    if length - 1 < 2 * order:
        raise MixerInputError(f"fit_modal: {order} modes need a filter of at least {2 * order + 1} taps, "
                              f"got {length}")
    flat = filters.detach().to(torch.float64).reshape(-1, length)
    if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
        raise MixerInputError(f"fit_modal: refine must be a number of iterations ≥ 0, got {refine!r}")
    parts = [_fit(flat[i:i + FIT_BATCH], order, pencil, max_radius) for i in range(0, flat.shape[0], FIT_BATCH)]
    if refine:
        parts = [_refine(flat[i:i + FIT_BATCH], *part, refine, max_radius)
                 for i, part in zip(range(0, flat.shape[0], FIT_BATCH), parts)]
    poles, residues, direct, error = (torch.cat(p).reshape(*filters.shape[:-1], *p[0].shape[1:])
                                      for p in zip(*parts))
    return poles, residues, direct, error


def _fit(reference: Tensor, order: int, pencil: int | None, max_radius: float):
    length = reference.shape[-1]
    tail = reference[..., 1:]                                               # h_1 .. h_{L-1}
    count = tail.shape[-1]
    pencil = min(count // 2, max(2 * order, 128)) if pencil is None else pencil
    rows = min(count - pencil, MAX_HANKEL_ROWS)
    hankel = tail.unfold(-1, pencil + 1, 1)[..., :rows, :]                  # Y[i, j] = h_{1+i+j}, (rows, P+1)
    # The dominant right singular vectors of Y are the top eigenvectors of the (P+1)² Gram matrix YᵀY: a small
    # symmetric eigenproblem instead of an SVD of the tall Hankel matrix (far faster on CPU, same subspace).
    _, vectors = torch.linalg.eigh(hankel.transpose(-1, -2) @ hankel)
    basis = vectors[..., :, -order:].to(torch.complex128)                   # (P+1, d) dominant right vectors
    shift = torch.linalg.lstsq(basis[..., :-1, :], basis[..., 1:, :]).solution   # V1⁺ V2
    poles = torch.linalg.eigvals(shift)
    radius = poles.abs()
    poles = torch.where(radius > max_radius, poles / radius * max_radius, poles)
    residues = _residues(tail, poles)
    direct = reference[..., 0]
    fitted = modal_filter(poles, residues, direct, length)
    error = (fitted - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(1e-300)
    return poles, residues, direct, error


def _refine(reference: Tensor, poles: Tensor, residues: Tensor, direct: Tensor, error: Tensor, iterations: int,
            max_radius: float):
    """L-BFGS (float64) on Σ_filters ‖h − ĥ‖²/‖h‖² over λ = max_radius·exp(−exp(a) + iθ) and R; per filter the
    refined modes replace the pencil fit's only where they lower its error."""
    length = reference.shape[-1]
    radius = (poles.abs() / max_radius).clamp(1e-12, 1 - 1e-12)
    decay = torch.log(-torch.log(radius)).requires_grad_()
    angle = poles.angle().clone().requires_grad_()
    parts = torch.view_as_real(residues).clone().requires_grad_()
    energy = reference.square().sum(-1).clamp_min(1e-300)

    def modes():
        return torch.polar(max_radius * torch.exp(-torch.exp(decay)), angle), torch.view_as_complex(parts)

    optimizer = torch.optim.LBFGS([decay, angle, parts], max_iter=iterations, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        optimizer.zero_grad()
        loss = ((modal_filter(*modes(), direct, length) - reference).square().sum(-1) / energy).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        new_poles, new_residues = modes()
        new_error = (modal_filter(new_poles, new_residues, direct, length) - reference).norm(dim=-1) / energy.sqrt()
        better = torch.isfinite(new_error) & (new_error < error)
        return (torch.where(better[:, None], new_poles, poles), torch.where(better[:, None], new_residues, residues),
                direct, torch.where(better, new_error, error))


def _residues(tail: Tensor, poles: Tensor) -> Tensor:
    """Least-squares R for h_t ≈ Re Σ R_k λ_k^{t-1}, t = 1..L-1, over real and imaginary parts of R."""
    t = torch.arange(tail.shape[-1], dtype=torch.float64, device=tail.device)
    vandermonde = powers(poles, t)                                            # (..., L-1, d)
    design = torch.cat([vandermonde.real, -vandermonde.imag], dim=-1)         # Re(R λ^t) = Re R Re λ^t - Im R Im λ^t
    # A truncated solution: clustered poles make the Vandermonde matrix ill-conditioned, and the exact
    # least-squares residues then cancel in huge pairs that no float32 recurrence can reproduce. Directions of the
    # (scaled) normal matrix below RCOND² of its largest eigenvalue — singular values below RCOND — are
    # dropped; the normal matrix is 2d × 2d, so long filters cost one pass over their taps.
    scale = design.norm(dim=-2, keepdim=True).amax(dim=-1, keepdim=True).clamp_min(1e-300)
    design = design / scale
    values, vectors = torch.linalg.eigh(design.transpose(-1, -2) @ design)
    keep = values > RCOND ** 2 * values.amax(dim=-1, keepdim=True)
    inverse = torch.where(keep, 1 / values.clamp_min(1e-300), torch.zeros_like(values))
    rhs = vectors.transpose(-1, -2) @ (design.transpose(-1, -2) @ tail[..., None])
    parts = (vectors @ (inverse[..., None] * rhs))[..., 0] / scale[..., 0, :]
    order = poles.shape[-1]
    return torch.complex(parts[..., :order], parts[..., order:])


def modal_filter(poles: Tensor, residues: Tensor, direct: Tensor, length: int) -> Tensor:
    """ĥ_0 = direct, ĥ_t = Re Σ R λ^{t-1}: the filter of a modal realization, `(..., length)` real."""
    t = torch.arange(max(length - 1, 0), dtype=poles.real.dtype, device=poles.device)
    modal = (residues[..., None, :] * powers(poles, t)).sum(-1).real
    return torch.cat([direct[..., None], modal], dim=-1)


def powers(poles: Tensor, t: Tensor) -> Tensor:
    """λ^t as `(..., len(t), d)`: |λ|^t e^{i t arg λ} through real pow/cos/sin (vectorized on CPU, unlike the
    complex pow)."""
    return torch.polar(poles.abs()[..., None, :] ** t[:, None], poles.angle()[..., None, :] * t[:, None])
