"""First-layer energy profile: a filter bank seen in the eigenbasis of the training patches' covariance
("What do CNNs Learn in the First Layer and Why? A Linear Systems Perspective"; catalog #146).

Patches p ∈ R^d (d = C k², mean removed) of the training images have covariance Σ = E[p pᵀ] = Σ_i λ_i u_i u_iᵀ
(λ_1 ≥ λ_2 ≥ ...). A first layer with filters w_1..w_K (flattened to R^d) has the energy profile

    E_i = Σ_k (u_iᵀ w_k)²          (Σ_i E_i = Σ_k ‖w_k‖², Parseval),

the filter bank's energy along each principal direction of the data. Random initial filters spread it evenly;
trained first layers put it in a consistent, data-dictated profile.

The linear-model prediction, derived here for one linear layer W trained by gradient descent on the squared
loss ½ E‖W p - y‖² from W₀ = 0 with step η: W_{t+1} = W_t - η (W_t Σ - C), C = E[y pᵀ]. In the eigenbasis each
direction evolves alone, W_t u_i = (1 - (1 - η λ_i)^t) C u_i / λ_i, so

    E_i(t) = ‖C u_i‖² (1 - (1 - η λ_i)^t)² / λ_i²,

exactly. When the targets carry no preferred direction (random labels, the paper's striking case)
E‖C u_i‖² ∝ λ_i, so the expected profile is E_i(t) ∝ (1 - (1 - η λ_i)^t)² / λ_i: ∝ λ_i early (the data's own
energy, η t ≪ 1/λ_i) and → 1/λ_i as t → ∞ — the energy profile of the whitening filters Σ^{-1/2}
(‖Σ^{-1/2} u_i‖² = 1/λ_i). `linear_prediction` returns this expected profile.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenmix.errors import MixerInputError


def extract_patches(images: Tensor, kernel_size: int | tuple[int, int], *, stride: int = 1,
                    max_patches: int | None = None, seed: int = 0) -> Tensor:
    """`(N, C, H, W)` images → `(P, C k_h k_w)` patches (flattened as a conv filter is), mean removed."""
    if images.ndim != 4:
        raise MixerInputError(f"extract_patches: images must be (N, C, H, W), got {tuple(images.shape)}")
    patches = F.unfold(images.double(), kernel_size, stride=stride).transpose(1, 2)     # (N, positions, d)
    patches = patches.reshape(-1, patches.shape[-1])
    if max_patches is not None and patches.shape[0] > max_patches:
        choice = torch.randperm(patches.shape[0], generator=torch.Generator().manual_seed(seed))[:max_patches]
        patches = patches[choice]
    return patches - patches.mean(0)


def patch_eigenbasis(patches: Tensor) -> tuple[Tensor, Tensor]:
    """(λ descending `(d,)`, U `(d, d)` with the eigenvectors u_i as columns) of the patch covariance."""
    covariance = patches.T @ patches / patches.shape[0]
    values, vectors = torch.linalg.eigh(covariance)
    return values.flip(0), vectors.flip(1)


def energy_profile(filters: Tensor, basis: Tensor) -> Tensor:
    """E_i = Σ_k (u_iᵀ w_k)² for `filters: (K, C, k, k)` (or `(K, d)`) and `basis: (d, d)` (columns u_i)."""
    flat = filters.detach().double().reshape(filters.shape[0], -1)
    if flat.shape[1] != basis.shape[0]:
        raise MixerInputError(f"energy_profile: filters of {flat.shape[1]} taps, a basis of {basis.shape[0]}")
    return ((flat @ basis.double()) ** 2).sum(0)


def linear_prediction(eigenvalues: Tensor, steps: float, learning_rate: float) -> Tensor:
    """The expected profile E_i(t) ∝ (1 - (1 - η λ_i)^t)² / λ_i of a linear layer after `steps` GD steps
    (random-direction targets, zero initialization), normalized to sum 1. `steps = inf`: ∝ 1/λ_i (whitening)."""
    values = eigenvalues.double().clamp_min(1e-12)
    if steps == float("inf"):
        profile = 1 / values
    else:
        profile = (1 - (1 - learning_rate * values) ** steps) ** 2 / values
    return profile / profile.sum()


def whitening_filters(eigenvalues: Tensor, basis: Tensor, epsilon: float = 0.0) -> Tensor:
    """Σ^{-1/2} = U diag((λ + ε)^{-1/2}) Uᵀ as a `(d, d)` filter bank (row k: filter k)."""
    return basis @ torch.diag((eigenvalues.double() + epsilon).rsqrt()) @ basis.T


def profile_correlation(measured: Tensor, predicted: Tensor) -> float:
    """Pearson correlation of the log profiles (shape agreement, scale free)."""
    a, b = measured.double().clamp_min(1e-30).log(), predicted.double().clamp_min(1e-30).log()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def plot_energy(eigenvalues: Tensor, profiles: dict[str, Tensor], path: str | Path,
                title: str = "first-layer energy profile") -> Path:
    """Normalized energy profiles against the eigen-direction index (log scale), the eigenvalues beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    index = torch.arange(1, eigenvalues.numel() + 1)
    for label, profile in profiles.items():
        left.semilogy(index, (profile / profile.sum()).numpy(), marker=".", label=label)
    left.set_xlabel("eigenvector index i of the patch covariance (λ descending)")
    left.set_ylabel("share of filter energy E_i / Σ E")
    left.set_title(title)
    left.legend(fontsize=7)
    right.semilogy(index, eigenvalues.clamp_min(1e-30).numpy(), marker=".", color="black")
    right.set_xlabel("eigenvector index i")
    right.set_ylabel("eigenvalue λ_i")
    right.set_title("patch covariance spectrum")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def energy_summary(filters: Tensor, path: Path, *, trained: bool) -> list[str]:
    """`tokenmix analyze energy`: the profile of `filters` (a 1-channel first layer) on the scikit-learn digits'
    training patches, against the linear prediction and the whitening limit; Markdown lines."""
    from tokenmix.tasks import create_task

    images = create_task("digits", view="image").split("train").inputs
    if filters.shape[1] != images.shape[1]:
        raise MixerInputError(f"energy: the digits images have 1 channel, the first layer reads {filters.shape[1]}")
    patches = extract_patches(images, tuple(filters.shape[2:]), max_patches=20000)
    values, basis = patch_eigenbasis(patches)
    measured = energy_profile(filters, basis)
    learning_rate = 1 / float(values[0])
    profiles = {"filters" + ("" if trained else " (untrained: no --checkpoint)"): measured}
    for steps in (1, 10, 100):
        profiles[f"linear GD, t = {steps}"] = linear_prediction(values, steps, learning_rate)
    profiles["whitening (t → ∞)"] = linear_prediction(values, float("inf"), learning_rate)
    plot_energy(values, profiles, path)
    lines = [f"Energy of the first layer ({filters.shape[0]} filters of {'×'.join(map(str, filters.shape[1:]))}) "
             f"along the eigenvectors of the covariance of {patches.shape[0]} mean-removed patches of the digits "
             f"training images; linear prediction with η = 1/λ₁. Correlation of log profiles "
             "(1 = same shape):\n", "| against | correlation |", "|---|---|"]
    for label, profile in profiles.items():
        if profile is not measured:
            lines.append(f"| {label} | {profile_correlation(measured, profile):.3f} |")
    lines.append(f"\nEigenvalues λ₁ = {float(values[0]):.4g}, λ_d = {float(values[-1]):.3g} "
                 f"(condition {float(values[0] / values[-1].clamp_min(1e-30)):.3g}).")
    lines.append(f"\n![energy profile]({path.name})")
    return lines
