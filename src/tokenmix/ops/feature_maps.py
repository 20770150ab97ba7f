"""Feature maps φ applied to q and k before a linear-attention op.

Elementwise maps keep the shape; `taylor` and `cosformer` widen the last dimension (the kernel they realize is
`φ(q)ᵀφ(k)`, written next to each).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def elu_plus_one(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 > 0, "Transformers are RNNs", Katharopoulos et al. 2020, arXiv:2006.16236."""
    return F.elu(x) + 1.0


def relu(x: Tensor) -> Tensor:
    """φ(x) = max(x, 0), the non-negative map of cosFormer (arXiv:2202.08791)."""
    return F.relu(x)


def cosformer(x: Tensor, positions: Tensor, period: float) -> Tensor:
    """cosFormer's re-weighted features, "cosFormer: Rethinking Softmax in Attention", Qin et al. 2022,
    arXiv:2202.08791: with θ_i = π i / (2M) (`period` = M),

        φ(x_i) = [ReLU(x_i) cos θ_i, ReLU(x_i) sin θ_i],   so   φ(q_i)ᵀφ(k_j) = ReLU(q_i)ᵀReLU(k_j) cos(θ_i - θ_j).

    `x: (..., L, K)`, `positions: (L,)` or `(B, 1, L)` broadcasting against `x[..., 0]`; returns `(..., L, 2K)`."""
    theta = (math.pi / (2.0 * period)) * positions.to(x.dtype)
    features = F.relu(x)
    return torch.cat([features * theta.cos().unsqueeze(-1), features * theta.sin().unsqueeze(-1)], dim=-1)


def taylor(x: Tensor) -> Tensor:
    """Second-order Taylor features of exp, Based ("Simple linear attention language models balance the
    recall-throughput tradeoff", Arora et al. 2024, arXiv:2402.18668):

        φ(x) = [1, x / d^¼, vec(x xᵀ) / (√2 · √d)],   φ(q)ᵀφ(k) = 1 + qᵀk/√d + (qᵀk)² / (2d) ≈ exp(qᵀk/√d).

    `(..., d) -> (..., 1 + d + d²)`."""
    d = x.shape[-1]
    x = x * d ** -0.25
    second = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) * 0.5 ** 0.5
    return torch.cat([torch.ones_like(x[..., :1]), x, second], dim=-1)


def focused(x: Tensor, power: float = 3.0, eps: float = 1e-6) -> Tensor:
    """FLatten's focused map, "FLatten Transformer: Vision Transformer using Focused Linear Attention", Han et al.
    2023, arXiv:2308.00442:  f_p(x) = ‖ReLU(x)‖ / ‖ReLU(x)^p‖ · ReLU(x)^p  (elementwise power p): the norm is kept
    and the direction sharpened towards the largest components."""
    r = F.relu(x)
    powered = r ** power
    return powered * (r.norm(dim=-1, keepdim=True) / (powered.norm(dim=-1, keepdim=True) + eps))


def lognormal(x: Tensor, alpha: float | Tensor) -> Tensor:
    """φ(x) = exp(α x), the log-normal features of "Linear Log-Normal Attention with Unbiased Concentration",
    Nahshan et al. 2023, arXiv:2311.13541 (α, β from `lognormal_moment_matching`)."""
    return torch.exp(alpha * x)


# The paper's linear fit of the LLN attention matrix's log-variance, σ²_lln ≈ 2a σ̃² + b (its Sec. 4, with the
# values of the authors' released code).
LOGNORMAL_FIT_SLOPE = 0.14855178144710912
LOGNORMAL_FIT_INTERCEPT = -0.35487039130661086


def lognormal_moment_matching(sigma_q: Tensor | float, sigma_k: Tensor | float) -> tuple[Tensor, Tensor]:
    """α, β of Linear Log-Normal attention (arXiv:2311.13541) by moment matching.

    With q, k entries of standard deviations σ_q, σ_k, softmax attention `softmax(qᵀk/√d)` is approximately
    log-normal with log-variance σ²_sm = σ_q² σ_k². LLN attention `exp(αq)ᵀexp(βk)` with α σ_q = β σ_k = σ̃ is
    approximately log-normal with σ²_lln ≈ 2a σ̃² + b (a, b fitted in the paper). Equating the two:

        σ̃² = (σ_q² σ_k² - b) / (2a),      α = σ̃ / σ_q,      β = σ̃ / σ_k.
    """
    sigma_q, sigma_k = torch.as_tensor(sigma_q), torch.as_tensor(sigma_k)
    matched = ((sigma_q * sigma_k) ** 2 - LOGNORMAL_FIT_INTERCEPT) / (2.0 * LOGNORMAL_FIT_SLOPE)
    tilde = matched.sqrt()
    return tilde / sigma_q, tilde / sigma_k


FEATURE_MAPS = {"elu_plus_one": elu_plus_one, "relu": relu, "taylor": taylor, "focused": focused}
